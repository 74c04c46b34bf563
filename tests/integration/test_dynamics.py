"""Integration tests for training dynamics on real DANSK slices: data maps, AUM, noise, AL."""

import json
from pathlib import Path

import pyarrow.csv
import pyarrow.parquet
import pytest
import spacy
from typer.testing import CliRunner

from adaptner.cli import app
from adaptner.readers import read_docbin

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"


def run(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_datamap_cli_on_news(corpus_dir, tmp_path):
    out = tmp_path / "dm"
    output = run(
        "datamap",
        TEST_CONFIG,
        "-o",
        out,
        "-d",
        "news",
        "--epochs",
        2,
        "--train",
        corpus_dir / "train",
        "--dev",
        corpus_dir / "dev",
        "--corpora.train.limit",
        80,
        "--top",
        3,
    )
    assert "news:" in output and "datamap_news.png" in output
    png = out / "datamap_news.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((out / "dynamics" / "dynamics.json").read_text())
    assert [s["epoch"] for s in manifest["snapshots"]] == [0, 1] and manifest["n_docs"] == 80
    tokens = pyarrow.parquet.read_table(out / "tokens.parquet")
    sentences = pyarrow.parquet.read_table(out / "sentences.parquet")
    assert set(tokens.column("gold").to_pylist()) and "O" not in tokens.column("gold").to_pylist()
    assert 0 < sentences.num_rows <= 80
    assert set(sentences.column("domain").to_pylist()) == {"news"}
    md = (out / "hardest.md").read_text()
    assert "## news" in md and "1. **confidence" in md
    # re-reading the recording (no training) with O tokens gives the same sentences and more
    again = run(
        "datamap",
        "-o",
        tmp_path / "again",
        "--dynamics",
        out / "dynamics",
        "--include-o",
        "--format",
        "csv",
    )
    assert "data map of 2 epochs" in again
    with_o = pyarrow.csv.read_csv(tmp_path / "again" / "tokens.csv")
    assert with_o.num_rows > tokens.num_rows and "O" in with_o.column("gold").to_pylist()


def test_aum_cli_writes_prodigy_tasks(corpus_dir, tmp_path):
    out = tmp_path / "aum"
    output = run(
        "aum",
        TEST_CONFIG,
        "-o",
        out,
        "-d",
        "news",
        "--epochs",
        2,
        "--limit",
        60,
        "--train",
        corpus_dir / "train",
        "--dev",
        corpus_dir / "dev",
    )
    assert "gold spans" in output
    docs = read_docbin(corpus_dir / "train" / "news.spacy", spacy.blank("da").vocab)[:60]
    tasks = [json.loads(line) for line in (out / "flags.jsonl").read_text().splitlines()]
    summary = json.loads((out / "aum.json").read_text())
    assert len(tasks) == summary["flagged_docs"] > 0
    for task in tasks:
        doc = docs[task["meta"]["doc"]]
        assert task["text"] == doc.text
        assert [(s["token_start"], s["token_end"] + 1, s["label"]) for s in task["spans"]] == [
            (e.start, e.end, e.label_) for e in doc.ents
        ]
        assert task["meta"]["aum"] <= summary["threshold"] + 1e-3
        assert task["meta"]["reason"].startswith("AUM ")
    assert "| label | spans | flagged |" in (out / "aum_summary.md").read_text()


def test_noise_experiment_end_to_end(corpus_dir, tmp_path):
    out = tmp_path / "noise"
    output = run(
        "aum",
        TEST_CONFIG,
        "-o",
        out,
        "-d",
        "news",
        "--epochs",
        2,
        "--limit",
        60,
        "--noise",
        20,
        "--train",
        corpus_dir / "train",
        "--dev",
        corpus_dir / "dev",
        "--corpora.dev.limit",
        20,
    )
    assert "| noise | clean F1 | noisy F1 | sieved F1 | flipped F1 |" in output
    assert "| 20% | 99 (main) |" in output
    report = json.loads((out / "noise.json").read_text())
    (row,) = report["rates"]
    assert row["flipped"] == round(0.2 * row["spans"])
    assert 0 <= row["true_positives"] <= min(row["flagged"], row["flipped"])
    assert 0.0 <= row["precision"] <= 1.0 and 0.0 <= row["recall"] <= 1.0
    by_pct = row["by_percentile"]
    assert list(by_pct) == ["50", "90", "99"] and by_pct["99"]["flagged"] == row["flagged"]
    flagged = [by_pct[p]["flagged"] for p in by_pct]
    assert flagged == sorted(flagged)  # a higher threshold flags a superset
    for name in ("noisy", "sieved", "flipped"):
        assert 0.0 <= row["f1"][name]["ents_f"] <= 1.0
    assert (out / "runs" / "noise_20" / "sieved" / "model" / "model-last").is_dir()


def test_cartography_in_a_simulation(corpus_dir, tmp_path, monkeypatch):
    """The simulation passes the labelled docs each round; cartography uses them."""
    from adaptner.simulation.config import ALSettings, SimulationConfig
    from adaptner.simulation.engine import run_simulation
    from adaptner.strategies.cartography import CartographyStrategy
    from adaptner.training import train_pipeline

    seen: list[int] = []
    original = CartographyStrategy.reference_set

    def spy(self, nlp):
        seen.append(len(self.labeled_docs))
        return original(self, nlp)

    monkeypatch.setattr(CartographyStrategy, "reference_set", spy)
    source = train_pipeline(
        TEST_CONFIG,
        tmp_path / "source",
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        overrides={"corpora.train.limit": 80, "corpora.dev.limit": 20},
        verbose=False,
    )
    settings = ALSettings(
        protocol="fixed_pool",
        eval_holdout=0.0,
        eval_sets=("dev",),
        pool_fraction=1.0,
        query_fraction=0.2,
        budget=0.8,
        epochs=2,
        train_limit=50,
        eval_limit=20,
    )
    cfg = SimulationConfig(
        source="news",
        target="legal",
        strategy="cartography",
        mode="reset",
        seed=0,
        settings=settings,
        source_model=source,
        corpus_dir=corpus_dir,
        eval_split="dev",
    )
    records = run_simulation(cfg, tmp_path / "al")
    assert [r["labeled_count"] for r in records] == [0, 10, 20, 30, 40]
    ids = [i for r in records for i in r["new_ids"]]
    assert len(ids) == len(set(ids)) == 40
    assert seen == [10, 20, 30]  # rounds 2-4 (round 1 is random)
