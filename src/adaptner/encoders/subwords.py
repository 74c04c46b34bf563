"""A word's vector from its SentencePiece pieces, for any word, without sentencepiece at load.

The piece table is the encoder's (e5-small's) unigram vocabulary restricted to the pieces a
Latin-script text can produce (every character in :data:`CHARSET_RANGES`), with each piece's
input-embedding row reduced by PCA. A word is segmented by a pure-Python Viterbi search over
the table's pieces and their unigram log-probabilities, the search SentencePiece's unigram
model (and Hugging Face ``tokenizers``) runs: the best-scoring split of ``▁`` + the normalized
word, where a character no one-character piece covers is ``<unk>`` at the lowest score - 10.
Restricting the table keeps the segmentation exact for every word whose characters lie in the
charset (any piece that matches a part of such a word consists of charset characters only);
in other words the characters outside the charset are unknown, as ``<unk>`` is for e5.

Normalization: NFKC (``unicodedata``) of each character on its own (e5's precompiled map
composes no ``a`` + combining ring into ``å``), except the few characters where e5's map
differs from NFKC (control characters dropped, some spaces), recorded from the encoder's own
normalizer when the table is built.

A word's vector is the mean of its pieces' reduced rows, with ``<unk>`` left out and a lone
``▁`` left out when the word has other pieces (the rule of :mod:`adaptner.encoders.vectors`);
a word with no piece gets zeros. The PCA is affine, so the mean of reduced rows is the reduced
mean of the full rows.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AdaptnerError
from .vectors import (
    META,
    _encoder_files,
    content_pieces,
    load_input_embeddings,
    pca_projection,
)

#: Code-point ranges of the characters the piece table keeps (half-open): Basic Latin,
#: Latin-1 Supplement, Latin Extended-A and -B, combining diacritics (NFKC turns ``¨`` into
#: one), General Punctuation, Currency Symbols, and the emoji and symbols of social media.
CHARSET_RANGES: tuple[tuple[int, int], ...] = (
    (0x20, 0x250),
    (0x300, 0x370),
    (0x2000, 0x2070),
    (0x20A0, 0x20D0),
    (0x2190, 0x2200),  # arrows
    (0x25A0, 0x2600),  # geometric shapes
    (0x2600, 0x27C0),  # miscellaneous symbols, dingbats
    (0xFE00, 0xFE10),  # variation selectors
    (0x1F000, 0x1FB00),  # emoji
)
#: Characters whose normalization is compared with NFKC when a table is built.
_NORMALIZATION_PROBE = range(0x20, 0x3000)
#: SentencePiece's penalty of an unknown character below the lowest piece score.
UNK_PENALTY = 10.0


def in_charset(char: str) -> bool:
    code = ord(char)
    return any(lo <= code < hi for lo, hi in CHARSET_RANGES)


@dataclass
class PieceTable:
    """The pieces, their unigram scores and reduced embedding rows; what a layer stores."""

    pieces: list[str]
    scores: list[float]
    vectors: np.ndarray  # pieces x width, float32
    normalization: dict[str, str] = field(default_factory=dict)  # overrides of NFKC
    center: np.ndarray | None = None  # the PCA's mean of the full rows (build only)
    components: np.ndarray | None = None  # width x encoder width (build only)
    encoder_ids: list[int] = field(default_factory=list)  # each piece's id in the encoder

    @property
    def width(self) -> int:
        return int(self.vectors.shape[1])


def _tokenizer_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except (OSError, json.JSONDecodeError) as e:
        raise AdaptnerError(f"Cannot read tokenizer {path} ({e}).") from e


def _normalization_overrides(tokenizer_file: Path) -> dict[str, str]:
    """Characters the encoder's normalizer maps otherwise than NFKC does."""
    from tokenizers import Tokenizer

    normalizer = Tokenizer.from_file(str(tokenizer_file)).normalizer
    if normalizer is None:
        return {}
    out = {}
    for code in _NORMALIZATION_PROBE:
        char = chr(code)
        theirs = normalizer.normalize_str(char)
        if theirs != unicodedata.normalize("NFKC", char):
            out[char] = theirs
    return out


