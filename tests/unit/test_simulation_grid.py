"""Unit tests of the grid: planning, resume, failures, the Ray backend's packing.

Parallel worker processes are exercised in tests/integration/test_simulation.py, a real
local Ray in tests/integration/test_simulation_ray.py.
"""

import json
import sys
from pathlib import Path

import pytest
import spacy

from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin
from adaptner.simulation import ALSettings, GridSpec, plan_grid, read_records, run_grid
from adaptner.simulation.grid import (
    RoundTiming,
    cost_plan,
    describe_source_models,
    format_cost_plan,
    round_docs,
)
from adaptner.simulation.pipelines import TrainTask, ensure_trained
from tests.unit.test_simulation_engine import make_source_pipeline, strip_timing, write_tiny_corpus

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"
VOCAB = spacy.blank("da").vocab
SETTINGS = ALSettings(pool_fraction=0.5, query_fraction=0.1, budget=0.2, epochs=1, batch_size=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    corpus = write_tiny_corpus(root / "corpus")
    return corpus, make_source_pipeline(root / "source", corpus, epochs=5)


def spec(tiny, out: Path, **changes) -> GridSpec:
    corpus, source = tiny
    fields = {
        "sources": ["news"],
        "targets": ["legal"],
        "strategies": ["random", "margin"],
        "modes": ["reset", "warm"],
        "seeds": [0],
        "settings": SETTINGS,
        "train_config": TEST_CONFIG,
        "corpus_dir": corpus,
        "output_dir": out / "metrics",
        "models_dir": out / "training",
        "source_model": source,
        "baselines": ["source_only", "target_full"],
    }
    fields.update(changes)
    return GridSpec(**fields)


def all_records(folder: Path) -> dict[str, list[dict]]:
    return {p.stem: strip_timing(read_records(p)[0]) for p in sorted(folder.glob("*.jsonl"))}


def test_plan_expands_the_grid(tiny, tmp_path):
    s = spec(
        tiny,
        tmp_path,
        sources=["news", "all-but-target"],
        seeds=[0, 1],
        source_model=None,
        baselines=["source_only", "target_full", "target_only", "joint"],
    )
    plan = plan_grid(s)
    assert len(plan.runs) == 2 * 2 * 2 * 2  # sources x strategies x modes x seeds
    assert len(plan.baselines) == 2 * 2 * 4  # sources x seeds x kinds
    assert {r.source for r in plan.runs} == {"news", "all-but:legal"}
    names = sorted(t.name for t in plan.trainings)
    # two sources, target_only once per seed (shared by the sources), joint per source and seed
    assert names == sorted(
        [
            "source news",
            "source all-but:legal",
            "legal target_only s0",
            "legal target_only s1",
            "news + legal joint s0",
            "news + legal joint s1",
            "all-but:legal + legal joint s0",
            "all-but:legal + legal joint s1",
        ]
    )
    assert plan.sizes["legal"].rounds == 1 + 2  # budget 8 docs of 40, 4 per round
    assert plan.total_units == 16 * 3 + 16
    assert plan.eval_splits == {"legal": "dev"}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"targets": ["web"]}, "Unknown target 'web'"),
        ({"strategies": ["oracle"]}, "Unknown strategy 'oracle'"),
        ({"modes": ["cold"]}, "Unknown mode 'cold'"),
        ({"baselines": ["best"]}, "Unknown baseline 'best'"),
        ({"seeds": []}, "Empty grid"),
        ({"sources": ["news", "all-but-target"]}, "--source-model gives one pipeline"),
        ({"sources": ["sports"]}, "Unknown domain 'sports'"),
    ],
)
def test_plan_errors(tiny, tmp_path, changes, message):
    with pytest.raises(AdaptnerError, match=message):
        plan_grid(spec(tiny, tmp_path, **changes))


