"""How much of a round's update to keep: replay the rounds of recorded AL runs and score the
weights moved back toward the source by every share alpha (adaptner.update.anchor).

For each recorded run (a grid folder's ``<run>.jsonl``, written without anchoring), every
round is retrained exactly as the run did (same labelled docs, replayed source docs and
seed: alpha = 1 reproduces the recorded F1), then the weights source + alpha * (trained -
source) are scored on the run's evaluation sets for alpha in 0, 0.25, 0.5, 0.75, 1. The
``table`` command then gives, for anchoring ``anchor_docs`` = k (alpha = n / (n + k), n =
the round's target docs), each round's seed-mean F1 minus the source's (linear in alpha
between the scored shares), the worst seed, and the mean over rounds.

    python bench/anchor_sweep.py run --runs /work/runs/al/e5_top -t social_media \\
        --strategy random --strategy margin -o bench/results/anchor/social_media.jsonl
    python bench/anchor_sweep.py table bench/results/anchor/social_media.jsonl

A run's rounds after the first were queried by the un-anchored model, so for a strategy
other than random the table shows what anchoring does to the same selections, not the
selections an anchored run would make (``bench/al_bench.py e5-grid --anchor-docs K`` runs those).
Rows are appended as each round finishes; a rerun skips the rounds already in the file.
"""

import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy
import typer

from adaptner.scoring import score_ner
from adaptner.simulation import ALSettings, SimulationConfig
from adaptner.simulation.config import with_legacy_settings
from adaptner.simulation.engine import Simulation, read_records
from adaptner.update.anchor import anchor_alpha, anchor_weights
from adaptner.update.trainers import restore_weights, snapshot_weights
from adaptner.util import append_jsonl

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
KS = (0, 17, 25, 35, 50, 70)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


def run_config(rec: dict, corpus_dir: Path) -> SimulationConfig:
    """The configuration a recorded run was made with (from its first record)."""
    p = with_legacy_settings(rec["params"])
    fields = {f.name for f in dataclasses.fields(ALSettings)}
    settings = ALSettings(**{k: v for k, v in p.items() if k in fields})
    return SimulationConfig(
        source=p["source"],
        target=p["target"],
        strategy=p["strategy"],
        mode=p["mode"],
        seed=p["seed"],
        settings=settings,
        source_model=Path(rec["source_model"]),
        corpus_dir=corpus_dir,
        strategy_params=p.get("strategy_params") or {},
        source_index=p.get("source_index"),
    )