def build_piece_table(encoder: str | Path, width: int = 96) -> PieceTable:
    """The charset's pieces of an encoder (Hugging Face directory with a Unigram
    ``tokenizer.json``), their scores, and their input-embedding rows reduced to ``width``
    principal components (0 = the full rows). PCA by a full SVD: no randomness.

    Raises:
        AdaptnerError: a missing encoder, a tokenizer that is not a unigram model, bad widths.
    """
    tokenizer_file, weights = _encoder_files(Path(encoder))
    data = _tokenizer_json(tokenizer_file)
    model = data.get("model") or {}
    if model.get("type") != "Unigram" or not isinstance(model.get("vocab"), list):
        raise AdaptnerError(
            f"{tokenizer_file} is not a unigram (SentencePiece) tokenizer "
            f"(model type {model.get('type')!r}); subword vectors need e5's kind of tokenizer."
        )
    embeddings = load_input_embeddings(weights)
    specials = {t.get("content") for t in data.get("added_tokens", []) if t.get("special")}
    ids, pieces, scores = [], [], []
    for i, (piece, score) in enumerate(model["vocab"]):
        if piece in specials or i >= len(embeddings):
            continue
        body = piece.replace(META, "")
        if all(in_charset(c) for c in body):
            ids.append(i)
            pieces.append(piece)
            scores.append(float(score))
    if width < 0 or width > embeddings.shape[1]:
        raise AdaptnerError(
            f"Subword vector width must be 0 (full) to {embeddings.shape[1]}, got {width}."
        )
    rows = embeddings[ids]
    del embeddings
    if width:
        center, components = pca_projection(rows, width)
        vectors = ((rows - center) @ components.T).astype("float32")
    else:
        center, components = None, None
        vectors = rows.astype("float32")
    return PieceTable(
        pieces=pieces,
        scores=scores,
        vectors=np.ascontiguousarray(vectors),
        normalization=_normalization_overrides(tokenizer_file),
        center=center,
        components=components,
        encoder_ids=ids,
    )


class Segmenter:
    """Viterbi segmentation of words over a piece table (pure Python, cached per word)."""

    def __init__(self, pieces: Sequence[str], scores: Sequence[float],
                 normalization: dict[str, str] | None = None) -> None:
        self.index = {piece: i for i, piece in enumerate(pieces)}
        self.scores = list(scores)
        self.normalization = dict(normalization or {})
        self.max_len = max((len(p) for p in pieces), default=1)
        self.unk_score = (min(self.scores) if self.scores else 0.0) - UNK_PENALTY
        self.bare = self.index.get(META)
        self._cache: dict[str, list[int]] = {}

    def normalize(self, word: str) -> str:
        """Character by character, as e5's map does (it composes no ``a`` + ring into ``å``)."""
        table = self.normalization
        return "".join(
            table[c] if c in table else unicodedata.normalize("NFKC", c) for c in word
        )

    def pieces(self, word: str) -> list[int | None]:
        """Table indices of the word's pieces, ``None`` for ``<unk>`` (before any filtering)."""
        out: list[int | None] = []
        for part in self.normalize(word).split():
            out.extend(self._viterbi(META + part))
        return out

    def _viterbi(self, text: str) -> list[int | None]:
        n = len(text)
        best = [float("-inf")] * (n + 1)
        back: list[tuple[int, int | None]] = [(0, None)] * (n + 1)
        best[0] = 0.0
        index, scores = self.index, self.scores
        for start in range(n):
            base = best[start]
            if base == float("-inf"):
                continue
            single = False
            for end in range(start + 1, min(n, start + self.max_len) + 1):
                i = index.get(text[start:end])
                if i is None:
                    continue
                single = single or end == start + 1
                score = base + scores[i]
                if score > best[end]:
                    best[end], back[end] = score, (start, i)
            if not single:
                score = base + self.unk_score
                if score > best[start + 1]:
                    best[start + 1], back[start + 1] = score, (start, None)
        out: list[int | None] = []
        pos = n
        while pos > 0:
            start, i = back[pos]
            out.append(i)
            pos = start
        return out[::-1]

    def content(self, word: str) -> list[int]:
        """The pieces whose rows make the word's vector: no ``<unk>``, no lone ``▁`` beside
        other pieces. Cached."""
        found = self._cache.get(word)
        if found is None:
            found = content_pieces(self.pieces(word), self.bare)
            if len(self._cache) < 1_000_000:
                self._cache[word] = found
        return found


def mean_vectors(words: Sequence[str], segmenter: Segmenter, table: np.ndarray) -> np.ndarray:
    """words x width: the mean of each word's content pieces' rows (zeros for none)."""
    out = np.zeros((len(words), table.shape[1]), dtype="float32")
    for row, word in enumerate(words):
        ids = segmenter.content(word)
        if ids:
            out[row] = table[ids].mean(axis=0)
    return out
