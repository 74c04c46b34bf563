"""Unit tests for the query strategies: the shared contract, then hand-made cases per strategy."""

import math
from importlib.metadata import entry_points
from itertools import product
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.util import load_config, load_model_from_config
from thinc.api import Ragged

import adaptner.strategies as strategies
from adaptner.errors import AdaptnerError
from adaptner.strategies import get_strategy, k_center, strategy_names
from adaptner.strategies.bald import bald_tokens, dropout_nodes, head_layers
from adaptner.strategies.common import fresh_doc, token_vectors
from adaptner.strategies.vocab import source_counts_from_docbin, wordpiece_ids

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"

EXPECTED = {
    "random",
    "least_confidence",
    "margin",
    "entropy",
    "mnlp",
    "vocab",
    "bald",
    "diversity",
    "hybrid",
}

# --- hand-built Danish sentences --------------------------------------------------------------

NAMES = ["Mette Frederiksen", "Lars", "Anna Hansen", "Peter"]
CITIES = ["København", "Aarhus", "Odense", "Aalborg", "Esbjerg"]
ORGS = ["Novo Nordisk", "DR", "Mærsk"]


def make_doc(vocab, words, ents=()):
    """A Doc from words (space-separated, no space before final punctuation) and entity spans."""
    spaces = [i + 1 < len(words) and words[i + 1] not in ".,!?" for i in range(len(words))]
    doc = Doc(vocab, words=words, spaces=spaces)
    doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
    return doc


def sentence(vocab, name, city, org, variant):
    n = name.split()
    if variant == 0:
        words = [*n, "bor", "i", city, "."]
        ents = [(0, len(n), "PERSON"), (len(n) + 2, len(n) + 3, "GPE")]
    elif variant == 1:
        o = org.split()
        words = [*n, "arbejder", "for", *o, "i", city, "."]
        k = len(n) + 2
        ents = [(0, len(n), "PERSON"), (k, k + len(o), "ORGANIZATION")]
        ents.append((k + len(o) + 1, k + len(o) + 2, "GPE"))
    else:
        words = ["Det", "regner", "i", city, "i", "dag", "."]
        ents = [(3, 4, "GPE"), (4, 6, "DATE")]
    return make_doc(vocab, words, ents)


def corpus(vocab):
    """60 distinct sentences in a fixed shuffled order."""
    combos = list(product(NAMES, CITIES, ORGS))
    docs = [sentence(vocab, *combo, i % 3) for i, combo in enumerate(combos)]
    order = numpy.random.default_rng(1).permutation(len(docs))
    return [docs[i] for i in order]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nlp():
    """The tiny test config (tok2vec + listening bio_ner), initialized and trained a few steps."""
    nlp = load_model_from_config(load_config(TEST_CONFIG), auto_fill=True, validate=True)
    train = corpus(nlp.vocab)[:24]
    examples = [Example(nlp.make_doc(d.text), d) for d in train]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer, drop=0.1)
    return nlp


@pytest.fixture(scope="module")
def pool(nlp):
    """40 gold docs (no ner_probs), with texts unlike the training order."""
    docs = corpus(nlp.vocab)[20:]
    assert len(docs) == 40
    return docs


@pytest.fixture(scope="module")
def source_docs(nlp):
    return corpus(nlp.vocab)[:12]


def strategy_params(name, source_docs):
    """Required construction params; every other strategy is built with its defaults."""
    return {"vocab": {"source_docs": source_docs}}.get(name, {})


def build(name, source_docs):
    return get_strategy(name, **strategy_params(name, source_docs))


def rng(seed=0):
    return numpy.random.default_rng(seed)


# --- registry ---------------------------------------------------------------------------------


def test_registry_has_all_strategies():
    assert EXPECTED <= set(strategy_names())


def test_entry_points_match_registry():
    group = {ep.name: ep for ep in entry_points(group="spacy_al_strategies")}
    assert EXPECTED <= set(group), "reinstall the package: pip install -e ."
    for name in EXPECTED:
        assert group[name].load() is strategies.strategies_registry.get(name)


