"""Cached encoder outputs (trainer ``cached_head``) on a tiny transformer pipeline and DANSK.

The tiny BERT pipeline (``tiny_trf`` in conftest) has the same shape as the e5 pipeline: a
transformer component and a bio_ner that listens to it. Everything runs offline.
"""

import json
import shutil
from collections import Counter

import numpy
import pytest
import spacy
from spacy.tokens import DocBin

from adaptner.encoders.lower_cache import attached_caches
from adaptner.encoders.training import transformer_modules
from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin
from adaptner.scoring import predict
from adaptner.simulation.config import ALSettings, SimulationConfig
from adaptner.simulation.engine import Simulation
from adaptner.strategies import get_strategy
from adaptner.strategies.vocab import count_units, tokenizer_wordpiece_ids, wordpiece_tokenizer
from adaptner.update import features
from adaptner.update.features import (
    FeatureCache,
    attach,
    attached_cache,
    cache_info,
    detach,
    detached,
    model_digest,
)
from adaptner.update.trainers import (
    get_round_trainer,
    restore_weights,
    snapshot_weights,
)
from tests.conftest import block_network

pytestmark = pytest.mark.integration


@pytest.fixture
def offline(monkeypatch):
    block_network(monkeypatch)


@pytest.fixture
def legal(corpus_dir):
    vocab = spacy.blank("da").vocab
    return read_docbin(corpus_dir / "train" / "legal.spacy", vocab)[:60]


def _probs(docs):
    return [d._.ner_probs for d in docs]


def _encoder_digest(nlp):
    return model_digest([nlp.get_pipe("transformer").model])


def test_cached_predictions_equal_the_full_pipeline(tiny_trf, legal, offline, tmp_path):
    nlp = spacy.load(tiny_trf["best"])
    full = predict(nlp, legal)
    cache = attach(nlp, legal[:40], cache_dir=tmp_path)
    assert "transformer" in nlp.disabled and len(cache) == 40
    cached = predict(nlp, legal)  # 20 docs were not cached: encoded on first use
    for a, b in zip(full, cached, strict=True):
        numpy.testing.assert_allclose(a._.ner_probs, b._.ner_probs, atol=1e-5)
        assert [(e.start, e.end, e.label_) for e in a.ents] == [
            (e.start, e.end, e.label_) for e in b.ents
        ]
    info = cache_info(nlp)
    assert info["docs"] == 60 and info["misses"] == 20
    # a second attach of the same encoder reads the file and encodes nothing
    other = spacy.load(tiny_trf["best"])

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded although the docs were cached on disk")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(features, "encode", no_encoding)
        attach(other, legal[:40], cache_dir=tmp_path)
    assert cache_info(other)["misses"] == 0
    for a, b in zip(_probs(predict(other, legal[:40])), _probs(cached[:40]), strict=True):
        numpy.testing.assert_array_equal(a, b)


def test_cached_head_trains_only_the_head_and_saves_as_a_normal_pipeline(
    tiny_trf, legal, offline, tmp_path
):
    nlp = spacy.load(tiny_trf["best"])
    encoder = _encoder_digest(nlp)
    trainer = get_round_trainer("cached_head")
    trainer.prepare(nlp, legal, cache_dir=tmp_path / "features")
    head_before = nlp.get_pipe("bio_ner").model.get_ref("output_layer").get_param("W").copy()
    stats = trainer(nlp, legal[:40], None, settings=ALSettings(epochs=5), seed=0)
    assert stats.steps == 5 * 3 and stats.losses[-1] < stats.losses[0]
    head_after = nlp.get_pipe("bio_ner").model.get_ref("output_layer").get_param("W")
    assert not numpy.allclose(head_before, head_after)
    trained = _probs(predict(nlp, legal))
    with detached(nlp):
        assert _encoder_digest(nlp) == encoder  # the encoder did not move
        assert "transformer" not in nlp.disabled
        nlp.to_disk(tmp_path / "model")
    assert features.is_attached(nlp)
    loaded = spacy.load(tmp_path / "model")
    for a, b in zip(_probs(predict(loaded, legal)), trained, strict=True):
        numpy.testing.assert_allclose(a, b, atol=1e-5)
    detach(nlp)
    assert not features.is_attached(nlp) and attached_cache(nlp) is None


