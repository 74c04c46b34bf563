"""Does the CPU pipeline inherit e5-small? Static vectors, distillation, both.

Usage (from the repository root, after `spacy project run distil-label` and `e5-vectors`)::

    python bench/distil_bench.py --seeds 0,1                     # all train -> dev, 4 levers
    python bench/distil_bench.py --levers baseline,distil --seeds 0
    python bench/distil_bench.py --transfer --seeds 0            # News -> other domains
    python bench/distil_bench.py --table-only                    # re-print the tables

Levers (trained on all DANSK train domains, selected and scored on all of dev):

- ``baseline``: configs/bio_cnn.cfg, the current CPU default;
- ``e5vec``: configs/bio_cnn_e5vec.cfg (static vectors from e5's input embeddings);
- ``distil``: configs/bio_cnn_distil.cfg on the teacher-labelled train split (gold + soft
  targets of the fine-tuned e5 pipeline);
- ``distil_e5vec``: both (the distil config with the e5vec config's two differences).

Each lever x seed is trained into ``<models-dir>/<lever>/seed<k>`` (an existing model there
is reused, so a killed run resumes), scored with adaptner's scorer
(:func:`adaptner.evaluation.evaluate_docs`: micro, macro over domains, per domain), and timed
with ``nlp.pipe`` over the dev texts next to the baseline of the same seed, alternately in
this one process, one thread (``measure_speed`` of bench/ablation.py). One JSON line per
lever x seed goes to ``--output``; a Markdown table (mean ± sd over seeds) to ``--table``.

``--transfer`` trains on News only (model selection on News dev) and scores News,
conversation, legal and social media dev: ``news_baseline`` (configs/bio_cnn.cfg) against
``news_distil`` (configs/bio_cnn_distil.cfg on --transfer-corpus: News gold + the teacher's
soft targets on News, plus the target domains' train texts *without* their gold, labelled by
the teacher: `spacy project run distil-label-transfer`).
"""

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

# Run as a script, Python puts bench/ first on sys.path: the ablation's helpers import as is.
from ablation import limit_threads, load_results, measure_speed

ROOT = Path(__file__).resolve().parents[1]

VECTORS = {"components.tok2vec.model.embed.include_static_vectors": True}
#: Distillation switched on in a config that does not set it (α 0.5, T 1, as bio_cnn_distil.cfg).
DISTIL = {"components.bio_ner.distill_weight": 0.5, "components.bio_ner.temperature": 1.0}
TARGETS = ("conversation", "legal", "social_media")


@dataclass
class Lever:
    """One trained variant: a config, its training corpus and overrides."""

    name: str
    description: str
    config: str
    teacher: bool = False  # trains on the teacher-labelled corpus
    vectors: bool = False  # needs --vectors (paths.vectors)
    overrides: dict[str, Any] = field(default_factory=dict)


