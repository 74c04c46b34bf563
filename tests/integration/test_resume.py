"""`adaptner train --resume` after kill -9 ends with the weights of a run that was never stopped
(tiny configs, real DANSK): the CNN pipeline, and a transformer whose dropout draws from torch."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "adaptner", *map(str, args)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900, **kwargs,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def checkpoint_step(run: Path) -> int:
    try:
        return json.loads((run / "checkpoint" / "state.json").read_text())["loop"]["step"]
    except (OSError, ValueError, KeyError):
        return -1


def kill_after_checkpoint(args: list, run: Path, step: int) -> None:
    """Start a training, kill -9 it once a checkpoint at >= ``step`` is written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaptner", *map(str, args)],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 600
    while checkpoint_step(run) < step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=60)
    assert checkpoint_step(run) >= step, "the run ended before it could be killed"


def weights(model: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(model)): p.read_bytes()
        for p in sorted(model.rglob("*"))
        if p.is_file() and p.name in ("model", "pytorch_model.bin") or p.suffix == ".safetensors"
    }


def resume_matches(tmp_path: Path, base: list, steps: int, kill_at: int) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    cli(*base, "-o", full)
    kill_after_checkpoint([*base, "-o", part], tmp_path / ".part.run", kill_at)
    assert not part.exists() and (tmp_path / ".part.run").is_dir()
    refused = cli(*base, "-o", part, check=False)  # neither --resume nor --force
    assert refused.returncode == 1
    assert "Rerun with --resume to continue it, or with --force to start over" in refused.stderr
    changed = cli(*base, "-o", part, "--resume", "--training.dropout", "0.3", check=False)
    assert changed.returncode == 1 and "another config" in changed.stderr
    assert "training.dropout: 0.1 -> 0.3" in changed.stderr
    done = cli(*base, "-o", part, "--resume")
    assert "resuming" in done.stderr and f"-> {part}/model-best" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "part"]
    meta = json.loads((part / "train_meta.json").read_text())
    assert meta["resumed_at_step"] >= kill_at and meta["steps"] == steps + 1
    for sub in ("model-last", "model-best"):
        a, b = weights(full / sub), weights(part / sub)
        assert a and a.keys() == b.keys()
        assert all(a[k] == b[k] for k in a), f"{sub} differs after resuming"


def test_cnn_run_killed_and_resumed_matches_an_uninterrupted_run(corpus_dir, tmp_path):
    base = [
        "train", ROOT / "configs" / "test" / "bio_cnn.cfg", "--train", corpus_dir / "train",
        "--dev", corpus_dir / "dev", "--domains", "news", "-q", "--training.max_steps", "60",
        "--training.eval_frequency", "10", "--checkpoint-every", "7",
    ]  # fmt: skip
    resume_matches(tmp_path, base, steps=60, kill_at=21)


def test_transformer_run_killed_and_resumed_matches(corpus_dir, tmp_path):
    pytest.importorskip("torch")
    from adaptner.tiny_bert import build_tiny_bert, corpus_texts

    texts = corpus_texts(corpus_dir / "train", domains="news", limit=200, seed=0)
    bert = build_tiny_bert(tmp_path.parent / f"{tmp_path.name}-bert", texts, seed=0)
    base = [
        "train", ROOT / "configs" / "test" / "bio_trf.cfg", "--train", corpus_dir / "train",
        "--dev", corpus_dir / "dev", "--domains", "news", "-q", "--training.max_steps", "24",
        "--training.eval_frequency", "8", "--checkpoint-every", "5", "--paths.transformer", bert,
        "--corpora.dev.limit", "20",
    ]  # fmt: skip
    resume_matches(tmp_path, base, steps=24, kill_at=10)
