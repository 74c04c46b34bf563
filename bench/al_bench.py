"""Benchmark: the active-learning measurement grid (resumable) and the wall time of one round.

    # the full measurement (hours on 2 cores; re-run the same command to resume):
    python bench/al_bench.py grid --workers 2
    # the same pipeline on a tiny setting (minutes), to check it end to end:
    python bench/al_bench.py grid --tiny
    # wall time of one AL round (pool scoring + retraining + evaluation), reset vs warm:
    python bench/al_bench.py time-round -t legal --source-model training/source/news/model-best
    # the CNN grid rerun under the paper's protocol (configs/al/default.cfg, to 50 %):
    python bench/al_bench.py paper-grid -j 1
    # ... one slice of it, e.g. to time a run:
    python bench/al_bench.py paper-grid -t legal --strategy margin -m reset -n 1

    # active learning on the pretrained encoder (e5 fine-tuned on News; configs/al/e5.cfg:
    # round trainer cached_head, source replay 2), the paper's range (to 100 %), reset, 10 seeds:
    python bench/al_bench.py e5-grid -j 2
    # the careful experiment: two source models (seed k adapts model k mod 2), top layers
    # fine-tuned each round; first its CPU hours (runs nothing), then the grid:
    python bench/al_bench.py plan --grid e5 --timing T --source-model A --source-model B \
        --trainer top_layers --strategy random --strategy margin --strategy least_confidence -n 6
    python bench/al_bench.py e5-grid --source-model A --source-model B --trainer top_layers \
        --strategy random --strategy margin --strategy least_confidence --seeds 6 \
        -o metrics/al_e5_top
    # what the cached-feature shortcut costs: cached_head vs full fine-tuning per round,
    # the same labelled docs (random strategy, one seed, 5-20 %):
    python bench/al_bench.py shortcut -t legal
    # AULC and labels for 95 % side by side: e5 vs CNN grid vs the paper
    python bench/al_bench.py compare --run e5=metrics/al_e5 --run cnn=metrics/al_paper
    # pool-scoring words/s: full transformer pipeline vs cached encoder outputs
    python bench/al_bench.py score-speed -t legal
    # regenerate a committed report (report.md, summary.json, PNGs) from its runs, one command:
    python bench/al_bench.py report --runs bench/results/al_paper/runs.tar.gz
    # the CPU-hour plan of a grid at the rates of measured rounds (prints; runs nothing):
    python bench/al_bench.py plan --grid paper --timing bench/results/al_paper/runs.tar.gz

Results go under metrics/al/ (``<run>.jsonl`` per run, ``baselines/``, ``report/`` with the
Markdown table and one PNG per source x target; ``timing/`` for time-round). The grid
compares with the paper's mBERT curves in ../shared/anchors/ when present.
"""

import contextlib
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from adaptner.errors import AdaptnerError
from adaptner.simulation.config import SimulationConfig, load_al_settings
from adaptner.simulation.curves import load_records, write_report
from adaptner.simulation.engine import read_records, run_simulation
from adaptner.simulation.grid import (
    GridSpec,
    RoundTiming,
    cost_plan,
    format_cost_plan,
    plan_grid,
    run_grid,
)
from adaptner.simulation.pipelines import TrainTask, ensure_trained

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = (ROOT / ".." / "shared" / "anchors").resolve()
TARGETS = ["conversation", "legal", "social_media"]
STRATEGIES = ["random", "least_confidence", "margin", "vocab", "mnlp", "hybrid"]
#: The paper's four strategies + the two best other CNN strategies by mean AULC over every row
#: of results/al/report.md (fixed 20 % pool): cartography .540, mnlp .536 (hybrid .532).
PAPER_STRATEGIES = ["random", "least_confidence", "margin", "vocab", "mnlp", "cartography"]

#: The CNN grids below reproduce tables measured before rounds replayed source docs
#: (bench/replay_ratio.py measures the replay); e5-grid takes the AL config's (--source-replay).
NO_REPLAY = {"source_replay": 0.0}
#: The round trainers e5-grid offers (adaptner.update.trainers).
#: How this run was started (named in reports and under figures).
COMMAND = "python bench/al_bench.py " + " ".join(sys.argv[1:])
E5_TRAINERS = ("cached_head", "top_layers", "fine_tune")
#: Round trainers with their own AL config under configs/al/ (the rest override e5.cfg's).
E5_TRAINER_CONFIGS = {"top_layers": "e5_top_layers.cfg"}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


