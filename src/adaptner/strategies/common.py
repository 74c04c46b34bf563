"""Shared strategy helpers: probabilities, token vectors and token-to-sentence aggregation."""

from collections.abc import Callable, Sequence

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.vocab import Vocab
from thinc.api import Model

from ..components.bio_ner import find_bio_ner
from ..errors import AdaptnerError
from ..scoring import fresh_doc

#: Token -> sentence aggregations understood by every token-level strategy.
AGGREGATIONS: tuple[str, ...] = ("mean", "max", "sum")

#: The score of a doc without tokens: nothing to annotate, so it is queried last.
EMPTY_SCORE: float = float("-inf")

#: Docs per batch when a strategy runs pipeline components itself.
BATCH_SIZE = 256


def check_aggregation(
    aggregation: str, strategy: str, allowed: Sequence[str] = AGGREGATIONS
) -> str:
    """Validate an ``aggregation`` parameter, naming the allowed values on error."""
    if aggregation not in allowed:
        raise AdaptnerError(
            f"Strategy {strategy!r}: unknown aggregation {aggregation!r}. "
            f"Choose one of: {', '.join(allowed)}."
        )
    return aggregation


def aggregate(token_scores: numpy.ndarray, aggregation: str) -> float:
    """One sentence score from its token scores ("mean", "max" or "sum").

    An empty sequence gets :data:`EMPTY_SCORE` (-inf), so empty docs are queried last.
    """
    if len(token_scores) == 0:
        return EMPTY_SCORE
    if aggregation == "mean":
        return float(numpy.mean(token_scores))
    if aggregation == "max":
        return float(numpy.max(token_scores))
    if aggregation == "sum":
        return float(numpy.sum(token_scores))
    raise AdaptnerError(f"Unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}.")


def _batches(items: list, size: int = BATCH_SIZE):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def get_probs(docs: Sequence[Doc], nlp: Language | None) -> list[numpy.ndarray]:
    """``doc._.ner_probs`` of every doc (float64, n_tokens x n_tags).

    Docs without probabilities are run through ``nlp`` first — on fresh copies, so the
    pool docs (which may carry gold entities) are left untouched.

    Raises:
        AdaptnerError: probabilities are missing and there is no pipeline to compute them,
            or a doc's probabilities do not match its tokens.
    """
    probs: list[numpy.ndarray | None] = [doc._.ner_probs for doc in docs]
    missing = [i for i, p in enumerate(probs) if p is None]
    if missing:
        if nlp is None:
            raise AdaptnerError(
                f"{len(missing)} of {len(docs)} pool docs (first: #{missing[0]}) have no "
                "doc._.ner_probs and no pipeline was given. Process the pool with a pipeline "
                "that has a bio_ner component, or pass nlp= to the strategy."
            )
        find_bio_ner(nlp)
        fresh = [fresh_doc(docs[i], nlp.vocab) for i in missing]
        for i, doc in zip(missing, nlp.pipe(fresh, batch_size=BATCH_SIZE), strict=True):
            probs[i] = doc._.ner_probs
    out: list[numpy.ndarray] = []
    for i, (doc, p) in enumerate(zip(docs, probs, strict=True)):
        if p is None:
            raise AdaptnerError(
                f"Pool doc #{i} still has no doc._.ner_probs after running the pipeline; "
                "is its bio_ner component disabled?"
            )
        p = numpy.asarray(p, dtype="float64")
        if p.ndim != 2 or p.shape[0] != len(doc):
            raise AdaptnerError(
                f"Pool doc #{i} has doc._.ner_probs of shape {p.shape} but {len(doc)} tokens: "
                "the probabilities are stale or misaligned. Re-run the pipeline over the pool."
            )
        out.append(p)
    return out


def token_scores_per_doc(
    docs: Sequence[Doc],
    nlp: Language | None,
    token_fn: Callable[[numpy.ndarray], numpy.ndarray],
) -> list[numpy.ndarray]:
    """Apply a token scoring function to every doc's probabilities."""
    return [token_fn(p) if len(p) else numpy.zeros((0,)) for p in get_probs(docs, nlp)]


