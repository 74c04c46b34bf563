"""The paper's AL protocol and the held-out evaluation set on real DANSK files, with the tiny
configs (configs/test/bio_cnn.cfg source, configs/al/test/tiny.cfg settings)."""

import json
from pathlib import Path

import numpy
import pytest

from adaptner.errors import AdaptnerError
from adaptner.scoring import predict
from adaptner.simulation import (
    TIMING_FIELDS,
    GridSpec,
    SimulationConfig,
    load_al_settings,
    read_records,
    run_grid,
    run_simulation,
)
from adaptner.simulation.curves import write_report
from adaptner.simulation.engine import Simulation
from adaptner.strategies import get_strategy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY_AL = ROOT / "configs" / "al" / "test" / "tiny.cfg"
ANCHORS = (ROOT / ".." / "shared" / "anchors").resolve()


def strip_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def make_cfg(corpus, source, strategy="margin", mode="reset", seed=0, **changes):
    return SimulationConfig(
        source="news",
        target="legal",
        strategy=strategy,
        mode=mode,
        seed=seed,
        settings=load_al_settings(TINY_AL, **changes),
        source_model=source,
        corpus_dir=corpus,
    )


def test_tiny_settings_are_the_papers_protocol():
    s = load_al_settings(TINY_AL)
    assert (s.protocol, s.eval_holdout, s.train_limit) == ("paper", 0.2, 125)


@pytest.mark.parametrize("mode", ["reset", "warm"])
def test_paper_protocol_on_dansk_legal(corpus_dir, tiny_news_model, tmp_path, mode):
    cfg = make_cfg(corpus_dir, tiny_news_model, mode=mode)
    records = run_simulation(cfg, tmp_path / "full")
    sim = Simulation(cfg, tmp_path / "unused")
    held, al = set(sim.data.heldout_ids), set(sim.data.al_ids)
    assert (len(held), len(al)) == (25, 100)
    assert [r["labeled_count"] for r in records] == [0, 10, 20, 30]
    assert [r["last"] for r in records] == [False, False, False, True]
    labeled: list[int] = []
    for r in records[1:]:
        pool = r["pool_ids"]
        assert len(pool) == 40 and set(pool) <= al and not set(pool) & set(labeled)
        assert set(r["new_ids"]) <= set(pool) and len(set(r["new_ids"])) == 10
        assert pool == sim.candidates(r["round"], labeled)
        labeled += r["new_ids"]
    assert len({tuple(r["pool_ids"]) for r in records[1:]}) == 3  # fresh every round
    assert not set(labeled) & held
    for r in records:
        assert r["eval_set"] == "merged" and list(r["evals"]) == ["merged", "heldout", "dev"]
        assert r["evals"]["heldout"]["n_docs"] == 25 and r["evals"]["dev"]["n_docs"] == 40
        assert r["evals"]["merged"]["n_docs"] == 65
        assert r["target_f1"] == r["evals"]["merged"]["ents_f"]
        assert 0.0 <= r["evals"]["dev"]["ents_f"] <= 1.0
    # legal has entities: the source pipeline scores some, and training on legal helps
    assert records[-1]["evals"]["heldout"]["ents_f"] > 0.0

    # the first batch: the strategy's choice with the untouched source pipeline
    first = records[1]
    docs = predict(sim.nlp, sim.docs(first["pool_ids"]))
    scores = get_strategy("margin").score(docs, nlp=sim.nlp, rng=numpy.random.default_rng(0))
    chosen = [first["pool_ids"].index(i) for i in first["new_ids"]]
    others = sorted(set(range(40)) - set(chosen))
    assert min(scores[chosen]) >= max(scores[others])

    # killed during round 2's append: resumes to the same records
    part = tmp_path / "part"
    part.mkdir()
    lines = (tmp_path / "full" / f"{cfg.run_id}.jsonl").read_text().splitlines(keepends=True)
    (part / f"{cfg.run_id}.jsonl").write_text("".join(lines[:2]) + lines[2][:100])
    assert strip_timing(run_simulation(cfg, part)) == strip_timing(records)
    assert strip_timing(read_records(part / f"{cfg.run_id}.jsonl")[0]) == strip_timing(records)


def test_grid_heldout_is_shared_and_reported(corpus_dir, tiny_news_model, tmp_path):
    spec = GridSpec(
        sources=["news"],
        targets=["legal", "social_media"],
        strategies=["random", "margin"],
        modes=["reset"],
        seeds=[0, 1],
        settings=load_al_settings(TINY_AL),
        train_config=ROOT / "configs" / "test" / "bio_cnn.cfg",
        corpus_dir=corpus_dir,
        output_dir=tmp_path / "grid",
        models_dir=tmp_path / "training",
        source_model=tiny_news_model,
        baselines=["source_only", "target_full"],
    )
    plan = run_grid(spec, workers=1, progress=False, log=lambda _: None)
    digests: dict[str, set[str]] = {}
    for run in plan.runs:
        records = read_records(plan.run_path(run))[0]
        assert records[-1]["last"] and len(records) == 4
        digests.setdefault(run.target, set()).update(r["heldout_digest"] for r in records)
        held = set(Simulation(run, tmp_path / "unused").data.heldout_ids)
        for r in records:
            assert not (set(r["new_ids"]) | set(r["pool_ids"])) & held
    # one held-out set per target, whatever the strategy or seed
    assert {t: len(d) for t, d in digests.items()} == {"legal": 1, "social_media": 1}
    anchors = ANCHORS if (ANCHORS / "paper_al_curves").is_dir() else None
    result = write_report(tmp_path / "grid", tmp_path / "report", anchors_dir=anchors)
    rows = result["rows"]
    assert {(r["target"], r["strategy"], r["eval_set"]) for r in rows} == {
        (t, s, e)
        for t in ("legal", "social_media")
        for s in ("random", "margin")
        for e in ("merged", "heldout", "dev")
    }
    assert all(r["reference"] == "target_full" and r["seeds"] == 2 for r in rows)
    text = result["report"].read_text()
    assert "## Evaluation set: heldout" in text and "## Evaluation set: dev" in text
    assert text.index("## Evaluation set: merged") < text.index("## Evaluation set: heldout")
    assert "| heldout | news | legal | target_full | 2 |" in text
    if anchors is not None:
        assert "| heldout | social_media | margin | reset |" in text  # next to the paper's
    assert [p.name for p in result["plots"]] == [
        "curves_news_legal.png",
        "curves_news_social_media.png",
    ]


