"""``adaptner pretrain`` on a DANSK slice, training from its weights, and the ablation bench."""

import importlib.util
import json
from pathlib import Path

import pytest
from spacy.training.initialize import init_nlp
from spacy.util import registry
from typer.testing import CliRunner

from adaptner.cli import app
from adaptner.pretrain import META_NAME, WEIGHTS_NAME
from adaptner.training import load_training_config, train_pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "test" / "bio_cnn.cfg"


@pytest.fixture(scope="module")
def weights(tmp_path_factory, corpus_dir) -> Path:
    """The CLI pretrains the tiny config on 200 News sentences plus a Social Media pool."""
    out = tmp_path_factory.mktemp("pretrain") / "news"
    args = [
        "pretrain",
        str(TINY),
        "-o",
        str(out),
        "--corpus",
        str(corpus_dir / "train"),
        "-d",
        "news",
        "--pool",
        str(corpus_dir / "train" / "social_media.spacy"),
        "--limit",
        "200",
        "--epochs",
        "2",
        "-q",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pretrained tok2vec on 200 texts" in result.output
    return out / WEIGHTS_NAME


def first_update(corpus_dir: Path, init_tok2vec: Path | None) -> tuple[float, bytes]:
    """(bio_ner loss of the first update, initial tok2vec bytes) of a News training."""
    overrides = {"corpora.train.limit": 64}
    if init_tok2vec is not None:
        overrides["paths.init_tok2vec"] = str(init_tok2vec)
    config = load_training_config(
        TINY,
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        seed=0,
        overrides=overrides,
    )
    nlp = init_nlp(config)
    initial = nlp.get_pipe("tok2vec").model.to_bytes()
    examples = list(registry.resolve({"c": config.interpolate()["corpora"]["train"]})["c"](nlp))
    losses: dict[str, float] = {}
    nlp.update(examples, drop=0.0, losses=losses)
    return losses["bio_ner"], initial


def test_pretrain_writes_weights_and_meta(weights):
    meta = json.loads((weights.parent / META_NAME).read_text(encoding="utf8"))
    assert weights.stat().st_size > 0
    assert [s["kind"] for s in meta["sources"]] == ["corpus", "pool"]
    assert meta["sources"][0]["domains"] == ["news"]
    assert meta["texts"] == 200 and meta["epochs"] == 2 and meta["words_per_epoch"] > 1000
    assert meta["transductive"] is False
    assert (weights.parent / "model0.bin").exists() and (weights.parent / "log.jsonl").exists()


def test_training_starts_from_the_pretrained_weights(weights, corpus_dir):
    cold_loss, cold_bytes = first_update(corpus_dir, None)
    warm_loss, warm_bytes = first_update(corpus_dir, weights)
    assert warm_bytes == weights.read_bytes() != cold_bytes
    assert warm_loss != pytest.approx(cold_loss, rel=1e-4)


def test_train_pipeline_with_init_tok2vec(weights, corpus_dir, tmp_path):
    best = train_pipeline(
        TINY,
        tmp_path / "model",
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        seed=0,
        overrides={
            "paths.init_tok2vec": str(weights),
            "training.max_steps": 20,
            "training.eval_frequency": 10,
            "corpora.train.limit": 100,
        },
        verbose=False,
    )
    assert (best / "config.cfg").exists()
    meta = json.loads((tmp_path / "model" / "train_meta.json").read_text(encoding="utf8"))
    assert meta["overrides"]["paths.init_tok2vec"] == str(weights)


@pytest.mark.slow
def test_ablation_bench_quick_runs_and_resumes(corpus_dir, tmp_path):
    """bench/ablation.py --quick on two levers (one pretrained), then a resumed no-op run."""
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "bench" / "ablation.py")
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    import typer

    cli = typer.Typer()
    cli.command()(ablation.main)
    out = tmp_path / "ablation.jsonl"
    args = [
        "--quick",
        "--levers",
        "baseline,pretrain",
        "--seeds",
        "0",
        "--train",
        str(corpus_dir / "train"),
        "--dev",
        str(corpus_dir / "dev"),
        "--models-dir",
        str(tmp_path / "models"),
        "--output",
        str(out),
    ]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["lever"] for r in records] == ["baseline", "pretrain"]
    for r in records:
        assert 0.0 <= r["dev_f"] <= 1.0 and r["words_per_second"] > 0 and r["train_seconds"] > 0
    assert records[1]["overrides"]["paths.init_tok2vec"].endswith(WEIGHTS_NAME)
    assert records[0]["fingerprint"] != records[1]["fingerprint"]
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "skipped" in second.output
    assert len(out.read_text().splitlines()) == 2
    assert "| baseline |" in second.output and "| pretrain |" in second.output
    assert (tmp_path / "ablation.md").read_text() in second.output