def test_run_grid_resumes(tiny, tmp_path):
    logs: list[str] = []
    plan = run_grid(spec(tiny, tmp_path), progress=False, log=logs.append)
    out = tmp_path / "metrics"
    records = all_records(out)
    assert sorted(records) == sorted(r.run_id for r in plan.runs)
    assert all(len(r) == 3 and r[-1]["last"] for r in records.values())
    baselines = sorted(p.name for p in (out / "baselines").glob("*.json"))
    assert baselines == ["news_legal_source_only_s0.json", "news_legal_target_full_s0.json"]
    assert any("no test split" in line for line in logs)
    # kill simulation: drop the last round of one run and a baseline, run the same grid again
    path = out / "news_legal_margin_warm_s0.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]))
    (out / "baselines" / "news_legal_target_full_s0.json").unlink()
    logs.clear()
    run_grid(spec(tiny, tmp_path), progress=False, log=logs.append)
    assert any("(12/14 rounds done, 2 tasks to run" in line for line in logs), logs
    assert all_records(out) == records
    logs.clear()
    run_grid(spec(tiny, tmp_path), progress=False, log=logs.append)
    assert any("(14/14 rounds done, 0 tasks to run" in line for line in logs), logs


def test_grid_grows_to_a_larger_budget(tiny, tmp_path):
    """A grid finished at one budget continues to a larger one: every run from its last
    round, the baselines (which no budget changes) read back, the folder's settings updated."""
    out = tmp_path / "metrics"
    run_grid(spec(tiny, tmp_path), progress=False, log=lambda _: None)
    before = all_records(out)
    baselines = {p.name: p.read_text() for p in (out / "baselines").glob("*.json")}
    logs: list[str] = []
    grown = spec(tiny, tmp_path, settings=SETTINGS.replace(budget=0.3))
    run_grid(grown, progress=False, log=logs.append)
    # 32 AL docs, 3 labels a round: 20 % = 6 docs after round 2, 30 % = 9 after round 3
    assert any("(14/18 rounds done, 4 tasks to run" in line for line in logs), logs  # + 2 baselines
    after = all_records(out)
    assert all(after[k][:3] == before[k] and len(after[k]) == 4 for k in before)
    assert {p.name: p.read_text() for p in (out / "baselines").glob("*.json")} == baselines
    assert json.loads((out / "simulation.json").read_text())["settings"]["budget"] == 0.3
    with pytest.raises(AdaptnerError, match=r"was run to a budget of 0.3, more than the 0.2"):
        run_grid(spec(tiny, tmp_path), progress=False, log=lambda _: None)


def test_failed_tasks_are_reported_after_the_rest(tiny, tmp_path):
    s = spec(tiny, tmp_path, strategy_params={"margin": {"aggregation": "median"}}, baselines=[])
    with pytest.raises(AdaptnerError, match=r"2 of 4 tasks failed; first: news_legal_margin_.*"):
        run_grid(s, progress=False, log=lambda _: None)
    done = all_records(tmp_path / "metrics")
    assert done["news_legal_random_reset_s0"][-1]["last"]
    # margin failed when it was first used (round 1: the paper protocol's first batch is the
    # strategy's): round 0 is kept for the resume
    assert [r["round"] for r in done["news_legal_margin_reset_s0"]] == [0]