@pytest.fixture(scope="module")
def second_news_model(corpus_dir, tmp_path_factory) -> Path:
    """configs/test/bio_cnn.cfg trained on DANSK News with another seed: a second source."""
    from adaptner.training import train_pipeline

    return train_pipeline(
        ROOT / "configs" / "test" / "bio_cnn.cfg",
        tmp_path_factory.mktemp("news_seed1") / "news",
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        seed=1,
        verbose=False,
    )


def test_grid_with_two_source_models(corpus_dir, tiny_news_model, second_news_model, tmp_path):
    models = [tiny_news_model, second_news_model]
    spec = GridSpec(
        sources=["news"],
        targets=["legal"],
        strategies=["random", "margin"],
        modes=["reset"],
        seeds=[0, 1, 2],
        settings=load_al_settings(TINY_AL),
        train_config=ROOT / "configs" / "test" / "bio_cnn.cfg",
        corpus_dir=corpus_dir,
        output_dir=tmp_path / "grid",
        models_dir=tmp_path / "training",
        source_model=models,
        baselines=["source_only", "target_full"],
    )
    logs: list[str] = []
    run_grid(spec, progress=False, log=logs.append)
    assert any("news: 2 source models, seed k adapts model k mod 2" in line for line in logs)
    out = tmp_path / "grid"
    runs = {p.stem: read_records(p)[0] for p in out.glob("*.jsonl")}
    assert sorted(runs) == sorted(
        f"news_legal_{s}_reset_m{k % 2}_s{k}" for s in ("random", "margin") for k in (0, 1, 2)
    )
    baselines = {p.stem: json.loads(p.read_text()) for p in (out / "baselines").glob("*.json")}
    assert sorted(baselines) == sorted(
        f"news_legal_{kind}_m{k % 2}_s{k}"
        for kind in ("source_only", "target_full")
        for k in (0, 1, 2)
    )
    start = {}
    for recs in runs.values():
        seed = recs[0]["seed"]
        assert recs[-1]["last"] and len(recs) == 4
        assert {r["source_model"] for r in recs} == {str(models[seed % 2])}
        # round 0 is the seed's source model: its source_only baseline scores the same
        only = baselines[f"news_legal_source_only_m{seed % 2}_s{seed}"]
        assert only["source_model"] == str(models[seed % 2])
        assert recs[0]["target_f1"] == pytest.approx(only["target_f1"])
        assert recs[0]["source_f1"] == pytest.approx(only["source_f1"])
        start[seed] = recs[0]["target_f1"]
    assert start[0] == pytest.approx(start[2]) and start[0] != pytest.approx(start[1])
    full = baselines["news_legal_target_full_m1_s1"]
    assert full["source_model"] == str(models[1]) and full["params"]["source_index"] == 1

    # resume: one run loses its last round, one baseline its file; the rest is not redone
    stamps = {p.name: p.stat().st_mtime_ns for p in out.rglob("*.js*")}
    cut = out / "news_legal_margin_reset_m1_s1.jsonl"
    cut.write_text("".join(cut.read_text().splitlines(keepends=True)[:3]))
    (out / "baselines" / "news_legal_target_full_m0_s2.json").unlink()
    logs.clear()
    run_grid(spec, progress=False, log=logs.append)
    assert any("(28/30 rounds done, 2 tasks to run" in line for line in logs), logs
    redone = {"news_legal_margin_reset_m1_s1.jsonl", "news_legal_target_full_m0_s2.json"}
    assert {
        p.name for p in out.rglob("*.js*") if p.stat().st_mtime_ns != stamps.get(p.name)
    } == redone
    again = {p.stem: read_records(p)[0] for p in out.glob("*.jsonl")}
    assert {k: strip_timing(v) for k, v in again.items()} == {
        k: strip_timing(v) for k, v in runs.items()
    }

    # the report names the models and the seeds each served; seeds pair across them
    result = write_report(out, tmp_path / "report")
    assert result["source_models"] == {"news": {str(models[0]): [0, 2], str(models[1]): [1]}}
    text = result["report"].read_text()
    assert (
        f"Source models: news: 2 source models, `{models[0]}` (seeds 0, 2); `{models[1]}` "
        "(seed 1)." in text
    )
    assert all(r["seeds"] == 3 for r in result["rows"])
    assert {g["seeds"] for g in result["gains"]} == {3}

    # a one-source run of seed 0 in the same folder would pair two models' runs: refused
    twin = out / "news_legal_random_reset_s0.jsonl"
    recs = read_records(out / "news_legal_random_reset_m0_s0.jsonl")[0]
    twin.write_text("".join(json.dumps({**r, "run_id": twin.stem}) + "\n" for r in recs))
    with pytest.raises(AdaptnerError, match=r"Two runs of seed 0 for news/legal/random/reset"):
        write_report(out, tmp_path / "report2")
