"""Benchmark ``adaptner package`` on a CNN pipeline: wheel sizes, packaging time, load time.

Usage (from the repository root)::

    .venv/bin/python bench/package_bench.py                 # trains configs/test/bio_cnn.cfg
    .venv/bin/python bench/package_bench.py --model training/news/model-best --repeats 5

The pipeline wheel is unpacked with ``pip install --no-deps --target`` into a temporary
folder and loaded by name in fresh subprocesses (``spacy.load("<package>")``); the load time
of the pipeline directory itself is measured the same way for comparison. Prints only.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "Mette Frederiksen besøgte Aarhus Universitet i København den 3. maj 2023."

TIMING_SCRIPT = r"""
import json, sys, time
start = time.perf_counter()
import spacy
imported = time.perf_counter()
nlp = spacy.load(sys.argv[1])
loaded = time.perf_counter()
doc = nlp(sys.argv[2])
done = time.perf_counter()
print(json.dumps({
    "import_spacy": imported - start,
    "spacy_load": loaded - imported,
    "first_doc": done - loaded,
    "ents": [(e.text, e.label_) for e in doc.ents],
}))
"""


def _time_load(target: str, site: Path | None, repeats: int) -> dict:
    env = None
    if site is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(site)}
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", TIMING_SCRIPT, target, SENTENCE],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out = {
        key: statistics.median(r[key] for r in runs)
        for key in ("import_spacy", "spacy_load", "first_doc")
    }
    out["ents"] = runs[-1]["ents"]
    return out


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(
    model: Path | None = typer.Option(
        None, "--model", help="A trained pipeline directory (default: train a tiny CNN)."
    ),
    domains: str = typer.Option("news", "--domains", "-d", help="Domains for the tiny training."),
    train_path: Path = typer.Option(ROOT / "corpus" / "train", "--train", help="Train split."),
    dev_path: Path = typer.Option(ROOT / "corpus" / "dev", "--dev", help="Dev split."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Load-time runs (median reported)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the tiny training."),
) -> None:
    """Package a CNN pipeline and print wheel sizes and load times."""
    from adaptner.packaging import package_pipeline
    from adaptner.training import train_pipeline

    with tempfile.TemporaryDirectory(prefix="package-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        if model is None:
            start = time.perf_counter()
            model = train_pipeline(
                ROOT / "configs" / "test" / "bio_cnn.cfg",
                tmp / "train",
                train_path=train_path,
                dev_path=dev_path,
                train_domains=domains,
                seed=seed,
                verbose=False,
            )
            print(f"trained {model} on {domains} in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        result = package_pipeline(model, tmp / "packages", eval_dir=None, source=domains)
        package_s = time.perf_counter() - start
        print(f"packaged in {package_s:.1f} s (both wheels, no per-domain scoring)")
        print(f"pipeline directory: {_dir_size(model) / 1e6:.2f} MB")
        for wheel in result.wheels:
            print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.2f} MB")
        site = tmp / "site"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-index",
                "--target",
                str(site),
                str(result.wheel),
            ],
            check=True,
            capture_output=True,
        )
        for label, target, path in (
            (f"spacy.load('{result.name}') (installed wheel)", result.name, site),
            ("spacy.load(<pipeline directory>)", str(model), None),
        ):
            t = _time_load(target, path, repeats)
            print(
                f"{label}: import spacy {t['import_spacy']:.2f} s, load {t['spacy_load']:.2f} s, "
                f"first doc {1000 * t['first_doc']:.0f} ms (median of {repeats}); ents {t['ents']}"
            )


if __name__ == "__main__":
    typer.run(main)
