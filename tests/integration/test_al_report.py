"""The AL experiment's evaluation and report on real DANSK files: the merged evaluation set,
no selection on dev, and a smoke run of `adaptner simulate` + `adaptner curves` whose report
has every column (tiny CNN source, configs/al/test/tiny.cfg)."""

import json
from pathlib import Path

import pytest

from adaptner.simulation import SimulationConfig, load_al_settings, read_records, run_simulation
from adaptner.simulation.curves import aulc
from adaptner.simulation.engine import Simulation
from adaptner.update.trainers import make_fine_tune, trainers_registry
from tests.unit.test_simulation_cli import run_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY_AL = ROOT / "configs" / "al" / "test" / "tiny.cfg"
ANCHORS = (ROOT / ".." / "shared" / "anchors").resolve()

CALLS: list[tuple[list[str], list[str] | None]] = []


@trainers_registry.register("spy_dansk_stopping")
def make_spy():
    inner = make_fine_tune()

    def spy(nlp, train_docs, dev_docs, *, settings, seed):
        stop = None if dev_docs is None else [d.text for d in dev_docs]
        CALLS.append(([d.text for d in train_docs], stop))
        return inner(nlp, train_docs, dev_docs, settings=settings, seed=seed)

    return spy


def test_merged_set_and_no_early_stopping_on_dev(corpus_dir, tiny_news_model, tmp_path):
    # source replay off: the round's training docs are then exactly its labels (replay with
    # early stopping is tested in test_source_replay.py)
    settings = load_al_settings(
        TINY_AL, trainer="spy_dansk_stopping", patience=1, epochs=3, source_replay=0.0
    )
    assert settings.eval_sets == ("heldout", "dev", "merged") and settings.stop_on == "labelled"
    cfg = SimulationConfig(
        source="news", target="legal", strategy="margin", mode="reset", seed=0,
        settings=settings, source_model=tiny_news_model, corpus_dir=corpus_dir,
    )  # fmt: skip
    CALLS.clear()
    records = run_simulation(cfg, tmp_path)
    data = Simulation(cfg, tmp_path / "unused").data
    held = [d.text for d in data.evals["heldout"]]
    dev = [d.text for d in data.evals["dev"]]
    # merged = the 25 held-out legal train docs, then the first 40 legal dev docs (eval_limit)
    assert (len(held), len(dev)) == (25, 40)
    assert [d.text for d in data.evals["merged"]] == held + dev
    assert dev == [d.text for d in data.dev]
    for r in records:
        assert list(r["evals"]) == ["merged", "heldout", "dev"] and r["eval_set"] == "merged"
        assert r["evals"]["merged"]["n_docs"] == 65
    # every round stops early on 20 % of its own labels (2, 4, 6 of 10, 20, 30): never dev
    labeled: list[str] = []
    assert len(CALLS) == len(records) - 1
    for r, (train, stop) in zip(records[1:], CALLS, strict=True):
        labeled += [data.target_train[i].text for i in r["new_ids"]]
        assert r["stop_docs"] == len(stop) == len(labeled) // 5
        assert sorted(train + stop) == sorted(labeled)
        assert not set(stop) & set(dev) and not set(stop) & set(held)


def test_cli_smoke_report_has_every_column(
    corpus_dir, tiny_news_model, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "al"
    args = [
        "simulate", "-s", "news", "-t", "legal", "--strategy", "random", "--strategy", "margin",
        # nothing is hard enough to skip: cartography ranks as margin, so it is a duplicate
        "--strategy", "cartography", "--strategy-param", "cartography.max_hardness=1.0",
        "-m", "reset", "-n", "2", "--source-model", tiny_news_model, "--corpus", corpus_dir,
        "-o", out, "--al-config", TINY_AL, "--budget", "0.2",
        "--baselines", "source_only,target_full,target_finetune", "--quiet",
    ]  # fmt: skip
    assert run_cli(monkeypatch, *args) == 0
    assert "✔ 6 runs and 6 baselines complete" in capsys.readouterr().out
    anchors = ["--anchors", ANCHORS] if (ANCHORS / "paper_al_curves").is_dir() else []
    assert run_cli(monkeypatch, "curves", "-i", out, *anchors) == 0
    text = (out / "report" / "report.md").read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[:3] == [
        "## Evaluation set: merged",
        "## Evaluation set: heldout",
        "## Evaluation set: dev",
    ]
    for part in (
        "## AULC gain over random (paired by seed, Holm-corrected)",
        "## Duplicates",
        "## Baselines",
        "## Goals",
        "| labels at end | F1 @5 % |",
        "| AULC from 0 | worst round − round 0 | 95 % at | 99 % at | round trainer F1 |",
        "every round at or above the source model (seed mean): ",
        f"Made by `adaptner curves -i {out} -o {out / 'report'}",  # and the date
        "| gain | p | Holm p | m | CI above 0 | above random |",
        "- cartography selects margin's sentences on legal (source news, reset: the same docs "
        "in all 2 rounds of 2 seeds): reported as margin.",
        "| merged | news | legal | margin | reset | 2 | 20 % (16 %) |",  # 80 % of the train set
        "| merged | news | legal | target_finetune | 2 |",
    ):
        assert part in text, part
    assert "| cartography |" not in text
    summary = json.loads((out / "report" / "summary.json").read_text())
    rows = {(r["strategy"], r["eval_set"]): r for r in summary["rows"]}
    assert set(rows) == {(s, e) for s in ("random", "margin") for e in ("merged", "heldout", "dev")}
    gains = {(g["strategy"], g["eval_set"]): g for g in summary["gains"]}
    assert set(gains) == {("margin", e) for e in ("merged", "heldout", "dev")}
    assert all(g["family_size"] == 1 and g["p_holm"] == g["p"] for g in gains.values())
    # the report's AULC starts at round 0: recompute it from the run files
    for seed in (0, 1):
        recs = read_records(out / f"news_legal_margin_reset_s{seed}.jsonl")[0]
        assert [r["labeled_fraction"] for r in recs] == [0.0, 0.1, 0.2]
    per_seed = [
        aulc(
            [r["labeled_fraction"] for r in recs],
            [r["evals"]["merged"]["ents_f"] for r in recs],
        )
        for recs in (read_records(out / f"news_legal_margin_reset_s{s}.jsonl")[0] for s in (0, 1))
    ]
    margin = rows[("margin", "merged")]
    assert margin["aulc"] == pytest.approx(sum(per_seed) / 2)
    assert margin["max_fraction_paper"] == pytest.approx(0.16)
    # the round trainer is fine_tune here: full fine-tuning is the same training, one result
    assert margin["target_full_f1"] == pytest.approx(margin["target_finetune_f1"])
    assert margin["reference"] in ("target_full", "target_finetune")
    if anchors:
        assert "| merged | legal | margin | reset | 16 % |" in text
    # the CPU-hour plan of a bigger grid at these rounds' rates; nothing runs
    plan = [
        *args[:-1],
        "-n",
        "5",
        "--budget",
        "1.0",
        "--plan",
        "--timing",
        out,
        "-o",
        tmp_path / "p",
    ]
    assert run_cli(monkeypatch, *plan) == 0
    printed = capsys.readouterr().out
    assert (
        "Grid: 15 runs + 15 baselines" in printed
        and "| legal | runs (reset) | 15 | 150 |" in printed
    )
    assert "Total " in printed and not (tmp_path / "p").exists()
