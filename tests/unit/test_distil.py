"""The soft-target (distillation) term of bio_ner's loss on hand-built Docs."""

import numpy
import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.training import Example

from adaptner.components.bio_ner import make_tags, softmax
from adaptner.errors import AdaptnerError

LABELS = ["GPE", "PERSON"]
TEXTS = [
    ("Mette Frederiksen bor i København .", [(0, 2, "PERSON"), (4, 5, "GPE")]),
    ("Hun flyttede til Aarhus .", [(3, 4, "GPE")]),
]


def make_nlp(**cfg):
    nlp = spacy.blank("da")
    nlp.add_pipe("bio_ner", config=cfg)
    return nlp


def make_examples(nlp, *, teacher=None, tags=None, gold=True, rng=None):
    """Examples over TEXTS; with ``teacher`` = "random", random teacher rows per reference doc."""
    rng = rng or numpy.random.default_rng(0)
    examples = []
    n_tags = 1 + 2 * len(LABELS)
    for text, ents in TEXTS:
        ref = nlp.make_doc(text)
        if gold:
            ref.ents = [Span(ref, s, e, label=label) for s, e, label in ents]
        if teacher == "random":
            ref._.teacher_probs = softmax(rng.normal(size=(len(ref), n_tags)) * 2)
            ref._.teacher_tags = list(tags or nlp.get_pipe("bio_ner").tags)
        examples.append(Example(nlp.make_doc(text), ref))
    return examples


def initialized(**cfg):
    nlp = make_nlp(**cfg)
    pipe = nlp.get_pipe("bio_ner")
    pipe.cfg["labels"] = sorted(LABELS)
    return nlp, pipe


def random_logits(examples, seed=1):
    rng = numpy.random.default_rng(seed)
    return [rng.normal(size=(len(eg.predicted), 5)).astype("float32") for eg in examples]


def old_gold_loss(pipe, examples, logits):
    """bio_ner's loss before distillation existed (verbatim), the reference for α = 0."""
    tag_index = {tag: i for i, tag in enumerate(pipe.tags)}
    loss = 0.0
    grads = []
    for eg, doc_logits in zip(examples, logits, strict=True):
        probs = softmax(doc_logits)
        d = probs.copy()
        for i, tag in enumerate(pipe.gold_tags(eg)):
            if tag is None:
                d[i] = 0.0
                continue
            j = tag_index.get(tag)
            if j is None:
                d[i] = 0.0
                continue
            d[i, j] -= 1.0
            loss -= float(numpy.log(max(probs[i, j], 1e-12)))
        grads.append(d)
    return loss, grads


@pytest.mark.parametrize("weight,teacher", [(0.0, "random"), (0.0, None), (0.7, None)])
def test_no_soft_term_is_exactly_the_old_loss(weight, teacher):
    nlp, pipe = initialized(distill_weight=weight)
    examples = make_examples(nlp, teacher=teacher)
    logits = random_logits(examples)
    loss, grads = pipe.get_loss(examples, logits)
    ref_loss, ref_grads = old_gold_loss(pipe, examples, logits)
    assert loss == ref_loss
    for g, r in zip(grads, ref_grads, strict=True):
        assert numpy.array_equal(numpy.asarray(g), r)


def _total_loss(pipe, examples, logits):
    return pipe.get_loss(examples, logits)[0]


@pytest.mark.parametrize("weight,temperature,gold", [(0.5, 1.0, True), (0.3, 2.0, True),
                                                     (0.5, 1.5, False)])
def test_soft_term_gradient_matches_finite_differences(weight, temperature, gold):
    nlp, pipe = initialized(distill_weight=weight, temperature=temperature)
    examples = make_examples(nlp, teacher="random", gold=gold)
    logits = random_logits(examples)
    _, grads = pipe.get_loss(examples, logits)
    eps = 1e-2
    for k in range(len(logits)):
        numeric = numpy.zeros_like(logits[k], dtype="float64")
        for i in range(logits[k].shape[0]):
            for j in range(logits[k].shape[1]):
                plus = [x.copy() for x in logits]
                minus = [x.copy() for x in logits]
                plus[k][i, j] += eps
                minus[k][i, j] -= eps
                numeric[i, j] = (
                    _total_loss(pipe, examples, plus) - _total_loss(pipe, examples, minus)
                ) / (2 * eps)
        numpy.testing.assert_allclose(numpy.asarray(grads[k]), numeric, atol=2e-3, rtol=1e-2)