def test_unknown_strategy_error():
    with pytest.raises(AdaptnerError, match="Unknown strategy 'nope'. Known: bald"):
        get_strategy("nope")


# --- the contract, over every registered strategy ---------------------------------------------


@pytest.mark.parametrize("name", strategy_names())
def test_contract_query(name, nlp, pool, source_docs):
    strategy = build(name, source_docs)
    picked = strategy.query(pool, 7, nlp=nlp, rng=rng(3))
    assert len(picked) == 7
    assert len(set(picked)) == 7
    assert all(isinstance(i, int) and 0 <= i < len(pool) for i in picked)
    again = build(name, source_docs).query(pool, 7, nlp=nlp, rng=rng(3))
    assert again == picked


@pytest.mark.parametrize("name", strategy_names())
def test_contract_score(name, nlp, pool, source_docs):
    strategy = build(name, source_docs)
    scores = strategy.score(pool, nlp=nlp, rng=rng(0))
    assert isinstance(scores, numpy.ndarray)
    assert scores.shape == (len(pool),)
    assert numpy.isfinite(scores).all()
    numpy.testing.assert_array_equal(scores, strategy.score(pool, nlp=nlp, rng=rng(0)))


@pytest.mark.parametrize("name", strategy_names())
def test_contract_whole_pool_and_errors(name, nlp, pool, source_docs):
    strategy = build(name, source_docs)
    small = pool[:5]
    assert sorted(strategy.query(small, 5, nlp=nlp, rng=rng())) == list(range(5))
    with pytest.raises(AdaptnerError, match="The pool is empty"):
        strategy.query([], 1, nlp=nlp, rng=rng())
    with pytest.raises(AdaptnerError, match=r"Query size 6 is larger than the pool \(5 documents"):
        strategy.query(small, 6, nlp=nlp, rng=rng())
    with pytest.raises(AdaptnerError, match="Query size must be positive, got 0"):
        strategy.query(small, 0, nlp=nlp, rng=rng())


@pytest.mark.parametrize("name", strategy_names())
def test_contract_empty_doc_last_and_pool_untouched(name, nlp, pool, source_docs):
    docs = [*pool[:6], Doc(nlp.vocab, words=[]), *pool[6:10]]
    before = [[(e.start, e.end, e.label_) for e in d.ents] for d in docs]
    strategy = build(name, source_docs)
    scores = strategy.score(docs, nlp=nlp, rng=rng())
    assert scores[6] == -math.inf
    assert numpy.isfinite(numpy.delete(scores, 6)).all()
    assert 6 not in strategy.query(docs, 10, nlp=nlp, rng=rng())
    assert sorted(strategy.query(docs, 11, nlp=nlp, rng=rng())) == list(range(11))
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in docs] == before
    assert all(d._.ner_probs is None for d in docs)


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy", "mnlp"])
def test_processed_pool_same_as_running_the_pipeline(name, nlp, pool):
    processed = list(nlp.pipe([d.copy() for d in pool]))
    strategy = get_strategy(name)
    numpy.testing.assert_allclose(
        strategy.score(processed, nlp=None, rng=rng()),
        strategy.score(pool, nlp=nlp, rng=rng()),
        rtol=1e-6,
    )


def test_fresh_doc_keeps_tokens_and_norms(nlp_blank):
    doc = make_doc(nlp_blank.vocab, ["Hej", "\xa0", "Lars"], [(2, 3, "PERSON")])
    doc[1].norm_ = "  "  # as the tokenizer's exceptions set it
    doc._.ner_probs = numpy.ones((3, 1), dtype="float32")
    fresh = fresh_doc(doc, spacy.blank("da").vocab)
    assert [(t.text, t.whitespace_, t.norm_) for t in fresh] == [
        (t.text, t.whitespace_, t.norm_) for t in doc
    ]
    assert fresh.text == doc.text and not fresh.ents and fresh._.ner_probs is None
    assert [e.text for e in doc.ents] == ["Lars"]


