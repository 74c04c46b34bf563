"""Anchoring on real DANSK docs: a round keeps n / (n + anchor_docs) of its update, in a
simulation and in a session round, checked against the same round trained without it."""

import json
import sys
from pathlib import Path

import numpy
import pytest

from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin
from adaptner.session.loop import train_round
from adaptner.session.trainer import UpdateSettings
from adaptner.simulation import ALSettings
from adaptner.simulation.engine import Simulation
from adaptner.train_loop import collect_weights
from adaptner.update.anchor import anchor_alpha, anchor_weights
from adaptner.update.trainers import snapshot_weights, update_pipeline
from adaptner.util import load_pipeline
from tests.integration.test_source_replay import (
    N_BATCH,
    answer_next_batch,
    make_session,
    session_files,  # noqa: F401 - a fixture
    social_media_run,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]



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
    """One round of test_source_replay's run (8 social media docs), 2 epochs, 1 source doc
    replayed per doc."""
    settings = {"epochs": 2, "source_replay": 1.0, "budget": 0.1, "anchor_docs": anchor_docs}
    sim = Simulation(social_media_run(model, corpus_dir, "reset", **settings), out)
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


def session_round(tmp_path: Path, model: Path, files, anchor_docs: float):
    """test_source_replay's session (held-out set, no source docs): one batch answered from
    the gold, then one reset round."""
    db = tmp_path / "s.db"
    make_session(db, files, model)
    answer_next_batch(db, files, tmp_path, 1)
    settings = UpdateSettings(max_epochs=2, patience=1, anchor_docs=anchor_docs)
    return train_round(db, "sm", mode="reset", settings=settings)


def test_session_round_keeps_its_share_of_the_update(tiny_news_model, session_files, tmp_path):  # noqa: F811
    plain = session_round(tmp_path / "plain", tiny_news_model, session_files, 0.0)
    anchored = session_round(tmp_path / "anchored", tiny_news_model, session_files, 30.0)
    assert plain.metrics["anchor_alpha"] == 1.0
    assert anchored.metrics["anchor_alpha"] == pytest.approx(N_BATCH / (N_BATCH + 30))
    source = collect_weights(load_pipeline(tiny_news_model), copy=True)
    saved = collect_weights(load_pipeline(anchored.model_dir), copy=True)
    assert_between(source, collect_weights(load_pipeline(plain.model_dir), copy=True), saved, 0.25)


def test_anchor_sweep_replays_recorded_rounds(tiny_news_model, corpus_dir, tmp_path):
    """bench/anchor_sweep.py on a recorded run: alpha 1 gives the recorded F1, alpha 0 the
    source's (round 0), and the table reads its rows."""
    from typer.testing import CliRunner

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import anchor_sweep
    finally:
        sys.path.remove(str(ROOT / "bench"))
    plain = run_one_round(tiny_news_model, corpus_dir, tmp_path / "runs", 0.0)
    rows_file = tmp_path / "rows.jsonl"
    args = ["run", "--runs", str(tmp_path / "runs"), "-t", "social_media", "-o", str(rows_file)]
    args += ["--corpus", str(corpus_dir)]
    result = CliRunner().invoke(anchor_sweep.app, args)
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert row["round"] == 1 and row["labeled"] == 8
    assert row["alphas"]["1.0"]["target_f1"] == pytest.approx(plain.records[1]["target_f1"])
    assert row["alphas"]["0.0"]["target_f1"] == pytest.approx(plain.records[0]["target_f1"])
    again = CliRunner().invoke(anchor_sweep.app, args)  # resumes: nothing left to do
    assert again.exit_code == 0 and len(rows_file.read_text().splitlines()) == 1
    table = CliRunner().invoke(anchor_sweep.app, ["table", str(rows_file)])
    assert table.exit_code == 0 and "| 35 | " in table.output


def test_anchor_sweep_rules_choose_the_share_on_the_next_batch(tmp_path):
    """`rules`: round 2 takes anchor_docs from the share round 1's weights scored best with on
    round 2's batch (k = n (1 - alpha) / alpha), round 1 the fixed k."""
    from typer.testing import CliRunner

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import anchor_sweep
    finally:
        sys.path.remove(str(ROOT / "bench"))

    def row(round_: int, labeled: int, evals: list[float], batch: list[float]) -> dict:
        alphas = {
            str(a): {"evals": {"merged": f}, "next_batch_f1": b}
            for a, f, b in zip(anchor_sweep.ALPHAS, evals, batch, strict=True)
        }
        return {"run_id": "r", "strategy": "random", "round": round_, "labeled": labeled,
                "alphas": alphas}  # fmt: skip

    first = row(1, 10, [0.5, 0.6, 0.6, 0.6, 0.6], [0.2, 0.3, 0.4, 0.4, 0.1])
    second = row(2, 20, [0.5, 0.5, 0.7, 0.9, 0.9], [0.0] * 5)
    # 0.5 and 0.75 tie on round 2's batch: the smaller share, k = 10 (1 - 0.5) / 0.5 = 10
    assert anchor_sweep.next_batch_docs(first, 35.0) == pytest.approx(10.0)
    assert anchor_sweep.next_batch_docs(None, 35.0) == 35.0
    worst = row(1, 10, [0.5] * 5, [0.4, 0.3, 0.2, 0.1, 0.0])
    assert anchor_sweep.next_batch_docs(worst, 35.0) == float("inf")
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in (first, second)))
    result = CliRunner().invoke(anchor_sweep.app, ["rules", str(rows_file), "--fixed", "20"])
    assert result.exit_code == 0, result.output
    lines = {line.split(" | ")[0]: line for line in result.output.splitlines()}
    # fixed 20: alpha 1/3 then 1/2; next batch, round 2: k 10, alpha 2/3 -> 0.7 + (2/3 - 1/2) 0.8
    assert lines["| fixed 20"].startswith("| fixed 20 | +0.100 | +0.200 |")
    assert lines["| next batch"].startswith("| next batch | +0.100 | +0.333 |")
    assert lines["| whole update"].startswith("| whole update | +0.100 | +0.400 |")
