"""The query-strategy interface, the registry, and the shared selection rule."""

from collections.abc import Sequence
from typing import Any

import catalogue
import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry

from ..errors import AdaptnerError

# One guarded registry: creating it twice (re-import) must not fail.
if not hasattr(registry, "al_strategies"):
    registry.create("al_strategies", entry_points=True)
strategies_registry: catalogue.Registry = registry.al_strategies  # type: ignore[attr-defined]


class QueryStrategy:
    """Scores pool documents; higher score = query first.

    Subclasses implement :meth:`score`. Docs arrive already processed by the current
    pipeline (so ``doc._.ner_probs`` is set) unless a strategy needs the pipeline itself
    (e.g. MC-dropout), in which case it uses ``nlp``.
    """

    name: str = "base"
    #: Whether :meth:`score` or :meth:`query` uses ``nlp`` (MC-dropout, embeddings, the
    #: transformer's word pieces); False: the processed docs alone decide, so docs scored
    #: earlier by the same model give the same choice (a session reuses them).
    needs_pipeline: bool = True

    def score(
        self, docs: Sequence[Doc], *, nlp: Language | None, rng: numpy.random.Generator
    ) -> numpy.ndarray:
        """One float per doc (float64 array of len(docs)); higher = more worth annotating."""
        raise NotImplementedError

    def query(
        self,
        docs: Sequence[Doc],
        n: int,
        *,
        nlp: Language | None,
        rng: numpy.random.Generator,
    ) -> list[int]:
        """Indices (into ``docs``) of the ``n`` docs to annotate next."""
        check_query(len(docs), n)
        return select(self.score(docs, nlp=nlp, rng=rng), n, rng)


def check_query(pool_size: int, n: int) -> None:
    """Raise a clear error for an empty pool, a non-positive n, or n larger than the pool."""
    if pool_size == 0:
        raise AdaptnerError("The pool is empty: nothing left to query.")
    if n <= 0:
        raise AdaptnerError(f"Query size must be positive, got {n}.")
    if n > pool_size:
        raise AdaptnerError(
            f"Query size {n} is larger than the pool ({pool_size} documents left). "
            "Lower the query size or use a larger pool."
        )


def select(scores: Sequence[float], n: int, rng: numpy.random.Generator) -> list[int]:
    """The indices of the ``n`` highest scores; ties broken at random by ``rng``.

    NaN scores rank last. Deterministic for a given generator state.
    """
    scores = numpy.asarray(scores, dtype="float64")
    check_query(len(scores), n)
    scores = numpy.where(numpy.isnan(scores), -numpy.inf, scores)
    tiebreak = rng.random(len(scores))
    order = numpy.lexsort((tiebreak, -scores))  # primary: score desc; secondary: random
    return [int(i) for i in order[:n]]


def get_strategy(name: str, **params: Any) -> QueryStrategy:
    """Create a registered strategy by name, e.g. ``get_strategy("margin", aggregation="mean")``."""
    try:
        factory = strategies_registry.get(name)
    except catalogue.RegistryError:
        raise AdaptnerError(
            f"Unknown strategy {name!r}. Known: {', '.join(strategy_names())}."
        ) from None
    return factory(**params)


def strategy_names() -> list[str]:
    """Every registered strategy name, sorted."""
    return sorted(strategies_registry.get_all())