def test_soft_term_changes_the_loss_and_pulls_towards_the_teacher():
    nlp, pipe = initialized(distill_weight=1.0)
    examples = make_examples(nlp, teacher="random", gold=False)
    # The student already predicts the teacher's distribution: the gradient vanishes.
    logits = [numpy.log(eg.reference._.teacher_probs).astype("float32") for eg in examples]
    loss, grads = pipe.get_loss(examples, logits)
    assert loss > 0  # the teacher's entropy
    for g in grads:
        numpy.testing.assert_allclose(numpy.asarray(g), 0.0, atol=1e-6)


def test_unlabelled_docs_learn_from_the_teacher_alone():
    nlp, pipe = initialized(distill_weight=0.4)
    examples = make_examples(nlp, teacher="random", gold=False)
    logits = random_logits(examples)
    _, grads = pipe.get_loss(examples, logits)
    for eg, x, g in zip(examples, logits, grads, strict=True):
        expected = 0.4 * (softmax(x) - eg.reference._.teacher_probs)
        numpy.testing.assert_allclose(numpy.asarray(g), expected, atol=1e-6)


def test_teacher_tag_order_mismatch_is_named():
    nlp, pipe = initialized(distill_weight=0.5)
    swapped = ["O", "B-PERSON", "I-PERSON", "B-GPE", "I-GPE"]
    examples = make_examples(nlp, teacher="random", tags=swapped)
    with pytest.raises(AdaptnerError, match="tag columns.*differ from bio_ner's 5 tags"):
        pipe.get_loss(examples, random_logits(examples))


def test_teacher_shape_mismatch_is_named():
    nlp, pipe = initialized(distill_weight=0.5)
    examples = make_examples(nlp, teacher="random")
    examples[0].reference._.teacher_probs = numpy.ones((2, 5), dtype="float32") / 5
    with pytest.raises(AdaptnerError, match=r"shape \(2, 5\), expected \(6, 5\)"):
        pipe.get_loss(examples, random_logits(examples))


def test_other_tokenization_uses_one_to_one_tokens_only():
    nlp, pipe = initialized(distill_weight=1.0)
    words, spaces = ["Mette", "Frederiksen", "bor", "i", "København."], [1, 1, 1, 1, 0]
    ref = Doc(nlp.vocab, words=words, spaces=[bool(s) for s in spaces])
    teacher = softmax(numpy.random.default_rng(3).normal(size=(5, 5)))
    ref._.teacher_probs, ref._.teacher_tags = teacher, list(pipe.tags)
    eg = Example(nlp.make_doc(ref.text), ref)  # "København" "." : two tokens for one
    assert len(eg.predicted) == 6
    probs, mask = pipe.teacher_targets(eg)
    assert mask.tolist() == [True, True, True, True, False, False]
    numpy.testing.assert_array_equal(probs[:4], teacher[:4])
    _, grads = pipe.get_loss([eg], random_logits([eg]))
    assert not numpy.asarray(grads[0])[4:].any()  # no gold, no one-to-one teacher row


def test_initialize_without_teacher_probs_is_refused():
    nlp = make_nlp(distill_weight=0.5)
    examples = make_examples(nlp)
    with pytest.raises(AdaptnerError, match="no training doc has teacher probabilities"):
        nlp.initialize(lambda: examples)


def test_distillation_trains():
    spacy.util.fix_random_seed(0)
    nlp = make_nlp(distill_weight=0.5, temperature=2.0)
    examples = make_examples(nlp, teacher="random", tags=make_tags(LABELS))
    optimizer = nlp.initialize(lambda: examples)
    losses = [nlp.update(examples, sgd=optimizer)["bio_ner"] for _ in range(30)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("cfg", [{"distill_weight": 1.5}, {"temperature": 0.0}])
def test_bad_settings(cfg):
    with pytest.raises(ValueError):
        make_nlp(**cfg)