LEVERS = {
    lever.name: lever
    for lever in (
        Lever("baseline", "configs/bio_cnn.cfg (current default)", "configs/bio_cnn.cfg"),
        Lever("e5vec", "+ static vectors from e5 input embeddings", "configs/bio_cnn_e5vec.cfg",
              vectors=True),
        Lever("distil", "+ distillation from the e5 pipeline (α 0.5, T 1)",
              "configs/bio_cnn_distil.cfg", teacher=True),
        Lever("distil_e5vec", "+ both", "configs/bio_cnn_distil.cfg", teacher=True,
              vectors=True, overrides=dict(VECTORS)),
        Lever("e5sub", "+ subword vectors (configs/bio_cnn_e5sub.cfg)",
              "configs/bio_cnn_e5sub.cfg"),
        Lever("distil_e5sub", "+ subword vectors + distillation (α 0.5, T 1)",
              "configs/bio_cnn_e5sub.cfg", teacher=True, overrides=dict(DISTIL)),
    )
}
TRANSFER = {
    "news_baseline": Lever("news_baseline", "News gold, configs/bio_cnn.cfg",
                           "configs/bio_cnn.cfg"),
    "news_distil": Lever("news_distil", "News gold + teacher on News and target texts",
                         "configs/bio_cnn_distil.cfg", teacher=True),
    "news_e5sub": Lever("news_e5sub", "News gold, configs/bio_cnn_e5sub.cfg (subword vectors)",
                        "configs/bio_cnn_e5sub.cfg"),
    "news_distil_e5sub": Lever("news_distil_e5sub",
                               "News gold + teacher on News and target texts, subword vectors",
                               "configs/bio_cnn_e5sub.cfg", teacher=True,
                               overrides=dict(DISTIL)),
}


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_one(
    lever: Lever, seed: int, *, args: dict[str, Any], gold, texts, reference: Path | None, log
) -> dict[str, Any]:
    """Train (or reuse), score and time one lever x seed; returns its record."""
    from adaptner.evaluation import evaluate_docs, load_pipeline
    from adaptner.training import train_pipeline

    transfer = args["transfer"]
    out_dir = args["models_dir"] / lever.name / f"seed{seed}"
    best = out_dir / "model-best"
    overrides = dict(lever.overrides)
    if lever.vectors:
        overrides["paths.vectors"] = str(args["vectors"])
    if args["max_steps"]:
        overrides["training.max_steps"] = args["max_steps"]
    train_path = args["teacher_corpus"] if lever.teacher else args["train"]
    if transfer:
        train_domains = "news"
        if lever.teacher:
            train_domains = ",".join(("news", *TARGETS))
        dev_domains = "news"
    else:
        train_domains, dev_domains = "all", "all"
    cpu = None
    if (out_dir / "train_meta.json").exists() and best.exists():
        log(f"↻ {lever.name} seed {seed}: reusing {best}")
    else:
        log(f"⏳ {lever.name} seed {seed}: training -> {out_dir}")
        cpu_start = time.process_time()
        train_pipeline(
            ROOT / lever.config,
            out_dir,
            train_path=train_path,
            dev_path=args["dev"],
            train_domains=train_domains,
            dev_domains=dev_domains,
            seed=seed,
            overrides=overrides,
            verbose=False,
        )
        cpu = round(time.process_time() - cpu_start, 1)
    meta = json.loads((out_dir / "train_meta.json").read_text(encoding="utf8"))
    overrides = meta.get("overrides") or {}  # what the model was trained with (reused or not)
    nlp = load_pipeline(best)
    load_before = os.getloadavg()[0]
    with limit_threads(1):
        report = evaluate_docs(nlp, gold, batch_size=256)
        ref = None
        if reference is not None and reference != best and reference.exists():
            ref = load_pipeline(reference)
        speed = measure_speed(nlp, texts, reference=ref, batch_size=256)
    record = {
        "lever": lever.name,
        "description": lever.description,
        "seed": seed,
        "mode": "transfer" if transfer else "all",
        "config": lever.config,
        "train_path": str(train_path),
        "train_domains": train_domains,
        "dev_domains": dev_domains,
        "overrides": overrides,
        "model": str(best),
        "dev_f": report["overall"]["ents_f"],
        "dev_p": report["overall"]["ents_p"],
        "dev_r": report["overall"]["ents_r"],
        "macro_f": report["macro"]["ents_f"],
        "per_domain_f": {d: s["ents_f"] for d, s in report["per_domain"].items()},
        "words_per_second": speed["wps"],
        "words_per_cpu_second": speed["wps_cpu"],
        "speed_vs_baseline": speed["relative"],
        "speed_words": speed["words"],
        "train_seconds": meta.get("train_seconds"),
        "train_cpu_seconds": cpu,
        "model_bytes": dir_size(best),
        "loadavg_1min": round(load_before, 2),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    log(
        f"✔ {lever.name} seed {seed}: dev F1 {100 * record['dev_f']:.2f} (macro "
        f"{100 * (record['macro_f'] or 0):.2f}), {record['words_per_cpu_second']:.0f} words/CPU-s "
        f"({record['speed_vs_baseline']}× baseline), trained in {record['train_seconds']:.0f} s"
    )
    return record


def teacher_fit(labelled: Path) -> dict[str, dict[str, float]]:
    """How well the stored teacher rows fit the gold of the docs they label, per file.

    The teacher's spans are decoded from its stored probabilities with Viterbi (as the e5
    pipeline decodes) and scored against the docs' gold with adaptner's scorer.
    """
    from spacy.tokens import Span
    from spacy.vocab import Vocab

    from adaptner.components.bio_ner import bio_to_spans, viterbi_bio
    from adaptner.evaluation import score_docs
    from adaptner.readers import read_docbin
    from adaptner.scoring import fresh_doc

    out = {}
    vocab = Vocab()
    for path in sorted(labelled.glob("*.spacy")):
        gold = [d for d in read_docbin(path, vocab) if d._.teacher_probs is not None]
        if not gold or not any(d.has_annotation("ENT_IOB") for d in gold):
            continue
        pred = []
        for doc in gold:
            copy = fresh_doc(doc, vocab)
            spans = bio_to_spans(viterbi_bio(doc._.teacher_probs, list(doc._.teacher_tags)))
            copy.ents = [Span(copy, s, e, label=label) for s, e, label in spans]
            pred.append(copy)
        scores = score_docs(gold, pred)
        out[path.stem] = {"docs": len(gold), "words": scores["words"],
                          "teacher_f_on_gold": round(scores["ents_f"], 4)}
    return out


def _fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def table(records: list[dict[str, Any]], levers: list[str], domains: list[str]) -> str:
    """Markdown: one row per lever, mean ± sd over its seeds."""
    head = ["lever", "seeds", "dev F1 micro", "macro", *domains, "words/CPU-s",
            "× baseline speed", "train s (wall)", "train CPU s", "model MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in levers:
        rows = [r for r in records if r["lever"] == name]
        if not rows:
            continue
        rel = [r["speed_vs_baseline"] for r in rows if r.get("speed_vs_baseline")]
        cells = [
            name,
            ",".join(str(r["seed"]) for r in rows),
            _fmt([r["dev_f"] for r in rows], digits=2),
            _fmt([r["macro_f"] for r in rows]),
            *(_fmt([r["per_domain_f"][d] for r in rows if d in r["per_domain_f"]])
              for d in domains),
            _fmt([r["words_per_cpu_second"] for r in rows], 1.0, 0),
            _fmt(rel, 1.0, 2) if rel else "1 (reference)",
            _fmt([r["train_seconds"] for r in rows], 1.0, 0),
            _fmt([r["train_cpu_seconds"] for r in rows if r.get("train_cpu_seconds")], 1.0, 0),
            _fmt([r["model_bytes"] / 1e6 for r in rows], 1.0, 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1."),
    levers: str = typer.Option(
        "", "--levers", help="Comma-separated levers (default: all of the mode)."
    ),
    transfer: bool = typer.Option(False, "--transfer", help="News-only training, see above."),
    train: Path = typer.Option(ROOT / "corpus/train", "--train", help="Gold train split."),
    dev: Path = typer.Option(ROOT / "corpus/dev", "--dev", help="Dev split (selection, scores)."),
    teacher_corpus: Path | None = typer.Option(
        None,
        "--teacher-corpus",
        help="Teacher-labelled train split (default corpus/teacher/train; with --transfer "
        "corpus/teacher_news/train).",
    ),
    vectors: Path = typer.Option(ROOT / "assets/e5_vectors", "--vectors",
                                 help="Vectors from `adaptner encoder vectors`."),
    models_dir: Path = typer.Option(ROOT / "training/distil_bench", "--models-dir",
                                    help="Models go to <models-dir>/<lever>/seed<k>."),
    output_dir: Path = typer.Option(ROOT / "bench/results/distil", "--output",
                                    help="Results: <output>/<mode>.jsonl and <mode>.md."),
    max_steps: int = typer.Option(
        0,
        "--max-steps",
        min=0,
        help="Cap training steps of the levers this run trains (0 = the configs' 8000; with "
        "patience 2000 the default stops when dev F1 has not improved for 2000 steps).",
    ),
    table_only: bool = typer.Option(False, "--table-only", help="Only re-print the table."),
    fit: bool = typer.Option(
        False, "--teacher-fit", help="Only score the teacher's stored rows against the gold of "
        "the docs they label (<output>/teacher_fit.json)."
    ),
) -> None:
    """Train, score and time the e5 levers of the CPU pipeline; append JSON lines, write a Markdown
    table."""
    from spacy.vocab import Vocab

    from adaptner.evaluation import load_eval_docs
    from adaptner.util import append_jsonl, write_text

    mode = "transfer" if transfer else "all"
    catalogue = TRANSFER if transfer else LEVERS
    names = [n.strip() for n in levers.split(",") if n.strip()] or list(catalogue)
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise typer.BadParameter(f"unknown levers {unknown}; choose from {list(catalogue)}")
    if teacher_corpus is None:
        labelled = "corpus/teacher_news/train" if transfer else "corpus/teacher/train"
        teacher_corpus = ROOT / labelled
    out_jsonl, out_md = output_dir / f"{mode}.jsonl", output_dir / f"{mode}.md"
    if fit:
        from adaptner.util import write_json

        result = {"teacher_corpus": str(teacher_corpus), "files": teacher_fit(teacher_corpus)}
        write_json(output_dir / "teacher_fit.json", result)
        print(json.dumps(result, indent=2))
        return
    domains = ["news", *TARGETS] if transfer else [
        "news", "conversation", "legal", "social_media", "web", "wiki_books"]
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    args = {"transfer": transfer, "train": train, "dev": dev, "teacher_corpus": teacher_corpus,
            "vectors": vectors, "models_dir": models_dir / mode, "max_steps": max_steps}

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    if not table_only:
        gold = load_eval_docs(dev, ",".join(domains) if transfer else "all", Vocab())
        texts = [doc.text for docs in gold.values() for doc in docs]
        done = {(r["lever"], r["seed"]) for r in load_results(out_jsonl)}
        base = "news_baseline" if transfer else "baseline"
        for seed in seed_list:
            reference = args["models_dir"] / base / f"seed{seed}" / "model-best"
            order = [base] + [n for n in names if n != base] if base in names else names
            for name in order:
                if (name, seed) in done:
                    log(f"↻ {name} seed {seed}: in {out_jsonl}, skipped")
                    continue
                record = run_one(catalogue[name], seed, args=args, gold=gold, texts=texts,
                                 reference=reference, log=log)
                append_jsonl(out_jsonl, record)
    records = load_results(out_jsonl)
    md = (
        f"# e5 knowledge in the CPU pipeline: "
        f"{'News-only transfer' if transfer else 'all train -> dev'}\n\n"
        f"`python bench/distil_bench.py {' '.join(sys.argv[1:])}`, "
        f"{time.strftime('%Y-%m-%d')}.\n\n"
        "dev F1 (%) with adaptner's scorer; words per CPU-second of `nlp.pipe` over the dev "
        "texts, one thread; × baseline = median ratio of alternate timings in one process. "
        "Training wall time depends on the machine's load; CPU s is this process's CPU time "
        "(– for a model the bench reused instead of training).\n\n"
        + table(records, list(catalogue), domains)
    )
    write_text(out_md, md)
    print(md)


if __name__ == "__main__":
    typer.run(main)
