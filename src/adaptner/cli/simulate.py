"""`adaptner simulate` and `adaptner curves`: active-learning simulations and their reports."""

import json
from pathlib import Path
from typing import Any

import typer

from ..errors import AdaptnerError
from .train import CONFIG_HELP, FORCE_OPTION, training_config

DEFAULT_TARGETS = ["conversation", "legal", "social_media"]


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
    app.command("curves")(curves_cmd)


def parse_strategy_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """`strategy.key=value` strings to {strategy: {key: value}} (JSON values when parseable).

    Raises:
        AdaptnerError: an item without `.` or `=`.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        strategy, dot, key = name.partition(".")
        if not sep or not dot or not strategy or not key:
            raise AdaptnerError(
                f"--strategy-param {item!r}: expected <strategy>.<key>=<value>, "
                "e.g. margin.aggregation=max."
            )
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(strategy, {})[key] = parsed
    return out


def parse_baselines(spec: str) -> list[str]:
    """`all` | `none` | a comma-separated list of baseline kinds."""
    from ..simulation.baselines import BASELINES

    spec = spec.strip()
    if spec == "all":
        return list(BASELINES)
    if spec in ("none", ""):
        return []
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    for kind in kinds:
        if kind not in BASELINES:
            raise AdaptnerError(
                f"--baselines: unknown baseline {kind!r}; choose from {', '.join(BASELINES)}, "
                "'all' or 'none'."
            )
    return kinds


def simulate_cmd(
    sources: list[str] = typer.Option(
        ["news"],
        "--source",
        "-s",
        help="Source domains (repeat): news | news,web | all-but:legal | all-but-target "
        "(every domain except the run's target).",
    ),
    targets: list[str] = typer.Option(
        DEFAULT_TARGETS, "--target", "-t", help="Target domains (repeat)."
    ),
    strategies: list[str] = typer.Option(
        ["random"], "--strategy", help="Query strategies (repeat), e.g. random, margin, vocab."
    ),
    modes: list[str] = typer.Option(
        ["reset"],
        "--mode",
        "-m",
        help="Retraining per round (repeat): reset (from the source on all labels) | warm "
        "(continue on the new batch + a replay sample).",
    ),
    repeats: int = typer.Option(
        3, "--repeats", "-n", help="Seeds per setting: --seed .. --seed+n-1."
    ),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    config: Path = typer.Option(
        Path("bio_cnn"),
        "--config",
        "-c",
        help="Training config of the source pipelines and the from-scratch baselines: "
        f"{CONFIG_HELP}.",
        callback=training_config,
    ),
    al_config: str = typer.Option(
        "default",
        "--al-config",
        help="AL settings (the \\[simulation] section): a .cfg path or the name of one that "
        "ships with adaptner (default, e5, fixed_pool, full_pool); the options below override it.",
    ),
    source_models: list[Path] = typer.Option(
        [],
        "--source-model",
        help="Use this trained pipeline as the source (one --source only) instead of training. "
        "Repeat for several source models: seed k adapts the (k mod n)-th, and so do its "
        "source_only/target_full/target_finetune baselines (run ids then end in _m<k>_s<seed>).",
    ),
    corpus: Path = typer.Option(
        Path("corpus"), "--corpus", help="Corpus folder with train/, dev/ (and test/)."
    ),
    output: Path = typer.Option(
        Path("metrics/al"), "--output", "-o", help="Results: one <run>.jsonl per run, baselines/."
    ),
    models_dir: Path = typer.Option(
        Path("training"),
        "--models-dir",
        help="Source pipelines are cached in <dir>/source/<name>/, baselines in <dir>/baselines/.",
    ),
    eval_split: str = typer.Option(
        "auto", "--eval-split", help="Target held-out split: auto (test if present, else dev)."
    ),
    baselines: str = typer.Option(
        "all",
        "--baselines",
        help="all | none | comma list of source_only,target_full (the round trainer on every "
        "target train doc),target_finetune (every component fine-tuned on them),target_only,"
        "joint.",
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel processes (local backend)."),
    backend: str = typer.Option("local", "--backend", help="local (process pool) | ray."),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="--backend ray: join the cluster whose head is at host:port (`ray start --head` "
        "prints it); default $RAY_ADDRESS, else a new local Ray.",
    ),
    ray_retries: int = typer.Option(
        3,
        "--ray-retries",
        help="--backend ray: re-runs of a task, from its last saved round, after its worker "
        "process or node died.",
    ),
    protocol: str | None = typer.Option(
        None,
        "--protocol",
        help="paper (fresh candidate pool every round, strategy from round 1, up to --budget) "
        "| fixed_pool (one pool per seed, random first batch, stop when it is used up).",
    ),
    pool_fraction: float | None = typer.Option(
        None, "--pool-fraction", help="Pool share of the target train set (paper 0.2; 1.0 = all)."
    ),
    eval_holdout: float | None = typer.Option(
        None,
        "--eval-holdout",
        help="Share of each target's train docs held out as the evaluation set (0 = none).",
    ),
    eval_sets: list[str] = typer.Option(
        [],
        "--eval-set",
        help="Evaluation sets scored every round (repeat; default from the AL config: heldout, "
        "dev, merged): heldout | dev | merged (heldout + dev, the primary) | test.",
    ),
    query_fraction: float | None = typer.Option(
        None, "--query-fraction", help="Docs per round as a share of the target train set."
    ),
    budget: float | None = typer.Option(
        None,
        "--budget",
        help="Stop at this labeled share of the target train set. A larger one than a "
        "finished --output folder's continues its runs from their last round.",
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Retraining epochs per round."),
    patience: int | None = typer.Option(
        None,
        "--patience",
        help="Early stopping after N epochs without improvement (0 = off: fixed epochs).",
    ),
    stop_on: str | None = typer.Option(
        None,
        "--stop-on",
        help="What early stopping scores: labelled (a slice of each round's labels, not "
        "trained on) | dev (refused while dev or merged is an evaluation set).",
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Docs per update."),
    learn_rate: float | None = typer.Option(None, "--learn-rate", help="Retraining learn rate."),
    replay_fraction: float | None = typer.Option(
        None, "--replay-fraction", help="warm: share of earlier labels replayed per round."
    ),
    source_replay: float | None = typer.Option(
        None,
        "--source-replay",
        min=0.0,
        help="Source docs (the source domains' train docs) added to every round's training "
        "set per target doc in it, a fresh seeded sample each round, reset and warm "
        "(0 = off; default: the AL config's, 2 in the shipped ones; 0 reproduces runs made "
        "before replay existed).",
    ),
    source_replay_max: int | None = typer.Option(
        None,
        "--source-replay-max",
        min=0,
        help="At most this many source docs per round (0 = no cap).",
    ),
    anchor_docs: float | None = typer.Option(
        None,
        "--anchor-docs",
        min=0.0,
        help="Anchoring: a round that trained on n target docs keeps n / (n + this) of its "
        "update and moves the rest of the way back to the weights it started from (the "
        "source in reset mode), so a round on few labels cannot pull the model far; 0 = keep "
        "the whole update (default: the AL config's).",
    ),
    train_limit: int | None = typer.Option(
        None, "--train-limit", help="Use only the first N target train docs (quick runs)."
    ),
    eval_limit: int | None = typer.Option(
        None, "--eval-limit", help="Evaluate on only the first N docs per evaluation set."
    ),
    strategy_params: list[str] = typer.Option(
        [], "--strategy-param", help="Strategy keyword (repeat): margin.aggregation=max."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    plan: bool = typer.Option(
        False,
        "--plan",
        help="Run nothing: print the grid's CPU-hour plan at the rates of --timing.",
    ),
    timing: Path | None = typer.Option(
        None,
        "--timing",
        help="--plan: a folder of finished runs (<run>.jsonl) whose rounds give the rates.",
    ),
    finetune_timing: Path | None = typer.Option(
        None,
        "--finetune-timing",
        help="--plan: runs made with the fine_tune trainer, to cost the target_finetune "
        "reference (default: the --timing rates, marked as assumed).",
    ),
) -> None:
    """Simulate pool-based active learning with gold labels as the oracle (resumable grid)."""
    from ..simulation.config import load_al_settings
    from ..simulation.grid import GridSpec, run_grid

    if repeats < 1:
        raise AdaptnerError(f"--repeats must be at least 1, got {repeats}.")
    settings = load_al_settings(
        al_config,
        protocol=protocol,
        eval_holdout=eval_holdout,
        eval_sets=tuple(eval_sets) or None,
        stop_on=stop_on,
        pool_fraction=pool_fraction,
        query_fraction=query_fraction,
        budget=budget,
        epochs=epochs,
        patience=patience,
        batch_size=batch_size,
        learn_rate=learn_rate,
        replay_fraction=replay_fraction,
        source_replay=source_replay,
        source_replay_max=source_replay_max,
        anchor_docs=anchor_docs,
        train_limit=train_limit,
        eval_limit=eval_limit,
    )
    spec = GridSpec(
        sources=list(dict.fromkeys(sources)),
        targets=list(dict.fromkeys(targets)),
        strategies=list(dict.fromkeys(strategies)),
        modes=list(dict.fromkeys(modes)),
        seeds=list(range(seed, seed + repeats)),
        settings=settings,
        train_config=config,
        corpus_dir=corpus,
        output_dir=output,
        models_dir=models_dir,
        source_model=source_models or None,
        eval_split=eval_split,
        baselines=parse_baselines(baselines),
        strategy_params=parse_strategy_params(strategy_params),
    )
    if plan:
        print_cost_plan(spec, timing, finetune_timing, workers)
        return
    pool_desc = (
        "whole target train set"
        if settings.pool_fraction >= 1.0
        else f"{settings.pool_fraction:.0%} of the target train set"
    )
    fresh = "fresh each round" if settings.protocol == "paper" else "fixed per seed"
    typer.echo(
        f"Protocol {settings.protocol}: pool {pool_desc} ({fresh}); {settings.query_fraction:.0%} "
        f"per round; budget {settings.budget:.0%}; {settings.epochs} epochs per round; "
        f"evaluation sets: {', '.join(settings.eval_sets)} (primary {settings.primary_eval}; "
        f"{settings.eval_holdout:.0%} of the target train set held out); "
        + (
            f"early stopping on {settings.stop_on} (patience {settings.patience})"
            if settings.patience
            else "no early stopping"
        )
        + "; "
        + (
            f"{settings.source_replay:g} source docs replayed per target doc"
            if settings.source_replay
            else "no source replay"
        )
    )
    plan = run_grid(
        spec,
        workers=workers,
        backend=backend,
        ray_address=ray_address,
        ray_retries=ray_retries,
        progress=not quiet,
        log=typer.echo,
    )
    typer.echo(
        f"✔ {len(plan.runs)} runs and {len(plan.baselines)} baselines complete in {output}. "
        f"Report: adaptner curves -i {output}"
    )


def print_cost_plan(
    spec: Any, timing: Path | None, finetune_timing: Path | None, workers: int
) -> None:
    """Print the CPU-hour plan of a grid (:func:`adaptner.simulation.grid.cost_plan`)."""
    from ..simulation.curves import load_records
    from ..simulation.grid import RoundTiming, cost_plan, format_cost_plan, plan_grid

    if timing is None:
        raise AdaptnerError(
            "--plan needs --timing: a folder of finished runs whose rounds give the rates "
            "(e.g. a tiny grid: adaptner simulate ... --budget 0.1 -n 1 -o metrics/al_timing)."
        )
    rates = RoundTiming.from_records(load_records(timing))
    ft = RoundTiming.from_records(load_records(finetune_timing)) if finetune_timing else None
    grid = plan_grid(spec)
    cost = cost_plan(grid, rates, workers=workers, finetune_timing=ft)
    typer.echo(
        f"Grid: {len(grid.runs)} runs + {len(grid.baselines)} baselines; rates from {timing}"
    )
    typer.echo(format_cost_plan(cost))


def curves_cmd(
    input_dir: Path = typer.Option(
        Path("metrics/al"), "--input", "-i", help="Folder with the simulation's <run>.jsonl files."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Report folder (default: <input>/report)."
    ),
    anchors: Path | None = typer.Option(
        None,
        "--anchors",
        help="The paper's curves (../shared/anchors or its paper_al_curves/): drawn dashed "
        "on the paper's x-axis (shares of the whole target train set) and compared in a table.",
    ),
    force: bool = FORCE_OPTION,
) -> None:
    """Learning curves (mean ± 95 % CI over seeds) per target as PNG, and the Markdown report:
    AULC from round 0, 95 % of the stronger reference, paired gains over random with Holm's
    correction, strategies that select the same sentences reported once."""
    from ..simulation.curves import write_report

    output = output if output is not None else input_dir / "report"
    command = f"adaptner curves -i {input_dir} -o {output}" + (
        f" --anchors {anchors}" if anchors is not None else ""
    )
    result = write_report(input_dir, output, anchors_dir=anchors, force=force, command=command)
    for path in result["plots"]:
        typer.echo(f"✔ {path}")
    typer.echo(f"✔ {result['report']} ({len(result['rows'])} curves)")
    typer.echo(f"✔ {result['summary']}")