@app.command()
def grid(
    output: Path = typer.Option(ROOT / "metrics" / "al", "--output", "-o", help="Results folder."),
    workers: int = typer.Option(2, "--workers", "-j", help="Parallel processes."),
    seeds: int = typer.Option(3, "--seeds", "-n", help="Seeds per setting (0..n-1)."),
    tiny: bool = typer.Option(
        False, "--tiny", help="Tiny configs, 1 target, 2 strategies, 1 seed (checks the pipeline)."
    ),
    backend: str = typer.Option("local", "--backend", help="local | ray."),
) -> None:
    """Sources news and all-but-target x targets x 6 strategies x reset/warm x seeds, on dev,
    with the earlier fixed-pool protocol (results/al/); the paper's protocol: paper-grid."""
    if tiny:
        output = (
            output.parent / (output.name + "_tiny") if output == ROOT / "metrics" / "al" else output
        )
        spec = GridSpec(
            sources=["news", "all-but-target"],
            targets=["legal"],
            strategies=["random", "margin"],
            modes=["reset", "warm"],
            seeds=[0],
            settings=load_al_settings(ROOT / "configs" / "al" / "test" / "tiny.cfg"),
            train_config=ROOT / "configs" / "test" / "bio_cnn.cfg",
            corpus_dir=ROOT / "corpus",
            output_dir=output,
            models_dir=output / "training",
            baselines=["source_only", "target_full"],
        )
    else:
        spec = GridSpec(
            sources=["news", "all-but-target"],
            targets=TARGETS,
            strategies=STRATEGIES,
            modes=["reset", "warm"],
            seeds=list(range(seeds)),
            # the earlier protocol, as results/al/ was measured: fixed 20 % pool, dev only
            settings=load_al_settings(
                ROOT / "configs" / "al" / "fixed_pool.cfg",
                eval_holdout=0.0,
                eval_sets=("dev",),
                **NO_REPLAY,
            ),
            train_config=ROOT / "configs" / "bio_cnn.cfg",
            corpus_dir=ROOT / "corpus",
            output_dir=output,
            models_dir=ROOT / "training",
        )
    start = time.perf_counter()
    run_grid(spec, workers=workers, backend=backend, log=typer.echo)
    typer.echo(f"Grid wall time: {time.perf_counter() - start:.0f} s")
    anchors = ANCHORS if (ANCHORS / "paper_al_curves").is_dir() else None
    result = write_report(output, output / "report", anchors_dir=anchors, command=COMMAND)
    typer.echo(result["report"].read_text(encoding="utf8"))
    for path in result["plots"]:
        typer.echo(f"plot: {path}")


@app.command("paper-grid")
def paper_grid(
    output: Path = typer.Option(
        ROOT / "metrics" / "al_paper", "--output", "-o", help="Results folder."
    ),
    targets: list[str] = typer.Option(TARGETS, "--target", "-t", help="Targets (repeat)."),
    strategies: list[str] = typer.Option(
        PAPER_STRATEGIES, "--strategy", help="Strategies (repeat)."
    ),
    modes: list[str] = typer.Option(["reset", "warm"], "--mode", "-m", help="Modes (repeat)."),
    seeds: int = typer.Option(3, "--seeds", "-n", help="Seeds per setting (0..n-1)."),
    budget: float = typer.Option(0.5, "--budget", help="Largest labeled share (0.5 = 50 %)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel processes."),
    backend: str = typer.Option("local", "--backend", help="local | ray."),
) -> None:
    """The CNN grid under the paper's protocol: News source, fresh 20 % pool per round, 5 % per
    round from round 1 by the strategy, F1 on the held-out 20 % of each target's train set and
    on dev, baselines source_only and target_full, the paper's curves alongside."""
    spec = news_grid(
        "default.cfg", "bio_cnn.cfg", output, targets, strategies, modes, seeds, budget, **NO_REPLAY
    )
    run_and_report(spec, workers=workers, backend=backend)


