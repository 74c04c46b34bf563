"""The ``bald`` strategy: MC-dropout disagreement (mutual information) of the bio_ner head.

The token vectors are computed once (tok2vec / transformer in predict mode); the head
(dropout -> linear -> softmax) is then run ``n_samples`` times with dropout on. Per token,
BALD = H(mean_k p_k) - mean_k H(p_k): high when the stochastic passes are each confident
but disagree. Running only the head stochastically keeps the K passes cheap (a transformer
is run once, not K times) and works the same for inline tok2vecs and listeners.
"""

from collections.abc import Sequence

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from thinc.api import Model

from ..components.bio_ner import softmax
from ..errors import AdaptnerError
from .base import QueryStrategy, strategies_registry
from .common import aggregate, check_aggregation, find_bio_ner, token_vectors
from .uncertainty import entropy_tokens


def head_layers(model: Model) -> list[Model]:
    """The layers of a bio_ner model after its ``tok2vec`` ref (the dropout + linear head).

    Raises:
        AdaptnerError: the model is not a chain that starts with its tok2vec.
    """
    tok2vec = model.get_ref("tok2vec") if model.has_ref("tok2vec") else None
    layers = list(model.layers)
    if tok2vec is None or tok2vec not in layers:
        raise AdaptnerError(
            "bald needs a bio_ner model built as chain(tok2vec, head) "
            "(architecture adaptner.BioTagger.v1)."
        )
    return layers[layers.index(tok2vec) + 1 :]


def dropout_nodes(layers: Sequence[Model]) -> list[Model]:
    """Every node under ``layers`` that has a dropout rate."""
    seen: dict[int, Model] = {}
    for layer in layers:
        for node in layer.walk():
            if "dropout_rate" in node.attrs:
                seen[node.id] = node
    return list(seen.values())


def mc_dropout_probs(
    nlp: Language,
    docs: Sequence[Doc],
    n_samples: int,
    seed: int,
    dropout: float | None = None,
) -> list[numpy.ndarray]:
    """``n_samples`` stochastic tag distributions per doc: arrays (n_samples x n_tokens x n_tags).

    Dropout is applied in the bio_ner head only (at its configured rate, or ``dropout``),
    driven by numpy's global RNG, which is seeded with ``seed`` and restored afterwards,
    as are the dropout rates: the pipeline predicts exactly as before when this returns.
    """
    _, bio = find_bio_ner(nlp)
    head = head_layers(bio.model)
    vectors = token_vectors(docs, nlp)
    n_tags = len(bio.tags)
    out = [numpy.zeros((n_samples, len(doc), n_tags), dtype="float64") for doc in docs]
    nonempty = [i for i, doc in enumerate(docs) if len(doc)]
    if not nonempty:
        return out
    nodes = dropout_nodes(head)
    rates = {node.id: node.attrs["dropout_rate"] for node in nodes}
    state = numpy.random.get_state()
    ops = bio.model.ops
    try:
        if dropout is not None:
            for node in nodes:
                node.attrs["dropout_rate"] = dropout
        numpy.random.seed(seed)
        X0 = [ops.asarray2f(vectors[i]) for i in nonempty]
        for k in range(n_samples):
            X = X0
            for layer in head:
                X, _ = layer(X, is_train=True)
            for i, logits in zip(nonempty, X, strict=True):
                out[i][k] = softmax(ops.to_numpy(logits))
    finally:
        numpy.random.set_state(state)
        for node in nodes:
            node.attrs["dropout_rate"] = rates[node.id]
    return out


def bald_tokens(samples: numpy.ndarray) -> numpy.ndarray:
    """BALD mutual information per token from (n_samples x n_tokens x n_tags) probabilities.

    H(mean_k p_k) - mean_k H(p_k), in nats, clipped at 0 (rounding can make it slightly
    negative when all samples agree).
    """
    samples = numpy.asarray(samples, dtype="float64")
    if samples.shape[1] == 0:
        return numpy.zeros((0,), dtype="float64")
    mean_entropy = numpy.mean([entropy_tokens(p) for p in samples], axis=0)
    mi = entropy_tokens(samples.mean(axis=0)) - mean_entropy
    return numpy.clip(mi, 0.0, None)


class BaldStrategy(QueryStrategy):
    """MC-dropout BALD: highest mutual information between the tags and the model weights."""

    name = "bald"

    def __init__(
        self, n_samples: int = 10, dropout: float | None = None, aggregation: str = "mean"
    ) -> None:
        """Create the strategy.

        Args:
            n_samples: Number of stochastic forward passes (K >= 2).
            dropout: Dropout rate for the passes; None = the head's configured rate (0.1).
            aggregation: "mean", "max" or "sum" (token MI -> sentence score).

        Raises:
            AdaptnerError: K < 2 or a dropout rate outside [0, 1).
        """
        if n_samples < 2:
            raise AdaptnerError(f"bald needs n_samples >= 2 forward passes, got {n_samples}.")
        if dropout is not None and not 0.0 <= dropout < 1.0:
            raise AdaptnerError(f"bald dropout must be in [0, 1), got {dropout}.")
        self.n_samples = n_samples
        self.dropout = dropout
        self.aggregation = check_aggregation(aggregation, "bald")

    def score(
        self, docs: Sequence[Doc], *, nlp: Language | None, rng: numpy.random.Generator
    ) -> numpy.ndarray:
        """Aggregated token BALD per doc; empty docs score -inf. Needs ``nlp``."""
        if nlp is None:
            raise AdaptnerError(
                "bald runs the bio_ner model with dropout and needs the pipeline: pass nlp=."
            )
        seed = int(rng.integers(0, 2**32 - 1))
        samples = mc_dropout_probs(nlp, docs, self.n_samples, seed, self.dropout)
        return numpy.array(
            [aggregate(bald_tokens(s), self.aggregation) for s in samples], dtype="float64"
        )

    def __repr__(self) -> str:
        return (
            f"BaldStrategy(n_samples={self.n_samples}, dropout={self.dropout}, "
            f"aggregation={self.aggregation!r})"
        )


@strategies_registry.register("bald")
def make_bald(
    n_samples: int = 10, dropout: float | None = None, aggregation: str = "mean"
) -> QueryStrategy:
    """BALD with MC dropout over the bio_ner head.

    Args:
        n_samples: Stochastic forward passes.
        dropout: Dropout rate during the passes (None = the model's own rate).
        aggregation: "mean", "max" or "sum".
    """
    return BaldStrategy(n_samples=n_samples, dropout=dropout, aggregation=aggregation)
