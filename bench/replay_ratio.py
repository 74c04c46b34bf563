"""Benchmark: the source replay ratio (source docs per target doc in each round's training set).

Runs the paper's protocol from a News source to one target for a few rounds, once per ratio
and seed, and tabulates the held-out target F1 and the source F1 per round:

    # e5 News pipeline, head retrained on cached encoder outputs (configs/al/e5.cfg):
    python bench/replay_ratio.py --source-model training/bio_trf_e5/news/model-best \\
        --al-config e5 --tag e5
    # the CNN (configs/bio_cnn.cfg trained on News first, --cnn-steps), every weight learning:
    python bench/replay_ratio.py --al-config default --tag cnn

Results: ``<output>/<tag>.md`` (the table) and ``<output>/<tag>.json`` (every run's F1 per
round); the runs in ``<runs>/<tag>/ratio-<r>/`` (re-running resumes them).
"""

import gc
import json
import statistics
import time
from pathlib import Path

import typer

from adaptner.simulation.config import SimulationConfig, load_al_settings
from adaptner.simulation.engine import (
    check_folder_settings,
    check_records,
    read_records,
    run_simulation,
)
from adaptner.simulation.pipelines import TrainTask, ensure_trained

ROOT = Path(__file__).resolve().parents[1]

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def paired(runs: list[dict], base: list[dict], key: str) -> str:
    """Mean over seeds of (this ratio - ratio 0) of a run's mean F1 over rounds 1.., ± its
    standard error, in points."""
    ref = {r["seed"]: statistics.fmean(r[key][1:]) for r in base}
    diffs = [100 * (statistics.fmean(r[key][1:]) - ref[r["seed"]]) for r in runs]
    if len(diffs) < 2:
        return f"{statistics.fmean(diffs):+.1f}"
    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{statistics.fmean(diffs):+.1f} ± {se:.1f}"


def mean_sd(values: list[float]) -> str:
    """``mean ± sd`` in F1 points (sd over seeds; '' for one seed)."""
    m = 100 * statistics.fmean(values)
    return f"{m:.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{m:.1f}"