def news_grid(
    al_config: str,
    train_config: str,
    output: Path,
    targets: list[str],
    strategies: list[str],
    modes: list[str],
    seeds: int,
    budget: float,
    source_model: list[Path] | None = None,
    **overrides: Any,
) -> GridSpec:
    """A News-source grid with configs/al/<al_config> (``overrides``: settings that win over
    it, None = the config's) and baselines source_only and the two references, target_full
    (the round trainer) and target_finetune (full fine-tuning). Several ``source_model``:
    seed k adapts the (k mod n)-th."""
    return GridSpec(
        sources=["news"],
        targets=targets,
        strategies=strategies,
        modes=modes,
        seeds=list(range(seeds)),
        settings=load_al_settings(ROOT / "configs" / "al" / al_config, budget=budget, **overrides),
        train_config=ROOT / "configs" / train_config,
        corpus_dir=ROOT / "corpus",
        output_dir=output,
        models_dir=ROOT / "training",
        source_model=source_model,
        baselines=["source_only", "target_full", "target_finetune"],
    )


def run_and_report(spec: GridSpec, *, workers: int, backend: str = "local") -> None:
    """Run (or resume) a grid, print its wall time and seconds per round, write its report."""
    start = time.perf_counter()
    plan = run_grid(spec, workers=workers, backend=backend, log=typer.echo)
    wall = time.perf_counter() - start
    rounds = [r for run in plan.runs for r in read_records(plan.run_path(run))[0] if r["round"] > 0]
    typer.echo(
        f"Grid wall time: {wall:.0f} s ({len(plan.runs)} runs, {len(plan.baselines)} baselines, "
        f"{workers} worker(s)); rounds on disk: {len(rounds)}, mean "
        f"{sum(r['round_seconds'] for r in rounds) / max(1, len(rounds)):.1f} s per round"
    )
    anchors = ANCHORS if (ANCHORS / "paper_al_curves").is_dir() else None
    result = write_report(
        spec.output_dir, spec.output_dir / "report", anchors_dir=anchors, command=COMMAND
    )
    typer.echo(result["report"].read_text(encoding="utf8"))
    for path in result["plots"]:
        typer.echo(f"plot: {path}")


E5_SOURCE = ROOT / "training" / "bio_trf_e5" / "news" / "model-best"  # project step train-e5-source


@app.command("e5-grid")
def e5_grid(
    output: Path = typer.Option(ROOT / "metrics" / "al_e5", "--output", "-o", help="Results."),
    source_models: list[Path] = typer.Option(
        [E5_SOURCE],
        "--source-model",
        help="e5 + bio_ner fine-tuned on News (train-e5-source). Repeat for several source "
        "models: seed k adapts the (k mod n)-th (10 seeds over 2 = 5 each), baselines too.",
    ),
    targets: list[str] = typer.Option(TARGETS, "--target", "-t", help="Targets (repeat)."),
    strategies: list[str] = typer.Option(
        PAPER_STRATEGIES, "--strategy", help="Strategies (repeat)."
    ),
    modes: list[str] = typer.Option(["reset"], "--mode", "-m", help="Modes (repeat)."),
    seeds: int = typer.Option(10, "--seeds", "-n", help="Seeds per setting (0..n-1)."),
    budget: float = typer.Option(
        1.0,
        "--budget",
        help="Largest labeled share (1.0 = 100 %, the paper's range); a larger one than the "
        "--output folder's grows its finished runs.",
    ),
    trainer: str | None = typer.Option(
        None,
        "--trainer",
        help=f"Round trainer: {' | '.join(E5_TRAINERS)} (default cached_head, configs/al/e5.cfg; "
        "top_layers runs configs/al/e5_top_layers.cfg).",
    ),
    source_replay: float | None = typer.Option(
        None,
        "--source-replay",
        min=0.0,
        help="Source docs replayed per target doc each round (default: the AL config's, 2; "
        "0 = the runs in bench/results/al_e5/).",
    ),
    anchor_docs: float | None = typer.Option(
        None,
        "--anchor-docs",
        min=0.0,
        help="Anchoring: a round on n target docs keeps n / (n + this) of its update (default: "
        "the AL config's; 0 = the whole update, as the runs before anchoring existed).",
    ),
    workers: int = typer.Option(2, "--workers", "-j", help="Parallel processes."),
) -> None:
    """The paper's grid on the pretrained encoder: News-fine-tuned e5 pipeline(s) as the
    source, configs/al/e5.cfg (evaluation sets heldout, dev, merged; rounds retrain the head
    on cached encoder outputs unless --trainer says otherwise)."""
    spec = e5_spec(output, source_models, targets, strategies, modes, seeds, budget, trainer,
                   source_replay, anchor_docs)  # fmt: skip
    run_and_report(spec, workers=workers)


