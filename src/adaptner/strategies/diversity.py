"""Set selection: ``diversity`` (greedy k-center) and ``hybrid`` (uncertainty, then k-center).

Docs are embedded by mean-pooling the bio_ner model's own token vectors (its tok2vec, or
the transformer behind its listener, in predict mode). Greedy k-center (farthest-first)
repeatedly takes the doc farthest from everything chosen so far (and from the labeled
set, if given), which covers the pool with few, spread-out docs.
"""

import inspect
from collections.abc import Sequence

import numpy
from spacy.language import Language
from spacy.tokens import Doc

from ..errors import AdaptnerError
from .base import QueryStrategy, check_query, get_strategy, select, strategies_registry
from .common import EMPTY_SCORE, doc_embeddings, empty_mask

#: Rows of the labeled set compared at once (bounds memory for big sets).
_CHUNK = 1024


def _min_sq_dist(X: numpy.ndarray, centres: numpy.ndarray) -> numpy.ndarray:
    """Squared Euclidean distance from each row of X to its nearest row of ``centres``."""
    best = numpy.full(len(X), numpy.inf)
    x2 = (X * X).sum(axis=1)
    for start in range(0, len(centres), _CHUNK):
        C = centres[start : start + _CHUNK]
        d = x2[:, None] + (C * C).sum(axis=1)[None, :] - 2.0 * X @ C.T
        best = numpy.minimum(best, d.min(axis=1))
    return numpy.clip(best, 0.0, None)


def k_center(
    X: numpy.ndarray,
    n: int,
    rng: numpy.random.Generator,
    *,
    labeled: numpy.ndarray | None = None,
) -> list[int]:
    """Greedy k-center (farthest-first traversal) on the rows of ``X``.

    Args:
        X: Points, one row each (n_points x dim).
        n: How many to pick (1 <= n <= n_points).
        rng: Breaks ties between equally far points.
        labeled: Points already chosen (the labeled set); the first pick is the point
            farthest from them. Without them the first pick is the point nearest the mean.

    Returns:
        ``n`` distinct row indices in selection order.
    """
    X = numpy.asarray(X, dtype="float64")
    check_query(len(X), n)
    chosen: list[int] = []
    if labeled is not None and len(labeled):
        labeled = numpy.asarray(labeled, dtype="float64").reshape(-1, X.shape[1])
        min_d = _min_sq_dist(X, labeled)
    else:
        to_mean = ((X - X.mean(axis=0)) ** 2).sum(axis=1)
        first = _argmax_random_ties(-to_mean, rng)
        chosen.append(first)
        min_d = _min_sq_dist(X, X[first : first + 1])
    while len(chosen) < n:
        cand = min_d.copy()
        cand[chosen] = -numpy.inf
        nxt = _argmax_random_ties(cand, rng)
        chosen.append(nxt)
        min_d = numpy.minimum(min_d, _min_sq_dist(X, X[nxt : nxt + 1]))
    return chosen


def _argmax_random_ties(values: numpy.ndarray, rng: numpy.random.Generator) -> int:
    """Index of the largest value; equal maxima are broken at random by ``rng``."""
    ties = numpy.flatnonzero(values == values.max())
    return int(ties[rng.integers(len(ties))]) if len(ties) > 1 else int(ties[0])


def order_to_scores(order: Sequence[int], size: int) -> numpy.ndarray:
    """Scores that rank ``order`` first (first = highest); the rest get -inf."""
    scores = numpy.full(size, EMPTY_SCORE, dtype="float64")
    for rank, i in enumerate(order):
        scores[i] = float(len(order) - rank)
    return scores


class DiversityStrategy(QueryStrategy):
    """Greedy k-center over mean-pooled token vectors of the current pipeline.

    A set selection: :meth:`query` picks ``n`` docs at once; :meth:`score` returns the
    full farthest-first order as scores (selected first = highest), which costs one pass
    per doc — use :meth:`query` for big pools. Empty docs come last, in random order.

    Attributes:
        labeled_docs: Docs already annotated; may be reassigned between rounds.
    """

    name = "diversity"

    def __init__(self, labeled_docs: Sequence[Doc] | None = None) -> None:
        """Create the strategy.

        Args:
            labeled_docs: Already-labeled docs; the selection starts farthest from them.
                Without them, the first centre is the pool doc nearest the pool mean.
        """
        self.labeled_docs = list(labeled_docs) if labeled_docs else []

    def _embed(
        self, docs: Sequence[Doc], nlp: Language | None
    ) -> tuple[numpy.ndarray, numpy.ndarray | None]:
        X = doc_embeddings(docs, nlp)
        labeled = [doc for doc in self.labeled_docs if len(doc)]
        L = doc_embeddings(labeled, nlp) if labeled else None
        if L is not None and L.shape[1] != X.shape[1]:
            raise AdaptnerError(
                f"Labeled docs have {L.shape[1]}-d vectors but the pool has {X.shape[1]}-d: "
                "embed both with the same pipeline."
            )
        return X, L

    def select_subset(
        self,
        docs: Sequence[Doc],
        n: int,
        *,
        nlp: Language | None,
        rng: numpy.random.Generator,
    ) -> list[int]:
        """``n`` indices by k-center over the non-empty docs, then empty docs (random order)."""
        check_query(len(docs), n)
        empty = empty_mask(docs)
        nonempty = numpy.flatnonzero(~empty)
        order: list[int] = []
        if len(nonempty):
            X, L = self._embed([docs[i] for i in nonempty], nlp)
            picks = k_center(X, min(n, len(nonempty)), rng, labeled=L)
            order = [int(nonempty[j]) for j in picks]
        if len(order) < n:
            rest = numpy.flatnonzero(empty)
            order.extend(int(rest[j]) for j in rng.permutation(len(rest))[: n - len(order)])
        return order

    def query(
        self,
        docs: Sequence[Doc],
        n: int,
        *,
        nlp: Language | None,
        rng: numpy.random.Generator,
    ) -> list[int]:
        """Indices of ``n`` spread-out docs, in selection order."""
        return self.select_subset(docs, n, nlp=nlp, rng=rng)

    def score(
        self, docs: Sequence[Doc], *, nlp: Language | None, rng: numpy.random.Generator
    ) -> numpy.ndarray:
        """The farthest-first order of the whole pool as scores; empty docs score -inf."""
        nonempty = int((~empty_mask(docs)).sum())
        if nonempty == 0:
            return numpy.full(len(docs), EMPTY_SCORE, dtype="float64")
        return order_to_scores(self.select_subset(docs, nonempty, nlp=nlp, rng=rng), len(docs))

    def __repr__(self) -> str:
        return f"DiversityStrategy(labeled_docs={len(self.labeled_docs)})"


