"""Run a grid of simulations (sources x targets x strategies x modes x seeds), resumably."""

import contextlib
import os
import queue as queue_mod
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

from spacy.tokens import DocBin
from tqdm import tqdm

from ..errors import AdaptnerError
from ..readers import available_domains
from ..update.replay import replay_count
from ..util import exit_with_parent, file_lock
from .baselines import (
    BASELINES,
    FROM_SOURCE,
    BaselineConfig,
    baseline_path,
    finetune_settings,
    run_baseline,
)
from .config import (
    MODES,
    ALSettings,
    SimulationConfig,
    resolve_source,
    source_model_for,
    source_slug,
)
from .engine import (
    RunSizes,
    al_train_size,
    check_folder_settings,
    check_records,
    eval_split_for,
    plan_sizes,
    read_records,
    run_finished,
    run_simulation,
    source_domains_for,
)
from .pipelines import TrainTask, ensure_trained
from .ray_backend import DEFAULT_RETRIES

BACKENDS = ("local", "ray")

# Environment for worker processes: one thread each, so N workers use N cores.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class GridSpec:
    """What to simulate.

    Attributes:
        sources: Source specs ("news", "all-but:legal", or "all-but-target" = all domains
            except each run's target).
        targets: Target domain slugs.
        strategies: Strategy names.
        modes: Retraining modes ("reset", "warm").
        seeds: One run per seed.
        settings: Loop hyperparameters (shared).
        train_config: Training config of the source pipelines and from-scratch baselines.
        corpus_dir: Corpus folder (train/, dev/, optional test/).
        output_dir: Results: ``<run_id>.jsonl`` per run, ``baselines/*.json``.
        models_dir: Source pipelines (``source/<name>/``) and baseline pipelines.
        source_model: Use this pipeline as the source instead of training one (one source
            only), or several: seed k then adapts model k mod n (10 seeds over 2 models = 5
            each), and so do that seed's source_only / target_full / target_finetune
            baselines. With n > 1 run and baseline ids gain ``_m<index>`` before ``_s<seed>``
            (one model: the ids of one-source grids); keep the order of the models when
            resuming.
        eval_split: "auto" (test when present, else dev), "dev" or "test".
        baselines: Baseline kinds to compute (see BASELINES).
        strategy_params: Per-strategy keyword arguments, e.g. {"margin": {"aggregation": "max"}}.
        source_seed: Seed of the source pipeline training (shared by every run).
    """

    sources: Sequence[str]
    targets: Sequence[str]
    strategies: Sequence[str]
    modes: Sequence[str]
    seeds: Sequence[int]
    settings: ALSettings
    train_config: Path
    corpus_dir: Path = Path("corpus")
    output_dir: Path = Path("metrics/al")
    models_dir: Path = Path("training")
    source_model: Path | str | Sequence[Path | str] | None = None
    eval_split: str = "auto"
    baselines: Sequence[str] = BASELINES
    strategy_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    source_seed: int = 0


@dataclass
class GridPlan:
    """The tasks of a grid and how much of it is done.

    ``source_models``: source spec -> its pipelines (seed k adapts the (k mod n)-th).
    """

    trainings: list[TrainTask]
    runs: list[SimulationConfig]
    baselines: list[BaselineConfig]
    sizes: dict[str, RunSizes]
    eval_splits: dict[str, str]
    source_models: dict[str, tuple[Path, ...]]
    output_dir: Path

    def run_path(self, cfg: SimulationConfig) -> Path:
        """The JSONL file of a run."""
        return self.output_dir / f"{cfg.run_id}.jsonl"

    def remaining(self) -> list[tuple[str, Any, int]]:
        """(kind, config, units left) of every unfinished task; a unit = a round or a baseline."""
        out: list[tuple[str, Any, int]] = []
        for b in self.baselines:
            if not baseline_path(b, self.output_dir).exists():
                out.append(("baseline", b, 1))
        for r in self.runs:
            records, _ = read_records(self.run_path(r))
            check_records(records, r, self.run_path(r))  # finished runs too
            if run_finished(records, self.sizes[r.target], self.run_path(r)):
                continue
            out.append(("run", r, max(1, self.sizes[r.target].rounds - len(records))))
        return out

    @property
    def total_units(self) -> int:
        """Rounds of all runs plus one per baseline."""
        return sum(self.sizes[r.target].rounds for r in self.runs) + len(self.baselines)


