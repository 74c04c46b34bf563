"""The paper's AL protocol and the held-out evaluation set on real DANSK files, with the tiny
configs (configs/test/bio_cnn.cfg source, configs/al/test/tiny.cfg settings)."""

from pathlib import Path

import numpy
import pytest

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