@app.command()
def run(
    runs: Path = typer.Option(..., "--runs", help="A grid folder of runs made without anchoring."),
    target: str = typer.Option(..., "--target", "-t", help="Target domain."),
    strategies: list[str] = typer.Option(["random"], "--strategy", help="Strategies (repeat)."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL of rows (appended)."),
    corpus_dir: Path = typer.Option(ROOT / "corpus", "--corpus", help="The converted corpus."),
) -> None:
    """Retrain the recorded rounds and score every alpha (resumable)."""
    done = set()
    if output.exists():
        for line in output.read_text(encoding="utf8").splitlines():
            row = json.loads(line)
            done.add((row["run_id"], row["round"]))
    for strategy in strategies:
        files = sorted(runs.glob(f"*_{target}_{strategy}_reset*.jsonl"))
        if not files:
            raise typer.BadParameter(f"no reset runs of {target} / {strategy} in {runs}")
        for path in files:
            records, _ = read_records(path)
            if records[0]["params"].get("anchor_docs"):
                raise typer.BadParameter(f"{path} was run with anchoring; give runs without")
            if all((records[0]["run_id"], r["round"]) in done for r in records[1:]):
                continue
            sim = Simulation(run_config(records[0], corpus_dir), runs)
            source = sim.source_weights
            labeled: list[int] = []
            for i, rec in enumerate(records[1:], 1):
                new = rec["new_ids"]
                following = records[i + 1]["new_ids"] if i + 1 < len(records) else []
                if (rec["run_id"], i) in done:
                    labeled += new
                    continue
                start = time.perf_counter()
                sim.retrain(i, labeled, new)
                labeled += new
                trained = snapshot_weights(sim.nlp)
                row = {
                    "run_id": rec["run_id"],
                    "strategy": strategy,
                    "seed": rec["seed"],
                    "round": i,
                    "labeled": len(labeled),
                    "recorded_f1": rec["target_f1"],
                    "alphas": {},
                }
                for alpha in ALPHAS:
                    restore_weights(sim.nlp, trained)
                    anchor_weights(sim.nlp, source, alpha)
                    scores = sim.evaluate()
                    nxt = score_ner(sim.nlp, sim.docs(following))["ents_f"] if following else None
                    row["alphas"][str(alpha)] = {
                        "target_f1": scores["target_f1"],
                        "evals": {k: v["ents_f"] for k, v in scores["evals"].items()},
                        "source_f1": scores["source_f1"],
                        "next_batch_f1": nxt,
                    }
                row["seconds"] = round(time.perf_counter() - start, 1)
                append_jsonl(output, row)
                f1 = {a: round(v["target_f1"], 3) for a, v in row["alphas"].items()}
                typer.echo(f"{rec['run_id']} round {i}: recorded {rec['target_f1']:.3f}, {f1}")


def row_f1(row: dict, alpha: float, eval_set: str) -> float:
    """A swept round's F1 on ``eval_set`` with the share ``alpha`` (one of :data:`ALPHAS`)."""
    return row["alphas"][str(alpha)]["evals"][eval_set]


def gain_at(row: dict, k: float, eval_set: str) -> float:
    """F1 minus the source's with anchoring ``k`` (alpha = n / (n + k), linear in alpha between
    the scored shares; k = inf keeps none of the update)."""
    a = 0.0 if k == float("inf") else anchor_alpha(row["labeled"], k)
    scores = [row_f1(row, x, eval_set) for x in ALPHAS]
    return float(numpy.interp(a, ALPHAS, scores)) - row_f1(row, 0.0, eval_set)


@app.command()
def table(
    rows_file: Path = typer.Argument(..., help="The rows `run` wrote."),
    eval_set: str = typer.Option("merged", "--eval-set", help="merged | heldout | dev."),
) -> None:
    """Per anchor_docs k: each round's seed-mean F1 minus the source's (worst seed in brackets)
    and the mean over rounds, on one evaluation set."""
    rows = [json.loads(line) for line in rows_file.read_text(encoding="utf8").splitlines()]
    typer.echo(f"Evaluation set: {eval_set}; F1 minus the source's (round 0), seed mean (worst)")
    by_round: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in rows:
        by_round[(row["strategy"], row["round"])].append(row)
    keys = sorted(by_round)
    labels = [f"{s} r{r} (n {by_round[(s, r)][0]['labeled']}, {len(by_round[(s, r)])} seeds)"
              for s, r in keys]  # fmt: skip
    typer.echo("| anchor_docs | " + " | ".join(labels) + " | mean over rounds |")
    typer.echo("|---" * (len(keys) + 2) + "|")
    for k in KS:
        cells, means = [], defaultdict(list)
        for key in keys:
            gains = [gain_at(row, k, eval_set) for row in by_round[key]]
            cells.append(f"{numpy.mean(gains):+.3f} ({min(gains):+.3f})")
            means[key[0]].append(float(numpy.mean(gains)))
        summary = ", ".join(f"{s} {numpy.mean(v):+.3f}" for s, v in means.items())
        typer.echo(f"| {k} | " + " | ".join(cells) + f" | {summary} |")


def next_batch_docs(prev: dict, first_k: float) -> float:
    """``anchor_docs`` as the previous round's rows choose it: the share whose weights scored
    best on this round's batch (labels that round had not seen; ties to the smaller share),
    turned into k = n (1 - alpha) / alpha with n the previous round's labels (inf for
    alpha = 0); ``first_k`` without a previous round."""
    if prev is None:
        return first_k
    best = max(ALPHAS, key=lambda a: (prev["alphas"][str(a)]["next_batch_f1"] or 0.0, -a))
    return float("inf") if best == 0.0 else prev["labeled"] * (1.0 - best) / best


@app.command()
def rules(
    rows_file: Path = typer.Argument(..., help="The rows `run` wrote."),
    eval_set: str = typer.Option("merged", "--eval-set", help="merged | heldout | dev."),
    fixed: float = typer.Option(35.0, "--fixed", help="The fixed anchor_docs to compare with."),
) -> None:
    """Ways to choose a round's share, each round's seed-mean F1 minus the source's:

    - fixed: anchor_docs = --fixed every round;
    - next batch: the share the previous round's weights scored best with on the batch this
      round labels (known once it is labelled, before this round trains), as anchor_docs
      (round 1, with no previous round: --fixed);
    - whole update (alpha 1) and the best share on the evaluation set itself (an upper bound
      no run can use: it selects on the evaluation set).
    """
    rows = [json.loads(line) for line in rows_file.read_text(encoding="utf8").splitlines()]

    def f1(row: dict, alpha: float) -> float:
        return row_f1(row, alpha, eval_set)

    runs: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        runs[row["run_id"]].append(row)
    gains: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run_rows in runs.values():
        prev = None
        for row in sorted(run_rows, key=lambda r: r["round"]):
            if prev is not None and prev["round"] != row["round"] - 1:
                prev = None  # a round missing from the rows: its batch scored nothing here
            cell = gains[(row["strategy"], row["round"])]
            cell[f"fixed {fixed:g}"].append(gain_at(row, fixed, eval_set))
            cell["next batch"].append(gain_at(row, next_batch_docs(prev, fixed), eval_set))
            cell["whole update"].append(f1(row, 1.0) - f1(row, 0.0))
            cell["best on the eval set (bound)"].append(
                max(f1(row, a) for a in ALPHAS) - f1(row, 0.0)
            )
            prev = row
    keys = sorted(gains)
    typer.echo(f"Evaluation set: {eval_set}; F1 minus the source's (round 0), seed mean")
    typer.echo("| rule | " + " | ".join(f"{s} r{r}" for s, r in keys) + " | mean |")
    typer.echo("|---" * (len(keys) + 2) + "|")
    for rule in gains[keys[0]]:
        means = [float(numpy.mean(gains[key][rule])) for key in keys]
        cells = " | ".join(f"{m:+.3f}" for m in means)
        typer.echo(f"| {rule} | {cells} | {numpy.mean(means):+.3f} |")


@app.command()
def compare(
    anchored: Path = typer.Option(..., "--anchored", help="Runs with anchoring (folder or tar)."),
    plain: Path = typer.Option(..., "--plain", help="The same runs without (folder or tar)."),
    eval_set: str = typer.Option("merged", "--eval-set", help="merged | heldout | dev."),
) -> None:
    """The same grid with and without anchoring, paired by seed (the same seed shares the
    held-out set, the source model and round 1's pool): F1 per round (seed mean, with
    minus without) and the AULC from round 0 with its gain (mean ± 95 % CI)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from al_bench import runs_folder

    from adaptner.simulation.curves import aulc, build_curves, load_records, mean_ci

    curves = []
    for where in (anchored, plain):
        with runs_folder(where) as folder:
            built = build_curves(load_records(folder))
        curves.append({k: c for k, c in built.items() if c.eval_set == eval_set})
    typer.echo(f"Evaluation set: {eval_set}; F1 seed mean, anchored / plain (paired difference)")
    typer.echo(
        "| target | strategy | seeds | round 0 | rounds 1.. (labels: anchored / plain, Δ) "
        "| worst round − round 0 | AULC anchored / plain | AULC gain ± 95 % CI |"
    )
    typer.echo("|---|---|---|---|---|---|---|---|")
    for key in sorted(set(curves[0]) & set(curves[1])):
        a, p = curves[0][key], curves[1][key]
        seeds = sorted(set(a.seeds) & set(p.seeds))
        n = min(a.f1.shape[1], p.f1.shape[1])
        fa = a.f1[[a.seeds.index(s) for s in seeds], :n]
        fp = p.f1[[p.seeds.index(s) for s in seeds], :n]
        x = a.fractions[:n]
        rounds = "; ".join(
            f"{100 * x[r]:.0f} %: {fa[:, r].mean():.3f} / {fp[:, r].mean():.3f} "
            f"({(fa[:, r] - fp[:, r]).mean():+.3f})"
            for r in range(1, n)
        )
        worst = [float((f[:, 1:].mean(axis=0) - f[:, 0].mean()).min()) for f in (fa, fp)]
        areas = [numpy.array([aulc(x, row) for row in f]) for f in (fa, fp)]
        gain, ci = mean_ci(areas[0] - areas[1])
        typer.echo(
            f"| {key[1]} | {key[2]} | {len(seeds)} | {fa[:, 0].mean():.3f} | {rounds} "
            f"| {worst[0]:+.3f} / {worst[1]:+.3f} | {areas[0].mean():.3f} / {areas[1].mean():.3f} "
            f"| {gain:+.3f} ± {ci:.3f} |"
        )


if __name__ == "__main__":
    try:
        app()
    except Exception as e:  # noqa: BLE001 - a one-line error for the shell
        from adaptner.errors import AdaptnerError

        if isinstance(e, AdaptnerError):
            typer.echo(f"error: {e}", err=True)
            sys.exit(1)
        raise
