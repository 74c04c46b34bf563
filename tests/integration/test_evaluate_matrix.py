"""``adaptner evaluate`` and ``adaptner matrix`` on real DANSK with the tiny bio_cnn config."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptner.cli import app
from adaptner.evaluation import AGREEMENT_TOLERANCE, evaluate_model, write_report
from adaptner.training import train_pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"
# Short trainings: evaluate at steps 0/10/20 so model-best is a trained model, not step 0.
TINY = {"training.max_steps": 30, "training.eval_frequency": 10}


@pytest.fixture(scope="module")
def news_model(tmp_path_factory, corpus_dir) -> Path:
    """configs/test/bio_cnn.cfg trained briefly on a 200-doc news slice."""
    out = tmp_path_factory.mktemp("eval") / "news"
    return train_pipeline(
        TINY_CONFIG,
        out,
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        overrides={**TINY, "corpora.train.limit": 200},
        verbose=False,
    )


def test_evaluate_seqeval_equals_spacy_on_real_predictions(news_model, corpus_dir, tmp_path):
    report = evaluate_model(news_model, corpus_dir / "dev", domains="all", batch_size=64)
    assert report["split"] == "dev"
    assert report["overall"]["docs"] == sum(s["docs"] for s in report["per_domain"].values())
    assert report["overall"]["pred_ents"] > 0, "the model predicts nothing: comparison is vacuous"
    for scope in [report["overall"], *report["per_domain"].values()]:
        seqeval = scope["seqeval"]
        for key in ("ents_p", "ents_r", "ents_f"):
            assert abs(scope[key] - seqeval[key]) <= AGREEMENT_TOLERANCE
        for label, s in scope["ents_per_type"].items():
            other = seqeval["ents_per_type"].get(label, {"p": 0.0, "r": 0.0, "f": 0.0})
            assert abs(s["f"] - other["f"]) <= AGREEMENT_TOLERANCE, label
    assert report["agreement"]["ok"]
    covered = report["macro"]["domains"]
    assert covered and all(report["per_domain"][d]["gold_ents"] > 0 for d in covered)
    expected_macro = sum(report["per_domain"][d]["ents_f"] for d in covered) / len(covered)
    assert report["macro"]["ents_f"] == pytest.approx(expected_macro)
    assert report["speed"]["words_per_second"] > 0
    json_path, md_path = write_report(report, tmp_path / "eval.json")
    assert json.loads(json_path.read_text())["split"] == "dev"
    assert "Scored on **dev**" in md_path.read_text()


def test_cli_evaluate_and_missing_test_split(news_model, corpus_dir, tmp_path):
    out = tmp_path / "metrics" / "news.json"
    args = ["evaluate", str(news_model), "--data", str(corpus_dir / "dev"), "-d", "news,legal"]
    result = CliRunner().invoke(app, [*args, "-o", str(out), "-b", "32"])
    assert result.exit_code == 0, result.output
    assert "scored on dev" in result.output
    assert json.loads(out.read_text())["domains"] == ["news", "legal"]
    assert out.with_suffix(".md").exists()
    if not (corpus_dir / "test").exists():
        result = CliRunner().invoke(
            app, ["evaluate", str(news_model), "--data", str(corpus_dir / "test")]
        )
        assert "test split is missing" in str(result.exception)


def test_matrix_two_domains_then_resume(corpus_dir, tmp_path):
    models = tmp_path / "models"
    output = tmp_path / "metrics" / "matrix.json"
    args = [
        "matrix",
        str(TINY_CONFIG),
        "-d",
        "news,social_media",
        "--joint",
        "news",
        "--train",
        str(corpus_dir / "train"),
        "--dev",
        str(corpus_dir / "dev"),
        "--data",
        str(corpus_dir / "dev"),
        "--models-dir",
        str(models),
        "-o",
        str(output),
        "--training.max_steps",
        "20",
        "--training.eval_frequency",
        "10",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    matrix = json.loads(output.read_text())
    assert matrix["rows"] == ["news", "social_media", "news+social_media"]
    assert matrix["cols"] == ["news", "social_media"]
    assert matrix["split"] == "dev"
    assert matrix["overrides"] == {"training.max_steps": 20, "training.eval_frequency": 10}
    assert all(0.0 <= f <= 1.0 for row in matrix["ents_f"] for f in row)
    assert all(meta["trained_now"] for meta in matrix["row_meta"].values())
    md = output.with_suffix(".md").read_text()
    assert "| news+social_media |" in md and "scored on **dev**" in md
    png = output.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    bests = sorted(models.glob("*/model-best/config.cfg"))
    assert len(bests) == 3
    mtimes = {p: p.stat().st_mtime_ns for p in bests}

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert second.output.count("reusing") == 3
    assert "training" not in second.output.replace("--training", "")
    assert {p: p.stat().st_mtime_ns for p in bests} == mtimes
    again = json.loads(output.read_text())
    assert not any(meta["trained_now"] for meta in again["row_meta"].values())
    assert again["ents_f"] == matrix["ents_f"]


def test_evaluate_spacy_ner_pipeline(corpus_dir, tmp_path):
    """The same report for spaCy's transition-based ``ner`` (configs/test/ner_cnn.cfg)."""
    best = train_pipeline(
        ROOT / "configs" / "test" / "ner_cnn.cfg",
        tmp_path / "ner",
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        overrides={**TINY, "corpora.train.limit": 200},
        verbose=False,
    )
    report = evaluate_model(best, corpus_dir / "dev", domains="news,legal", batch_size=64)
    assert report["entity_components"] == ["ner"]
    assert report["agreement"]["max_abs_diff"] <= AGREEMENT_TOLERANCE
    assert report["overall"]["gold_ents"] == sum(
        report["per_domain"][d]["gold_ents"] for d in ("news", "legal")
    )