def test_trains_sources_and_scratch_baselines(tiny, tmp_path):
    s = spec(
        tiny,
        tmp_path,
        source_model=None,
        strategies=["random"],
        modes=["reset"],
        baselines=["target_only", "joint"],
        settings=SETTINGS.replace(eval_limit=5),
    )
    logs: list[str] = []
    plan = run_grid(s, progress=False, log=logs.append)
    assert any(line.startswith("Training 3 pipeline(s)") for line in logs)
    assert all(t.done() for t in plan.trainings)
    joint = json.loads(
        (tmp_path / "metrics" / "baselines" / "news_legal_joint_s0.json").read_text()
    )
    assert joint["train_domains"] == "news,legal" and 0 <= joint["target_f1"] <= 1
    meta = json.loads((tmp_path / "training" / "source" / "news" / "train_meta.json").read_text())
    assert meta["train_domains"] == "news"
    # target_only and joint trained without legal's held-out evaluation set (8 of 40 docs)
    baselines = tmp_path / "training" / "baselines"
    for name in ("legal_target_only_s0", "news_legal_joint_s0"):
        filtered = read_docbin(baselines / f"{name}_corpus" / "train" / "legal.spacy", VOCAB)
        assert len(filtered) == 32
        held = json.loads((baselines / name / "holdout.json").read_text())
        assert held == {"target": "legal", "eval_holdout": 0.2, "holdout_seed": 0, "train_limit": 0}
    assert joint["eval_set"] == "merged" and set(joint["evals"]) == {"merged", "heldout", "dev"}
    # a cached baseline trained on another hold-out is refused
    task = next(t for t in plan.trainings if t.name == "legal target_only s0")
    task.holdout = ("legal", 0.3, 0, 0)
    with pytest.raises(AdaptnerError, match=r"trained with other settings \(holdout"):
        ensure_trained(task)
    # a cached pipeline trained differently is refused, naming what differs
    other = TrainTask(
        name="source news",
        train_domains="news",
        train_config=ROOT / "configs" / "test" / "ner_cnn.cfg",
        corpus_dir=tiny[0],
        model_dir=tmp_path / "training" / "source" / "news",
    )
    with pytest.raises(
        AdaptnerError, match=r"source news\) was trained with other settings \(config"
    ):
        ensure_trained(other)


