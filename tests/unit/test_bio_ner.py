"""Unit tests for the bio_ner component on hand-built Docs."""

import numpy
import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.training import Example

from adaptner.components.bio_ner import (
    bio_to_spans,
    make_tags,
    repair_bio,
    spans_to_bio,
    viterbi_bio,
)

TRAIN_DATA = [
    ("Mette Frederiksen bor i København .", [(0, 2, "PERSON"), (4, 5, "GPE")]),
    ("Hun arbejder for Danske Bank i Aarhus .", [(3, 5, "ORGANIZATION"), (6, 7, "GPE")]),
]


def make_examples(nlp):
    examples = []
    for text, ents in TRAIN_DATA:
        ref = nlp.make_doc(text)
        ref.ents = [Span(ref, s, e, label=label) for s, e, label in ents]
        examples.append(Example(nlp.make_doc(text), ref))
    return examples


@pytest.fixture(scope="module")
def trained():
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("da")
    nlp.add_pipe("bio_ner")
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(60):
        nlp.update(examples, sgd=optimizer, drop=0.1)
    return nlp


def test_tags_order():
    assert make_tags(["PERSON", "GPE"]) == ["O", "B-GPE", "I-GPE", "B-PERSON", "I-PERSON"]


def test_repair_orphan_inside():
    assert repair_bio(["O", "I-PER", "I-PER", "B-LOC", "I-PER"]) == [
        "O",
        "B-PER",
        "I-PER",
        "B-LOC",
        "B-PER",
    ]


def test_bio_to_spans_keeps_orphans():
    assert bio_to_spans(["I-GPE", "O", "B-PER", "I-PER", "I-GPE"]) == [
        (0, 1, "GPE"),
        (2, 4, "PER"),
        (4, 5, "GPE"),
    ]


def test_spans_bio_roundtrip():
    spans = [(0, 2, "PERSON"), (2, 3, "PERSON"), (5, 6, "WORK OF ART")]
    assert bio_to_spans(spans_to_bio(7, spans)) == spans


def test_viterbi_never_invalid():
    tags = make_tags(["PER", "LOC"])
    rng = numpy.random.default_rng(0)
    for _ in range(50):
        probs = rng.dirichlet(numpy.ones(len(tags)) * 0.3, size=6)
        seq = viterbi_bio(probs, tags)
        assert seq == repair_bio(seq)


def test_viterbi_is_the_best_valid_sequence_by_brute_force():
    """Against enumeration of every tag sequence: fast path (valid argmax) and DP alike."""
    from itertools import product

    tags = make_tags(["PER", "LOC"])
    rng = numpy.random.default_rng(1)
    n_fast = 0
    for trial in range(60):
        n = 1 + trial % 4
        probs = rng.dirichlet(numpy.ones(len(tags)) * (0.2 if trial % 2 else 3.0), size=n)
        valid = [
            seq
            for seq in product(range(len(tags)), repeat=n)
            if [tags[j] for j in seq] == repair_bio([tags[j] for j in seq])
        ]
        best = max(valid, key=lambda seq: numpy.prod(probs[numpy.arange(n), seq]))
        assert viterbi_bio(probs, tags) == [tags[j] for j in best]
        greedy = [tags[j] for j in probs.argmax(axis=1)]
        n_fast += greedy == repair_bio(greedy)
    assert 0 < n_fast < 60  # both paths were exercised


def test_viterbi_prefers_valid_sequence():
    tags = make_tags(["PER", "LOC"])  # O B-LOC I-LOC B-PER I-PER
    probs = numpy.full((2, 5), 0.01)
    probs[0, 1] = 0.5  # B-LOC
    probs[0, 3] = 0.45  # B-PER
    probs[1, 4] = 0.9  # I-PER, only valid after B-PER
    probs /= probs.sum(1, keepdims=True)
    assert viterbi_bio(probs, tags) == ["B-PER", "I-PER"]


def test_overfit_two_sentences(trained):
    for text, ents in TRAIN_DATA:
        doc = trained(text)
        assert [(e.start, e.end, e.label_) for e in doc.ents] == ents


def test_probabilities(trained):
    ner = trained.get_pipe("bio_ner")
    doc = trained("Mette Frederiksen bor i København .")
    probs = doc._.ner_probs
    assert probs.dtype == numpy.float32
    assert probs.shape == (len(doc), len(ner.tags))
    numpy.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert ner.tags[0] == "O"
    assert ner.tags[int(probs[0].argmax())] == "B-PERSON"


def test_empty_doc_and_batch(trained):
    doc = trained("")
    assert len(doc.ents) == 0
    assert doc._.ner_probs.shape == (0, len(trained.get_pipe("bio_ner").tags))
    assert list(trained.pipe([])) == []
    docs = list(trained.pipe(["", "Mette Frederiksen bor i København ."]))
    assert len(docs[1].ents) == 2