def e5_spec(
    output: Path,
    source_models: list[Path],
    targets: list[str],
    strategies: list[str],
    modes: list[str],
    seeds: int,
    budget: float,
    trainer: str | None,
    source_replay: float | None,
    anchor_docs: float | None = None,
) -> GridSpec:
    """e5-grid's grid (also what ``plan --grid e5`` costs)."""
    if trainer is not None and trainer not in E5_TRAINERS:
        raise typer.BadParameter(f"--trainer {trainer!r}: choose from {', '.join(E5_TRAINERS)}")
    # a trainer with its own AL config (its rates and epochs) uses it; others override e5.cfg's
    al_config = E5_TRAINER_CONFIGS.get(trainer or "", "e5.cfg")
    return news_grid(
        al_config, "bio_trf_e5.cfg", output, targets, strategies, modes, seeds, budget,
        source_models, trainer=None if al_config != "e5.cfg" else trainer,
        source_replay=source_replay, anchor_docs=anchor_docs,
    )  # fmt: skip


@app.command()
def shortcut(
    target: str = typer.Option("legal", "--target", "-t", help="Target domain."),
    source_model: Path = typer.Option(E5_SOURCE, "--source-model", help="Source pipeline."),
    budget: float = typer.Option(0.2, "--budget", help="Largest labeled share."),
    epochs: int = typer.Option(10, "--epochs", help="Full fine-tuning: epochs per round."),
    learn_rate: float = typer.Option(
        0.001, "--learn-rate", help="Full fine-tuning: head rate (encoder x encoder_lr_scale)."
    ),
    seed: int = typer.Option(0, "--seed", help="The one seed."),
    reference_epochs: int = typer.Option(
        0,
        "--reference-epochs",
        help="Also train each trainer on the whole target train set (target_full) with this "
        "many epochs (0 = skip; full fine-tuning of legal takes ~4 min per epoch on 2 cores).",
    ),
    output: Path = typer.Option(
        ROOT / "metrics" / "al_e5_shortcut", "--output", "-o", help="Results folder."
    ),
) -> None:
    """F1 of cached_head rounds vs full fine-tuning per round at the same label counts.

    Both runs use the paper protocol with the random strategy and the same seed, so they label
    the same docs; only the round trainer differs (reset mode: every round starts from the
    source pipeline). Finished runs are read back, so adding --reference-epochs later only
    trains the references."""
    from adaptner.simulation.baselines import BaselineConfig, run_baseline

    base = load_al_settings(ROOT / "configs" / "al" / "e5.cfg", budget=budget, **NO_REPLAY)
    trainers = {
        "cached_head": base,
        "fine_tune": base.replace(trainer="fine_tune", epochs=epochs, learn_rate=learn_rate),
    }
    runs = {}
    for name, settings in trainers.items():
        cfg = SimulationConfig(
            source="news",
            target=target,
            strategy="random",
            mode="reset",
            seed=seed,
            settings=settings,
            source_model=source_model,
            corpus_dir=ROOT / "corpus",
            eval_split="dev",
        )
        t = time.perf_counter()
        runs[name] = run_simulation(cfg, output / name)
        typer.echo(f"{name}: {time.perf_counter() - t:.0f} s", err=True)
    typer.echo(
        f"\n{target}, random, seed {seed}, reset; F1 on heldout / dev; seconds per round "
        "(train + score + eval)\n"
    )
    typer.echo("| labeled | cached_head | full fine-tuning | cached s/round | full s/round |")
    typer.echo("|---|---|---|---|---|")

    def f1(r):
        from adaptner.simulation.curves import record_evals

        scores = record_evals(r)
        return f"{100 * scores['heldout']:.1f} / {100 * scores['dev']:.1f}"

    for a, b in zip(runs["cached_head"], runs["fine_tune"], strict=True):
        assert a["new_ids"] == b["new_ids"], "the runs labelled different docs"
        typer.echo(
            f"| {a['labeled_count']} ({100 * a['labeled_fraction']:.0f} %) | {f1(a)} | {f1(b)} | "
            f"{a['round_seconds']:.1f} | {b['round_seconds']:.1f} |"
        )
    if reference_epochs:
        refs = {}
        for name, settings in trainers.items():
            if name == "fine_tune":
                settings = settings.replace(epochs=reference_epochs)
            bcfg = BaselineConfig(
                source="news",
                target=target,
                kind="target_full",
                seed=seed,
                settings=settings,
                source_model=source_model,
                train_config=ROOT / "configs" / "bio_trf_e5.cfg",
                corpus_dir=ROOT / "corpus",
                eval_split="dev",
            )
            refs[name] = run_baseline(bcfg, output / name)
        last = runs["cached_head"][-1]
        typer.echo(
            f"| all {last['target_size']} (100 %) | {f1(refs['cached_head'])} | "
            f"{f1(refs['fine_tune'])} ({reference_epochs} epochs) | "
            f"{refs['cached_head']['seconds']:.0f} | {refs['fine_tune']['seconds']:.0f} |"
        )