def run_upstream(docs: list[Doc], nlp: Language, component: str) -> list[Doc]:
    """Run the components that ``component`` listens to (tok2vec / transformer) over ``docs``.

    With a listener, the bio_ner model reads ``doc.tensor`` (or ``doc._.trf_data``) in predict
    mode, so its upstream component must have processed the docs; with an inline tok2vec there
    is no upstream and the docs are returned as they are.
    """
    for name, proc in nlp.pipeline:
        if name == component:
            break
        listeners = getattr(proc, "listener_map", None) or {}
        if component in listeners:
            docs = list(proc.pipe(docs, batch_size=BATCH_SIZE))
    return docs


def token_vectors(docs: Sequence[Doc], nlp: Language) -> list[numpy.ndarray]:
    """The bio_ner model's token vectors (its ``tok2vec`` ref, predict mode) for every doc.

    Works for an inline tok2vec and for tok2vec / transformer listeners (their upstream
    component is run first, on fresh copies of the docs). Empty docs get a 0-row array.
    """
    name, bio = find_bio_ner(nlp)
    return encode_docs(
        docs, nlp.vocab, bio.model.get_ref("tok2vec"), lambda fresh: run_upstream(fresh, nlp, name)
    )


def encode_docs(
    docs: Sequence[Doc],
    vocab: Vocab,
    tok2vec: Model,
    upstream: Callable[[list[Doc]], list[Doc]],
    on_batch: Callable[[int], object] | None = None,
) -> list[numpy.ndarray]:
    """``tok2vec.predict`` vectors (float32, one row per token) for fresh copies of ``docs``,
    run through ``upstream`` (the components the tok2vec listens to) batch by batch first.
    Empty docs get a 0-row array; ``on_batch`` is called with each batch's size."""
    out: list[numpy.ndarray | None] = [None] * len(docs)
    nonempty = [i for i, doc in enumerate(docs) if len(doc)]
    for batch in _batches(nonempty):
        fresh = upstream([fresh_doc(docs[i], vocab) for i in batch])
        for i, vecs in zip(batch, tok2vec.predict(fresh), strict=True):
            out[i] = numpy.asarray(tok2vec.ops.to_numpy(vecs), dtype="float32")
        if on_batch is not None:
            on_batch(len(batch))
    width = next((v.shape[1] for v in out if v is not None), 0)
    return [v if v is not None else numpy.zeros((0, width), dtype="float32") for v in out]


def doc_embeddings(docs: Sequence[Doc], nlp: Language | None) -> numpy.ndarray:
    """Mean-pooled token vectors, one row per doc (float64; empty docs get a zero row).

    With ``nlp`` the vectors come from the bio_ner model's tok2vec; without it, from
    ``doc.tensor`` (which must then be set on every non-empty doc).

    Raises:
        AdaptnerError: no pipeline and a non-empty doc without ``doc.tensor``.
    """
    if nlp is not None:
        vectors = token_vectors(docs, nlp)
    else:
        vectors = []
        for i, doc in enumerate(docs):
            tensor = numpy.asarray(doc.tensor)
            if len(doc) and (tensor.ndim != 2 or tensor.shape[0] != len(doc)):
                raise AdaptnerError(
                    f"Doc #{i} has no token vectors (doc.tensor) and no pipeline was given. "
                    "Pass nlp= (a pipeline with a bio_ner component) to the strategy."
                )
            vectors.append(tensor if len(doc) else numpy.zeros((0, 0)))
    width = max((v.shape[1] for v in vectors if v.ndim == 2 and len(v)), default=0)
    out = numpy.zeros((len(docs), width), dtype="float64")
    for i, v in enumerate(vectors):
        if len(v):
            out[i] = v.mean(axis=0)
    return out


def empty_mask(docs: Sequence[Doc]) -> numpy.ndarray:
    """Boolean array: True for docs without tokens."""
    return numpy.array([len(doc) == 0 for doc in docs], dtype=bool)
