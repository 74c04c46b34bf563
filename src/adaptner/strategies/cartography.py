"""The ``cartography`` strategy: uncertainty sampling that avoids predicted hard-to-learn docs.

Data maps (Swayamdipta et al. 2020) show that the hard-to-learn region (low confidence in the
gold label, low variability across epochs) holds many mislabelled or hopeless examples,
which uncertainty sampling likes to pick. This strategy ranks the pool by an uncertainty
strategy and excludes (or down-weights) pool docs that look like known hard-to-learn docs.

Hardness of a pool doc = the share of hard-to-learn docs among its ``k`` nearest reference
docs (cosine similarity of mean-pooled token vectors of the current pipeline). The reference
docs and their hardness come from one of:

- ``"labeled"``: the docs labelled so far (``labeled_docs``, passed by the simulation each
  round). The current pipeline was trained on them; those whose gold tags it still gives a
  mean probability below ``conf_threshold`` are hard-to-learn. This needs no extra files.
- ``"dynamics"``: a dynamics recording of the source pipeline's training (``adaptner
  datamap``'s ``dynamics/`` folder); its data-map region decides (``conf_threshold``,
  ``var_threshold``).

Without reference docs (round 1, or none hard) the strategy is the plain uncertainty strategy.
"""

import inspect
from collections.abc import Sequence
from pathlib import Path

import numpy
from spacy.language import Language
from spacy.tokens import Doc

from ..errors import AdaptnerError
from .base import QueryStrategy, get_strategy, strategies_registry
from .common import EMPTY_SCORE, doc_embeddings, find_bio_ner, fresh_doc, get_probs

#: Where the reference docs come from.
REFERENCES = ("auto", "labeled", "dynamics")
#: What happens to predicted hard-to-learn docs.
MODES = ("exclude", "downweight")


def knn_hardness(
    pool: numpy.ndarray,
    reference: numpy.ndarray,
    hard: numpy.ndarray,
    k: int,
    *,
    center: bool = True,
) -> numpy.ndarray:
    """Share of hard reference rows among the ``k`` most cosine-similar ones, per pool row.

    Args:
        pool: Pool embeddings (n x d).
        reference: Reference embeddings (m x d).
        hard: Whether each reference row is hard-to-learn (m,).
        k: Neighbours (clipped to m).
        center: Subtract the mean of all rows first. Mean-pooled token vectors share a large
            common direction, so uncentred cosine similarity makes a few reference docs the
            nearest neighbour of almost every pool doc.

    Returns:
        Floats in [0, 1] (zeros when there are no reference rows).
    """
    pool = numpy.asarray(pool, dtype="float64")
    reference = numpy.asarray(reference, dtype="float64")
    hard = numpy.asarray(hard, dtype="float64")
    if len(pool) == 0 or len(reference) == 0:
        return numpy.zeros(len(pool))
    k = max(1, min(k, len(reference)))
    if center:
        mean = numpy.concatenate([pool, reference]).mean(axis=0)
        pool, reference = pool - mean, reference - mean

    def unit(x: numpy.ndarray) -> numpy.ndarray:
        norm = numpy.linalg.norm(x, axis=1, keepdims=True)
        return x / numpy.where(norm > 0, norm, 1.0)

    sims = unit(pool) @ unit(reference).T
    # stable: ties go to the lower reference index
    order = numpy.argsort(-sims, axis=1, kind="stable")[:, :k]
    return hard[order].mean(axis=1)


def gold_confidence(gold_docs: Sequence[Doc], nlp: Language) -> numpy.ndarray:
    """Mean probability the pipeline gives the gold tags of each doc's entity tokens.

    Tokens whose gold tag is O, missing, or unknown to bio_ner are left out (as in the data
    maps); docs without entity tokens get NaN.
    """
    _, bio = find_bio_ner(nlp)
    index = {tag: i for i, tag in enumerate(bio.tags)}
    fresh = [fresh_doc(d, nlp.vocab) for d in gold_docs]
    out = numpy.full(len(gold_docs), numpy.nan)
    for i, (gold, probs) in enumerate(zip(gold_docs, get_probs(fresh, nlp), strict=True)):
        vals = []
        for t, token in enumerate(gold):
            if token.ent_iob_ in ("B", "I"):
                j = index.get(f"{token.ent_iob_}-{token.ent_type_}")
                if j is not None:
                    vals.append(probs[t, j])
        if vals:
            out[i] = float(numpy.mean(vals))
    return out