def test_seed_changes_random_choice(pool):
    strategy = get_strategy("random")
    picks = {tuple(strategy.query(pool, 5, nlp=None, rng=rng(s))) for s in range(5)}
    assert len(picks) > 1


# --- probabilities: errors ----------------------------------------------------------------------


def test_no_probs_and_no_pipeline(nlp_blank):
    docs = [make_doc(nlp_blank.vocab, ["Hej", "Lars"])]
    with pytest.raises(AdaptnerError, match="1 of 1 pool docs .* have no doc._.ner_probs"):
        get_strategy("margin").score(docs, nlp=None, rng=rng())


def test_pipeline_without_bio_ner(nlp_blank):
    docs = [make_doc(nlp_blank.vocab, ["Hej", "Lars"])]
    with pytest.raises(AdaptnerError, match="The pipeline has no bio_ner component"):
        get_strategy("entropy").score(docs, nlp=nlp_blank, rng=rng())
    with pytest.raises(AdaptnerError, match="The pipeline has no bio_ner component"):
        get_strategy("bald").score(docs, nlp=nlp_blank, rng=rng())


def test_misaligned_probs(nlp_blank):
    doc = make_doc(nlp_blank.vocab, ["Hej", "Lars"])
    doc._.ner_probs = numpy.full((3, 3), 1 / 3, dtype="float32")
    with pytest.raises(AdaptnerError, match=r"doc #0 has doc._.ner_probs of shape \(3, 3\) but 2"):
        get_strategy("least_confidence").score([doc], nlp=None, rng=rng())


def test_bad_aggregation():
    with pytest.raises(AdaptnerError, match="unknown aggregation 'median'. Choose one of: mean"):
        get_strategy("margin", aggregation="median")
    for name in ("margin", "entropy", "bald"):
        with pytest.raises(AdaptnerError, match="unknown aggregation 'mnlp'"):
            get_strategy(name, aggregation="mnlp")


# --- hand-made probabilities --------------------------------------------------------------------


def P(*rows):
    return numpy.array(rows, dtype="float32")


def scores_of(name, probs, **params):
    return get_strategy(name, **params).score_probs(probs)


def test_margin_least_confidence_entropy_orderings():
    flat_top2 = P([0.4, 0.4, 0.2])  # margin 1.0, LC 0.6, entropy 1.055
    flat_all = P([0.34, 0.33, 0.33])  # margin 0.99, LC 0.66, entropy 1.0986
    confident = P([0.9, 0.05, 0.05])
    probs = [flat_top2, flat_all, confident]
    margin = scores_of("margin", probs)
    numpy.testing.assert_allclose(margin, [1.0, 0.99, 0.15], atol=1e-6)
    assert list(numpy.argsort(-margin)) == [0, 1, 2]
    lc = scores_of("least_confidence", probs)
    numpy.testing.assert_allclose(lc, [0.6, 0.66, 0.1], atol=1e-6)
    assert list(numpy.argsort(-lc)) == [1, 0, 2]
    ent = scores_of("entropy", probs)
    assert ent[1] == pytest.approx(math.log(3), abs=1e-3)
    assert list(numpy.argsort(-ent)) == [1, 0, 2]


def test_margin_picks_flattest_token_sentence():
    confident = [0.96, 0.02, 0.02]
    docs = [
        P(confident, confident, [0.45, 0.45, 0.1], confident),  # one flat token
        P([0.7, 0.2, 0.1], [0.7, 0.2, 0.1]),  # mildly unsure everywhere
        P(confident, confident),
    ]
    strategy = get_strategy("margin", aggregation="max")
    assert strategy.score_probs(docs).argmax() == 0
    assert strategy.token_scores(docs[0]).argmax() == 2


