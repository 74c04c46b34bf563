"""The α / T sweep of distillation: which weight of the teacher and which temperature.

Needs a good teacher first (the adapted e5 pipeline) and its labelled corpus, e.g. from the
``adapt-cpu`` workflow's first step (gold DANSK train + the target's pool, soft targets)::

    python bench/distil_sweep.py --teacher-corpus corpus/teacher_legal/train \
        --alphas 0.25,0.5,0.75,1.0 --temperatures 1,2,4 --seeds 0 --max-steps 2000

Each α × T × seed trains ``--config`` (default configs/bio_cnn_distil.cfg; configs/test/
bio_cnn_distil.cfg for a smoke run) with ``components.bio_ner.distill_weight = α`` and
``temperature = T`` on ``--teacher-corpus`` into ``<models-dir>/a<α>_T<T>/seed<k>`` (a model
there is reused: a killed sweep resumes), and is scored on all dev domains and timed by
:func:`distil_bench.run_one`. One JSON line per run goes to ``<output>/sweep.jsonl``, and a
Markdown table (mean ± sd over seeds) to ``<output>/sweep.md``.
"""

import time
from pathlib import Path

import typer

# Run as a script, Python puts bench/ first on sys.path: the ablation's helpers import as is.
from ablation import load_results
from distil_bench import TARGETS, Lever, run_one, table

ROOT = Path(__file__).resolve().parents[1]

DOMAINS = ["news", "conversation", "legal", "social_media", "web", "wiki_books"]


def sweep_levers(config: str, alphas: list[float], temperatures: list[float]) -> dict[str, Lever]:
    """One lever per α × T, named ``a<α>_T<T>``."""
    out = {}
    for alpha in alphas:
        for temp in temperatures:
            name = f"a{alpha:g}_T{temp:g}"
            out[name] = Lever(
                name, f"distillation α {alpha:g}, T {temp:g}", config, teacher=True,
                overrides={"components.bio_ner.distill_weight": alpha,
                           "components.bio_ner.temperature": temp},
            )  # fmt: skip
    return out


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"{what}: comma-separated numbers, got {text!r}") from e
    if not values:
        raise typer.BadParameter(f"{what}: give at least one value")
    return values


def main(
    teacher_corpus: Path = typer.Option(..., "--teacher-corpus",
                                        help="A directory labelled by `adaptner distil`."),
    alphas: str = typer.Option("0.25,0.5,0.75,1.0", "--alphas", help="distill_weight values."),
    temperatures: str = typer.Option("1,2,4", "--temperatures", help="temperature values."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds."),
    config: str = typer.Option("configs/bio_cnn_distil.cfg", "--config",
                               help="The student's config (relative to the repository)."),
    dev: Path = typer.Option(ROOT / "corpus/dev", "--dev", help="Dev split (selection, scores)."),
    models_dir: Path = typer.Option(ROOT / "training/distil_sweep", "--models-dir"),
    output_dir: Path = typer.Option(ROOT / "bench/results/distil_sweep", "--output"),
    max_steps: int = typer.Option(0, "--max-steps", min=0,
                                  help="Cap training steps (0 = the config's)."),
    transfer: bool = typer.Option(
        False, "--transfer",
        help="News-only training as `distil_bench.py --transfer`: News gold + the teacher on News "
        "and the target domains' texts (model selection on News dev), scored on News, "
        "conversation, legal and social media dev.",
    ),
) -> None:
    """Train and score the student for every α × T × seed; JSON lines and a table."""
    from spacy.vocab import Vocab

    from adaptner.distil_target import verify_teacher_dir
    from adaptner.evaluation import load_eval_docs
    from adaptner.util import append_jsonl, write_text

    verify_teacher_dir(teacher_corpus)
    levers = sweep_levers(config, _floats(alphas, "--alphas"),
                          _floats(temperatures, "--temperatures"))
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    args = {"transfer": transfer, "train": teacher_corpus, "dev": dev,
            "teacher_corpus": teacher_corpus, "vectors": None, "models_dir": models_dir,
            "max_steps": max_steps}  # fmt: skip
    out_jsonl, out_md = output_dir / "sweep.jsonl", output_dir / "sweep.md"

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    domains = ["news", *TARGETS] if transfer else DOMAINS
    gold = load_eval_docs(dev, ",".join(domains) if transfer else "all", Vocab())
    texts = [doc.text for docs in gold.values() for doc in docs]
    done = {(r["lever"], r["seed"]) for r in load_results(out_jsonl)}
    for seed in seed_list:
        for name, lever in levers.items():
            if (name, seed) in done:
                log(f"↻ {name} seed {seed}: in {out_jsonl}, skipped")
                continue
            record = run_one(lever, seed, args=args, gold=gold, texts=texts, reference=None,
                             log=log)
            append_jsonl(out_jsonl, record)
    md = (
        f"# Distillation sweep: α × T on {teacher_corpus}\n\n"
        "dev F1 (%) with adaptner's scorer, all dev domains; words per CPU-second of "
        "`nlp.pipe` over the dev texts, one thread.\n\n"
        + table(load_results(out_jsonl), list(levers), domains)
    )
    write_text(out_md, md)
    print(md)


if __name__ == "__main__":
    typer.run(main)
