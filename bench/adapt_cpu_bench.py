"""An adapted CPU pipeline from an adapted transformer: how close does the student come?

The ``adapt-cpu`` workflow measured on one target (default legal), as a team would run it with
a share of the target labelled (default 15 %) and the rest of its texts as an unlabelled pool:

1. **split** the target's DANSK train docs: the held-out 20 % of the active-learning grids
   (:func:`adaptner.simulation.engine.split_heldout`, the same texts) is kept for evaluation
   only; of the rest, ``--share`` (drawn with ``--seed``) is labelled, the others form the
   pool (texts only: the teacher labels them, their gold is never read);
2. **teacher**: the News e5 source fine-tuned on News train + the labelled target docs
   (``adaptner train configs/bio_trf_e5.cfg --init-from SOURCE``, a fixed schedule and
   model-last: nothing selects on target data);
3. **distil**: the teacher's soft targets on the labelled docs (gold kept) and the pool
   (``adaptner distil TEACHER --data LABELS --target POOL``);
4. **student**: ``configs/bio_cnn_e5sub_distil.cfg`` on them;
5. **bio_cnn**: ``configs/bio_cnn.cfg`` on the same labels (News + the labelled target docs);
6. **scores**: teacher, student and bio_cnn on the held-out 20 %, the target's dev split and
   both together (``merged``, the primary set), with adaptner's scorer.

The CPU models select their checkpoint on News dev only (``--dev-domains news``), so no
number below was chosen on target data. Every step's output is kept in ``--workdir`` and
reused when the command runs again (a killed run resumes at the step it was in).

    python bench/adapt_cpu_bench.py --source SOURCE --target legal --share 0.15 --seed 0 \\
        --workdir /tmp/adapt_cpu --output bench/results/distil/adapted_legal
"""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy
import typer

# Run as a script, Python puts bench/ first on sys.path: the sweep's batch count imports as is.
from e5_recipe import _steps_per_epoch

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DOMAIN = "news"
HOLDOUT = 0.2  # the AL grids' eval_holdout (configs/al/*.cfg), holdout_seed 0


def _run(cmd: list[str], log: Path) -> float:
    """Run one adaptner command (its output appended to ``log``); returns its wall seconds."""
    print("$ " + " ".join(cmd[2:]), flush=True)
    start = time.perf_counter()
    with log.open("a", encoding="utf8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise typer.Exit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return round(time.perf_counter() - start, 1)


def split(corpus: Path, target: str, share: float, seed: int, work: Path) -> dict[str, Any]:
    """Write labels/ (News train + the labelled target docs), pool.spacy and eval/{heldout,
    dev,merged}/<target>.spacy; returns the counts."""
    import spacy

    from adaptner.dynamics.aum import write_docbin as write
    from adaptner.readers import read_docbin
    from adaptner.simulation.engine import split_heldout

    vocab = spacy.blank("da").vocab
    docs = read_docbin(corpus / "train" / f"{target}.spacy", vocab)
    al_ids, held_ids = split_heldout(docs, HOLDOUT, seed=0)
    rng = numpy.random.default_rng(seed)
    n = max(1, math.floor(share * len(al_ids) + 1e-9))
    chosen = set(rng.choice(al_ids, size=n, replace=False).tolist())
    labelled = [docs[i] for i in al_ids if i in chosen]
    pool = [docs[i] for i in al_ids if i not in chosen]
    dev = read_docbin(corpus / "dev" / f"{target}.spacy", vocab)

    source_docs = read_docbin(corpus / "train" / f"{SOURCE_DOMAIN}.spacy", vocab)
    write(work / "labels" / f"{SOURCE_DOMAIN}.spacy", source_docs)
    write(work / "labels" / f"{target}.spacy", labelled)
    write(work / "pool.spacy", pool)
    held = [docs[i] for i in held_ids]
    write(work / "eval" / "heldout" / f"{target}.spacy", held)
    write(work / "eval" / "dev" / f"{target}.spacy", dev)
    write(work / "eval" / "merged" / f"{target}.spacy", held + dev)
    counts = {
        "target_train": len(docs),
        "heldout": len(held),
        "labelled": len(labelled),
        "pool": len(pool),
        "source_train": len(source_docs),
        "dev": len(dev),
    }
    (work / "split.json").write_text(json.dumps(counts, indent=1) + "\n", encoding="utf8")
    return counts


def scores(model: Path, work: Path, name: str, log: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for eval_set in ("merged", "heldout", "dev"):
        path = work / "scores" / f"{name}_{eval_set}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _run([sys.executable, "-m", "adaptner", "evaluate", str(model), "--data",
                  str(work / "eval" / eval_set), "--output", str(path)], log)  # fmt: skip
        report = json.loads(path.read_text(encoding="utf8"))
        out[eval_set] = round(100 * report["overall"]["ents_f"], 2)
    return out