def test_strategies_run_on_cached_outputs(tiny_trf, legal, offline, corpus_dir):
    nlp = spacy.load(tiny_trf["best"])
    full_docs = predict(nlp, legal)
    tokenizer = wordpiece_tokenizer(nlp)
    for doc in full_docs:  # the tokenizer gives the pieces the transformer saw
        assert Counter(tokenizer_wordpiece_ids(doc, tokenizer)) == count_units(doc, "wordpiece")
    news = read_docbin(corpus_dir / "train" / "news.spacy", nlp.vocab)[:50]
    vocab_full = get_strategy("vocab", source_docs=news)
    rng = numpy.random.default_rng(0)
    full_scores = vocab_full.score(full_docs, nlp=nlp, rng=rng)
    attach(nlp, legal)
    pool = predict(nlp, legal)
    assert all(not d.has_extension("trf_data") or d._.trf_data is None for d in pool)
    vocab_cached = get_strategy("vocab", source_docs=news)
    numpy.testing.assert_allclose(vocab_cached.score(pool, nlp=nlp, rng=rng), full_scores)
    assert vocab_cached.resolve_unit(pool, nlp) == "wordpiece"
    for name, params in [
        ("margin", {}),
        ("least_confidence", {}),
        ("bald", {"n_samples": 4}),
        ("diversity", {"labeled_docs": legal[:5]}),
        ("hybrid", {"labeled_docs": legal[:5]}),
        ("cartography", {"labeled_docs": legal[:10]}),
    ]:
        chosen = get_strategy(name, **params).query(pool, 7, nlp=nlp, rng=rng)
        assert len(set(chosen)) == 7 and all(0 <= i < len(pool) for i in chosen), name
    assert cache_info(nlp)["misses"] == 0  # everything came from the cache


def test_simulation_with_cached_head_resumes_identically(tiny_trf, corpus_dir, tmp_path, offline):
    settings = ALSettings(
        trainer="cached_head",
        budget=0.15,
        epochs=3,
        learn_rate=0.01,
        train_limit=120,
        eval_limit=30,
    )
    cfg = SimulationConfig(
        source="news",
        target="legal",
        strategy="margin",
        mode="warm",
        seed=0,
        settings=settings,
        source_model=tiny_trf["best"],
        corpus_dir=corpus_dir,
        eval_split="dev",
    )
    records = Simulation(cfg, tmp_path / "a").run()
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    assert (tmp_path / "a" / "features").is_dir()
    assert records[-1]["train_seconds"] < 30
    # kill after round 2, resume: the same rounds and scores
    path = tmp_path / "b" / f"{cfg.run_id}.jsonl"
    path.parent.mkdir()
    lines = (tmp_path / "a" / f"{cfg.run_id}.jsonl").read_text(encoding="utf8").splitlines()
    path.write_text("\n".join(lines[:2]) + "\n", encoding="utf8")
    shutil.copytree(tmp_path / "a" / "features", tmp_path / "b" / "features")
    resumed = Simulation(cfg, tmp_path / "b").run()
    for a, b in zip(records, resumed, strict=True):
        assert a["new_ids"] == b["new_ids"]
        assert a["evals"] == b["evals"]
    sim = Simulation(cfg, tmp_path / "c")
    # the encoder is not snapshot
    assert {k.split(":")[2].split("/")[0] for k in snapshot_weights(sim.nlp)} == {"bio_ner"}


def test_simulation_with_top_layers_trains_the_top_and_restores_in_place(
    tiny_trf, corpus_dir, tmp_path, offline
):
    import torch

    # "auto" is top_layers for a transformer pipeline (the resolution sessions use too)
    settings = ALSettings(trainer="auto", budget=0.1, epochs=2, train_limit=120,
                          eval_limit=30)  # fmt: skip
    cfg = SimulationConfig(
        source="news", target="legal", strategy="margin", mode="reset", seed=0,
        settings=settings, source_model=tiny_trf["best"], corpus_dir=corpus_dir,
        eval_split="dev",
    )  # fmt: skip
    sim = Simulation(cfg, tmp_path / "a")
    records = sim.run()
    assert [r["round"] for r in records] == [0, 1, 2]
    assert list((tmp_path / "a" / "features" / "lower").glob("*-k1/shard-*.npz"))
    (module,) = transformer_modules(sim.nlp)
    source = spacy.load(tiny_trf["best"])
    (original,) = transformer_modules(source)
    before, after = original.state_dict(), module.state_dict()
    bottom = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0."))]
    top = [k for k in before if k.startswith("encoder.layer.1.")]
    assert all(torch.equal(before[k], after[k]) for k in bottom)
    assert any(not torch.equal(before[k], after[k]) for k in top)
    assert not any(p.requires_grad for p in module.embeddings.parameters())
    # reset mode restores the source in place: the cached bottom stays attached
    sim.trainer.prepare(sim.nlp, ())
    restore_weights(sim.nlp, sim.source_weights)
    assert all(torch.equal(before[k], module.state_dict()[k]) for k in before)
    assert list(attached_caches([module]))