def test_aggregations_pick_different_winners():
    one_hot_spot = P([0.34, 0.33, 0.33], *[[0.98, 0.01, 0.01]] * 3)  # LC .66 .02 .02 .02
    short = P([0.6, 0.3, 0.1])  # LC .4
    long = P(*[[0.8, 0.1, 0.1]] * 10)  # LC .2 x 10
    probs = [one_hot_spot, short, long]
    winners = {
        agg: int(scores_of("least_confidence", probs, aggregation=agg).argmax())
        for agg in ("mean", "max", "sum")
    }
    assert winners == {"mean": 1, "max": 0, "sum": 2}
    numpy.testing.assert_allclose(
        scores_of("least_confidence", probs, aggregation="sum"), [0.72, 0.4, 2.0], atol=1e-5
    )


def test_mnlp_known_value():
    probs = [P([0.5, 0.5], [1.0, 0.0]), P([0.25, 0.75])]
    expected = [math.log(2) / 2, -math.log(0.75)]
    numpy.testing.assert_allclose(scores_of("mnlp", probs), expected, rtol=1e-6)
    numpy.testing.assert_allclose(
        scores_of("least_confidence", probs, aggregation="mnlp"), expected, rtol=1e-6
    )


def test_mnlp_normalises_length():
    # Unnormalised, the long confident sentence has the lower log-probability; MNLP prefers the
    # short uncertain one.
    long_confident = P(*[[0.9, 0.1]] * 20)
    short_unsure = P([0.6, 0.4])
    scores = scores_of("mnlp", [long_confident, short_unsure])
    assert scores[1] > scores[0]
    assert 20 * scores[0] > scores[1]


def test_scores_read_from_doc_probs(nlp_blank):
    docs = [make_doc(nlp_blank.vocab, ["a", "b"]), make_doc(nlp_blank.vocab, ["c"])]
    docs[0]._.ner_probs = P([0.9, 0.1], [0.8, 0.2])
    docs[1]._.ner_probs = P([0.5, 0.5])
    lc = get_strategy("least_confidence").score(docs, nlp=None, rng=rng())
    numpy.testing.assert_allclose(lc, [0.15, 0.5], atol=1e-6)
    assert get_strategy("margin").query(docs, 1, nlp=None, rng=rng()) == [1]


def test_empty_probs_score_minus_inf():
    empty = numpy.zeros((0, 3), dtype="float32")
    for name in ("least_confidence", "margin", "entropy", "mnlp"):
        assert scores_of(name, [empty])[0] == -math.inf


# --- vocab --------------------------------------------------------------------------------------


def test_vocab_picks_sentence_with_unseen_words(nlp_blank):
    v = nlp_blank.vocab
    source = [make_doc(v, "hunden løber i parken .".split()), make_doc(v, "katten sover .".split())]
    pool = [
        make_doc(v, "hunden sover i parken .".split()),
        make_doc(v, "retten afsagde kendelse om erstatning .".split()),
        make_doc(v, "katten løber .".split()),
    ]
    strategy = get_strategy("vocab", source_docs=source)
    assert strategy.query(pool, 1, nlp=None, rng=rng()) == [1]
    assert strategy.score(pool, nlp=None, rng=rng())[1] < 0


def test_vocab_exact_cosine(nlp_blank):
    doc = make_doc(nlp_blank.vocab, ["a", "c"])
    strategy = get_strategy("vocab", source_counts={"a": 1, "b": 1})
    assert strategy.score([doc], nlp=None, rng=rng())[0] == pytest.approx(-0.5)


def test_vocab_uses_norms(nlp_blank):
    doc = make_doc(nlp_blank.vocab, ["HUNDEN"])
    strategy = get_strategy("vocab", source_counts={"hunden": 3})
    assert strategy.score([doc], nlp=None, rng=rng())[0] == pytest.approx(-1.0)


def test_vocab_needs_one_source(nlp_blank):
    with pytest.raises(AdaptnerError, match="pass exactly one of source_docs="):
        get_strategy("vocab")
    with pytest.raises(AdaptnerError, match="pass exactly one of source_docs="):
        get_strategy("vocab", source_docs=[], source_counts={"a": 1})
    with pytest.raises(AdaptnerError, match="source_counts is empty"):
        get_strategy("vocab", source_counts={})
    with pytest.raises(AdaptnerError, match="Unknown unit 'chars'"):
        get_strategy("vocab", source_counts={"a": 1}, unit="chars")