def count_docs(path: Path) -> int:
    """Number of Docs in a DocBin, without building them."""
    if not path.exists():
        raise AdaptnerError(f"DocBin {path} does not exist. Run `adaptner corpus` first.")
    return len(DocBin().from_disk(path))


def source_model_paths(source_model: Path | str | Sequence[Path | str] | None) -> list[Path]:
    """:attr:`GridSpec.source_model` as a list of paths (empty: train the source).

    Raises:
        AdaptnerError: a model named twice.
    """
    if source_model is None:
        return []
    if isinstance(source_model, str | os.PathLike):
        return [Path(source_model)]
    paths = [Path(p) for p in source_model]
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise AdaptnerError(
            f"--source-model names {', '.join(twice)} more than once; give each source model "
            "once (seed k adapts the (k mod n)-th of the n models)."
        )
    return paths


def plan_grid(spec: GridSpec) -> GridPlan:
    """Expand a grid into source trainings, baselines and runs (nothing is run).

    Raises:
        AdaptnerError: unknown targets/modes/strategies/baselines/round trainer, a
            --source-model with several sources, or more source models than seeds.
    """
    from ..strategies import strategy_names
    from ..update.trainers import AUTO, trainers_registry

    corpus = Path(spec.corpus_dir)
    train_dir = corpus / "train"
    known = available_domains(train_dir)
    for t in spec.targets:
        if t not in known:
            raise AdaptnerError(
                f"Unknown target {t!r}: no {train_dir / (t + '.spacy')}. Known: {', '.join(known)}."
            )
    for m in spec.modes:
        if m not in MODES:
            raise AdaptnerError(f"Unknown mode {m!r}; choose from {', '.join(MODES)}.")
    for b in spec.baselines:
        if b not in BASELINES:
            raise AdaptnerError(f"Unknown baseline {b!r}; choose from {', '.join(BASELINES)}.")
    names = strategy_names()
    for s in spec.strategies:
        if s not in names:
            raise AdaptnerError(f"Unknown strategy {s!r}. Known: {', '.join(names)}.")
    if not (spec.targets and spec.strategies and spec.modes and spec.seeds and spec.sources):
        raise AdaptnerError(
            "Empty grid: give at least one source, target, strategy, mode and seed."
        )
    trainers = sorted([*trainers_registry.get_all(), AUTO])
    if spec.settings.trainer not in trainers:
        raise AdaptnerError(
            f"Unknown AL trainer {spec.settings.trainer!r}; choose from {', '.join(trainers)}."
        )
    pairs = [(resolve_source(s, t), t) for s in spec.sources for t in spec.targets]
    resolved = list(dict.fromkeys(src for src, _ in pairs))
    for src in resolved:
        source_domains_for(src, train_dir)  # unknown domains -> a clear error
    trainings: list[TrainTask] = []
    source_models: dict[str, tuple[Path, ...]] = {}
    given = source_model_paths(spec.source_model)
    if given:
        if len(resolved) > 1:
            what = (
                "one pipeline" if len(given) == 1 else f"the {len(given)} pipelines of one source"
            )
            raise AdaptnerError(
                f"--source-model gives {what} but the grid has {len(resolved)} sources "
                f"({', '.join(resolved)}); pass one --source."
            )
        seeds = sorted(set(spec.seeds))
        served = {source_model_for(k, given)[1] for k in seeds}
        idle = [str(m) for m in given if m not in served]
        if len(given) > 1 and idle:
            raise AdaptnerError(
                f"{len(given)} source models but seeds {seeds} leave {', '.join(idle)} without "
                "a run (seed k adapts model k mod n): give at least as many seeds as models."
            )
        source_models[resolved[0]] = tuple(given)
    else:
        for src in resolved:
            task = TrainTask(
                name=f"source {src}",
                train_domains=src,
                train_config=Path(spec.train_config),
                corpus_dir=corpus,
                model_dir=Path(spec.models_dir) / "source" / source_slug(src),
                seed=spec.source_seed,
            )
            trainings.append(task)
            source_models[src] = (task.model,)
    settings = spec.settings
    sizes = {
        t: plan_sizes(al_train_size(count_docs(train_dir / f"{t}.spacy"), settings), settings)
        for t in spec.targets
    }
    splits = {t: eval_split_for(corpus, t, spec.eval_split) for t in spec.targets}
    runs, baselines = [], []
    for src, target in pairs:
        for seed in spec.seeds:
            index, model = source_model_for(seed, source_models[src])
            for kind in spec.baselines:
                baselines.append(
                    BaselineConfig(
                        source=src,
                        target=target,
                        kind=kind,
                        seed=seed,
                        settings=spec.settings,
                        source_model=model,
                        train_config=Path(spec.train_config),
                        corpus_dir=corpus,
                        eval_split=splits[target],
                        models_dir=Path(spec.models_dir),
                        source_index=index if kind in FROM_SOURCE else None,
                    )
                )
        for strategy in spec.strategies:
            for mode in spec.modes:
                for seed in spec.seeds:
                    index, model = source_model_for(seed, source_models[src])
                    runs.append(
                        SimulationConfig(
                            source=src,
                            target=target,
                            strategy=strategy,
                            mode=mode,
                            seed=seed,
                            settings=spec.settings,
                            source_model=model,
                            corpus_dir=corpus,
                            eval_split=splits[target],
                            strategy_params=dict(spec.strategy_params.get(strategy, {})),
                            source_index=index,
                        )
                    )
    for b in baselines:
        task = b.train_task()
        if task is not None and all(t.model_dir != task.model_dir for t in trainings):
            trainings.append(task)
    return GridPlan(trainings, runs, baselines, sizes, splits, source_models, Path(spec.output_dir))


