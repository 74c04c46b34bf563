"""Unit tests of ``adaptner simulate`` and ``adaptner curves`` (through the real entry point)."""

import json
import sys
from pathlib import Path

import pytest

from adaptner.cli import main
from adaptner.cli.simulate import parse_baselines, parse_strategy_params
from adaptner.errors import AdaptnerError
from tests.unit.test_simulation_engine import make_source_pipeline, write_tiny_corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = write_tiny_corpus(root / "corpus")
    return corpus, make_source_pipeline(root / "source", corpus, epochs=5)


def run_cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["adaptner", *map(str, args)])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_parse_helpers():
    assert parse_strategy_params(["margin.aggregation=max", "hybrid.candidates_factor=2"]) == {
        "margin": {"aggregation": "max"},
        "hybrid": {"candidates_factor": 2},
    }
    with pytest.raises(AdaptnerError, match=r"expected <strategy>\.<key>=<value>"):
        parse_strategy_params(["aggregation=max"])
    assert parse_baselines("all") == [
        "source_only", "target_full", "target_finetune", "target_only", "joint"
    ]  # fmt: skip
    assert parse_baselines("none") == []
    assert parse_baselines("source_only, joint") == ["source_only", "joint"]
    with pytest.raises(AdaptnerError, match="unknown baseline 'bogus'"):
        parse_baselines("bogus")


def test_simulate_then_curves(tiny, tmp_path, monkeypatch, capsys):
    corpus, source = tiny
    out = tmp_path / "al"
    args = [
        "simulate", "-s", "news", "-t", "legal", "--strategy", "random", "--strategy", "margin",
        "-m", "reset", "-n", "2", "--source-model", source, "--corpus", corpus, "-o", out,
        "--al-config", ROOT / "configs" / "al" / "test" / "tiny.cfg", "--budget", "0.2",
        "--baselines", "source_only,target_full", "--quiet",
    ]  # fmt: skip
    assert run_cli(monkeypatch, *args) == 0
    text = capsys.readouterr().out
    assert (
        "Protocol paper: pool 40% of the target train set (fresh each round); 10% per round; "
        "budget 20%; 2 epochs per round; evaluation sets: heldout, dev, merged (primary merged; "
        "20% of the target train set held out); no early stopping"
    ) in text
    assert "✔ 4 runs and 4 baselines complete" in text
    assert len(list(out.glob("news_legal_*_reset_s*.jsonl"))) == 4
    # the CPU-hour plan of a bigger grid at the rates of these rounds (nothing is run)
    plan = [
        *args[:-1],
        "-n",
        "3",
        "--budget",
        "0.3",
        "--plan",
        "--timing",
        out,
        "-o",
        tmp_path / "p",
    ]
    assert run_cli(monkeypatch, *plan) == 0
    text = capsys.readouterr().out
    assert "Grid: 6 runs + 6 baselines; rates from" in text
    assert "| legal | runs (reset) | 6 | 18 |" in text and "| legal | target_full | 3 | 0 |" in text
    assert "Total " in text and not (tmp_path / "p").exists()
    assert run_cli(monkeypatch, "curves", "-i", out) == 0
    assert f"✔ {out / 'report' / 'curves_news_legal.png'}" in capsys.readouterr().out
    report = (out / "report" / "report.md").read_text()
    assert "| news | legal | margin | reset | 2 |" in report
    assert "## Baselines" in report and "## Against the paper" not in report
    anchors = ROOT / ".." / "shared" / "anchors"
    if (anchors / "paper_al_curves").is_dir():
        assert run_cli(monkeypatch, "curves", "-i", out, "--anchors", anchors) == 0
        assert "## Against the paper" in (out / "report" / "report.md").read_text()
    assert run_cli(monkeypatch, "curves", "-i", out, "-o", tmp_path / "rep") == 0
    assert (tmp_path / "rep" / "curves_news_legal.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--baselines", "bogus"], "✘ --baselines: unknown baseline 'bogus'"),
        (["--strategy", "oracle"], "✘ Unknown strategy 'oracle'"),
        (["--pool-fraction", "0"], r"✘ pool_fraction must be in (0, 1], got 0.0"),
        (["--al-config", "nope.cfg"], "✘ AL config nope.cfg does not exist (relative to"),
        (["-n", "0"], "✘ --repeats must be at least 1, got 0."),
        (["--backend", "slurm"], "✘ Unknown backend 'slurm'; choose from local, ray."),
        (["--eval-set", "train"], "✘ Unknown evaluation set 'train' in eval_sets; choose from"),
        (["--patience", "2", "--stop-on", "dev"], '✘ patience = 2 with stop_on = "dev" would'),
        (["--plan"], "✘ --plan needs --timing: a folder of finished runs"),
    ],
)
def test_simulate_bad_input(tiny, tmp_path, monkeypatch, capsys, args, message):
    corpus, source = tiny
    base = ["simulate", "-t", "legal", "--source-model", source, "--corpus", corpus]
    code = run_cli(monkeypatch, *base, "-o", tmp_path, "--baselines", "none", "-q", *args)
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_curves_without_results(tmp_path, monkeypatch, capsys):
    assert run_cli(monkeypatch, "curves", "-i", tmp_path / "none") == 1
    assert "✘ Results folder" in capsys.readouterr().err


def test_simulate_with_two_source_models(tiny, tmp_path, monkeypatch, capsys):
    corpus, source = tiny
    second = make_source_pipeline(tmp_path / "second", corpus, epochs=2)
    out = tmp_path / "al"
    args = [
        "simulate", "-t", "legal", "--strategy", "random", "-m", "reset", "-n", "2",
        "--source-model", source, "--source-model", second, "--corpus", corpus, "-o", out,
        "--al-config", ROOT / "configs" / "al" / "test" / "tiny.cfg", "--budget", "0.2",
        "--baselines", "source_only", "--quiet",
    ]  # fmt: skip
    assert run_cli(monkeypatch, *args) == 0
    text = capsys.readouterr().out
    assert f"news: 2 source models, seed k adapts model k mod 2: {source} (seed 0); " in text
    assert sorted(p.name for p in out.glob("*.jsonl")) == [
        "news_legal_random_reset_m0_s0.jsonl",
        "news_legal_random_reset_m1_s1.jsonl",
    ]
    assert sorted(p.name for p in (out / "baselines").glob("*.json")) == [
        "news_legal_source_only_m0_s0.json",
        "news_legal_source_only_m1_s1.json",
    ]
    run = (out / "news_legal_random_reset_m1_s1.jsonl").read_text().splitlines()[0]
    assert json.loads(run)["source_model"] == str(second)
    assert run_cli(monkeypatch, *args[:-1], "-n", "1") == 1
    assert "✘ 2 source models but seeds [0] leave" in capsys.readouterr().err
