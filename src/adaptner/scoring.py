"""The one NER scorer of adaptner, and the one way to predict on gold tokens.

Every F1 in the project (``adaptner evaluate`` and ``matrix``, simulation curves, session
rounds, AUM noise studies, package metadata, the ``bio_ner`` training scorer) comes from
:func:`ner_prf`, which wraps spaCy's ``get_ner_prf``. The key scheme is spaCy's:

    {"ents_p", "ents_r", "ents_f", "ents_per_type": {label: {"p", "r", "f"}}}

with 0.0 (never None) where a score is undefined, so records stay numeric. Predictions are
made on :func:`fresh_doc` copies of the gold Docs: the same tokens, no annotation, so gold
and predicted tokens align one to one.
"""

from collections.abc import Iterable, Sequence
from typing import Any

from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.vocab import Vocab

#: The micro-averaged keys of a score dict, in spaCy's naming.
PRF_KEYS: tuple[str, ...] = ("ents_p", "ents_r", "ents_f")


def fresh_doc(doc: Doc, vocab: Vocab, *, keep_norms: bool = True, keep_meta: bool = False) -> Doc:
    """An unannotated Doc with exactly ``doc``'s tokens (words and trailing spaces), in ``vocab``.

    ``doc`` is never modified. Token norms are kept by default because the tokenizer may set
    them per token (e.g. a no-break space) and they are a model feature. With ``keep_meta``
    the copy also carries ``doc._.domain`` and ``doc._.source``.
    """
    fresh = Doc(vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
    if keep_norms:
        for new, old in zip(fresh, doc, strict=True):
            if new.norm != old.norm:
                new.norm_ = old.norm_
    if keep_meta:
        fresh._.domain = doc._.domain
        fresh._.source = doc._.source
    return fresh


def predict(nlp: Language, gold_docs: Iterable[Doc], *, batch_size: int = 256) -> list[Doc]:
    """Run the whole pipeline over fresh copies of ``gold_docs`` (gold tokens, no gold labels).

    The returned Docs carry the predictions and the gold Doc's ``doc._.domain`` / ``_.source``.
    """
    copies = [fresh_doc(gold, nlp.vocab, keep_meta=True) for gold in gold_docs]
    return list(nlp.pipe(copies, batch_size=batch_size))


def complete_reference(doc: Doc) -> Doc:
    """``doc`` with unannotated tokens set to O (``doc`` itself when it is fully annotated).

    spaCy's scorer skips gold docs with no entity annotation and ignores predictions over
    unannotated gold tokens; a reader of a score expects them to count as "O". DANSK is
    fully annotated, so this only matters for hand-built docs.
    """
    if len(doc) == 0 or doc.has_annotation("ENT_IOB", require_complete=True):
        return doc
    ref = fresh_doc(doc, doc.vocab)
    ref.set_ents([Span(ref, e.start, e.end, label=e.label_) for e in doc.ents], default="outside")
    return ref


def _as_dict(prf: dict[str, Any]) -> dict[str, Any]:
    per_type = prf.get("ents_per_type") or {}
    return {
        **{key: float(prf.get(key) or 0.0) for key in PRF_KEYS},
        "ents_per_type": {
            label: {k: float(v[k] or 0.0) for k in ("p", "r", "f")}
            for label, v in sorted(per_type.items())
        },
    }


def score_examples(examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
    """spaCy's ``get_ner_prf`` on Examples, unchanged (the ``bio_ner`` training scorer)."""
    return get_ner_prf(examples, **kwargs)


def ner_prf(gold: Sequence[Doc], pred: Sequence[Doc]) -> dict[str, Any]:
    """Span P/R/F (micro, exact match) and P/R/F per type of aligned gold/predicted Docs.

    Returns:
        ``{"ents_p", "ents_r", "ents_f", "ents_per_type": {label: {"p", "r", "f"}}}``.
    """
    examples = [Example(p, complete_reference(g)) for g, p in zip(gold, pred, strict=True)]
    return _as_dict(get_ner_prf(examples))


def score_ner(
    nlp: Language, gold_docs: Sequence[Doc], *, batch_size: int = 256
) -> dict[str, Any]:
    """Predict on ``gold_docs`` and score: :func:`ner_prf` plus ``"n_docs"``."""
    preds = predict(nlp, gold_docs, batch_size=batch_size)
    return {**ner_prf(gold_docs, preds), "n_docs": len(gold_docs)}
