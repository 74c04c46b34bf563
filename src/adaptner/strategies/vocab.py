"""The ``vocab`` strategy: query the sentences whose words look least like the source domain.

Each sentence's unit-frequency vector is compared with the source domain's by cosine
similarity (the dot product of the two count vectors normalised to unit length); the
score is -similarity, so the least source-like sentence is queried first. Units are
``token.norm_`` strings, or, with a transformer pipeline (docs carry ``doc._.trf_data``),
the transformer's wordpiece ids.
"""

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy
from spacy.language import Language
from spacy.tokens import Doc

from ..errors import AdaptnerError
from ..readers import read_docbin
from .base import QueryStrategy, strategies_registry
from .common import BATCH_SIZE, EMPTY_SCORE, fresh_doc

UNITS: tuple[str, ...] = ("auto", "norm", "wordpiece")


def has_trf_data(doc: Doc) -> bool:
    """Whether a transformer has annotated the doc (``doc._.trf_data`` is set)."""
    return Doc.has_extension("trf_data") and doc._.trf_data is not None


def wordpiece_ids(doc: Doc) -> list[int]:
    """The wordpiece ids aligned to the doc's tokens, each wordpiece counted once.

    Special tokens ([CLS], [SEP], padding) are aligned to no token and so left out; a
    token that falls into two overlapping windows is counted in its first window only.

    Raises:
        AdaptnerError: the doc has no ``doc._.trf_data``.
    """
    if not has_trf_data(doc):
        raise AdaptnerError(
            "Counting wordpieces needs doc._.trf_data: process the docs with the transformer "
            "pipeline first (or use unit='norm')."
        )
    trf = doc._.trf_data
    input_ids = numpy.asarray(trf.wordpieces.input_ids)
    if input_ids.size == 0 or len(doc) == 0:
        return []
    flat = input_ids.reshape(-1)
    seq_len = input_ids.shape[-1]
    lengths = numpy.asarray(trf.align.lengths)
    data = numpy.asarray(trf.align.dataXd).reshape(-1)
    keep: set[int] = set()
    start = 0
    for length in lengths:
        positions = data[start : start + int(length)]
        start += int(length)
        if len(positions):
            window = positions // seq_len
            keep.update(int(p) for p in positions[window == window.min()])
    return [int(flat[p]) for p in sorted(keep)]


def count_units(doc: Doc, unit: str) -> Counter:
    """Frequencies of the doc's units: ``token.norm_`` ("norm") or wordpiece ids ("wordpiece")."""
    if unit == "wordpiece":
        return Counter(wordpiece_ids(doc))
    return Counter(token.norm_ for token in doc)


def count_corpus(docs: Iterable[Doc], unit: str = "norm") -> Counter:
    """Summed unit frequencies over ``docs`` (the source-domain frequency vector)."""
    total: Counter = Counter()
    for doc in docs:
        total.update(count_units(doc, unit))
    return total


def wordpiece_tokenizer(nlp: Language | None):
    """The tokenizer of ``nlp``'s transformer component, enabled or not (None without one).

    A pipeline whose encoder outputs are cached (trainer ``cached_head``) has its transformer
    disabled, so docs carry no ``doc._.trf_data``; the tokenizer alone gives the same pieces.
    """
    if nlp is None:
        return None
    for name in nlp.component_names:
        model = getattr(nlp.get_pipe(name), "model", None)
        try:
            tokenizer = getattr(model, "tokenizer", None)  # spacy-transformers' TransformerModel
        except (AttributeError, KeyError, IndexError):
            tokenizer = None
        if tokenizer is not None and callable(tokenizer):
            return tokenizer
    return None