def test_decode_repairs_orphan_inside(trained):
    ner = trained.get_pipe("bio_ner")
    tags = list(ner.tags)
    doc = trained.make_doc("a b c")
    probs = numpy.zeros((3, len(tags)), dtype="float32")
    probs[0, tags.index("O")] = 1
    probs[1, tags.index("I-GPE")] = 1
    probs[2, tags.index("I-GPE")] = 1
    ner.set_annotations([doc], [probs])
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [(1, 3, "GPE")]


def test_serialization_roundtrip(trained, tmp_path):
    text = "Hun arbejder for Danske Bank i Aarhus ."
    expected = trained(text)
    trained.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    got = loaded(text)
    assert loaded.get_pipe("bio_ner").tags == trained.get_pipe("bio_ner").tags
    numpy.testing.assert_allclose(got._.ner_probs, expected._.ner_probs, rtol=1e-5)
    nlp2 = spacy.blank("da")
    nlp2.add_pipe("bio_ner")
    nlp2.from_bytes(trained.to_bytes())
    assert [e.text for e in nlp2(text).ents] == [e.text for e in expected.ents]


def test_initialize_with_fixed_labels():
    nlp = spacy.blank("da")
    ner = nlp.add_pipe("bio_ner")
    from adaptner.labels import ONTONOTES_LABELS

    ner.initialize(lambda: make_examples(nlp), nlp=nlp, labels=ONTONOTES_LABELS)
    assert len(ner.tags) == 1 + 2 * 18
    doc = nlp("Mette bor i Aarhus")
    assert doc._.ner_probs.shape == (4, 37)


def test_missing_gold_is_ignored():
    nlp = spacy.blank("da")
    ner = nlp.add_pipe("bio_ner")
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    words = ["Mette", "bor", "her"]
    ref = Doc(nlp.vocab, words=words, ents=["B-PERSON", "", ""])  # "" = unknown
    eg = Example(Doc(nlp.vocab, words=words), ref)
    assert ner.gold_tags(eg) == ["B-PERSON", None, None]
    logits = ner.model.predict([eg.predicted])
    loss, grads = ner.get_loss([eg], logits)
    assert numpy.all(grads[0][1:] == 0)
    assert numpy.any(grads[0][0] != 0)
    assert loss > 0


def test_unknown_decoder():
    nlp = spacy.blank("da")
    with pytest.raises(ValueError, match="Unknown decoder"):
        nlp.add_pipe("bio_ner", config={"decoder": "beam"})


def test_head_dropout_is_its_own_rate():
    nlp = spacy.blank("da")
    ner = nlp.add_pipe("bio_ner", config={"model": {"dropout": 0.3}})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    nlp.update(examples, sgd=optimizer, drop=0.1)
    head = ner.model.get_ref("head_dropout")
    assert head.attrs["dropout_rate"] == pytest.approx(0.3)
    tok2vec_rates = [
        node.attrs["dropout_rate"]
        for node in ner.model.get_ref("tok2vec").walk()
        if "dropout_rate" in node.attrs
    ]
    assert tok2vec_rates and all(r == pytest.approx(0.1) for r in tok2vec_rates)


def test_head_with_hidden_layer_learns_and_round_trips(tmp_path):
    """BioTagger.v2 with a maxout hidden layer: trains, predicts, saves and loads."""
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("da")
    tok2vec = {
        "@architectures": "spacy.HashEmbedCNN.v2",
        "pretrained_vectors": None,
        "width": 48,
        "depth": 2,
        "embed_size": 500,
        "window_size": 1,
        "maxout_pieces": 3,
        "subword_features": True,
    }
    config = {
        "model": {
            "@architectures": "adaptner.BioTagger.v2",
            "hidden_width": 32,
            "tok2vec": tok2vec,
        }
    }
    ner = nlp.add_pipe("bio_ner", config=config)
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(60):
        nlp.update(examples, sgd=optimizer, drop=0.1)
    output_layer = ner.model.get_ref("output_layer")
    assert output_layer.get_dim("nI") == 32
    for text, ents in TRAIN_DATA:
        assert [(e.start, e.end, e.label_) for e in nlp(text).ents] == ents
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    text = TRAIN_DATA[0][0]
    numpy.testing.assert_allclose(loaded(text)._.ner_probs, nlp(text)._.ner_probs, rtol=1e-5)


def test_head_v2_without_hidden_layer_is_v1():
    from thinc.api import Relu

    from adaptner.architectures import build_bio_tagger, build_bio_tagger_v2

    def names(model):
        return [node.name for node in model.walk()]

    v1 = build_bio_tagger(Relu(nO=8, nI=4), nO=5)
    v2 = build_bio_tagger_v2(Relu(nO=8, nI=4), nO=5, hidden_width=0)
    assert names(v1) == names(v2)
    with pytest.raises(ValueError, match="hidden_width"):
        build_bio_tagger_v2(Relu(nO=8, nI=4), nO=5, hidden_width=-1)
