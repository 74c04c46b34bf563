"""Anchoring on real DANSK docs: a round keeps n / (n + anchor_docs) of its update, in a
simulation and in a session round, checked against the same round trained without it."""

import json
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin

from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin
from adaptner.session.loop import import_answers, init_session, next_batch, train_round
from adaptner.session.trainer import UpdateSettings
from adaptner.simulation import ALSettings, SimulationConfig
from adaptner.simulation.engine import Simulation
from adaptner.train_loop import collect_weights
from adaptner.update.anchor import anchor_alpha, anchor_weights
from adaptner.update.trainers import snapshot_weights, update_pipeline
from adaptner.util import load_pipeline

pytestmark = pytest.mark.integration

#: Paper protocol on the first 100 social media train docs: 20 held out, 8 per round.
SETTINGS = ALSettings(
    protocol="paper",
    pool_fraction=0.5,
    query_fraction=0.1,
    budget=0.2,
    eval_holdout=0.2,
    epochs=2,
    train_limit=100,
    eval_limit=20,
    source_replay=1.0,
)


def test_alpha_follows_the_number_of_target_docs():
    assert anchor_alpha(8, 0) == 1.0  # off
    assert anchor_alpha(8, 8) == 0.5
    assert anchor_alpha(30, 10) == 0.75
    assert anchor_alpha(0, 10) == 0.0
    with pytest.raises(AdaptnerError, match="anchor_docs must be a number >= 0"):
        anchor_alpha(8, -1)
    with pytest.raises(AdaptnerError, match="anchor_docs"):
        ALSettings(anchor_docs=float("nan"))
    with pytest.raises(AdaptnerError, match="anchor_docs"):
        UpdateSettings(anchor_docs=-2)


def assert_between(start, trained, anchored, alpha):
    """Every weight of ``anchored`` is start + alpha * (trained - start)."""
    assert anchored.keys() == trained.keys()
    moved = 0
    for key, value in anchored.items():
        expected = start[key] + alpha * (trained[key] - start[key])
        numpy.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=key)
        moved += not numpy.array_equal(trained[key], start[key])
    assert moved > 0  # the round did change weights


def test_anchor_weights_interpolates_every_trained_weight(tiny_news_model, corpus_dir):
    nlp = load_pipeline(tiny_news_model)
    docs = read_docbin(corpus_dir / "train" / "social_media.spacy", nlp.vocab)[:12]
    start = snapshot_weights(nlp)
    update_pipeline(nlp, docs, epochs=1, seed=0)
    trained = snapshot_weights(nlp)
    anchor_weights(nlp, start, 0.25)
    assert_between(start, trained, collect_weights(nlp, copy=True), 0.25)
    anchor_weights(nlp, start, 0.0)  # all the way back
    for key, value in collect_weights(nlp).items():
        numpy.testing.assert_array_equal(value, start[key])
    with pytest.raises(AdaptnerError, match=r"in \[0, 1\]"):
        anchor_weights(nlp, start, 1.5)


def run_one_round(model: Path, corpus_dir: Path, out: Path, anchor_docs: float) -> Simulation:
    cfg = SimulationConfig(
        source="news",
        target="social_media",
        strategy="random",
        mode="reset",
        seed=0,
        settings=SETTINGS.replace(budget=0.1, anchor_docs=anchor_docs),
        source_model=model,
        corpus_dir=corpus_dir,
    )
    sim = Simulation(cfg, out)
    sim.records = sim.run()
    return sim


def test_simulation_round_keeps_its_share_of_the_update(tiny_news_model, corpus_dir, tmp_path):
    plain = run_one_round(tiny_news_model, corpus_dir, tmp_path / "plain", 0.0)
    anchored = run_one_round(tiny_news_model, corpus_dir, tmp_path / "anchored", 24.0)
    n = anchored.records[1]["train_docs"]
    assert n == 8 and plain.records[1]["new_ids"] == anchored.records[1]["new_ids"]
    assert anchored.records[1]["anchor_alpha"] == pytest.approx(8 / 32)
    assert plain.records[1]["anchor_alpha"] == 1.0 and anchored.records[0]["anchor_alpha"] is None
    assert_between(
        anchored.source_weights,
        collect_weights(plain.nlp, copy=True),
        collect_weights(anchored.nlp, copy=True),
        0.25,
    )
    # all the way back: the round's model is the source (round 0's scores)
    still = run_one_round(tiny_news_model, corpus_dir, tmp_path / "still", 1e12)
    assert still.records[1]["target_f1"] == pytest.approx(still.records[0]["target_f1"], abs=1e-6)
    assert still.records[1]["source_f1"] == pytest.approx(still.records[0]["source_f1"], abs=1e-6)


N_POOL, N_BATCH = 40, 10


@pytest.fixture(scope="module")
def pool_files(tmp_path_factory, corpus_dir):
    out = tmp_path_factory.mktemp("anchor_session")
    vocab = spacy.blank("da").vocab
    pool = read_docbin(corpus_dir / "train" / "social_media.spacy", vocab)[:N_POOL]
    DocBin(store_user_data=True, docs=pool).to_disk(out / "pool.spacy")
    gold = {
        d.text: [{"start": e.start_char, "end": e.end_char, "label": e.label_} for e in d.ents]
        for d in pool
    }
    return out, gold


def session_round(tmp_path: Path, model: Path, pool_files, anchor_docs: float):
    folder, gold = pool_files
    db = tmp_path / "s.db"
    init_session(
        db,
        "sm",
        source=model,
        pool=folder / "pool.spacy",
        strategy="random",
        session_dir=tmp_path / "sdir",
    )
    batch = next_batch(db, "sm", n=N_BATCH, output=tmp_path / "batch.jsonl")
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(
            json.dumps({**t, "answer": "accept", "spans": gold[t["text"]]}, ensure_ascii=False)
            + "\n"
            for t in batch.tasks
        ),
        encoding="utf8",
    )
    import_answers(db, "sm", answers)
    settings = UpdateSettings(max_epochs=2, patience=1, anchor_docs=anchor_docs)
    return train_round(db, "sm", mode="reset", settings=settings)


def test_session_round_keeps_its_share_of_the_update(tiny_news_model, pool_files, tmp_path):
    plain = session_round(tmp_path / "plain", tiny_news_model, pool_files, 0.0)
    anchored = session_round(tmp_path / "anchored", tiny_news_model, pool_files, 30.0)
    assert plain.metrics["anchor_alpha"] == 1.0
    assert anchored.metrics["anchor_alpha"] == pytest.approx(N_BATCH / (N_BATCH + 30))
    source = collect_weights(load_pipeline(tiny_news_model), copy=True)
    saved = collect_weights(load_pipeline(anchored.model_dir), copy=True)
    assert_between(source, collect_weights(load_pipeline(plain.model_dir), copy=True), saved, 0.25)