def tokenizer_wordpiece_ids(doc: Doc, tokenizer) -> list[int]:
    """The doc's wordpiece ids from a Hugging Face tokenizer over its words (no specials)."""
    if not len(doc):
        return []
    words = [t.text for t in doc]
    return list(tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"])


def _with_trf_data(docs: Sequence[Doc], nlp: Language | None) -> list[Doc]:
    """``docs`` with ``doc._.trf_data`` set (empty docs aside); runs ``nlp`` on copies if needed."""
    missing = [i for i, doc in enumerate(docs) if len(doc) and not has_trf_data(doc)]
    if not missing:
        return list(docs)
    if nlp is None:
        raise AdaptnerError(
            "Wordpiece counts need docs processed by the transformer pipeline, and no pipeline "
            "was given. Pass nlp= (a transformer pipeline), or use unit='norm'."
        )
    out = list(docs)
    fresh = [fresh_doc(docs[i], nlp.vocab) for i in missing]
    for i, doc in zip(missing, nlp.pipe(fresh, batch_size=BATCH_SIZE), strict=True):
        if not has_trf_data(doc):
            raise AdaptnerError(
                "The pipeline does not set doc._.trf_data (no transformer component); "
                "use unit='norm'."
            )
        out[i] = doc
    return out


def wordpiece_counts(docs: Sequence[Doc], nlp: Language | None) -> list[Counter]:
    """Wordpiece-id counts per doc: from ``doc._.trf_data`` where the docs carry it, else from
    the pipeline's transformer tokenizer (no encoder pass), else by running ``nlp``."""
    tokenizer = wordpiece_tokenizer(nlp)
    if tokenizer is not None and not all(has_trf_data(d) for d in docs if len(d)):
        return [Counter(tokenizer_wordpiece_ids(doc, tokenizer)) for doc in docs]
    return [count_units(doc, "wordpiece") for doc in _with_trf_data(docs, nlp)]


def source_counts_from_docbin(
    path: str | Path, *, nlp: Language | None = None, unit: str = "norm"
) -> dict:
    """Source-domain unit counts from a DocBin (e.g. corpus/train/news.spacy).

    Args:
        path: The DocBin file.
        nlp: Pipeline whose vocab reads the DocBin; required for ``unit="wordpiece"`` (its
            transformer produces the wordpieces). Without it a blank Danish vocab is used.
        unit: "norm" (token.norm_ -> count) or "wordpiece" (wordpiece id -> count).

    Returns:
        A dict unit -> count, to pass as ``source_counts=`` to the ``vocab`` strategy.

    Raises:
        AdaptnerError: missing/corrupt DocBin, unknown unit, or wordpieces without a pipeline.
    """
    if unit not in ("norm", "wordpiece"):
        raise AdaptnerError(f"Unknown unit {unit!r} for source counts; use 'norm' or 'wordpiece'.")
    if nlp is None:
        if unit == "wordpiece":
            raise AdaptnerError("Wordpiece source counts need nlp= (the transformer pipeline).")
        import spacy

        vocab = spacy.blank("da").vocab
    else:
        vocab = nlp.vocab
    docs = read_docbin(path, vocab)
    if unit == "wordpiece":
        docs = _with_trf_data(docs, nlp)
    return dict(count_corpus(docs, unit))


def _counts_unit(counts: Mapping) -> str:
    if counts and all(isinstance(k, (int, numpy.integer)) for k in counts):
        return "wordpiece"
    return "norm"


class VocabStrategy(QueryStrategy):
    """Lowest cosine similarity to the source domain's unit frequencies first."""

    name = "vocab"

    def __init__(
        self,
        source_docs: Sequence[Doc] | None = None,
        source_counts: Mapping | None = None,
        unit: str = "auto",
    ) -> None:
        """Create the strategy from source-domain Docs or precomputed counts.

        Args:
            source_docs: Source-domain Docs (e.g. the source model's training data).
            source_counts: unit -> count (from :func:`source_counts_from_docbin`); string keys
                are norms, integer keys wordpiece ids.
            unit: "auto" (wordpieces when the pool docs carry doc._.trf_data or the pipeline
                has a transformer tokenizer, else norms),
                "norm" or "wordpiece".

        Raises:
            AdaptnerError: neither or both sources given, an empty source, or a bad unit.
        """
        if (source_docs is None) == (source_counts is None):
            raise AdaptnerError(
                "The vocab strategy needs the source domain: pass exactly one of source_docs= "
                "(a list of Docs) or source_counts= (see source_counts_from_docbin)."
            )
        if unit not in UNITS:
            raise AdaptnerError(f"Unknown unit {unit!r} for vocab; choose one of {UNITS}.")
        self.unit = unit
        self.source_docs = list(source_docs) if source_docs is not None else None
        self._counts: dict[str, Counter] = {}
        if source_counts is not None:
            counts = Counter({k: float(v) for k, v in source_counts.items() if v})
            counts_unit = _counts_unit(counts)
            if unit == "wordpiece" and counts_unit == "norm":
                try:
                    counts = Counter({int(k): v for k, v in counts.items()})
                except ValueError:
                    raise AdaptnerError(
                        "unit='wordpiece' but source_counts has non-integer keys (norms?)."
                    ) from None
                counts_unit = "wordpiece"
            if not counts:
                raise AdaptnerError("source_counts is empty: the source domain has no tokens.")
            self._counts[counts_unit] = counts
        elif not self.source_docs or not any(len(doc) for doc in self.source_docs):
            raise AdaptnerError("source_docs is empty: the source domain has no tokens.")

    def resolve_unit(self, docs: Sequence[Doc], nlp: Language | None = None) -> str:
        """The unit used for these pool docs ("norm" or "wordpiece") and pipeline."""
        if self.unit != "auto":
            return self.unit
        if self.source_docs is None:
            return next(iter(self._counts))
        nonempty = [doc for doc in docs if len(doc)]
        if nonempty and all(has_trf_data(doc) for doc in nonempty):
            return "wordpiece"
        if nonempty and wordpiece_tokenizer(nlp) is not None:
            return "wordpiece"  # a transformer pipeline whose encoder outputs are cached
        return "norm"

    def source_counts(self, unit: str, nlp: Language | None = None) -> Counter:
        """The source-domain counts for ``unit`` (counted once from source_docs, then cached)."""
        if unit not in self._counts:
            if self.source_docs is None:
                have = next(iter(self._counts))
                raise AdaptnerError(
                    f"The vocab strategy's source_counts are {have} counts but the pool needs "
                    f"{unit} counts. Build them with source_counts_from_docbin(..., unit={unit!r})."
                )
            if unit == "wordpiece":
                total: Counter = Counter()
                for counts in wordpiece_counts(self.source_docs, nlp):
                    total.update(counts)
                self._counts[unit] = total
            else:
                self._counts[unit] = count_corpus(self.source_docs, unit)
        return self._counts[unit]

    def similarities(
        self, docs: Sequence[Doc], nlp: Language | None = None
    ) -> numpy.ndarray:
        """Cosine similarity of each doc's unit counts with the source counts (NaN if empty)."""
        unit = self.resolve_unit(docs, nlp)
        source = self.source_counts(unit, nlp)
        source_norm = math.sqrt(sum(v * v for v in source.values()))
        if unit == "wordpiece":
            per_doc = wordpiece_counts(docs, nlp)
        else:
            per_doc = [count_units(doc, unit) for doc in docs]
        sims = numpy.full(len(docs), numpy.nan, dtype="float64")
        for i, doc in enumerate(docs):
            if not len(doc):
                continue
            counts = per_doc[i]
            doc_norm = math.sqrt(sum(v * v for v in counts.values()))
            if doc_norm == 0:
                continue
            dot = sum(v * source.get(k, 0.0) for k, v in counts.items())
            sims[i] = dot / (doc_norm * source_norm)
        return sims

    def score(
        self, docs: Sequence[Doc], *, nlp: Language | None, rng: numpy.random.Generator
    ) -> numpy.ndarray:
        """-similarity to the source domain; docs without units score -inf."""
        sims = self.similarities(docs, nlp)
        return numpy.where(numpy.isnan(sims), EMPTY_SCORE, -sims)

    def __repr__(self) -> str:
        return f"VocabStrategy(unit={self.unit!r})"


@strategies_registry.register("vocab")
def make_vocab(
    source_docs: Sequence[Doc] | None = None,
    source_counts: Mapping | None = None,
    unit: str = "auto",
) -> QueryStrategy:
    """Vocabulary-overlap strategy (least similar to the source domain first).

    Args:
        source_docs: Source-domain Docs.
        source_counts: unit -> count, e.g. from :func:`source_counts_from_docbin`.
        unit: "auto", "norm" or "wordpiece".
    """
    return VocabStrategy(source_docs=source_docs, source_counts=source_counts, unit=unit)
