"""Benchmark for annotation sessions: answers-to-next-batch time and F1, warm vs reset.

Target ``legal``: the pool is the Legal train set, the source pipeline is trained on
``news`` with configs/bio_cnn.cfg (or taken from --source), and the held-out set is Legal
dev. Each round a simulated annotator answers the 50-sentence batch with the gold
entities; the bench times ``import`` -> ``train`` -> ``next`` (the next batch written),
exactly as ``adaptner session import --next`` and ``session loop`` run them
(:func:`adaptner.session.loop.answer_cycle`: one process, models kept in memory), and
records the held-out F1 after every round. With --background the batch is written before
the round trains (``total`` is then import + next). With --cli it also times one round as
three separate ``adaptner session`` commands and as one ``session import --next``
(process start and model loading included).

    python bench/session_bench.py                        # train the source, run both modes
    python bench/session_bench.py --source training/bio_cnn/news/model-best --modes warm
    # the e5 pipeline fine-tuned on News (project step train-e5-source); trainer auto =
    # top_layers: the lower layers run once per sentence, each round trains the top 4 + head
    python bench/session_bench.py --source training/bio_trf_e5/news400/model-best \
        --modes warm --rounds 4 --tag e5 --output bench/results/session/bench_session_e5.json
"""

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import spacy
import typer

from adaptner.readers import read_docbin
from adaptner.session.loop import (
    answer_cycle,
    init_session,
    load_pipeline,
    next_batch,
    session_status,
)
from adaptner.session.trainer import DEFAULT_SETTINGS, UpdateSettings
from adaptner.training import train_pipeline
from adaptner.util import write_json

ROOT = Path(__file__).resolve().parents[1]


