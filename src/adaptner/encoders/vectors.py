"""Static word vectors from a transformer's input embeddings, for a CNN tok2vec.

Each word type gets the mean of the input-embedding rows of the SentencePiece pieces the
encoder's tokenizer splits it into (as a word on its own: ``▁`` + word). The vectors are written
as a spaCy pipeline directory (``vocab/vectors`` and friends), the format ``spacy init vectors``
writes, so a config reads them with ``[initialize] vectors = DIR`` and
``include_static_vectors = true``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import AdaptnerError
from ..util import atomic_output, dir_bytes

PathLike = str | Path
META = "\u2581"  # SentencePiece's whitespace marker
#: The report written beside the vectors.
VECTORS_META = "adaptner_vectors.json"


@dataclass
class VectorsReport:
    """What :func:`build_vectors` wrote."""

    encoder: str
    output: str
    words: int
    width: int
    encoder_width: int
    unknown_words: int  # words whose pieces are all <unk>: zero vectors are not stored
    mean_pieces: float
    bytes_on_disk: int


def word_types(docs: Iterable, lowercase: bool = True) -> list[str]:
    """Distinct token texts of the docs (and their lowercase forms), in first-seen order."""
    seen: dict[str, None] = {}
    for doc in docs:
        for token in doc:
            text = token.text
            if not text.strip():
                continue
            seen.setdefault(text, None)
            if lowercase:
                seen.setdefault(text.lower(), None)
    return list(seen)


def _encoder_files(encoder: Path) -> tuple[Path, Path]:
    """(tokenizer.json, model.safetensors) of a Hugging Face directory or a spaCy trf pipeline."""
    if not encoder.exists():
        raise AdaptnerError(
            f"Encoder {encoder} does not exist. Build it with `adaptner encoder e5-small -o DIR`."
        )
    candidates = [encoder, encoder / "transformer" / "model"]
    for cand in candidates:
        if (cand / "tokenizer.json").exists() and (cand / "model.safetensors").exists():
            return cand / "tokenizer.json", cand / "model.safetensors"
    raise AdaptnerError(
        f"{encoder} has no tokenizer.json + model.safetensors (a Hugging Face encoder "
        "directory, e.g. the output of `adaptner encoder e5-small`)."
    )


def load_input_embeddings(weights: Path) -> np.ndarray:
    """The word-embedding matrix (vocab x hidden, float32) of a safetensors checkpoint."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as f:
            names = [k for k in f.keys() if k.endswith("word_embeddings.weight")]
            if not names:
                raise AdaptnerError(f"{weights} has no *.word_embeddings.weight tensor.")
            return np.asarray(f.get_tensor(names[0]), dtype="float32")
    except AdaptnerError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises on truncated / foreign files
        raise AdaptnerError(f"Cannot read {weights} ({type(e).__name__}: {e}).") from e


def piece_mean_vectors(
    words: Sequence[str], tokenizer_file: Path, embeddings: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean input embedding of each word's pieces.

    A lone ``▁`` piece (the word boundary before a character the vocabulary does not join to
    it) is left out when the word has other pieces; ``<unk>`` pieces are left out always.

    Returns:
        (vectors words x hidden, a mask of words that got a vector, mean pieces per word).
    """
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(tokenizer_file))
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception type
        raise AdaptnerError(f"Cannot read tokenizer {tokenizer_file} ({e}).") from e
    unk = tok.token_to_id("<unk>")
    bare = tok.token_to_id(META)
    out = np.zeros((len(words), embeddings.shape[1]), dtype="float32")
    ok = np.zeros(len(words), dtype=bool)
    n_pieces = 0
    encodings = tok.encode_batch(list(words), add_special_tokens=False)
    for i, enc in enumerate(encodings):
        ids = content_pieces(
            [j if j != unk and j < len(embeddings) else None for j in enc.ids], bare
        )
        if not ids:
            continue
        out[i] = embeddings[ids].mean(axis=0)
        ok[i] = True
        n_pieces += len(ids)
    return out, ok, n_pieces / max(int(ok.sum()), 1)


def pca(vectors: np.ndarray, width: int) -> np.ndarray:
    """Project onto the top ``width`` principal components (centered), float32.

    A full SVD of (words x 384) takes a second and involves no randomness.
    """
    if width >= vectors.shape[1]:
        return vectors
    center, components = pca_projection(vectors, width)
    return ((vectors - center) @ components.T).astype("float32")


def pca_projection(vectors: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean row, top ``width`` principal directions as rows), float32, by a full SVD."""
    center = vectors.mean(axis=0, keepdims=True, dtype="float64")
    _, _, vt = np.linalg.svd(vectors.astype("float64") - center, full_matrices=False)
    return center.astype("float32"), np.ascontiguousarray(vt[:width], dtype="float32")


def content_pieces(ids: Sequence[int | None], bare: int | None) -> list[int]:
    """``ids`` without unknown pieces (``None``), and without the bare ``▁`` when other
    pieces remain: the pieces a word's vector averages."""
    kept = [i for i in ids if i is not None]
    if len(kept) > 1 and bare is not None:
        kept = [i for i in kept if i != bare] or kept
    return kept


def build_vectors(
    encoder: PathLike,
    words: Sequence[str],
    output: PathLike,
    *,
    width: int = 0,
    lang: str = "da",
    force: bool = False,
) -> VectorsReport:
    """Write spaCy vectors for ``words`` from an encoder's input embeddings.

    Args:
        encoder: A Hugging Face encoder directory (``adaptner encoder e5-small``) or a trained
            spaCy transformer pipeline (its ``transformer/model``).
        words: The word types to cover (see :func:`word_types`).
        output: The spaCy pipeline directory to write (replaced atomically).
        width: Keep this many principal components (0 = the encoder's full width).
        lang: The language of the blank pipeline that carries the vectors.
        force: Replace an output directory this command did not write.

    Raises:
        AdaptnerError: a missing or unreadable encoder, or no words.
    """
    import spacy
    from spacy.vectors import Vectors

    encoder, output = Path(encoder), Path(output)
    if not words:
        raise AdaptnerError("No words to build vectors for (empty corpus?).")
    if width < 0:
        raise AdaptnerError(f"--width must be 0 (full) or positive, got {width}.")
    tokenizer_file, weights = _encoder_files(encoder)
    embeddings = load_input_embeddings(weights)
    vectors, ok, mean_pieces = piece_mean_vectors(words, tokenizer_file, embeddings)
    del embeddings
    kept = [w for w, keep in zip(words, ok, strict=True) if keep]
    table = vectors[ok]
    if width:
        table = pca(table, width)
    nlp = spacy.blank(lang)
    for word in kept:
        nlp.vocab.strings.add(word)
    nlp.vocab.vectors = Vectors(
        strings=nlp.vocab.strings, data=np.ascontiguousarray(table), keys=kept,
        name=f"adaptner_{encoder.name}_pieces",
    )
    report = VectorsReport(
        encoder=str(encoder),
        output=str(output),
        words=len(kept),
        width=int(table.shape[1]),
        encoder_width=int(vectors.shape[1]),
        unknown_words=int((~ok).sum()),
        mean_pieces=round(mean_pieces, 3),
        bytes_on_disk=0,
    )
    with atomic_output(
        output, "encoder vectors", force=force, owned_files=(VECTORS_META,)
    ) as tmp:
        nlp.to_disk(tmp)
        report.bytes_on_disk = dir_bytes(tmp)
        (tmp / VECTORS_META).write_text(
            json.dumps(asdict(report), indent=2) + "\n", encoding="utf8"
        )
    return report