def describe_source_models(plan: GridPlan) -> list[str]:
    """One line per source spec with several source models: which seeds each serves."""
    seeds = sorted({r.seed for r in plan.runs} | {b.seed for b in plan.baselines})
    lines = []
    for src, models in plan.source_models.items():
        if len(models) < 2:
            continue
        parts = []
        for model in models:
            mine = [str(k) for k in seeds if source_model_for(k, models)[1] == model]
            parts.append(f"{model} (seed{'s' if len(mine) != 1 else ''} {', '.join(mine)})")
        served = "; ".join(parts)
        lines.append(
            f"{src}: {len(models)} source models, seed k adapts model k mod {len(models)}: {served}"
        )
    return lines


@dataclass(frozen=True)
class RoundTiming:
    """What a round costs, from measured rounds (wall seconds of one process).

    Attributes:
        rates: Target (``"*"`` = all measured rounds) -> (seconds per training doc-epoch,
            seconds per candidate doc scored, seconds per evaluation of every set).
        rounds: How many measured rounds the rates come from.
        trainers: The round trainers of those rounds (as their records name them; empty
            when the records do not say).
    """

    rates: dict[str, tuple[float, float, float]]
    rounds: int
    trainers: tuple[str, ...] = ()

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> "RoundTiming":
        """Rates from simulation records (``<run>.jsonl`` lines): retraining seconds per
        training doc-epoch (target docs and replayed source docs), pool scoring seconds per
        candidate doc, evaluation seconds per round; per target and over all rounds.

        Raises:
            AdaptnerError: no record with a retraining (round >= 1) to time.
        """
        groups: dict[str, list[dict[str, Any]]] = {"*": []}
        for r in records:
            if r.get("round", 0) > 0 and r.get("train_docs") and "train_seconds" in r:
                groups.setdefault(str(r["target"]), []).append(r)
                groups["*"].append(r)
        if not groups["*"]:
            raise AdaptnerError(
                "No timed rounds (round >= 1 with train_docs and train_seconds) in the timing "
                "records. Pass a folder of finished `adaptner simulate` runs."
            )
        rates = {}
        for target, rs in groups.items():
            doc_epochs = sum(
                (r["train_docs"] + r.get("source_replay_docs", 0))
                * max(1, r.get("train_epochs", 1))
                for r in rs
            )
            scored = sum(len(r.get("pool_ids") or []) or r.get("pool_size", 0) for r in rs)
            rates[target] = (
                sum(r["train_seconds"] for r in rs) / doc_epochs,
                sum(r.get("score_seconds", 0.0) for r in rs) / scored if scored else 0.0,
                sum(r.get("eval_seconds", 0.0) for r in rs) / len(rs),
            )
        trainers = {r["params"]["trainer"] for r in groups["*"] if "trainer" in r.get("params", {})}
        return cls(rates, len(groups["*"]), tuple(sorted(trainers)))

    def rate(self, target: str) -> tuple[float, float, float]:
        """The target's rates, or the rates over every measured round."""
        return self.rates.get(target, self.rates["*"])