def cnn_source(models_dir: Path, corpus: Path, steps: int) -> Path:
    """configs/bio_cnn.cfg trained on News (cached in ``models_dir``)."""
    task = TrainTask(
        name="source news (CNN)",
        train_domains="news",
        train_config=ROOT / "configs" / "bio_cnn.cfg",
        corpus_dir=corpus,
        model_dir=models_dir / f"news_cnn_{steps}",
        seed=0,
        overrides={"training.max_steps": steps, "training.eval_frequency": max(1, steps // 5)},
    )
    return ensure_trained(task)


@app.command()
def main(
    source_model: Path | None = typer.Option(
        None, "--source-model", help="The News pipeline (default: train the CNN, --cnn-steps)."
    ),
    al_config: str = typer.Option("default", "--al-config", help="AL config (default, e5)."),
    target: str = typer.Option("social_media", "--target", "-t", help="Target domain."),
    ratios: str = typer.Option("0,0.5,1,2", "--ratios", help="Comma-separated replay ratios."),
    seeds: int = typer.Option(3, "--seeds", "-n", help="Seeds 0..n-1 per ratio."),
    rounds: int = typer.Option(3, "--rounds", help="AL rounds after round 0 (5 % each)."),
    strategy: str = typer.Option("margin", "--strategy", help="Query strategy."),
    mode: str = typer.Option("reset", "--mode", "-m", help="reset | warm."),
    cnn_steps: int = typer.Option(1500, "--cnn-steps", help="Training steps of the CNN source."),
    corpus: Path = typer.Option(ROOT / "corpus", "--corpus", help="Corpus folder."),
    models_dir: Path = typer.Option(
        ROOT / "training" / "replay", "--models-dir", help="Where the CNN source is cached."
    ),
    output: Path = typer.Option(
        ROOT / "bench" / "results" / "replay", "--output", "-o", help="Results folder."
    ),
    runs_dir: Path = typer.Option(
        ROOT / "metrics" / "replay", "--runs", help="The simulation runs (one folder per ratio)."
    ),
    tag: str = typer.Option("cnn", "--tag", help="Name of this measurement's files."),
) -> None:
    """One run per ratio and seed; the table of target and source F1 per round."""
    if source_model is None:
        source_model = cnn_source(models_dir, corpus, cnn_steps)
    base = load_al_settings(al_config)
    budget = rounds * base.query_fraction
    folder = runs_dir / tag
    output.mkdir(parents=True, exist_ok=True)
    shared_features = folder / "features"
    shared_features.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    start = time.perf_counter()
    for ratio in [float(r) for r in ratios.split(",")]:
        settings = base.replace(budget=budget, source_replay=ratio)
        run_dir = folder / f"ratio-{ratio:g}"
        run_dir.mkdir(parents=True, exist_ok=True)
        check_folder_settings(run_dir, settings)
        features = run_dir / "features"  # one encoder cache for every ratio
        if not features.exists():
            features.symlink_to(shared_features.resolve(), target_is_directory=True)
        for seed in range(seeds):
            cfg = SimulationConfig(
                source="news",
                target=target,
                strategy=strategy,
                mode=mode,
                seed=seed,
                settings=settings,
                source_model=source_model,
                corpus_dir=corpus,
            )
            path = run_dir / f"{cfg.run_id}.jsonl"
            records, _ = read_records(path)
            check_records(records, cfg, path)
            if not (records and records[-1].get("last")):  # finished runs are only read
                records = run_simulation(cfg, run_dir)
                gc.collect()  # each run loads its own pipeline; free the last one's cycles
            results.setdefault(f"{ratio:g}", []).append(
                {
                    "seed": seed,
                    "target_f1": [r["evals"]["heldout"]["ents_f"] for r in records],
                    "dev_f1": [r["evals"]["dev"]["ents_f"] for r in records],
                    "source_f1": [r["source_f1"] for r in records],
                    "train_docs": [r["train_docs"] for r in records],
                    "source_replay_docs": [r.get("source_replay_docs", 0) for r in records],
                    "train_seconds": [r["train_seconds"] for r in records],
                    "round_seconds": [r["round_seconds"] for r in records],
                }
            )
            typer.echo(
                f"ratio {ratio:g} seed {seed}: target F1 "
                + " ".join(f"{f:.3f}" for f in results[f"{ratio:g}"][-1]["target_f1"])
            )
    wall = time.perf_counter() - start
    rounds_total = sum(s for runs in results.values() for r in runs for s in r["round_seconds"])
    n_rounds = rounds + 1
    head = (
        "| ratio | "
        + " | ".join(f"target F1 r{k}" for k in range(n_rounds))
        + f" | mean r1-r{rounds} | "
        + " | ".join(f"source F1 r{k}" for k in range(n_rounds))
        + f" | source docs r1-r{rounds} | s/round | Δ target r1-r{rounds} vs 0 "
        f"| Δ source r1-r{rounds} vs 0 |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for ratio, runs in results.items():
        target_cols = [mean_sd([r["target_f1"][k] for r in runs]) for k in range(n_rounds)]
        later = mean_sd([statistics.fmean(r["target_f1"][1:]) for r in runs])
        source_cols = [mean_sd([r["source_f1"][k] for r in runs]) for k in range(n_rounds)]
        docs = "/".join(str(d) for d in runs[0]["source_replay_docs"][1:])
        seconds = statistics.fmean(s for r in runs for s in r["train_seconds"][1:])
        base_runs = results.get("0")
        deltas = (
            f"{paired(runs, base_runs, 'target_f1')} | {paired(runs, base_runs, 'source_f1')}"
            if base_runs
            else "– | –"
        )
        lines.append(
            f"| {ratio} | {' | '.join(target_cols)} | **{later}** | {' | '.join(source_cols)} "
            f"| {docs} | {seconds:.1f} | {deltas} |"
        )
    settings_line = (
        f"News source `{source_model}` -> {target}, AL config `{al_config}` "
        f"({base.trainer}, {base.epochs} epochs/round), {strategy}, {mode}, {rounds} rounds of "
        f"{base.query_fraction:.0%}, seeds 0-{seeds - 1}; F1 in points, mean ± sd over seeds "
        "(Δ: paired by seed against ratio 0, mean ± standard error); "
        f"target F1 on the held-out {base.eval_holdout:.0%} of the target train set, source F1 "
        f"on News dev; the rounds took {rounds_total:.0f} s in all (2 cores shared with a "
        f"training run; {wall:.0f} s for this invocation, which reads finished runs)."
    )
    table = "\n".join([settings_line, "", *lines, ""])
    (output / f"{tag}.md").write_text(table, encoding="utf8")
    (output / f"{tag}.json").write_text(
        json.dumps({"settings": settings_line, "runs": results}, indent=1), encoding="utf8"
    )
    typer.echo(table)


if __name__ == "__main__":
    app()