@app.command("score-speed")
def score_speed(
    target: str = typer.Option("legal", "--target", "-t", help="Pool: this target's train set."),
    source_model: Path = typer.Option(E5_SOURCE, "--source-model", help="Source pipeline."),
    n_docs: int = typer.Option(300, "--docs", help="Pool docs to score."),
    repeats: int = typer.Option(3, "--repeats", help="Alternating timings per variant."),
) -> None:
    """Pool-scoring speed (predict + margin scores) of the full transformer pipeline vs the
    same pipeline on cached encoder outputs, timed alternately in one process (words/s, wall
    and CPU); plus the one-off cost of encoding the pool into the cache."""
    import numpy
    import spacy

    from adaptner.readers import read_docbin
    from adaptner.scoring import predict
    from adaptner.strategies import get_strategy
    from adaptner.update.features import attach, detached

    nlp = spacy.load(source_model)
    docs = read_docbin(ROOT / "corpus" / "train" / f"{target}.spacy", nlp.vocab)[:n_docs]
    words = sum(len(d) for d in docs)
    strategy = get_strategy("margin")
    t, c = time.perf_counter(), time.process_time()
    attach(nlp, docs)
    encode_s, encode_cpu = time.perf_counter() - t, time.process_time() - c

    def score() -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        strategy.score(predict(nlp, docs), nlp=nlp, rng=numpy.random.default_rng(0))
        return time.perf_counter() - t, time.process_time() - c

    times: dict[str, list[tuple[float, float]]] = {"full": [], "cached": []}
    for _ in range(repeats):
        with detached(nlp):
            times["full"].append(score())
        times["cached"].append(score())
    typer.echo(
        f"{target}: {len(docs)} docs, {words} words; encoding them into the cache: "
        f"{encode_s:.1f} s wall, {encode_cpu:.1f} s CPU ({words / encode_s:.0f} words/s)"
    )
    typer.echo("| scoring | words/s (wall, median) | words per CPU-second (median) |")
    typer.echo("|---|---|---|")
    for name, runs in times.items():
        wall = sorted(words / w for w, _ in runs)[len(runs) // 2]
        cpu = sorted(words / c for _, c in runs)[len(runs) // 2]
        typer.echo(f"| {name} | {wall:,.0f} | {cpu:,.0f} |")


@app.command()
def compare(
    runs: list[str] = typer.Option(
        ["e5=metrics/al_e5", "cnn=metrics/al_paper"],
        "--run",
        help="name=folder of a grid's <run>.jsonl files (finished or not), or its runs.tar.gz.",
    ),
    mode: str = typer.Option("reset", "--mode", "-m", help="Retraining mode to compare."),
    eval_set: str = typer.Option("heldout", "--eval-set", help="heldout | dev."),
) -> None:
    """AULC (mean ± 95 % CI over seeds), its gain over random paired by seed (the same seed
    shares the held-out set, round 1's candidate pool and the source model), and the share of
    labels at which the seed-mean curve reaches 95 % of the full-target F1, per target x
    strategy, for several grids side by side with the paper's mBERT curves over the same label
    range (News source)."""
    from adaptner.simulation.curves import (
        anchor_aulc,
        baseline_means,
        build_curves,
        find_duplicates,
        load_anchors,
        load_baselines,
        paired_gains,
        summarize_curve,
    )

    anchors = load_anchors(ANCHORS) if (ANCHORS / "paper_al_curves").is_dir() else {}
    tables: dict[str, dict] = {}
    gains: dict[str, dict] = {}
    for spec in runs:
        name, _, where = spec.partition("=")
        with runs_folder(ROOT / where) as folder:
            records, baselines = load_records(folder), baseline_means(load_baselines(folder))
        twins = {
            (d["target"], d["strategy"]) for d in find_duplicates(records) if d["mode"] == mode
        }
        curves = [
            c
            for c in build_curves(records).values()
            if c.mode == mode
            and c.eval_set == eval_set
            and c.source == "news"
            and (c.target, c.strategy) not in twins
        ]
        tables[name] = {(c.target, c.strategy): summarize_curve(c, baselines) for c in curves}
        gains[name] = {(g["target"], g["strategy"]): g for g in paired_gains(curves)}

    names = list(tables)
    head = " | ".join(f"{n} AULC | {n} Δ random (paired) | {n} 95 % at" for n in names)
    typer.echo(f"{eval_set} set, {mode}; AULC from round 0, mean ± 95 % CI over seeds\n")
    typer.echo(f"| target | strategy | {head} | paper AULC (same range) |")
    typer.echo("|---|---|" + "---|" * (3 * len(names)) + "---|")
    for target, strategy in sorted({k for t in tables.values() for k in t}):
        cells, hi = [], 0.5
        for n in names:
            row = tables[n].get((target, strategy))
            if row is None:
                cells += ["–", "–", "–"]
                continue
            hi = row["max_fraction_paper"]
            g = gains[n].get((target, strategy))
            gain = "–"
            if g is not None and g["gain_ci"] is not None:
                gain = f"{g['gain']:+.3f} ± {g['gain_ci']:.3f}" + (
                    " *" if g["above_random"] else ""
                )
            end = f"> {100 * row['max_fraction']:.0f} %"
            reach = f"{100 * row['reach95']:.0f} %" if row["reach95"] else end
            aulc_cell = f"{row['aulc']:.3f} ± {row['aulc_ci']:.3f}" if row["aulc"] else "–"
            cells += [aulc_cell, gain, reach]
        a = anchors.get((target, strategy))
        paper = f"{anchor_aulc(a, 0.05, hi):.3f}" if a is not None else "–"
        typer.echo(f"| {target} | {strategy} | {' | '.join(cells)} | {paper} |")
    typer.echo(
        "\n* = above random: Holm-adjusted paired p <= 0.05 over the strategies compared on "
        "the target. A strategy that selects another's sentences is left out (the report's "
        "Duplicates). Paper AULC: from its first round (5 %) to our last, in its units (shares "
        "of the whole target train set)."
    )


@contextlib.contextmanager
def runs_folder(runs: Path) -> Iterator[Path]:
    """A folder of <run>.jsonl files: ``runs`` itself, or a runs.tar.gz unpacked into a
    temporary folder (removed afterwards)."""
    if runs.is_dir():
        yield runs
        return
    if not runs.name.endswith((".tar.gz", ".tgz")) or not runs.exists():
        raise typer.BadParameter(f"{runs}: not a folder of runs nor an existing runs.tar.gz")
    with tempfile.TemporaryDirectory(prefix="al_runs_") as tmp:
        with tarfile.open(runs) as tar:
            tar.extractall(tmp, filter="data")
        inner = [p for p in Path(tmp).iterdir() if p.is_dir() and p.name != "baselines"]
        top = not list(Path(tmp).glob("*.jsonl")) and len(inner) == 1
        yield inner[0] if top else Path(tmp)  # packed with its folder (al/...) or without


@app.command()
def report(
    runs: Path = typer.Option(
        ROOT / "bench" / "results" / "al_paper" / "runs.tar.gz",
        "--runs",
        help="A grid's runs: a folder of <run>.jsonl (+ baselines/) or its runs.tar.gz.",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Where report.md, summary.json and the PNGs go (default: the folder of a "
        "runs.tar.gz, or <runs>/report).",
    ),
) -> None:
    """Regenerate a grid's report from its runs in one command: AULC from round 0, the two
    references, paired gains over random with Holm's correction, duplicates reported once,
    the paper's curves on its x-axis."""
    if output is None:
        output = runs.parent if runs.is_file() else runs / "report"
    anchors = ANCHORS if (ANCHORS / "paper_al_curves").is_dir() else None
    with runs_folder(runs) as folder, tempfile.TemporaryDirectory(prefix="al_report_") as tmp:
        result = write_report(folder, Path(tmp) / "report", anchors_dir=anchors, command=COMMAND)
        output.mkdir(parents=True, exist_ok=True)
        for path in [result["report"], result["summary"], *result["plots"]]:
            shutil.copyfile(path, output / path.name)
    typer.echo(
        f"{len(result['rows'])} curves, {len(result['gains'])} paired gains, "
        f"{len(result['duplicates'])} duplicate(s) -> {output}"
    )
    for d in result["duplicates"]:
        typer.echo(f"  {d['reason']}")


#: The grids `plan` can cost: AL config and training config (e5: source E5_SOURCE).
GRIDS = {"paper": ("default.cfg", "bio_cnn.cfg"), "e5": ("e5.cfg", "bio_trf_e5.cfg")}


@app.command()
def plan(
    timing: Path = typer.Option(
        ROOT / "bench" / "results" / "al_paper" / "runs.tar.gz",
        "--timing",
        help="Measured rounds: a folder of <run>.jsonl or a runs.tar.gz (made with the "
        "grid's round trainer; the plan says when they were not).",
    ),
    finetune_timing: Path | None = typer.Option(
        None,
        "--finetune-timing",
        help="Rounds measured with the fine_tune trainer, the target_finetune reference's rate "
        "(e5: bench/results/al_e5/shortcut/fine_tune).",
    ),
    grid_name: str = typer.Option("paper", "--grid", help="paper (CNN) | e5 (e5-grid)."),
    targets: list[str] = typer.Option(TARGETS, "--target", "-t", help="Targets (repeat)."),
    strategies: list[str] = typer.Option(
        PAPER_STRATEGIES, "--strategy", help="Strategies (repeat)."
    ),
    modes: list[str] = typer.Option(
        [], "--mode", "-m", help="Modes (repeat; default: e5 reset, paper reset and warm)."
    ),
    seeds: int | None = typer.Option(
        None, "--seeds", "-n", help="Seeds per setting (default: e5 10, paper 5)."
    ),
    budget: float = typer.Option(
        1.0, "--budget", help="Largest labeled share (1.0 = the paper's range)."
    ),
    source_models: list[Path] = typer.Option(
        [],
        "--source-model",
        help="e5: the source model(s) as for e5-grid (repeat; default the train-e5-source "
        "pipeline); paper: a trained CNN source (default: trained from configs/bio_cnn.cfg).",
    ),
    trainer: str | None = typer.Option(
        None,
        "--trainer",
        help=f"e5: round trainer, {' | '.join(E5_TRAINERS)} (default: the AL config's).",
    ),
    source_replay: float | None = typer.Option(
        None,
        "--source-replay",
        min=0.0,
        help="Source docs replayed per target doc (default: e5 the AL config's, 2; paper 0 "
        "as paper-grid).",
    ),
    workers: int = typer.Option(2, "--workers", "-j", help="Parallel processes."),
) -> None:
    """The CPU-hour plan of paper-grid / e5-grid at the rates of measured rounds (per training
    doc-epoch, replayed source docs included, per scored candidate and evaluation;
    adaptner.simulation.grid.cost_plan). Runs nothing."""
    if grid_name not in GRIDS:
        raise typer.BadParameter(f"--grid {grid_name!r}: choose from {', '.join(GRIDS)}")
    output = ROOT / "metrics" / f"al_plan_{grid_name}"  # named only: nothing is written
    if grid_name == "e5":
        modes = modes or ["reset"]
        seeds = 10 if seeds is None else seeds
        spec = e5_spec(output, source_models or [E5_SOURCE], targets, strategies, modes, seeds,
                       budget, trainer, source_replay)  # fmt: skip
    else:
        if trainer is not None:
            raise typer.BadParameter("--trainer: only for --grid e5 (paper-grid uses fine_tune)")
        modes = modes or ["reset", "warm"]
        seeds = 5 if seeds is None else seeds
        replay = NO_REPLAY["source_replay"] if source_replay is None else source_replay
        spec = news_grid("default.cfg", "bio_cnn.cfg", output, targets, strategies, modes, seeds,
                         budget, source_models or None, source_replay=replay)  # fmt: skip
    with contextlib.ExitStack() as stack:
        rates = RoundTiming.from_records(load_records(stack.enter_context(runs_folder(timing))))
        ft = None
        if finetune_timing is not None:
            folder = stack.enter_context(runs_folder(finetune_timing))
            ft = RoundTiming.from_records(load_records(folder))
    grid_plan = plan_grid(spec)
    s = spec.settings
    n_models = max(len(m) for m in grid_plan.source_models.values())
    typer.echo(
        f"{grid_name} grid: {len(targets)} targets x {len(strategies)} strategies x "
        f"{'/'.join(modes)} x {seeds} seeds to {budget:.0%} ({len(grid_plan.runs)} runs, "
        f"{len(grid_plan.baselines)} baselines); trainer {s.trainer}, source replay "
        f"{s.source_replay:g}, {n_models} source model(s); rates from {timing}"
        + (f", fine-tuning from {finetune_timing}" if finetune_timing else "")
        + "\n"
    )
    typer.echo(format_cost_plan(cost_plan(grid_plan, rates, workers=workers, finetune_timing=ft)))


@app.command("time-round")
def time_round(
    target: str = typer.Option("legal", "--target", "-t", help="Target domain."),
    source_model: Path | None = typer.Option(
        None,
        "--source-model",
        help="Source pipeline (default: train or reuse training/source/news, configs/bio_cnn.cfg).",
    ),
    strategy: str = typer.Option("margin", "--strategy", help="Strategy (scoring cost)."),
    seed: int = typer.Option(0, "--seed", help="Seed."),
    output: Path = typer.Option(
        ROOT / "metrics" / "al" / "timing", "--output", "-o", help="Where the timing runs go."
    ),
) -> None:
    """Wall time per round with the CPU default settings (configs/al/default.cfg): reset vs warm."""
    if source_model is None:
        source_model = ensure_trained(
            TrainTask(
                name="source news",
                train_domains="news",
                train_config=ROOT / "configs" / "bio_cnn.cfg",
                corpus_dir=ROOT / "corpus",
                model_dir=ROOT / "training" / "source" / "news",
            )
        )
    settings = load_al_settings(ROOT / "configs" / "al" / "default.cfg")
    typer.echo(
        f"{target}, source {source_model}, {strategy}, pool {settings.pool_fraction:.0%}, "
        f"{settings.query_fraction:.0%} per round, {settings.epochs} epochs, batch "
        f"{settings.batch_size}"
    )
    typer.echo(
        "| mode | round | labeled | train docs | scoring s | retraining s | eval s | round s |"
    )
    typer.echo("|---|---|---|---|---|---|---|---|")
    summary = []
    for mode in ("reset", "warm"):
        cfg = SimulationConfig(
            source="news",
            target=target,
            strategy=strategy,
            mode=mode,
            seed=seed,
            settings=settings,
            source_model=source_model,
            corpus_dir=ROOT / "corpus",
        )
        records = run_simulation(cfg, output)
        for r in records[1:]:
            typer.echo(
                f"| {mode} | {r['round']} | {r['labeled_count']} | {r['train_docs']} "
                f"| {r['score_seconds']:.1f} | {r['train_seconds']:.1f} | {r['eval_seconds']:.1f} "
                f"| {r['round_seconds']:.1f} |"
            )
        rounds = [r["round_seconds"] for r in records[1:]]
        summary.append(
            f"{mode}: mean {sum(rounds) / len(rounds):.1f} s per round over {len(rounds)}"
        )
    for line in summary:
        typer.echo(line)


if __name__ == "__main__":
    try:
        app()
    except AdaptnerError as e:  # a bad grid: one line, no traceback
        typer.secho(f"✘ {e}", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from None