class HybridStrategy(QueryStrategy):
    """Uncertainty first, diversity second.

    :meth:`query` takes the ``candidates_factor * n`` most uncertain docs, then picks ``n``
    of them by k-center. :meth:`score` returns the uncertainty scores (the set selection has
    no per-doc score independent of ``n``).
    """

    name = "hybrid"

    def __init__(
        self,
        uncertainty: QueryStrategy,
        candidates_factor: float = 3,
        labeled_docs: Sequence[Doc] | None = None,
    ) -> None:
        """Create the strategy.

        Args:
            uncertainty: The first-stage strategy.
            candidates_factor: Candidates kept per queried doc (>= 1).
            labeled_docs: Already-labeled docs for the k-center stage.
        """
        if candidates_factor < 1:
            raise AdaptnerError(f"candidates_factor must be >= 1, got {candidates_factor}.")
        self.uncertainty = uncertainty
        self.candidates_factor = candidates_factor
        self.diversity = DiversityStrategy(labeled_docs=labeled_docs)

    @property
    def labeled_docs(self) -> list[Doc]:
        """Already-labeled docs used by the k-center stage (may be reassigned)."""
        return self.diversity.labeled_docs

    @labeled_docs.setter
    def labeled_docs(self, docs: Sequence[Doc] | None) -> None:
        self.diversity.labeled_docs = list(docs) if docs else []

    def score(
        self, docs: Sequence[Doc], *, nlp: Language | None, rng: numpy.random.Generator
    ) -> numpy.ndarray:
        """The first-stage uncertainty scores."""
        return self.uncertainty.score(docs, nlp=nlp, rng=rng)

    def query(
        self,
        docs: Sequence[Doc],
        n: int,
        *,
        nlp: Language | None,
        rng: numpy.random.Generator,
    ) -> list[int]:
        """``n`` diverse docs among the ``candidates_factor * n`` most uncertain."""
        check_query(len(docs), n)
        k = min(len(docs), max(n, int(numpy.ceil(self.candidates_factor * n))))
        candidates = select(self.uncertainty.score(docs, nlp=nlp, rng=rng), k, rng)
        picks = self.diversity.select_subset([docs[i] for i in candidates], n, nlp=nlp, rng=rng)
        return [candidates[j] for j in picks]

    def __repr__(self) -> str:
        return (
            f"HybridStrategy(uncertainty={self.uncertainty!r}, "
            f"candidates_factor={self.candidates_factor})"
        )


@strategies_registry.register("diversity")
def make_diversity(labeled_docs: Sequence[Doc] | None = None) -> QueryStrategy:
    """Greedy k-center diversity sampling over the pipeline's own token vectors.

    Args:
        labeled_docs: Already-labeled docs (the first pick is farthest from them).
    """
    return DiversityStrategy(labeled_docs=labeled_docs)


@strategies_registry.register("hybrid")
def make_hybrid(
    uncertainty: str = "margin",
    aggregation: str | None = "mean",
    candidates_factor: float = 3,
    labeled_docs: Sequence[Doc] | None = None,
    uncertainty_params: dict | None = None,
) -> QueryStrategy:
    """Top ``candidates_factor * n`` by an uncertainty strategy, then ``n`` of them by k-center.

    Args:
        uncertainty: Name of the first-stage strategy (e.g. "margin", "entropy", "bald").
        aggregation: Passed to the first stage if it takes one (None = its default).
        candidates_factor: Candidates per queried doc (default 3).
        labeled_docs: Already-labeled docs for the k-center stage.
        uncertainty_params: Further parameters of the first stage.
    """
    if uncertainty in ("hybrid", "diversity"):
        raise AdaptnerError(
            f"hybrid's first stage must be an uncertainty strategy, not {uncertainty!r}."
        )
    params = dict(uncertainty_params or {})
    if aggregation is not None and "aggregation" not in params:
        try:
            factory = strategies_registry.get(uncertainty)
        except Exception:  # noqa: BLE001 - get_strategy below gives the clear error
            factory = None
        if factory is not None and "aggregation" in inspect.signature(factory).parameters:
            params["aggregation"] = aggregation
    first = get_strategy(uncertainty, **params)
    return HybridStrategy(first, candidates_factor=candidates_factor, labeled_docs=labeled_docs)