class CartographyStrategy(QueryStrategy):
    """Uncertainty ranking; pool docs whose neighbours are hard-to-learn go last (or lower)."""

    name = "cartography"

    def __init__(
        self,
        uncertainty: QueryStrategy,
        *,
        reference: str = "auto",
        labeled_docs: Sequence[Doc] | None = None,
        dynamics: str | Path | None = None,
        k: int = 3,
        max_hardness: float = 0.5,
        mode: str = "exclude",
        weight: float = 1.0,
        conf_threshold: float = 0.5,
        var_threshold: float = 0.2,
        max_reference: int = 3000,
        hard_quantile: float = 0.0,
    ) -> None:
        """Create the strategy.

        Args:
            uncertainty: The ranking strategy (scores >= 0, higher = less certain).
            reference: "labeled", "dynamics", or "auto" (dynamics when given, else labeled).
            labeled_docs: Gold docs labelled so far (reference "labeled").
            dynamics: A dynamics folder of the source pipeline's training (reference
                "dynamics").
            k: Nearest reference docs per pool doc.
            max_hardness: "exclude" mode: docs with predicted hardness above this go last.
            mode: "exclude" (hard docs ranked after all others) or "downweight"
                (score * (1 - weight * hardness)).
            weight: Strength of the down-weighting, in [0, 1].
            conf_threshold: Below this gold confidence a reference doc is hard-to-learn.
            var_threshold: "dynamics": at or above this variability a doc is ambiguous, not
                hard.
            max_reference: Use at most this many reference docs (a fixed sample).
            hard_quantile: If > 0, the reference docs in this lowest share of gold
                confidence are the hard ones instead of the fixed thresholds (a source whose
                data map has no hard-to-learn region still marks its least-learned docs).
        """
        if reference not in REFERENCES:
            raise AdaptnerError(
                f"cartography: unknown reference {reference!r}; "
                f"choose from {', '.join(REFERENCES)}."
            )
        if mode not in MODES:
            raise AdaptnerError(
                f"cartography: unknown mode {mode!r}; choose from {', '.join(MODES)}."
            )
        if k < 1 or max_reference < 1:
            raise AdaptnerError(
                f"cartography: k and max_reference must be >= 1 (got {k}, {max_reference})."
            )
        if not 0.0 <= weight <= 1.0 or not 0.0 <= max_hardness <= 1.0:
            raise AdaptnerError(
                f"cartography: weight and max_hardness must be in [0, 1] (got {weight}, "
                f"{max_hardness})."
            )
        if not 0.0 <= hard_quantile < 1.0:
            raise AdaptnerError(
                f"cartography: hard_quantile must be in [0, 1), got {hard_quantile}."
            )
        if reference == "auto":
            reference = "dynamics" if dynamics is not None else "labeled"
        if reference == "dynamics" and dynamics is None:
            raise AdaptnerError(
                "cartography: reference 'dynamics' needs dynamics=<folder>, a recording of the "
                "source pipeline's training (`adaptner datamap ... -o DIR` writes DIR/dynamics)."
            )
        self.uncertainty = uncertainty
        self.reference = reference
        self.labeled_docs = list(labeled_docs or [])
        self.dynamics = Path(dynamics) if dynamics is not None else None
        self.k = k
        self.max_hardness = max_hardness
        self.mode = mode
        self.weight = weight
        self.conf_threshold = conf_threshold
        self.var_threshold = var_threshold
        self.max_reference = max_reference
        self.hard_quantile = hard_quantile
        self._dynamics_docs: tuple[list[dict], numpy.ndarray] | None = None

    # --- reference set -------------------------------------------------------------------
    def _dynamics_reference(self) -> tuple[list[dict], numpy.ndarray]:
        """Recorded docs with statistics and whether each is hard-to-learn (read once)."""
        if self._dynamics_docs is None:
            from ..dynamics.stats import compute_datamap, load_dynamics, regions

            assert self.dynamics is not None
            dm = compute_datamap(load_dynamics(self.dynamics), exclude_o=True)
            s = dm.sentences
            keep = numpy.flatnonzero(s.n_epochs > 0)
            if len(keep) > self.max_reference:
                keep = numpy.sort(
                    numpy.random.default_rng(0).choice(keep, self.max_reference, replace=False)
                )
            if self.hard_quantile > 0:
                hard = self._lowest(s.confidence[keep])
            else:
                reg = regions(
                    s.confidence[keep],
                    s.variability[keep],
                    conf_threshold=self.conf_threshold,
                    var_threshold=self.var_threshold,
                )
                hard = reg == "hard-to-learn"
            docs = dm.dynamics.docs()
            self._dynamics_docs = ([docs[i] for i in keep], hard)
        return self._dynamics_docs

    def reference_set(self, nlp: Language) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Embeddings of the reference docs (m x d) and whether each is hard-to-learn (m,)."""
        if self.reference == "dynamics":
            records, hard = self._dynamics_reference()
            docs = [Doc(nlp.vocab, words=r["words"], spaces=r["spaces"]) for r in records]
        else:
            docs = [d for d in self.labeled_docs if len(d)][-self.max_reference :]
            conf = gold_confidence(docs, nlp) if docs else numpy.zeros(0)
            keep = ~numpy.isnan(conf)
            docs = [d for d, ok in zip(docs, keep, strict=True) if ok]
            if self.hard_quantile > 0 and len(docs):
                hard = self._lowest(conf[keep])
            else:
                hard = conf[keep] < self.conf_threshold
        if not docs or not hard.any():
            return numpy.zeros((0, 0)), numpy.zeros(0, dtype=bool)
        return doc_embeddings(docs, nlp), hard

    def _lowest(self, confidence: numpy.ndarray) -> numpy.ndarray:
        """Whether each confidence is in the lowest ``hard_quantile`` share."""
        return confidence <= numpy.quantile(confidence, self.hard_quantile)

    def hardness(self, docs: Sequence[Doc], nlp: Language | None) -> numpy.ndarray:
        """Predicted hardness of every pool doc in [0, 1] (0 without a reference set)."""
        if nlp is None:
            if self.reference == "dynamics" or self.labeled_docs:
                raise AdaptnerError(
                    "cartography needs the pipeline (nlp=) to embed the pool and reference docs."
                )
            return numpy.zeros(len(docs))
        reference, hard = self.reference_set(nlp)
        if len(reference) == 0:
            return numpy.zeros(len(docs))
        return knn_hardness(doc_embeddings(docs, nlp), reference, hard, self.k)

    # --- scoring -------------------------------------------------------------------------
    def score(
        self, docs: Sequence[Doc], *, nlp: Language | None, rng: numpy.random.Generator
    ) -> numpy.ndarray:
        """Uncertainty scores, with predicted hard-to-learn docs moved last or scaled down."""
        base = numpy.asarray(self.uncertainty.score(docs, nlp=nlp, rng=rng), dtype="float64")
        if len(docs) == 0:
            return base
        finite = numpy.isfinite(base)
        if not finite.any():
            return base
        hardness = self.hardness(docs, nlp)
        if self.mode == "exclude":
            shift = float(base[finite].max() - base[finite].min()) + 1.0
            out = numpy.where(hardness > self.max_hardness, base - shift, base)
        else:
            out = base * (1.0 - self.weight * hardness)
        out[~finite] = base[~finite]
        empty = numpy.array([len(d) == 0 for d in docs])
        out[empty] = EMPTY_SCORE
        return out

    def __repr__(self) -> str:
        return (
            f"CartographyStrategy(uncertainty={self.uncertainty!r}, reference={self.reference!r}, "
            f"mode={self.mode!r}, k={self.k})"
        )


@strategies_registry.register("cartography")
def make_cartography(
    uncertainty: str = "margin",
    aggregation: str | None = "mean",
    reference: str = "auto",
    dynamics: str | None = None,
    labeled_docs: Sequence[Doc] | None = None,
    k: int = 3,
    max_hardness: float = 0.5,
    mode: str = "exclude",
    weight: float = 1.0,
    conf_threshold: float = 0.5,
    var_threshold: float = 0.2,
    max_reference: int = 3000,
    hard_quantile: float = 0.0,
) -> QueryStrategy:
    """Uncertainty-ranked candidates, excluding (or down-weighting) predicted hard-to-learn docs.

    Args:
        uncertainty: Name of the ranking strategy ("margin", "entropy", ...).
        aggregation: Passed to it if it takes one (None = its default).
        reference: "labeled" (docs labelled so far), "dynamics" (a recording of the source
            pipeline's training) or "auto" (dynamics when given, else labeled).
        dynamics: The dynamics folder for reference "dynamics".
        labeled_docs: Docs labelled so far (the simulation passes them each round).
        k: Nearest reference docs per pool doc.
        max_hardness: "exclude": predicted hardness above this sends a doc to the back.
        mode: "exclude" or "downweight".
        weight: "downweight": score * (1 - weight * hardness).
        conf_threshold: Gold confidence below which a reference doc is hard-to-learn.
        var_threshold: Variability at or above which a recorded doc is ambiguous instead.
        max_reference: Cap on the number of reference docs.
        hard_quantile: If > 0, the lowest-confidence share of reference docs is hard instead
            of the thresholds.
    """
    if uncertainty in ("cartography", "hybrid", "diversity", "random"):
        raise AdaptnerError(f"cartography ranks with an uncertainty strategy, not {uncertainty!r}.")
    params: dict = {}
    if aggregation is not None:
        try:
            factory = strategies_registry.get(uncertainty)
        except Exception:  # noqa: BLE001 - get_strategy below gives the clear error
            factory = None
        if factory is not None and "aggregation" in inspect.signature(factory).parameters:
            params["aggregation"] = aggregation
    return CartographyStrategy(
        get_strategy(uncertainty, **params),
        reference=reference,
        labeled_docs=labeled_docs,
        dynamics=dynamics,
        k=k,
        max_hardness=max_hardness,
        mode=mode,
        weight=weight,
        conf_threshold=conf_threshold,
        var_threshold=var_threshold,
        max_reference=max_reference,
        hard_quantile=hard_quantile,
    )