def test_source_counts_from_docbin(tmp_path, nlp_blank):
    v = nlp_blank.vocab
    docs = [make_doc(v, "Hunden løber .".split()), make_doc(v, "hunden sover .".split())]
    path = tmp_path / "source.spacy"
    DocBin(docs=docs).to_disk(path)
    counts = source_counts_from_docbin(path)
    assert counts == {"hunden": 2, "løber": 1, ".": 2, "sover": 1}
    with pytest.raises(AdaptnerError, match="does not exist"):
        source_counts_from_docbin(tmp_path / "missing.spacy")
    with pytest.raises(AdaptnerError, match="need nlp="):
        source_counts_from_docbin(path, unit="wordpiece")


def fake_trf_data(ids_per_token, seq_len=8):
    """A minimal doc._.trf_data: one window [CLS] <wordpieces> [SEP] [PAD]... (ids 101/102/0)."""
    from spacy_transformers.data_classes import TransformerData, WordpieceBatch

    flat = [101]
    positions, lengths = [], []
    for ids in ids_per_token:
        lengths.append(len(ids))
        for wp in ids:
            positions.append(len(flat))
            flat.append(wp)
    flat.append(102)
    flat += [0] * (seq_len - len(flat))
    input_ids = numpy.array([flat], dtype="int64")
    wordpieces = WordpieceBatch(
        strings=[[str(i) for i in flat]],
        input_ids=input_ids,
        attention_mask=(input_ids > 0).astype("float32"),
        lengths=[len(positions) + 2],
        token_type_ids=None,
    )
    align = Ragged(numpy.array(positions, dtype="i"), numpy.array(lengths, dtype="i"))
    return TransformerData(wordpieces=wordpieces, model_output={}, align=align)


def test_vocab_counts_wordpieces_with_trf_data(nlp_blank):
    from spacy_transformers.pipeline_component import install_extensions

    install_extensions()  # doc._.trf_data, as a transformer component would

    v = nlp_blank.vocab
    seen = make_doc(v, ["Hund", "en"])
    seen._.trf_data = fake_trf_data([[7, 8], [9]])
    unseen = make_doc(v, ["Ret", "ten"])
    unseen._.trf_data = fake_trf_data([[20], [21, 22]])
    assert wordpiece_ids(seen) == [7, 8, 9]  # [CLS], [SEP] and padding left out
    strategy = get_strategy("vocab", source_counts={7: 5, 8: 5, 9: 5})
    assert strategy.resolve_unit([seen, unseen]) == "wordpiece"
    scores = strategy.score([seen, unseen], nlp=None, rng=rng())
    assert scores[0] == pytest.approx(-1.0)
    assert scores[1] == 0.0
    # Counts given as norms: "auto" follows them, even on transformer docs.
    norm_counts = get_strategy("vocab", source_counts={"hund": 1})
    assert norm_counts.score([seen], nlp=None, rng=rng())[0] == pytest.approx(-(0.5**0.5))
    forced = get_strategy("vocab", source_counts={7: 1}, unit="norm")
    with pytest.raises(AdaptnerError, match="are wordpiece counts but the pool needs norm"):
        forced.score([seen], nlp=None, rng=rng())
    with pytest.raises(AdaptnerError, match="unit='wordpiece' but source_counts has non-integer"):
        get_strategy("vocab", source_counts={"hund": 1}, unit="wordpiece")
    docs_source = get_strategy("vocab", source_docs=[make_doc(v, ["Hund"])])
    with pytest.raises(AdaptnerError, match="Wordpiece counts need docs processed"):
        docs_source.score([seen], nlp=None, rng=rng())


# --- bald ---------------------------------------------------------------------------------------


def test_bald_tokens_hand_made():
    agree = numpy.array([[[0.7, 0.3]], [[0.7, 0.3]]])
    assert bald_tokens(agree) == pytest.approx([0.0], abs=1e-12)
    disagree = numpy.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert bald_tokens(disagree) == pytest.approx([math.log(2)])