def main(
    source: Path = typer.Option(..., "--source", help="The News e5 pipeline (train-e5-source)."),
    target: str = typer.Option("legal", "--target", "-t", help="Target domain."),
    share: float = typer.Option(0.15, "--share", help="Share of the target's AL docs labelled."),
    seed: int = typer.Option(0, "--seed", help="Which docs are labelled; every training's seed."),
    teacher_epochs: int = typer.Option(
        10, "--teacher-epochs", help="Teacher: epochs of the labels."
    ),
    corpus: Path = typer.Option(ROOT / "corpus", "--corpus", help="Converted DANSK corpus."),
    encoder: Path = typer.Option(ROOT / "assets" / "e5-small", "--encoder", help="e5-small dir."),
    workdir: Path = typer.Option(..., "--workdir", "-w", help="Every step's output (reused)."),
    output: Path = typer.Option(
        ROOT / "bench" / "results" / "distil" / "adapted_legal",
        "--output",
        "-o",
        help="Where <target>_<share>pct_s<seed>.json and .md go.",
    ),  # fmt: skip
) -> None:
    """Split, adapt the teacher, distil, train the student and bio_cnn, score all three."""
    command = "python bench/adapt_cpu_bench.py " + " ".join(sys.argv[1:])
    work = workdir / f"{target}_{round(share * 100)}pct_s{seed}"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    py = [sys.executable, "-m", "adaptner"]
    walls: dict[str, float] = {}
    if not (work / "split.json").exists():
        split(corpus, target, share, seed, work)
    counts = json.loads((work / "split.json").read_text(encoding="utf8"))
    print(f"split: {counts}")

    teacher = work / "teacher"
    if not (teacher / "model-last").exists():
        batch = 150  # padded words, the News source recipe's (news-bs150-llrd-len33)
        domains = f"{SOURCE_DOMAIN},{target}"
        steps = teacher_epochs * _steps_per_epoch(batch, domains, work / "labels")
        walls["teacher"] = _run(py + [
            "train", "configs/bio_trf_e5.cfg", "-o", str(teacher), "--init-from", str(source),
            "--train", str(work / "labels"), "--domains", domains,
            "--dev-domains", SOURCE_DOMAIN, "--seed", str(seed), "--resume",
            "--paths.transformer", str(encoder), "--training.batcher.size", str(batch),
            "--training.max_steps", str(steps), "--training.eval_frequency",
            str(max(1, steps // 5)), "--training.patience", "0",
            "--training.optimizer.learn_rate.warmup_steps", str(max(1, steps // 10)),
        ], log)  # fmt: skip
    distilled = work / "teacher_labels"
    if not (distilled / "teacher.json").exists():
        walls["distil"] = _run(py + [
            "distil", str(teacher / "model-last"), "--data", str(work / "labels"),
            "--target", str(work / "pool.spacy"), "-o", str(distilled),
        ], log)  # fmt: skip
    student = work / "student"
    if not (student / "model-best").exists():
        walls["student"] = _run(py + [
            "train", "configs/bio_cnn_e5sub_distil.cfg", "-o", str(student), "--train",
            str(distilled), "--dev-domains", SOURCE_DOMAIN, "--seed", str(seed), "--resume",
        ], log)  # fmt: skip
    cnn = work / "bio_cnn"
    if not (cnn / "model-best").exists():
        walls["bio_cnn"] = _run(py + [
            "train", "configs/bio_cnn.cfg", "-o", str(cnn), "--train", str(work / "labels"),
            "--dev-domains", SOURCE_DOMAIN, "--seed", str(seed), "--resume",
        ], log)  # fmt: skip

    models = {
        "source (News e5, not adapted)": source,
        "teacher (e5 fine-tuned on News + labels)": teacher / "model-last",
        "student (bio_cnn_e5sub_distil: labels + teacher on labels and pool)": student
        / "model-best",
        "bio_cnn on the same labels": cnn / "model-best",
    }
    keys = ["source", "teacher", "student", "bio_cnn"]
    rows = {k: scores(m, work, k, log) for k, m in zip(keys, models.values(), strict=True)}
    gap = round(rows["teacher"]["merged"] - rows["student"]["merged"], 2)
    trained = {}  # wall seconds of each training, from its train_meta.json (any invocation)
    for key, folder in (("teacher", teacher), ("student", student), ("bio_cnn", cnn)):
        meta = json.loads((folder / "train_meta.json").read_text(encoding="utf8"))
        trained[key] = {"seconds": meta.get("train_seconds"), "steps": meta.get("steps")}
    result = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "target": target,
        "share": share,
        "seed": seed,
        "split": counts,
        "f1": rows,
        "teacher_minus_student_merged": gap,
        "wall_seconds_this_invocation": walls,
        "training": trained,
    }
    output.mkdir(parents=True, exist_ok=True)
    stem = f"{target}_{round(share * 100)}pct_s{seed}"
    (output / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf8")
    lines = [
        f"# Adapted CPU pipeline on {target} from {share:.0%} of its labels + the pool",
        "",
        f"`{command}` ({result['date']}; seed {seed}).",
        "",
        f"{target} train: {counts['target_train']} docs = {counts['heldout']} held out (the AL "
        f"grids' 20 %) + {counts['labelled']} labelled + {counts['pool']} in the unlabelled "
        f"pool; News train {counts['source_train']} docs; {target} dev {counts['dev']}. F1 in "
        "points with adaptner's scorer; merged = held-out + dev.",
        "",
        "| model | merged | held-out | dev |",
        "|---|---:|---:|---:|",
        *(
            f"| {label} | {rows[k]['merged']:.2f} | {rows[k]['heldout']:.2f} | "
            f"{rows[k]['dev']:.2f} |"
            for k, label in zip(keys, models, strict=True)
        ),
        "",
        f"Teacher − student on the merged set: {gap:+.2f} (target: within 3).",
        "",
        "Training on 2 cores (wall, from each model's train_meta.json): "
        + "; ".join(f"{k} {v['seconds'] / 60:.1f} min, {v['steps']} steps"
                    for k, v in trained.items() if v["seconds"] is not None)  # fmt: skip
        + ".",
        "",
    ]
    (output / f"{stem}.md").write_text("\n".join(lines), encoding="utf8")
    print("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
