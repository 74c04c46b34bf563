"""Shrink a trained transformer pipeline's vocabulary: fewer embedding rows, same weights.

e5-small's word-embedding matrix holds 96M of its 118M parameters, for 250k pieces in ~100
languages. A Danish pipeline needs a fraction of them. Pruning after fine-tuning is exact for
every text whose pieces are all kept (the unigram optimum cannot change when only unused pieces
go), and the configs freeze the embeddings during fine-tuning, so a pruned pipeline is the
fine-tuned one minus rows that Latin-script text never reads.
"""

from __future__ import annotations

import base64
import json
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AdaptnerError
from ..util import atomic_output, load_spacy
from .e5_reader import MASK, META, SPECIALS
from .e5_tokenizer import sentencepiece_model, xlmr_tokenizer


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




@dataclass
class PruneReport:
    """What :func:`prune_pipeline` did."""

    output: Path
    vocab_before: int
    vocab_after: int
    parameters_before: int
    parameters_after: int


def _hf_objects(nlp):
    """The (shim, HF objects) of the pipeline's one transformer component."""
    if "transformer" not in nlp.pipe_names:
        raise AdaptnerError(f"the pipeline has no transformer component ({nlp.pipe_names}).")
    model = nlp.get_pipe("transformer").model
    shim = model.layers[0].shims[0]
    return shim, shim._hfmodel


def pruned_tokenizer(tokenizer, keep: np.ndarray):
    """A fast XLM-R tokenizer over the kept pieces (ids renumbered in order) + its spm bytes."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model.get("type") != "Unigram":
        raise AdaptnerError(
            f"vocabulary pruning needs a unigram tokenizer, not {model.get('type')}."
        )
    vocab = model["vocab"]
    model["vocab"] = [vocab[i] for i in keep]
    model["unk_id"] = SPECIALS["<unk>"]
    new_ids = {int(old): new for new, old in enumerate(keep)}
    for added in spec.get("added_tokens", []):
        added["id"] = new_ids[added["id"]]
    post = spec.get("post_processor") or {}
    for special in (post.get("special_tokens") or {}).values():
        special["ids"] = [new_ids[i] for i in special["ids"]]
    charsmap = b""
    for norm in (spec.get("normalizer") or {}).get("normalizers", []):
        if norm.get("type") == "Precompiled":
            charsmap = base64.b64decode(norm["precompiled_charsmap"])
    backend = Tokenizer.from_str(json.dumps(spec))
    pieces = [p for p, _ in model["vocab"]]
    scores = np.array([s for _, s in model["vocab"]], dtype=np.float32)
    spm_bytes = sentencepiece_model(pieces, scores, charsmap)
    return backend, spm_bytes, pieces


def prune_pipeline(
    model_dir: Path,
    output: Path,
    *,
    scripts: tuple[str, ...] = ("LATIN",),
    texts: Iterable[str] | None = None,
    keep_chars: bool = True,
    force: bool = False,
) -> PruneReport:
    """Write a copy of a trained transformer pipeline with a pruned vocabulary.

    Args:
        model_dir: a trained pipeline with an XLM-R (unigram) transformer, e.g. bio_trf_e5.
        output: the pruned pipeline's directory (written atomically).
        scripts: keep every piece written in these Unicode scripts (default Latin: exact
            tokenization for any Latin-script text); () to keep only what ``texts`` use.
        texts: also keep the pieces these texts use.
        keep_chars: keep every single-character piece.
        force: replace an output directory this command did not write.
    """
    import torch

    nlp = load_spacy(model_dir, "Pass a trained transformer pipeline (e.g. training/…/model-best).")
    shim, hf = _hf_objects(nlp)
    tokenizer, transformer = hf.tokenizer, shim._model
    vocab = tokenizer.get_vocab()
    pieces = sorted(vocab, key=vocab.get)
    if pieces[-1] != MASK or any(pieces[i] != p for p, i in SPECIALS.items()):
        raise AdaptnerError(f"{model_dir}: not an XLM-R vocabulary (specials or {MASK} missing).")
    used = pieces_used(tokenizer.backend_tokenizer, texts) if texts is not None else set()
    keep = prune_ids(pieces, used, keep_chars=keep_chars, scripts=tuple(scripts))
    backend, spm_bytes, kept = pruned_tokenizer(tokenizer, keep)
    with tempfile.TemporaryDirectory() as tmp:
        spm_path = Path(tmp) / "sentencepiece.bpe.model"
        spm_path.write_bytes(spm_bytes)
        new_tok = xlmr_tokenizer(backend, spm_path, tokenizer.model_max_length)
        old = transformer.get_input_embeddings()
        before = sum(p.numel() for p in transformer.parameters())
        emb = torch.nn.Embedding(len(keep), old.embedding_dim, padding_idx=SPECIALS["<pad>"])
        with torch.no_grad():
            emb.weight.copy_(old.weight[torch.as_tensor(keep)])
        emb.weight.requires_grad_(old.weight.requires_grad)
        transformer.set_input_embeddings(emb)
        transformer.config.vocab_size = len(keep)
        after = sum(p.numel() for p in transformer.parameters())
        hf.tokenizer = new_tok
        hf.vocab_file_contents = spm_bytes
        with atomic_output(output, "encoder prune", force=force) as out:
            nlp.to_disk(out)
    return PruneReport(Path(output), len(pieces), len(kept), before, after)