def gold_answers(batch: Path, out: Path, gold: dict[str, list[dict]]) -> Path:
    """Answer every task of a batch with its gold entities (a perfect annotator)."""
    lines = []
    for raw in batch.read_text(encoding="utf8").splitlines():
        task = json.loads(raw)
        task["spans"] = gold[task["text"]]
        task["answer"] = "accept"
        lines.append(json.dumps(task, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf8")
    return out


def run_mode(
    mode: str,
    *,
    source: Path,
    pool: Path,
    dev: Path,
    gold: dict[str, list[dict]],
    work: Path,
    rounds: int,
    n: int,
    strategy: str,
    seed: int,
    settings: UpdateSettings | None = None,
    background: bool = False,
    source_docs: Path | None = None,
) -> dict:
    """One session of ``rounds`` rounds in ``mode``; per-round timings and held-out F1."""
    mode_dir = work / mode
    db = mode_dir / "adaptner.db"
    for leftover in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
        leftover.unlink(missing_ok=True)
    init_session(
        db,
        f"bench-{mode}",
        source=source,
        pool=pool,
        heldout=dev,
        strategy=strategy,
        seed=seed,
        session_dir=mode_dir / "session",
        source_docs=source_docs,
    )
    name = f"bench-{mode}"
    settings = settings or DEFAULT_SETTINGS[mode]
    models = {0: load_pipeline(source)}
    t = time.perf_counter()
    batch = next_batch(
        db,
        name,
        n=n,
        output=mode_dir / "batch-{batch}.jsonl",
        trainer=settings.trainer,
        models=models,
    )
    first_next = time.perf_counter() - t
    records = []
    for r in range(1, rounds + 1):
        answers = gold_answers(batch.path, mode_dir / f"answers-{batch.batch_id:04d}.jsonl", gold)
        c0 = time.process_time()
        cycle = answer_cycle(
            db,
            name,
            answers,
            n=n,
            output=mode_dir / "batch-{batch}.jsonl",
            mode=mode,
            settings=settings,
            background=background,
            models=models,
        )
        c3 = time.process_time()
        trained, batch, t = cycle.trained, cycle.batch, cycle.timings
        rec = {
            "round": r,
            "labeled": r * n,
            "n_train": trained.metrics["n_train"],
            "epochs": trained.metrics["epochs"],
            "trainer": trained.metrics["trainer"],
            "f1": trained.metrics.get("ents_f"),
            "batch_from_round": batch.round,
            "import_s": round(t["import"], 3),
            "train_s": round(t["train"], 3),
            "next_s": round(t["next"], 3),
            "total_s": round(t["total"], 3),
            "total_cpu_s": round(c3 - c0, 3),
        }
        records.append(rec)
        print(
            f"{mode:5} round {r}: F1 {100 * rec['f1']:.1f}  import {rec['import_s']:.2f} s  "
            f"train {rec['train_s']:.2f} s ({rec['epochs']} ep, {rec['n_train']} docs, "
            f"{rec['trainer']})  next {rec['next_s']:.2f} s (round {batch.round})  "
            f"answers -> batch {rec['total_s']:.2f} s (CPU incl. training "
            f"{rec['total_cpu_s']:.2f} s)",
            flush=True,
        )
    status = session_status(db, name)
    return {
        "mode": mode,
        "settings": settings.to_dict(),
        "background": background,
        "source_f1": status["rounds"][0]["ents_f"],
        "first_next_s": round(first_next, 3),
        "rounds": records,
        "db": str(db),
    }


def cli_round(
    db: Path, name: str, batch_path: Path, gold: dict, mode: str, n: int, trainer: str
) -> dict:
    """Two more rounds as CLI processes (what a team running commands sees): three separate
    commands, then one ``session import --next``."""
    answers = gold_answers(batch_path, batch_path.with_name("answers-cli.jsonl"), gold)
    exe = Path(sys.executable).with_name("adaptner")
    times = {}
    batch_cli = batch_path.with_name("batch-cli.jsonl")
    for step, args in (
        ("import", ["import", name, str(answers)]),
        ("train", ["train", name, "--mode", mode, "--trainer", trainer]),
        ("next", ["next", name, "-n", str(n), "-o", str(batch_cli), "--trainer", trainer]),
    ):
        t = time.perf_counter()
        subprocess.run([str(exe), "session", *args, "--db", str(db)], check=True, cwd=ROOT)
        times[f"{step}_s"] = round(time.perf_counter() - t, 3)
    times["total_s"] = round(sum(times.values()), 3)
    answers = gold_answers(batch_cli, batch_path.with_name("answers-cli2.jsonl"), gold)
    one = ["import", name, str(answers), "--next", str(n), "--mode", mode, "--trainer", trainer]
    t = time.perf_counter()
    subprocess.run(
        [str(exe), "session", *one, "-o", str(batch_path.with_name("batch-cli2.jsonl"))]
        + ["--db", str(db)],
        check=True,
        cwd=ROOT,
    )
    times["one_command_s"] = round(time.perf_counter() - t, 3)
    return times


def main(
    source: Path | None = typer.Option(
        None, help="Source pipeline; default: train configs/bio_cnn.cfg on news into --work."
    ),
    source_steps: int = typer.Option(
        1200, help="training.max_steps when training the source (keeps it to a few minutes)."
    ),
    pool: Path = typer.Option(ROOT / "corpus/train/legal.spacy", help="Target pool (gold)."),
    dev: Path = typer.Option(ROOT / "corpus/dev/legal.spacy", help="Held-out set (Legal dev)."),
    rounds: int = typer.Option(6, help="Rounds per mode."),
    n: int = typer.Option(50, help="Sentences per batch."),
    strategy: str = typer.Option("margin", help="Query strategy."),
    modes: str = typer.Option("warm,reset", help="Comma-separated modes to run."),
    cli: bool = typer.Option(False, help="Also time one round as separate CLI processes."),
    warm_epochs: int | None = typer.Option(None, help="Warm: max epochs (default: built-in)."),
    warm_patience: int | None = typer.Option(None, help="Warm: early-stopping patience."),
    replay: int | None = typer.Option(None, help="Warm: earlier answers replayed per round."),
    batch_size: int | None = typer.Option(None, help="Docs per update (both modes)."),
    trainer: str = typer.Option(
        "auto",
        help="auto | top_layers | cached_head | fine_tune (auto: top_layers for transformers).",
    ),
    background: bool = typer.Option(
        False, help="Write each batch before the round trains (session import --background)."
    ),
    source_docs: Path | None = typer.Option(
        None, help="The source's gold docs, replayed every round (session init --source-docs)."
    ),
    tag: str = typer.Option("", help="Suffix for the work dirs (to compare settings)."),
    seed: int = typer.Option(0, help="The one seed."),
    work: Path = typer.Option(ROOT / "training" / "bench_session", help="Work directory."),
    output: Path = typer.Option(ROOT / "metrics" / "bench_session.json", help="JSON result."),
) -> None:
    """Run the legal session benchmark and print per-round figures and a summary."""
    os.chdir(ROOT)
    work.mkdir(parents=True, exist_ok=True)
    if source is None:
        out = work / "source"
        source = out / "model-best"
        if not (source / "config.cfg").exists():
            t = time.perf_counter()
            train_pipeline(
                ROOT / "configs" / "bio_cnn.cfg",
                out,
                train_domains="news",
                seed=seed,
                overrides={"training.max_steps": source_steps},
                verbose=False,
            )
            print(f"source trained on news in {time.perf_counter() - t:.0f} s -> {source}")
    vocab = spacy.blank("da").vocab
    gold = {
        doc.text: [{"start": e.start_char, "end": e.end_char, "label": e.label_} for e in doc.ents]
        for doc in read_docbin(pool, vocab)
    }
    results = {
        "source": str(source),
        "pool": str(pool),
        "dev": str(dev),
        "strategy": strategy,
        "rounds": rounds,
        "n": n,
        "cpus": os.cpu_count(),
        "modes": {},
    }
    for mode in [m.strip() for m in modes.split(",") if m.strip()]:
        changes = {"batch_size": batch_size, "trainer": trainer}
        if mode == "warm":
            changes.update(max_epochs=warm_epochs, patience=warm_patience, replay=replay)
        settings = replace(
            DEFAULT_SETTINGS[mode], **{k: v for k, v in changes.items() if v is not None}
        )
        res = run_mode(
            mode,
            source=Path(source),
            pool=pool,
            dev=dev,
            gold=gold,
            work=work / tag if tag else work,
            rounds=rounds,
            n=n,
            strategy=strategy,
            seed=seed,
            settings=settings,
            background=background,
            source_docs=source_docs,
        )
        if cli:
            last = sorted(Path(res["db"]).parent.glob("batch-0*.jsonl"))[-1]
            res["cli_round"] = cli_round(
                Path(res["db"]), f"bench-{mode}", last, gold, mode, n, trainer
            )
            print(f"{mode:5} one round via CLI processes: {res['cli_round']}", flush=True)
        results["modes"][mode] = res
    print(
        f"\n| mode | F1 after round 1..{rounds} (dev, %) | answers -> next batch, wall s "
        "(median / max) | CPU s (mean / max) |"
    )
    print("|---|---|---|---|")
    for mode, res in results["modes"].items():
        f1s = " ".join(f"{100 * r['f1']:.1f}" for r in res["rounds"])
        wall = [r["total_s"] for r in res["rounds"]]
        cpu = [r["total_cpu_s"] for r in res["rounds"]]
        print(
            f"| {mode} | {f1s} | {statistics.median(wall):.1f} / {max(wall):.1f} | "
            f"{sum(cpu) / len(cpu):.1f} / {max(cpu):.1f} |"
        )
    if {"warm", "reset"} <= set(results["modes"]):
        warm = results["modes"]["warm"]["rounds"][-1]["f1"]
        reset = results["modes"]["reset"]["rounds"][-1]["f1"]
        print(f"\nwarm - reset after {rounds} rounds: {100 * (warm - reset):+.1f} F1 points")
    source_f1 = next(iter(results["modes"].values()))["source_f1"]
    print(f"source ({source}) on dev: F1 {100 * source_f1:.1f}")
    write_json(output, results)
    print(f"-> {output}")


if __name__ == "__main__":
    typer.run(main)