@pytest.fixture(scope="module")
def inline_nlps():
    """Blank pipelines with an inline-tok2vec bio_ner: dropout 0.0 (a stub) and 0.1."""
    out = {}
    for rate in (0.0, 0.1):
        nlp = spacy.blank("da")
        nlp.add_pipe("bio_ner", config={"model": {"dropout": rate}})
        docs = corpus(nlp.vocab)[:8]
        examples = [Example(nlp.make_doc(d.text), d) for d in docs]
        nlp.initialize(lambda examples=examples: examples)
        out[rate] = nlp
    return out


def test_bald_zero_without_dropout_positive_with(inline_nlps):
    stub = inline_nlps[0.0]
    docs = corpus(stub.vocab)[:10]
    zero = get_strategy("bald", n_samples=4).score(docs, nlp=stub, rng=rng())
    assert numpy.abs(zero).max() < 1e-9
    forced = get_strategy("bald", n_samples=4, dropout=0.5).score(docs, nlp=stub, rng=rng())
    assert (forced > 1e-6).all()
    nlp = inline_nlps[0.1]
    own_rate = get_strategy("bald", n_samples=4).score(docs, nlp=nlp, rng=rng())
    assert (own_rate > 1e-6).all()


def test_bald_deterministic_and_restores_state(inline_nlps):
    nlp = inline_nlps[0.1]
    docs = corpus(nlp.vocab)[:10]
    bio = nlp.get_pipe("bio_ner")
    before = bio.predict(docs)
    numpy.random.seed(123)
    state = numpy.random.get_state()
    strategy = get_strategy("bald", n_samples=3, dropout=0.4)
    first = strategy.score(docs, nlp=nlp, rng=rng(7))
    after_state = numpy.random.get_state()
    assert after_state[0] == state[0] and (after_state[1] == state[1]).all()
    assert [n.attrs["dropout_rate"] for n in dropout_nodes(head_layers(bio.model))] == [0.1]
    for a, b in zip(before, bio.predict(docs), strict=True):
        numpy.testing.assert_array_equal(a, b)
    numpy.testing.assert_array_equal(first, strategy.score(docs, nlp=nlp, rng=rng(7)))
    assert not numpy.array_equal(first, strategy.score(docs, nlp=nlp, rng=rng(8)))


def test_bald_needs_pipeline_and_valid_params(nlp_blank):
    docs = [make_doc(nlp_blank.vocab, ["Hej"])]
    with pytest.raises(AdaptnerError, match="bald runs the bio_ner model with dropout"):
        get_strategy("bald").score(docs, nlp=None, rng=rng())
    with pytest.raises(AdaptnerError, match="n_samples >= 2"):
        get_strategy("bald", n_samples=1)
    with pytest.raises(AdaptnerError, match=r"dropout must be in \[0, 1\)"):
        get_strategy("bald", dropout=1.0)


def test_head_over_token_vectors_reproduces_pipeline(nlp, pool):
    """The listener path: token vectors + head in predict mode == the pipeline's ner_probs."""
    from adaptner.components.bio_ner import softmax

    bio = nlp.get_pipe("bio_ner")
    vectors = token_vectors(pool[:5], nlp)
    X = [bio.model.ops.asarray2f(v) for v in vectors]
    for layer in head_layers(bio.model):
        X = layer.predict(X)
    processed = list(nlp.pipe([d.copy() for d in pool[:5]]))
    for logits, doc in zip(X, processed, strict=True):
        numpy.testing.assert_allclose(softmax(logits), doc._.ner_probs, atol=1e-5)


# --- diversity and hybrid -----------------------------------------------------------------------

CLUSTER = [(0.0, 0.0), (0.1, 0.0), (0.0, 0.1), (0.1, 0.1)]
FAR = [(10.0, 0.0), (-10.0, 0.0), (0.0, 10.0), (0.0, -10.0)]


