"""A 2-round AL simulation on a small DANSK slice with the tiny test config: records, resume,
and the same records from parallel worker processes."""

from pathlib import Path

import pytest

from adaptner.labels import ONTONOTES_LABELS
from adaptner.simulation import (
    TIMING_FIELDS,
    ALSettings,
    GridSpec,
    SimulationConfig,
    read_records,
    run_grid,
    run_simulation,
)
from adaptner.simulation.curves import write_report
from adaptner.simulation.engine import Simulation

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"
# The fixed-pool protocol, dev only (the paper's protocol: test_simulation_protocol.py).
# 200 legal train docs: pool 100, 10 docs (5 %) per round, budget 10 % = 2 rounds
SETTINGS = ALSettings(
    protocol="fixed_pool",
    eval_holdout=0.0,
    eval_sets=("dev",),
    pool_fraction=0.5,
    query_fraction=0.05,
    budget=0.1,
    epochs=2,
    train_limit=200,
    eval_limit=60,
)


def strip_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


@pytest.fixture(scope="module")
def source_model(tiny_news_model):
    """The tiny test pipeline trained on DANSK news (the session's shared model)."""
    return tiny_news_model


def make_cfg(dansk_corpus, source_model, mode: str) -> SimulationConfig:
    return SimulationConfig(
        source="news",
        target="legal",
        strategy="margin",
        mode=mode,
        seed=0,
        settings=SETTINGS,
        source_model=source_model,
        corpus_dir=dansk_corpus,
    )


@pytest.mark.parametrize("mode", ["reset", "warm"])
def test_two_rounds_and_resume(dansk_corpus, source_model, tmp_path, mode):
    cfg = make_cfg(dansk_corpus, source_model, mode)
    records = run_simulation(cfg, tmp_path / "full")
    assert [r["round"] for r in records] == [0, 1, 2]
    assert [r["labeled_count"] for r in records] == [0, 10, 20]
    assert [r["last"] for r in records] == [False, False, True]
    pool = set(Simulation(cfg, tmp_path / "unused").pool_ids)
    assert len(pool) == 100
    labeled: list[int] = []
    for r in records:
        assert not set(r["new_ids"]) & set(labeled), "a doc was labeled twice"
        assert set(r["new_ids"]) <= pool and len(set(r["new_ids"])) == len(r["new_ids"])
        labeled += r["new_ids"]
        assert r["labeled_fraction"] == pytest.approx(len(labeled) / 200)
        assert r["target_size"] == 200 and r["pool_size"] == 100
        assert r["eval_split"] == "dev"
        assert 0.0 <= r["target_f1"] <= 1.0 and 0.0 <= r["source_f1"] <= 1.0
        assert set(r["target_per_label"]) <= set(ONTONOTES_LABELS)
        assert set(r["source_per_label"]) <= set(ONTONOTES_LABELS)
        assert r["target_per_label"], "legal dev has entities: some label must be scored"
    assert records[1]["train_docs"] == 10
    assert records[2]["train_docs"] == (20 if mode == "reset" else 15)  # warm: 10 new + 5 replayed
    assert records[1]["train_seconds"] > 0 and records[2]["score_seconds"] > 0

    # interrupted after round 1, killed during the append of round 2
    part = tmp_path / "part"
    part.mkdir()
    lines = (tmp_path / "full" / f"{cfg.run_id}.jsonl").read_text().splitlines(keepends=True)
    (part / f"{cfg.run_id}.jsonl").write_text("".join(lines[:2]) + lines[2][:100])
    resumed = run_simulation(cfg, part)
    assert strip_timing(resumed) == strip_timing(records)
    assert strip_timing(read_records(part / f"{cfg.run_id}.jsonl")[0]) == strip_timing(records)


def test_parallel_grid_matches_single_runs_and_reports(dansk_corpus, source_model, tmp_path):
    spec = GridSpec(
        sources=["news"],
        targets=["legal"],
        strategies=["margin"],
        modes=["reset", "warm"],
        seeds=[0],
        settings=SETTINGS,
        train_config=TEST_CONFIG,
        corpus_dir=dansk_corpus,
        output_dir=tmp_path / "grid",
        models_dir=tmp_path / "training",
        source_model=source_model,
        baselines=["source_only", "target_full"],
    )
    run_grid(spec, workers=2, progress=False, log=lambda _: None)
    for mode in ("reset", "warm"):
        cfg = make_cfg(dansk_corpus, source_model, mode)
        single = run_simulation(cfg, tmp_path / "single")
        grid = read_records(tmp_path / "grid" / f"{cfg.run_id}.jsonl")[0]
        assert strip_timing(grid) == strip_timing(single)
    result = write_report(tmp_path / "grid", tmp_path / "report")
    assert [p.name for p in result["plots"]] == ["curves_news_legal.png"]
    assert [(r["strategy"], r["mode"]) for r in result["rows"]] == [
        ("margin", "reset"),
        ("margin", "warm"),
    ]
    assert all(r["reference"] == "target_full" for r in result["rows"])
