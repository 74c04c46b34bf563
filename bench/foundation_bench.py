"""Benchmark for the foundation: bio_cnn vs ner_cnn on all DANSK train, and News-only transfer.

Trains (or reuses) three pipelines, scores them on dev per domain, and measures inference
speed. Prints a Markdown table and writes metrics/bench_foundation.json.

    python bench/foundation_bench.py                 # train what is missing, then report
    python bench/foundation_bench.py --retrain       # train everything again
"""

import json
import os
import time
from pathlib import Path

import spacy
import typer

from adaptner.evaluation import evaluate_model
from adaptner.readers import load_domain_docs
from adaptner.training import train_pipeline
from adaptner.util import write_json

ROOT = Path(__file__).resolve().parents[1]
RUNS = [
    ("bio_cnn", "all"),
    ("ner_cnn", "all"),
    ("bio_cnn", "news"),
]
SHOWN_DOMAINS = ["news", "conversation", "legal", "social_media", "web", "wiki_books"]


def words_per_second(model: Path, texts: list[str], n_process: int) -> float:
    """Words/second of nlp.pipe over raw texts (tokenization included)."""
    nlp = spacy.load(model)
    list(nlp.pipe(texts[:200]))  # warm up
    start = time.perf_counter()
    n_words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=256, n_process=n_process))
    return n_words / (time.perf_counter() - start)


def main(
    models_dir: Path = typer.Option(ROOT / "training" / "bench", help="Where models go."),
    output: Path = typer.Option(ROOT / "metrics" / "bench_foundation.json", help="JSON result."),
    seed: int = typer.Option(0, help="Training seed."),
    retrain: bool = typer.Option(False, help="Train again even if a model exists."),
    speed_repeats: int = typer.Option(4, help="Dev texts repeated this often for the speed run."),
    n_process: int = typer.Option(
        1,
        help="Processes for the speed run. With 2, process start-up and model loading dominate "
        "unless the text set is large (raise --speed-repeats).",
    ),
) -> None:
    """Train/reuse the three pipelines, evaluate on dev, print the table."""
    os.chdir(ROOT)
    nlp_blank = spacy.blank("da")
    texts = [d.text for d in load_domain_docs("corpus/dev", "all", nlp_blank.vocab)]
    texts = texts * speed_repeats
    results = []
    for config, domains in RUNS:
        out = models_dir / f"{config}_{domains}_s{seed}"
        if retrain or not (out / "model-best").exists():
            typer.echo(f"training {config} on {domains} -> {out}")
            train_pipeline(
                ROOT / "configs" / f"{config}.cfg",
                out,
                train_domains=domains,
                seed=seed,
                verbose=False,
            )
        meta = json.loads((out / "train_meta.json").read_text())
        report = evaluate_model(out / "model-best", "corpus/dev")
        results.append(
            {
                "config": config,
                "train_domains": domains,
                "seed": seed,
                "split": report["split"],
                "f1_micro": report["overall"]["ents_f"],
                "f1_macro": report["macro"]["ents_f"],
                "f1_per_domain": {d: s["ents_f"] for d, s in report["per_domain"].items()},
                "train_seconds": meta["train_seconds"],
                "words_per_second": words_per_second(out / "model-best", texts, n_process),
                "n_process": n_process,
            }
        )
    write_json(output, results)
    head = ["config", "trained on", "F1 dev (micro)", "macro", *SHOWN_DOMAINS]
    head += ["train s", f"words/s ({n_process} proc)"]
    typer.echo("| " + " | ".join(head) + " |")
    typer.echo("|" + "---|" * len(head))
    for r in results:
        cells = [r["config"], r["train_domains"], f"{100 * r['f1_micro']:.1f}"]
        cells.append(f"{100 * r['f1_macro']:.1f}")
        cells += [f"{100 * r['f1_per_domain'].get(d, 0):.1f}" for d in SHOWN_DOMAINS]
        cells += [f"{r['train_seconds']:.0f}", f"{r['words_per_second']:.0f}"]
        typer.echo("| " + " | ".join(cells) + " |")
    typer.echo(f"(scored on {results[0]['split']}; written to {output})")


if __name__ == "__main__":
    typer.run(main)