def test_ray_backend_needs_ray(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(
        AdaptnerError, match=r"--backend ray needs Ray: pip install 'adaptner\[ray\]'"
    ):
        run_grid(spec(tiny, tmp_path), backend="ray", progress=False, log=lambda _: None)
    with pytest.raises(AdaptnerError, match="Unknown backend 'slurm'"):
        run_grid(spec(tiny, tmp_path), backend="slurm", progress=False, log=lambda _: None)


def timed_round(train_docs, epochs, train_s, pool, score_s, eval_s, target="legal"):
    return {"target": target, "round": 1, "train_docs": train_docs, "train_epochs": epochs,
            "train_seconds": train_s, "pool_ids": list(range(pool)), "score_seconds": score_s,
            "eval_seconds": eval_s}  # fmt: skip


def test_cpu_hour_plan_from_measured_rounds(tiny, tmp_path):
    # 0.1 s per training doc-epoch, 0.02 s per scored candidate, 0.5 s per evaluation
    timing = RoundTiming.from_records(
        [{"target": "legal", "round": 0, "eval_seconds": 9.0},  # round 0 trains nothing
         timed_round(10, 2, 2.0, 20, 0.4, 0.5), timed_round(5, 2, 1.0, 10, 0.2, 0.5)]
    )  # fmt: skip
    assert timing.rounds == 2
    assert timing.rate("legal") == pytest.approx((0.1, 0.02, 0.5))
    assert timing.rate("news") == timing.rate("legal")  # unmeasured targets: every round's rates
    no_replay = SETTINGS.replace(source_replay=0.0)
    plan = plan_grid(spec(tiny, tmp_path, settings=no_replay, baselines=[
        "source_only", "target_full", "target_finetune"]))  # fmt: skip
    # legal: 32 AL docs; 3 then 6 labels (budget 20 %); fresh pools of 16
    assert round_docs(plan.sizes["legal"], no_replay, "reset") == [(3, 16), (6, 16)]
    # warm: 3 new + 2 replayed
    assert round_docs(plan.sizes["legal"], no_replay, "warm") == [(3, 16), (5, 16)]
    cost = cost_plan(plan, timing, workers=2)
    # reset run: 0.5 + (0.3 + 0.32 + 0.5) + (0.6 + 0.32 + 0.5) = 3.04 s; warm: 2.94 s
    # (2 strategies each); source_only 0.5 s; target_full 32 x 0.1 + 0.5 = 3.7 s;
    # target_finetune is the same training here (fine_tune round trainer): 0
    rows = {r["task"]: r for r in cost["rows"]}
    assert rows["runs (reset)"]["cpu_hours"] * 3600 == pytest.approx(2 * 3.04)
    assert rows["runs (warm)"]["cpu_hours"] * 3600 == pytest.approx(2 * 2.94)
    assert rows["runs (reset)"]["rounds"] == 4 and rows["runs (reset)"]["count"] == 2
    assert rows["target_finetune (= target_full)"]["cpu_hours"] == 0
    assert cost["cpu_hours"] * 3600 == pytest.approx(11.96 + 0.5 + 3.7)
    assert cost["wall_hours"] == pytest.approx(cost["cpu_hours"] / 2)
    assert not cost["finetune_assumed"] and cost["not_estimated"] == []
    text = format_cost_plan(cost)
    assert "| legal | runs (reset) | 2 | 4 | 0.00 |" in text
    assert (
        "Total 0.0 CPU-hours; 0.0 h wall with 2 worker(s) (rates from 2 measured rounds)." in text
    )
    # a reference that fine-tunes differently: costed at the fine_tune rounds' rate
    other = plan_grid(spec(tiny, tmp_path, settings=no_replay.replace(reference_epochs=3),
                           baselines=["target_finetune"]))  # fmt: skip
    slow = RoundTiming.from_records([timed_round(4, 1, 4.0, 1, 0.0, 0.5)])  # 1 s per doc-epoch
    ft = cost_plan(other, timing, finetune_timing=slow)
    assert {r["task"]: r["cpu_hours"] * 3600 for r in ft["rows"]}[
        "target_finetune"
    ] == pytest.approx(32 * 3 * 1.0 + 0.5)
    assumed = cost_plan(other, timing)
    assert assumed["finetune_assumed"]
    assert "target_finetune is costed at the round trainer's rate" in format_cost_plan(assumed)
    with pytest.raises(AdaptnerError, match="No timed rounds"):
        RoundTiming.from_records([{"target": "legal", "round": 0}])


def test_cpu_hour_plan_counts_source_replay_and_names_the_trainer(tiny, tmp_path):
    # rounds that trained 4 target + 6 source docs for 1 epoch in 2 s: 0.2 s per doc-epoch
    rec = {**timed_round(4, 1, 2.0, 10, 0.0, 0.5), "source_replay_docs": 6,
           "params": {"trainer": "cached_head"}}  # fmt: skip
    timing = RoundTiming.from_records([rec])
    assert timing.rate("legal")[0] == pytest.approx(0.2) and timing.trainers == ("cached_head",)
    # SETTINGS replay 2 source docs per target doc (the tiny corpus has 30 news train docs):
    # reset rounds train 3 + 6 and 6 + 12 docs, warm 3 + 6 and 5 + 10 (1 epoch each)
    plan = plan_grid(spec(tiny, tmp_path, strategies=["random"], baselines=[]))
    cost = cost_plan(plan, timing)
    rows = {r["task"]: r["cpu_hours"] * 3600 for r in cost["rows"]}
    # each run: round 0's evaluation + per round docs x 0.2 + 16 candidates x 0 + 0.5
    assert rows["runs (reset)"] == pytest.approx(0.5 + (9 * 0.2 + 0.5) + (18 * 0.2 + 0.5))
    assert rows["runs (warm)"] == pytest.approx(0.5 + (9 * 0.2 + 0.5) + (15 * 0.2 + 0.5))
    capped = plan_grid(spec(tiny, tmp_path, strategies=["random"], modes=["reset"], baselines=[],
                            settings=SETTINGS.replace(source_replay_max=4)))  # fmt: skip
    seconds = cost_plan(capped, timing)["cpu_hours"] * 3600
    assert seconds == pytest.approx(0.5 + (7 * 0.2 + 0.5) + (10 * 0.2 + 0.5))
    # the grid's rounds use fine_tune (SETTINGS), the rates are cached_head's: said
    assert cost["trainers"] == ["fine_tune"] and cost["timing_trainers"] == ["cached_head"]
    assert (
        "The rates were measured with the cached_head trainer; this grid's rounds use fine_tune"
        in format_cost_plan(cost)
    )
    same = cost_plan(plan, RoundTiming.from_records([{**rec, "params": {"trainer": "fine_tune"}}]))
    assert "The rates were measured" not in format_cost_plan(same)


@pytest.fixture(scope="module")
def second_source(tiny, tmp_path_factory):
    """Another source pipeline on the tiny corpus (fewer epochs: other weights)."""
    return make_source_pipeline(tmp_path_factory.mktemp("second") / "source", tiny[0], epochs=2)


def test_plan_with_two_source_models(tiny, second_source, tmp_path):
    first = tiny[1]
    kinds = ["source_only", "target_full", "target_finetune", "target_only"]
    plan = plan_grid(
        spec(
            tiny, tmp_path, source_model=[first, second_source], seeds=[0, 1, 2, 3], baselines=kinds
        )  # fmt: skip
    )
    assert plan.source_models == {"news": (first, second_source)}
    # seed k adapts model k mod 2: seeds 0 and 2 the first, 1 and 3 the second
    for run in plan.runs:
        assert run.source_index == run.seed % 2
        assert run.source_model == (first, second_source)[run.seed % 2]
        assert run.params()["source_index"] == run.seed % 2
        assert run.run_id.endswith(f"_m{run.seed % 2}_s{run.seed}")
    ids = [r.run_id for r in plan.runs]
    assert len(ids) == len(set(ids)) == 2 * 2 * 4
    assert "news_legal_margin_warm_m1_s3" in ids
    # the baselines that start from the source use the seed's model; target_only does not
    by_id = {b.baseline_id: b for b in plan.baselines}
    assert len(by_id) == len(plan.baselines) == 4 * 4
    for seed in range(4):
        for kind in ("source_only", "target_full", "target_finetune"):
            b = by_id[f"news_legal_{kind}_m{seed % 2}_s{seed}"]
            assert b.source_model == (first, second_source)[seed % 2]
            assert b.params()["source_index"] == seed % 2
        assert "source_index" not in by_id[f"news_legal_target_only_s{seed}"].params()
    assert describe_source_models(plan) == [
        f"news: 2 source models, seed k adapts model k mod 2: {first} (seeds 0, 2); "
        f"{second_source} (seeds 1, 3)"
    ]
    # a plan is stable: planning again gives the same ids for the same tasks
    again = plan_grid(spec(tiny, tmp_path, source_model=[first, second_source],
                           seeds=[0, 1, 2, 3], baselines=kinds))  # fmt: skip
    assert [r.run_id for r in again.runs] == ids


def test_one_source_model_keeps_the_run_ids(tiny, tmp_path):
    for given in (tiny[1], str(tiny[1]), [tiny[1]]):
        plan = plan_grid(spec(tiny, tmp_path, source_model=given, seeds=[0, 1]))
        assert sorted(r.run_id for r in plan.runs) == sorted(
            f"news_legal_{s}_{m}_s{k}"
            for s in ("random", "margin")
            for m in ("reset", "warm")
            for k in (0, 1)
        )
        assert sorted(b.baseline_id for b in plan.baselines) == [
            "news_legal_source_only_s0", "news_legal_source_only_s1",
            "news_legal_target_full_s0", "news_legal_target_full_s1",
        ]  # fmt: skip
        assert all(r.source_index is None and "source_index" not in r.params() for r in plan.runs)
        assert describe_source_models(plan) == []


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"seeds": [0, 2]}, r"2 source models but seeds \[0, 2\] leave .* without a run"),
        ({"sources": ["news", "all-but-target"]}, "--source-model gives the 2 pipelines of one"),
    ],
)
def test_two_source_models_errors(tiny, second_source, tmp_path, changes, message):
    with pytest.raises(AdaptnerError, match=message):
        plan_grid(spec(tiny, tmp_path, source_model=[tiny[1], second_source], **changes))
    with pytest.raises(AdaptnerError, match="names .* more than once"):
        plan_grid(spec(tiny, tmp_path, source_model=[tiny[1], tiny[1]], seeds=[0, 1]))


def test_unknown_round_trainer(tiny, tmp_path):
    with pytest.raises(AdaptnerError, match=r"Unknown AL trainer 'top_layer'; choose from .*top_l"):
        plan_grid(spec(tiny, tmp_path, settings=SETTINGS.replace(trainer="top_layer")))