def test_damaged_cache_file_is_named(tiny_trf, legal, tmp_path, offline):
    nlp = spacy.load(tiny_trf["best"])
    attach(nlp, legal[:5], cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not a zip file")
    with pytest.raises(AdaptnerError, match=str(path.name)):
        attach(spacy.load(tiny_trf["best"]), legal[:5], cache_dir=tmp_path)
    cache = FeatureCache()
    with pytest.raises(AdaptnerError, match="do not fit"):
        cache.add(legal[0], numpy.zeros((len(legal[0]) + 1, 4), "float32"))


def test_session_rounds_on_a_transformer_pipeline(tiny_trf, corpus_dir, tmp_path, offline):
    from adaptner.session.loop import import_answers, init_session, next_batch, train_round
    from adaptner.session.trainer import UpdateSettings

    vocab = spacy.blank("da").vocab
    pool = read_docbin(corpus_dir / "train" / "legal.spacy", vocab)[:80]
    heldout = read_docbin(corpus_dir / "dev" / "legal.spacy", vocab)[:20]
    DocBin(store_user_data=True, docs=pool).to_disk(tmp_path / "pool.spacy")
    DocBin(store_user_data=True, docs=heldout).to_disk(tmp_path / "heldout.spacy")
    gold = {
        d.text: [{"start": e.start_char, "end": e.end_char, "label": e.label_} for e in d.ents]
        for d in pool
    }
    db = tmp_path / "s.db"
    init_session(
        db,
        "trf",
        source=tiny_trf["best"],
        pool=tmp_path / "pool.spacy",
        heldout=tmp_path / "heldout.spacy",
        strategy="margin",
        session_dir=tmp_path / "sdir",
    )
    batch = next_batch(db, "trf", n=10, output=tmp_path / "b1.jsonl", trainer="cached_head")
    assert list((tmp_path / "sdir" / "features").glob("*.npz"))
    answers = []
    for task in batch.tasks:
        task = dict(task, answer="accept", spans=gold[task["text"]])
        answers.append(json.dumps(task, ensure_ascii=False))
    (tmp_path / "a1.jsonl").write_text("\n".join(answers) + "\n", encoding="utf8")
    import_answers(db, "trf", tmp_path / "a1.jsonl")
    settings = UpdateSettings(trainer="cached_head")
    result = train_round(db, "trf", mode="warm", settings=settings)
    assert result.metrics["trainer"] == "cached_head"
    assert features.is_attached(result.nlp)
    in_memory = _probs(predict(result.nlp, heldout))
    # the frozen encoder is hard-linked from the source, not written again
    for f in (result.model_dir / "transformer").rglob("*"):
        if f.is_file():
            src = tiny_trf["best"] / "transformer" / f.relative_to(result.model_dir / "transformer")
            assert f.stat().st_ino == src.stat().st_ino, f
    reloaded = spacy.load(result.model_dir)  # the round model is a normal pipeline
    for a, b in zip(_probs(predict(reloaded, heldout)), in_memory, strict=True):
        numpy.testing.assert_allclose(a, b, atol=1e-5)
    nxt = next_batch(
        db, "trf", n=10, output=tmp_path / "b2.jsonl", nlp=result.nlp, trainer="cached_head"
    )
    assert not {t["text"] for t in nxt.tasks} & {t["text"] for t in batch.tasks}
    assert cache_info(result.nlp)["misses"] == 0


def test_cnn_pipeline_attaches_too(tiny_news_model, legal, tmp_path):
    nlp = spacy.load(tiny_news_model)
    full = _probs(predict(nlp, legal))
    cache = attach(nlp, legal, cache_dir=tmp_path)
    assert nlp.disabled == ["tok2vec"] and len(cache) == len(legal)
    for a, b in zip(_probs(predict(nlp, legal)), full, strict=True):
        numpy.testing.assert_allclose(a, b, atol=1e-5)
    reread = FeatureCache()
    assert reread.load(next(tmp_path.glob("*.npz"))) == len(legal)
    for doc in legal:
        numpy.testing.assert_array_equal(reread.get(doc), cache.get(doc))


def test_fine_tune_trainer_moves_a_transformer_with_a_warmup_schedule(tiny_trf, legal, offline):
    """The trf config's rate warms up from 0: without stepping the schedule nothing learns."""
    from adaptner.session.trainer import UpdateSettings, update_pipeline

    nlp = spacy.load(tiny_trf["best"])
    before = _encoder_digest(nlp)
    settings = UpdateSettings(max_epochs=2, patience=1, batch_size=8, trainer="fine_tune")
    metrics = update_pipeline(nlp, legal[:24], None, settings, seed=0)
    assert metrics["trainer"] == "fine_tune" and not features.is_attached(nlp)
    assert _encoder_digest(nlp) != before


def test_a_given_learn_rate_replaces_the_schedule(tiny_trf, legal, offline, monkeypatch):
    from adaptner.update import trainers as trainer_module

    seen = []
    real = trainer_module.make_optimizer

    def spy(nlp):
        optimizer = real(nlp)
        seen.append(optimizer)
        return optimizer

    monkeypatch.setattr(trainer_module, "make_optimizer", spy)
    nlp = spacy.load(tiny_trf["best"])
    trainer_module.update_pipeline(nlp, legal[:16], epochs=2, batch_size=8, learn_rate=0.01)
    assert seen[-1].learn_rate == 0.01  # not the warm-up schedule's value after 4 steps