def test_k_center_picks_spread_points():
    X = numpy.array(CLUSTER + FAR)
    picks = k_center(X, 5, rng())
    assert picks[0] == 0  # nearest the mean
    assert set(picks[1:]) == {4, 5, 6, 7}
    with_labeled = k_center(X, 4, rng(), labeled=numpy.array([[0.0, 0.0]]))
    assert set(with_labeled) == {4, 5, 6, 7}
    assert len(set(k_center(numpy.zeros((6, 2)), 6, rng()))) == 6  # duplicates still distinct


def tensor_docs(vocab, points):
    docs = []
    for x, y in points:
        doc = make_doc(vocab, ["x", "y"])
        doc.tensor = numpy.array([[x - 1, y], [x + 1, y]], dtype="float32")  # mean = (x, y)
        docs.append(doc)
    return docs


def test_diversity_on_doc_tensors(nlp_blank):
    docs = tensor_docs(nlp_blank.vocab, CLUSTER + FAR)
    strategy = get_strategy("diversity")
    assert set(strategy.query(docs, 5, nlp=None, rng=rng())[1:]) == {4, 5, 6, 7}
    labeled = tensor_docs(nlp_blank.vocab, [(10.0, 0.0)])
    seeded = get_strategy("diversity", labeled_docs=labeled)
    assert seeded.query(docs, 1, nlp=None, rng=rng()) == [5]  # farthest from (10, 0)
    scores = strategy.score(docs, nlp=None, rng=rng())
    assert set(numpy.argsort(-scores)[:5]) == {0, 4, 5, 6, 7}


def test_diversity_without_vectors(nlp_blank):
    docs = [make_doc(nlp_blank.vocab, ["Hej"])]
    with pytest.raises(AdaptnerError, match=r"Doc #0 has no token vectors \(doc.tensor\)"):
        get_strategy("diversity").query(docs, 1, nlp=None, rng=rng())


def test_diversity_with_inline_tok2vec(inline_nlps):
    nlp = inline_nlps[0.1]
    docs = corpus(nlp.vocab)[:12]
    picks = get_strategy("diversity").query(docs, 4, nlp=nlp, rng=rng())
    assert len(set(picks)) == 4


def test_hybrid_uncertain_then_spread(nlp_blank):
    points = [(0.0, 0.0), (0.1, 0.0), (5.0, 5.0), (5.0, 5.1), (100.0, 100.0), (-100.0, -100.0)]
    docs = tensor_docs(nlp_blank.vocab, points)
    margins = [0.5, 0.52, 0.55, 0.6, 0.9, 0.95]  # p1 - p2: lower = less certain
    for doc, m in zip(docs, margins, strict=True):
        p2 = (1 - m) / 2
        doc._.ner_probs = P([p2 + m, p2], [p2 + m, p2])
    hybrid = get_strategy("hybrid", candidates_factor=2)
    assert sorted(hybrid.query(docs, 2, nlp=None, rng=rng())) == [0, 2]
    assert sorted(get_strategy("margin").query(docs, 2, nlp=None, rng=rng())) == [0, 1]
    margin_scores = get_strategy("margin").score(docs, nlp=None, rng=rng())
    numpy.testing.assert_array_equal(hybrid.score(docs, nlp=None, rng=rng()), margin_scores)


def test_hybrid_params():
    entropy_max = get_strategy("hybrid", uncertainty="entropy", aggregation="max")
    assert entropy_max.uncertainty.aggregation == "max"
    assert get_strategy("hybrid", uncertainty="mnlp").uncertainty.name == "mnlp"
    bald = get_strategy("hybrid", uncertainty="bald", uncertainty_params={"n_samples": 3})
    assert bald.uncertainty.n_samples == 3
    with pytest.raises(AdaptnerError, match="must be an uncertainty strategy, not 'diversity'"):
        get_strategy("hybrid", uncertainty="diversity")
    with pytest.raises(AdaptnerError, match="candidates_factor must be >= 1"):
        get_strategy("hybrid", candidates_factor=0.5)
    with pytest.raises(AdaptnerError, match="Unknown strategy 'nope'"):
        get_strategy("hybrid", uncertainty="nope")
