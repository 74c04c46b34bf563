"""Random and uncertainty strategies over doc._.ner_probs: least confidence, margin, entropy, MNLP.

Every token strategy turns a doc's probabilities (n_tokens x n_tags) into one score per
token and aggregates them to a sentence score with ``aggregation``:

- ``"mean"`` (the paper's choice): average token uncertainty, independent of length.
- ``"max"``: the single most uncertain token decides.
- ``"sum"``: total uncertainty, so longer sentences score higher.
- ``"mnlp"`` (least_confidence only): Shen et al. (2017)'s maximum normalized log-probability,
  -(1/n) * sum_i log max_j p_ij. It is the log-space, length-normalised version of least
  confidence and identical to the ``mnlp`` strategy. Margin and entropy have no ``mnlp``
  variant: their token scores are not the probability of the predicted tag, so there is no
  sequence log-probability to normalise (and the mean entropy already is the expected
  per-token negative log-probability).

Empty docs score -inf in every strategy (random included): they have nothing to annotate,
so they are queried only after every non-empty doc.
"""

from collections.abc import Callable, Sequence

import numpy
from spacy.language import Language
from spacy.tokens import Doc

from .base import QueryStrategy, strategies_registry
from .common import AGGREGATIONS, EMPTY_SCORE, aggregate, check_aggregation, empty_mask, get_probs

TokenScorer = Callable[[numpy.ndarray], numpy.ndarray]


def least_confidence_tokens(probs: numpy.ndarray) -> numpy.ndarray:
    """1 - max_j p_ij per token."""
    probs = numpy.asarray(probs, dtype="float64")
    return 1.0 - probs.max(axis=1)


def margin_tokens(probs: numpy.ndarray) -> numpy.ndarray:
    """1 - (p1 - p2) per token (top two probabilities): the flattest token scores highest."""
    probs = numpy.asarray(probs, dtype="float64")
    if probs.shape[1] < 2:
        return 1.0 - probs[:, 0] if probs.shape[1] else numpy.zeros(len(probs))
    top2 = numpy.partition(probs, -2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy_tokens(probs: numpy.ndarray) -> numpy.ndarray:
    """Shannon entropy (nats) per token; 0 * log 0 counts as 0."""
    probs = numpy.asarray(probs, dtype="float64")
    logp = numpy.log(numpy.where(probs > 0, probs, 1.0))
    return -(probs * logp).sum(axis=1)


def neg_log_max_tokens(probs: numpy.ndarray) -> numpy.ndarray:
    """-log max_j p_ij per token (the MNLP token term; finite since max_j p_ij >= 1/n_tags)."""
    probs = numpy.asarray(probs, dtype="float64")
    return -numpy.log(numpy.clip(probs.max(axis=1), 1e-300, None))


class UncertaintyStrategy(QueryStrategy):
    """Scores each doc by aggregating per-token uncertainties computed from ``doc._.ner_probs``.

    Docs without probabilities are run through ``nlp`` (on copies) first.
    """

    needs_pipeline = False

    def __init__(self, name: str, token_fn: TokenScorer, aggregation: str = "mean") -> None:
        """Create a token-level uncertainty strategy.

        Args:
            name: The registered name (used in messages).
            token_fn: Maps probabilities (n_tokens x n_tags) to one score per token.
            aggregation: "mean", "max" or "sum" (token scores -> sentence score).
        """
        self.name = name
        self.token_fn = token_fn
        self.aggregation = check_aggregation(aggregation, name)

    def token_scores(self, probs: numpy.ndarray) -> numpy.ndarray:
        """Per-token scores of one doc's probabilities."""
        if len(probs) == 0:
            return numpy.zeros((0,), dtype="float64")
        return self.token_fn(probs)

    def score_probs(self, probs: Sequence[numpy.ndarray]) -> numpy.ndarray:
        """Sentence scores from a list of probability arrays (no Docs or pipeline needed)."""
        return numpy.array(
            [aggregate(self.token_scores(p), self.aggregation) for p in probs], dtype="float64"
        )

    def score(
        self, docs: Sequence[Doc], *, nlp: Language | None, rng: numpy.random.Generator
    ) -> numpy.ndarray:
        """One score per doc; higher = less certain. Empty docs score -inf."""
        return self.score_probs(get_probs(docs, nlp))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, aggregation={self.aggregation!r})"


class RandomStrategy(QueryStrategy):
    """Uniform random scores from the injected generator (the baseline)."""

    name = "random"
    needs_pipeline = False

    def score(
        self, docs: Sequence[Doc], *, nlp: Language | None, rng: numpy.random.Generator
    ) -> numpy.ndarray:
        """Scores drawn from ``rng`` (in [0, 1)); empty docs score -inf."""
        scores = rng.random(len(docs))
        if len(docs):
            scores[empty_mask(docs)] = EMPTY_SCORE
        return scores

    def __repr__(self) -> str:
        return "RandomStrategy()"


@strategies_registry.register("random")
def make_random() -> QueryStrategy:
    """Random sampling: the baseline every other strategy is compared with."""
    return RandomStrategy()


@strategies_registry.register("least_confidence")
def make_least_confidence(aggregation: str = "mean") -> QueryStrategy:
    """Least confidence: token score 1 - max_j p_ij.

    Args:
        aggregation: "mean", "max", "sum", or "mnlp" (= the ``mnlp`` strategy).
    """
    check_aggregation(aggregation, "least_confidence", (*AGGREGATIONS, "mnlp"))
    if aggregation == "mnlp":
        return UncertaintyStrategy("least_confidence", neg_log_max_tokens, "mean")
    return UncertaintyStrategy("least_confidence", least_confidence_tokens, aggregation)


@strategies_registry.register("margin")
def make_margin(aggregation: str = "mean") -> QueryStrategy:
    """Margin: token score 1 - (p1 - p2), so the flattest token scores highest.

    Args:
        aggregation: "mean", "max" or "sum".
    """
    return UncertaintyStrategy("margin", margin_tokens, aggregation)


@strategies_registry.register("entropy")
def make_entropy(aggregation: str = "mean") -> QueryStrategy:
    """Entropy of the tag distribution per token (nats).

    Args:
        aggregation: "mean", "max" or "sum".
    """
    return UncertaintyStrategy("entropy", entropy_tokens, aggregation)


@strategies_registry.register("mnlp")
def make_mnlp() -> QueryStrategy:
    """Maximum normalized log-probability (Shen et al. 2017), higher = less confident.

    score = -(1/n) * sum_i log max_j p_ij: the negative log-probability of the per-token
    argmax sequence, divided by its length so that long sentences are not favoured.
    """
    return UncertaintyStrategy("mnlp", neg_log_max_tokens, "mean")
