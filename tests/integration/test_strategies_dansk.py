"""Query strategies on real DANSK slices: a tiny news model scoring a mixed news/web/legal pool."""

from pathlib import Path

import numpy
import pytest
import spacy
from spacy.training import Example
from spacy.util import load_config, load_model_from_config

import adaptner  # noqa: F401 - extensions
from adaptner.readers import read_docbin
from adaptner.strategies import get_strategy, source_counts_from_docbin, strategy_names
from adaptner.strategies.bald import head_layers
from adaptner.strategies.common import token_vectors
from adaptner.strategies.vocab import VocabStrategy, count_corpus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DANSK_DIR = (ROOT / ".." / "shared" / "data" / "dansk").resolve()
CONFIGS = ROOT / "configs" / "test"


@pytest.fixture(scope="module")
def nlp(corpus_dir, tmp_path_factory):
    """configs/test/bio_cnn.cfg trained for 40 steps on 100 news sentences (a few seconds)."""
    from adaptner.training import train_pipeline

    best = train_pipeline(
        CONFIGS / "bio_cnn.cfg",
        tmp_path_factory.mktemp("strategies") / "model",
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        overrides={
            "corpora.train.limit": 100,
            "corpora.dev.limit": 30,
            "training.max_steps": 40,
            "training.eval_frequency": 20,
        },
        verbose=False,
    )
    return spacy.load(best)


@pytest.fixture(scope="module")
def source_docs(nlp, corpus_dir):
    return read_docbin(corpus_dir / "train" / "news.spacy", nlp.vocab)


@pytest.fixture(scope="module")
def pool(nlp, corpus_dir):
    """20 news + 20 legal dev sentences (gold annotations, no probabilities)."""
    dev = corpus_dir / "dev"
    return (
        read_docbin(dev / "news.spacy", nlp.vocab)[:20]
        + read_docbin(dev / "legal.spacy", nlp.vocab)[:20]
    )


def params(name, source_docs):
    return {"vocab": {"source_docs": source_docs}}.get(name, {})


@pytest.mark.parametrize("name", strategy_names())
def test_strategy_on_real_pool(name, nlp, pool, source_docs):
    gold = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in pool]
    strategy = get_strategy(name, **params(name, source_docs))
    picked = strategy.query(pool, 10, nlp=nlp, rng=numpy.random.default_rng(0))
    assert len(set(picked)) == 10 and all(0 <= i < len(pool) for i in picked)
    again = get_strategy(name, **params(name, source_docs))
    assert again.query(pool, 10, nlp=nlp, rng=numpy.random.default_rng(0)) == picked
    scores = strategy.score(pool, nlp=nlp, rng=numpy.random.default_rng(0))
    assert scores.shape == (len(pool),) and numpy.isfinite(scores).all()
    assert [[(e.start, e.end, e.label_) for e in doc.ents] for doc in pool] == gold


def test_uncertainty_on_processed_pool_matches_pipeline(nlp, pool):
    processed = list(nlp.pipe([doc.copy() for doc in pool]))
    for name in ("least_confidence", "margin", "entropy", "mnlp"):
        strategy = get_strategy(name)
        numpy.testing.assert_allclose(
            strategy.score(processed, nlp=None, rng=numpy.random.default_rng(0)),
            strategy.score(pool, nlp=nlp, rng=numpy.random.default_rng(0)),
            rtol=1e-5,
        )


def test_vocab_in_domain_more_similar(nlp, corpus_dir, source_docs):
    """News dev sentences resemble the news source more than web sentences do, on average."""
    dev = corpus_dir / "dev"
    news = read_docbin(dev / "news.spacy", nlp.vocab)
    web = read_docbin(dev / "web.spacy", nlp.vocab)[:100]
    strategy = get_strategy("vocab", source_docs=source_docs)
    sims = strategy.similarities(news + web)
    assert numpy.nanmean(sims[: len(news)]) > numpy.nanmean(sims[len(news) :])


def test_source_counts_from_docbin_equal_docs(nlp, corpus_dir, source_docs, pool):
    counts = source_counts_from_docbin(corpus_dir / "train" / "news.spacy")
    assert counts == dict(count_corpus(source_docs))
    from_counts = VocabStrategy(source_counts=counts).score(pool, nlp=None, rng=None)
    from_docs = VocabStrategy(source_docs=source_docs).score(pool, nlp=None, rng=None)
    numpy.testing.assert_allclose(from_counts, from_docs)


def test_bald_positive_on_real_pool(nlp, pool):
    scores = get_strategy("bald", n_samples=5).score(pool, nlp=nlp, rng=numpy.random.default_rng(0))
    assert (scores > 0).all()


@pytest.fixture(scope="module")
def trf_nlp(corpus_dir, tmp_path_factory):
    """configs/test/bio_trf.cfg over a tiny random local BERT, initialized on 30 news sentences."""
    tiny_bert = pytest.importorskip("adaptner.tiny_bert", reason="adaptner.tiny_bert not available")
    vocab = spacy.blank("da").vocab
    texts = [doc.text for doc in read_docbin(corpus_dir / "train" / "news.spacy", vocab)[:200]]
    model_dir = tiny_bert.build_tiny_bert(
        tmp_path_factory.mktemp("tiny_bert") / "bert", texts, vocab_size=500
    )
    config = load_config(CONFIGS / "bio_trf.cfg", overrides={"paths.transformer": str(model_dir)})
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    docs = read_docbin(corpus_dir / "train" / "news.spacy", nlp.vocab)[:30]
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in docs]
    nlp.initialize(lambda: examples)
    return nlp


def test_transformer_pipeline(trf_nlp, corpus_dir):
    """Listener path with a transformer: vectors, BALD, diversity and wordpiece vocab counts."""
    nlp = trf_nlp
    source = read_docbin(corpus_dir / "train" / "news.spacy", nlp.vocab)[:50]
    raw = read_docbin(corpus_dir / "dev" / "legal.spacy", nlp.vocab)[:15]
    processed = list(nlp.pipe([doc.copy() for doc in raw]))
    bio = nlp.get_pipe("bio_ner")
    X = [bio.model.ops.asarray2f(v) for v in token_vectors(raw, nlp)]
    for layer in head_layers(bio.model):
        X = layer.predict(X)
    for logits, doc in zip(X, processed, strict=True):
        numpy.testing.assert_allclose(bio.model.ops.softmax(logits), doc._.ner_probs, atol=1e-4)
    vocab = get_strategy("vocab", source_docs=source)
    assert vocab.resolve_unit(processed) == "wordpiece"
    assert vocab.resolve_unit(raw) == "norm"
    for name in strategy_names():
        strategy = get_strategy(name, **params(name, source))
        picked = strategy.query(processed, 5, nlp=nlp, rng=numpy.random.default_rng(0))
        assert len(set(picked)) == 5
    bald = get_strategy("bald", n_samples=4).score(raw, nlp=nlp, rng=numpy.random.default_rng(0))
    assert (bald > 0).all()