def round_docs(sizes: RunSizes, settings: ALSettings, mode: str) -> list[tuple[int, int]]:
    """(training docs, candidate docs scored) of every round after round 0 of a planned run."""
    out = []
    for k in range(1, sizes.rounds):
        before, now = sizes.labeled_after(k - 1), sizes.labeled_after(k)
        if settings.protocol == "fixed_pool":
            pool = sizes.pool_size - before
        else:
            pool = min(sizes.pool_size, sizes.target_size - before)
        if mode == "warm" and k > 1:
            train = now - before + round(settings.replay_fraction * before)
        else:
            train = now
        out.append((train, pool))
    return out


def cost_plan(
    plan: GridPlan,
    timing: RoundTiming,
    *,
    workers: int = 1,
    finetune_timing: RoundTiming | None = None,
) -> dict[str, Any]:
    """The CPU-hours a grid needs at the measured rates (nothing is run).

    Every round costs its training doc-epochs (``settings.epochs``: an upper bound with
    early stopping; the round's target docs plus ``source_replay`` source docs per target
    doc, at most ``source_replay_max`` and the source's train docs), its scored candidates
    and one evaluation; a reference
    (``target_full``, ``target_finetune``) trains once on every AL doc. ``target_finetune``
    uses ``finetune_timing`` (rounds measured with the ``fine_tune`` trainer) when given,
    else the round rates (then marked as assumed); it costs nothing when it is the same
    training as ``target_full``. From-scratch baselines and source training are not
    estimated (counted in ``not_estimated``).

    Returns:
        {"rows": [{"target", "task", "count", "rounds", "cpu_hours"}, ...],
        "cpu_hours", "wall_hours" (at ``workers`` processes), "workers", "timing_rounds",
        "timing_trainers" (the measured rounds' trainers), "trainers" (the grid's),
        "finetune_assumed", "not_estimated": [task names]}.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    source_docs: dict[tuple[str, str, Path], int] = {}

    def replayed(run: SimulationConfig, train: int) -> int:
        s = run.settings
        if not s.source_replay:
            return 0
        key = (run.source, run.target, run.corpus_dir)
        if key not in source_docs:
            train_dir = run.corpus_dir / "train"
            source_docs[key] = sum(
                count_docs(train_dir / f"{d}.spacy")
                for d in source_domains_for(run.source, train_dir)
                if d != run.target
            )
        return replay_count(train, s.source_replay, source_docs[key], s.source_replay_max)

    def add(target: str, task: str, seconds: float, rounds: int) -> None:
        row = rows.setdefault(
            (target, task),
            {"target": target, "task": task, "count": 0, "rounds": 0, "cpu_hours": 0.0},
        )
        row["count"] += 1
        row["rounds"] += rounds
        row["cpu_hours"] += seconds / 3600

    for run in plan.runs:
        s = run.settings
        train_rate, score_rate, eval_s = timing.rate(run.target)
        seconds = eval_s  # round 0
        rounds = round_docs(plan.sizes[run.target], s, run.mode)
        for train, pool in rounds:
            docs = train + replayed(run, train)
            seconds += docs * s.epochs * train_rate + pool * score_rate + eval_s
        add(run.target, f"runs ({run.mode})", seconds, len(rounds))
    not_estimated = []
    for b in plan.baselines:
        s = b.settings
        train_rate, _, eval_s = timing.rate(b.target)
        docs = plan.sizes[b.target].target_size
        if b.kind == "source_only":
            add(b.target, b.kind, eval_s, 0)
        elif b.kind == "target_full":
            add(b.target, b.kind, docs * s.epochs * train_rate + eval_s, 0)
        elif b.kind == "target_finetune":
            ft = finetune_settings(s)
            if ft == s:
                add(b.target, b.kind + " (= target_full)", 0.0, 0)
                continue
            rate = (finetune_timing or timing).rate(b.target)[0]
            add(b.target, b.kind, docs * ft.epochs * rate + eval_s, 0)
        else:
            not_estimated.append(b.baseline_id)
    not_estimated += [t.name for t in plan.trainings if not t.done()]
    total = sum(r["cpu_hours"] for r in rows.values())
    return {
        "rows": [rows[k] for k in sorted(rows)],
        "cpu_hours": total,
        "wall_hours": total / max(1, workers),
        "workers": workers,
        "timing_rounds": timing.rounds,
        "timing_trainers": list(timing.trainers),
        "trainers": sorted({r.settings.trainer for r in plan.runs}),
        "finetune_assumed": finetune_timing is None
        and any(
            b.kind == "target_finetune" and finetune_settings(b.settings) != b.settings
            for b in plan.baselines
        ),
        "not_estimated": not_estimated,
    }


def format_cost_plan(cost: dict[str, Any]) -> str:
    """A :func:`cost_plan` as a Markdown table and a closing line with the totals."""
    lines = [
        "| target | task | count | rounds | CPU-hours |",
        "|---|---|---|---|---|",
        *(
            f"| {r['target']} | {r['task']} | {r['count']} | {r['rounds']} | {r['cpu_hours']:.2f} |"
            for r in cost["rows"]
        ),
        "",
        f"Total {cost['cpu_hours']:.1f} CPU-hours; {cost['wall_hours']:.1f} h wall with "
        f"{cost['workers']} worker(s) (rates from {cost['timing_rounds']} measured rounds).",
    ]
    # "auto" depends on the pipeline (top_layers for a transformer, else fine_tune): not flagged
    other = sorted(set(cost.get("trainers", ())) - {*(cost.get("timing_trainers") or ()), "auto"})
    if cost.get("timing_trainers") and other:
        lines.append(
            f"The rates were measured with the {', '.join(cost['timing_trainers'])} trainer; "
            f"this grid's rounds use {', '.join(other)}, so their cost is not this estimate: "
            "time a few of its rounds first (the same grid with --budget 0.1, one seed, one "
            "source model) and pass that folder as --timing."
        )
    if cost["finetune_assumed"]:
        lines.append(
            "target_finetune is costed at the round trainer's rate (no fine_tune timing given): "
            "full fine-tuning of an encoder costs far more."
        )
    if cost["not_estimated"]:
        lines.append(f"Not estimated: {', '.join(cost['not_estimated'])}.")
    return "\n".join(lines)


def _task_name(kind: str, cfg: Any) -> str:
    if kind == "train":
        return cfg.name
    return cfg.baseline_id if kind == "baseline" else cfg.run_id


def execute_task(
    kind: str,
    cfg: Any,
    output_dir: str,
    progress: Any = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one task (train / baseline / run) and report; never raises (errors are returned).

    Args:
        kind: "train", "baseline" or "run".
        cfg: Its config (TrainTask, BaselineConfig or SimulationConfig).
        output_dir: The results folder.
        progress: A queue (``put(1)`` per finished round/baseline), a callable, or None.
        on_record: Called with each round's record as soon as it is written (runs only).
    """

    def tick(record: Any = None) -> None:
        if on_record is not None and isinstance(record, dict):
            on_record(record)
        if progress is None:
            return
        if callable(progress):
            progress(1)
        else:
            progress.put(1)

    name = _task_name(kind, cfg)
    try:
        if kind == "train":
            ensure_trained(cfg)
            tick()
        elif kind == "baseline":
            run_baseline(cfg, output_dir)
            tick()
        else:
            run_simulation(cfg, output_dir, on_round=tick)
        return {"task": name, "error": None}
    except AdaptnerError as e:
        return {"task": name, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - report, keep the rest of the grid running
        return {
            "task": name,
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }


@contextlib.contextmanager
def _single_threaded_children(workers: int) -> Iterator[None]:
    """Give spawned worker processes one BLAS/torch thread each (unless the user set them)."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    if workers > 1:
        for k in _THREAD_VARS:
            os.environ.setdefault(k, "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_local(
    tasks: list[tuple[str, Any, int]], output_dir: Path, workers: int, bar: tqdm
) -> list[dict[str, Any]]:
    if workers <= 1 or len(tasks) <= 1:
        return [execute_task(kind, cfg, str(output_dir), bar.update) for kind, cfg, _ in tasks]
    results = []
    ctx = get_context("spawn")
    manager = SyncManager(ctx=ctx)
    with _single_threaded_children(workers):
        manager.start(exit_with_parent)  # dies with this driver, as the workers do
    with _single_threaded_children(workers), manager:
        q = manager.Queue()
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=exit_with_parent
        ) as pool:
            futures = {
                pool.submit(execute_task, kind, cfg, str(output_dir), q): _task_name(kind, cfg)
                for kind, cfg, _ in tasks
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(q, bar)
                for f in done:
                    try:
                        results.append(f.result())
                    except Exception as e:  # noqa: BLE001 - a worker died (killed, out of memory)
                        results.append({"task": futures[f], "error": f"worker died: {e!r}"})
        _drain(q, bar)
    return results


def _drain(q: Any, bar: tqdm) -> None:
    while True:
        try:
            bar.update(q.get_nowait())
        except queue_mod.Empty:
            return


def _run_ray(
    tasks: list[tuple[str, Any, int]],
    output_dir: Path,
    address: str | None,
    bar: tqdm,
    retries: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    from .ray_backend import connect, run_tasks

    connect(address)
    return run_tasks(tasks, output_dir, bar, name_of=_task_name, retries=retries, log=log)


def run_grid(
    spec: GridSpec,
    *,
    workers: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    ray_retries: int = DEFAULT_RETRIES,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> GridPlan:
    """Run every unfinished task of a grid; finished rounds on disk are skipped (resume).

    Pipelines trained from the config (sources, from-scratch baselines) come first, in
    parallel; then baselines and runs. Each finished round is appended to its run's JSONL
    at once. With ``backend="ray"`` no shared disk is needed: the driver ships the corpus
    and pipelines through Ray's object store and writes every result itself (see
    :mod:`adaptner.simulation.ray_backend`).

    Args:
        spec: The grid.
        workers: Parallel processes (local backend).
        backend: "local" (process pool) or "ray" (tasks on the Ray cluster at ``ray_address``).
        ray_address: Passed to ``ray.init`` (None = a local Ray, or $RAY_ADDRESS).
        ray_retries: Ray: re-runs of a task (from its last saved round) after its worker
            process or node died.
        progress: Show progress bars (stderr) with ETA.
        log: Where one-line messages go.

    Returns:
        The plan that was run.

    Raises:
        AdaptnerError: a bad grid; another driver on the output folder; a folder or run file
            made with other settings; or some tasks failed (after the others finished).
    """
    if backend not in BACKENDS:
        raise AdaptnerError(f"Unknown backend {backend!r}; choose from {', '.join(BACKENDS)}.")
    if workers < 1:
        raise AdaptnerError(f"--workers must be at least 1, got {workers}.")
    if ray_retries < 0:
        raise AdaptnerError(f"--ray-retries must be at least 0, got {ray_retries}.")
    plan = plan_grid(spec)
    with file_lock(plan.output_dir / ".simulate.lock", f"Simulation folder {plan.output_dir}"):
        plan.remaining()  # every existing run file checked (finished ones too) before anything
        check_folder_settings(plan.output_dir, spec.settings)
        return _run_plan(plan, spec, workers, backend, ray_address, ray_retries, progress, log)


def _run_plan(
    plan: GridPlan,
    spec: GridSpec,
    workers: int,
    backend: str,
    ray_address: str | None,
    ray_retries: int,
    progress: bool,
    log: Callable[[str], None],
) -> GridPlan:
    for target, split in plan.eval_splits.items():
        if split == "dev":
            log(f"ℹ {target}: no test split in {spec.corpus_dir}; evaluating on dev")
    for line in describe_source_models(plan):
        log(f"ℹ {line}")
    errors: list[dict[str, Any]] = []

    def execute(tasks: list[tuple[str, Any, int]], bar: tqdm) -> list[dict[str, Any]]:
        if backend == "ray":
            return _run_ray(tasks, plan.output_dir, ray_address, bar, ray_retries, log)
        return _run_local(tasks, plan.output_dir, workers, bar)

    for t in plan.trainings:
        if t.done():
            ensure_trained(t)  # checks that a cached pipeline matches the config
    todo_models = [("train", t, 1) for t in plan.trainings if not t.done()]
    if todo_models:
        log(
            f"Training {len(todo_models)} pipeline(s) from {spec.train_config}: "
            + "; ".join(t.name for _, t, _ in todo_models)
        )
        with tqdm(
            total=len(todo_models), desc="pipelines", unit="model", disable=not progress
        ) as bar:
            errors += [r for r in execute(todo_models, bar) if r["error"]]
        if errors:
            _raise_errors(errors, len(todo_models))
    todo = plan.remaining()
    total = plan.total_units
    left = sum(units for _, _, units in todo)
    log(
        f"Grid: {len(plan.runs)} runs + {len(plan.baselines)} baselines -> {plan.output_dir} "
        f"({total - left}/{total} rounds done, {len(todo)} tasks to run, "
        + (f"{workers} worker(s), backend local)" if backend == "local" else "backend ray)")
    )
    if todo:
        with tqdm(
            total=total, initial=total - left, desc="AL grid", unit="round", disable=not progress
        ) as bar:
            results = execute(todo, bar)
        errors += [r for r in results if r["error"]]
    if errors:
        _raise_errors(errors, len(todo))
    return plan


def _raise_errors(errors: list[dict[str, Any]], n_tasks: int) -> None:
    first = errors[0]
    detail = first.get("traceback") or ""
    raise AdaptnerError(
        f"{len(errors)} of {n_tasks} tasks failed; first: {first['task']}: {first['error']}. "
        "Finished rounds are saved: fix the cause and re-run the same command to resume."
        + (f"\n{detail}" if detail else "")
    )
