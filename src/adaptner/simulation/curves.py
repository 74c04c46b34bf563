"""Learning curves from simulation records: mean ± 95 % CI over seeds, AULC, thresholds, plots."""

import csv
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy

from ..errors import AdaptnerError
from ..util import atomic_path, claim_output_dir, write_json, write_text
from .config import source_slug, with_legacy_settings
from .engine import read_records

#: Label fractions at which the table reports F1.
REPORT_FRACTIONS: tuple[float, ...] = (0.05, 0.10, 0.25, 0.50, 1.0)
#: Shares of the full-target F1 whose label cost the table reports.
REPORT_THRESHOLDS: tuple[float, ...] = (0.95, 0.99)

# Two-sided 95 % critical values of Student's t for 1..30 degrees of freedom.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959963984540054

#: Paper strategy names (anchor files) -> adaptner strategy names.
ANCHOR_STRATEGIES = {
    "confidence": "least_confidence",
    "margin": "margin",
    "random": "random",
    "vocab": "vocab",
}

_STRATEGY_COLORS = {
    "random": "#7f7f7f",
    "least_confidence": "#1f77b4",
    "margin": "#ff7f0e",
    "vocab": "#2ca02c",
    "mnlp": "#d62728",
    "hybrid": "#9467bd",
    "entropy": "#8c564b",
    "bald": "#e377c2",
    "diversity": "#17becf",
}
#: What the evaluation set names in records mean (tables say which set each figure is from).
EVAL_SET_DESCRIPTIONS = {
    "merged": "the held-out docs and the target's dev split together (the primary set)",
    "heldout": "a fixed share of the target train set held out (never queried nor trained on, "
    "the same for every strategy and seed)",
    "test": "the target's test split",
    "dev": "the target's dev split (no early stopping nor model selection on it in runs that "
    "evaluate on it; from-scratch baselines excepted, see Baselines)",
}


def eval_set_order(names: Iterable[str]) -> list[str]:
    """Evaluation set names: merged first, then held-out, test, dev and any others."""
    rank = {name: i for i, name in enumerate(EVAL_SET_DESCRIPTIONS)}
    return sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), n))


_BASELINE_STYLES = {
    "source_only": ("black", ":"),
    "target_full": ("black", "-"),
    "target_finetune": ("black", "--"),
    "target_only": ("#555555", "-."),
    "joint": ("#555555", (0, (5, 1, 1, 1, 1, 1))),
}


def t_critical(df: int) -> float:
    """Two-sided 95 % Student-t critical value for ``df`` degrees of freedom.

    A table up to 30 df; beyond, the Cornish-Fisher expansion around the normal quantile
    (error < 1e-4 there), so no scipy is needed.
    """
    if df < 1:
        return float("nan")
    if df <= len(_T95):
        return _T95[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def mean_ci(values: Sequence[float] | numpy.ndarray, axis: int = 0) -> tuple[Any, Any]:
    """Mean and the half-width of its 95 % t-interval over ``axis`` (NaN half-width for n = 1)."""
    arr = numpy.asarray(values, dtype="float64")
    n = arr.shape[axis]
    mean = arr.mean(axis=axis)
    if n < 2:
        return mean, numpy.full_like(mean, numpy.nan) if numpy.ndim(mean) else float("nan")
    sem = arr.std(axis=axis, ddof=1) / math.sqrt(n)
    return mean, t_critical(n - 1) * sem


def t_pvalue(t: float, df: int) -> float:
    """Two-sided p-value of Student's t with ``df`` (integer) degrees of freedom.

    Exact for integer df (Abramowitz & Stegun 26.7.3-4: a finite series in theta =
    atan(|t| / sqrt(df))), so no scipy is needed; NaN for df < 1 or a NaN t.
    """
    if df < 1 or math.isnan(t):
        return float("nan")
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2 / pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        inside = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    else:  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        inside = math.sin(theta) * total
    return min(1.0, max(0.0, 1.0 - inside))


def aulc(fractions: Sequence[float], f1: Sequence[float]) -> float:
    """Area under the learning curve (trapezoids) divided by the fraction range.

    A single point gives its own F1; the result lies between the curve's min and max.
    """
    x = numpy.asarray(fractions, dtype="float64")
    y = numpy.asarray(f1, dtype="float64")
    if len(x) == 0:
        return float("nan")
    if len(x) == 1 or x[-1] == x[0]:
        return float(y.mean())
    area = float(numpy.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return area / float(x[-1] - x[0])


def to_paper_units(fractions: Sequence[float], eval_holdout: float) -> numpy.ndarray:
    """Label fractions of the AL train set as shares of the whole target train set.

    The simulation holds ``eval_holdout`` of each target's train docs out for evaluation and
    counts labels as a share of the rest; the paper's x-axis is a share of all of them.
    """
    if not 0 <= eval_holdout < 1:
        raise AdaptnerError(f"eval_holdout must be in [0, 1), got {eval_holdout}.")
    return numpy.asarray(fractions, dtype="float64") * (1.0 - eval_holdout)


def holm(p_values: Sequence[float]) -> numpy.ndarray:
    """Holm's step-down adjustment of p-values for comparing several strategies at once.

    The i-th smallest of m p-values is multiplied by (m - i + 1) (i from 1), the running
    maximum keeps the order, and the result is capped at 1: reject where adjusted <= alpha.
    """
    p = numpy.asarray(p_values, dtype="float64")
    if p.size == 0:
        return p
    if numpy.any((p < 0) | (p > 1) | numpy.isnan(p)):
        raise AdaptnerError(f"p-values must lie in [0, 1], got {p.tolist()}.")
    order = numpy.argsort(p, kind="stable")
    m = p.size
    scaled = numpy.maximum.accumulate(p[order] * (m - numpy.arange(m)))
    adjusted = numpy.empty_like(p)
    adjusted[order] = numpy.minimum(scaled, 1.0)
    return adjusted


def f1_at(fractions: Sequence[float], f1: Sequence[float], at: float, tol: float = 0.005) -> float:
    """The curve's F1 at a label fraction (linear interpolation).

    A fraction up to ``tol`` outside the curve takes the end point's F1 (a 5 % query of
    1,690 docs is 84 docs = 4.97 %); further outside gives NaN.
    """
    x = numpy.asarray(fractions, dtype="float64")
    if len(x) == 0 or at < x[0] - tol or at > x[-1] + tol:
        return float("nan")
    return float(numpy.interp(at, x, numpy.asarray(f1, dtype="float64")))


def fraction_to_reach(
    fractions: Sequence[float], f1: Sequence[float], target: float
) -> float | None:
    """The smallest measured label fraction whose F1 is at least ``target`` (None if never)."""
    for x, y in zip(fractions, f1, strict=False):
        if y >= target - 1e-12:
            return float(x)
    return None


def record_evals(rec: dict[str, Any]) -> dict[str, float]:
    """F1 per evaluation set of a record or baseline result: ``evals`` when present (records
    since the held-out evaluation set), else ``{eval_split: target_f1}`` (older files).
    An ``evals`` entry holds ``ents_f`` (:mod:`adaptner.scoring`); files written before the
    scorer was shared hold ``f1`` instead."""
    evals = rec.get("evals")
    if evals:
        return {name: float(v["ents_f"] if "ents_f" in v else v["f1"]) for name, v in evals.items()}
    return {str(rec.get("eval_split", "dev")): float(rec["target_f1"])}


@dataclass
class Curve:
    """One (source, target, strategy, mode, evaluation set) over seeds, aligned by round.

    Attributes:
        fractions: Labeled fraction of the target train set per round (round 0 included).
        f1: Target F1 on ``eval_set``, seeds x rounds.
        source_f1: Source F1, seeds x rounds (NaN where not measured).
        seeds: The seeds, in row order.
        pool_fraction: The pool share the runs used ("pool = 20 %" vs "whole train set").
        eval_set: The evaluation set of ``f1`` ("heldout", "dev", "test").
        protocol: The runs' AL protocol ("paper", "fixed_pool").
        complete: Whether every seed's run finished (else truncated to the common rounds).
        round_seconds: Mean wall time of a round (scoring + retraining + evaluation), rounds >= 1.
        train_seconds / score_seconds: Mean retraining / pool scoring time per round.
        eval_holdout: The share of the target train docs held out for evaluation (the
            fractions are shares of the rest; :meth:`paper_fractions` converts).
    """

    source: str
    target: str
    strategy: str
    mode: str
    fractions: numpy.ndarray
    f1: numpy.ndarray
    source_f1: numpy.ndarray
    seeds: list[int]
    pool_fraction: float
    eval_set: str
    protocol: str = "fixed_pool"
    complete: bool = True
    round_seconds: float = float("nan")
    train_seconds: float = float("nan")
    score_seconds: float = float("nan")
    eval_holdout: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.source, self.target, self.strategy, self.mode, self.eval_set)

    def labeled(self) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Fractions and F1 (seeds x rounds) of the rounds with labels (round 0 dropped)."""
        keep = self.fractions > 0
        return self.fractions[keep], self.f1[:, keep]

    def from_start(self) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Fractions and F1 (seeds x rounds) from round 0, the source model before any label:
        an AULC over them counts a first batch that makes the model worse."""
        return self.fractions, self.f1

    def paper_fractions(self) -> numpy.ndarray:
        """The fractions as shares of the whole target train set, held-out docs included (the
        paper's x-axis; :func:`to_paper_units`)."""
        return to_paper_units(self.fractions, self.eval_holdout)


def load_records(input_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete record of every ``*.jsonl`` run file in ``input_dir`` (not recursive).

    Raises:
        AdaptnerError: the folder does not exist or has no run files.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise AdaptnerError(
            f"Results folder {input_dir} does not exist. Run `adaptner simulate` first."
        )
    files = sorted(input_dir.glob("*.jsonl"))
    if not files:
        raise AdaptnerError(
            f"No run files (*.jsonl) in {input_dir}. Run `adaptner simulate` first."
        )
    records: list[dict[str, Any]] = []
    for path in files:
        recs, _ = read_records(path)
        for i, rec in enumerate(recs, start=1):
            missing = [
                k for k in ("source", "target", "strategy", "mode", "seed", "round") if k not in rec
            ]
            if missing:
                raise AdaptnerError(
                    f"{path}, line {i}: not a simulation record (missing {', '.join(missing)})."
                )
        records.extend(recs)
    return records


def load_baselines(input_dir: str | Path) -> list[dict[str, Any]]:
    """Baseline results from ``<input_dir>/baselines/*.json`` (empty list when none)."""
    out = []
    for path in sorted((Path(input_dir) / "baselines").glob("*.json")):
        try:
            out.append(json.loads(path.read_text(encoding="utf8")))
        except json.JSONDecodeError as e:
            raise AdaptnerError(f"{path}: not valid JSON ({e}). Delete it to recompute.") from e
    return out


def build_curves(
    records: Iterable[dict[str, Any]],
) -> dict[tuple[str, str, str, str, str], Curve]:
    """Group records by (source, target, strategy, mode) and align seeds by round; one curve
    per evaluation set the records score (:func:`record_evals`).

    Raises:
        AdaptnerError: two runs of the same seed in a group (e.g. one grid made with one
            source model and one with two, in the same folder): seeds would not pair.
    """
    runs: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    run_of: dict[tuple, str] = {}
    for rec in records:
        key = (rec["source"], rec["target"], rec["strategy"], rec["mode"])
        seed = int(rec["seed"])
        run_id = str(rec.get("run_id", ""))
        other = run_of.setdefault((*key, seed), run_id)
        if other != run_id:
            raise AdaptnerError(
                f"Two runs of seed {seed} for {'/'.join(key)}: {other} and {run_id}. A results "
                "folder holds one grid (a grid's seeds each adapt one source model); move one "
                "of them to another folder."
            )
        runs[key][seed].append(rec)
    curves = {}
    for key, by_seed in sorted(runs.items()):
        for eval_set in record_evals(next(iter(by_seed.values()))[0]):
            curve = _build_curve(key, by_seed, eval_set)
            curves[curve.key] = curve
    return dict(sorted(curves.items()))


#: How a report names a source model its runs did not record (runs made before they did).
UNRECORDED = "not recorded"


def source_model_seeds(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, list[int]]]:
    """Source spec -> source model (as the runs recorded it) -> the seeds it served."""
    seeds: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for rec in records:
        seeds[rec["source"]][rec.get("source_model") or UNRECORDED].add(int(rec["seed"]))
    return {
        src: {model: sorted(s) for model, s in sorted(by_model.items(), key=lambda kv: min(kv[1]))}
        for src, by_model in sorted(seeds.items())
    }


def round_settings_line(records: Iterable[dict[str, Any]]) -> str | None:
    """The report's sentence on how the rounds trained (trainer, epochs, source replay,
    anchoring), one clause per distinct setting among the runs; None without parameters."""
    seen: dict[tuple, None] = {}
    for rec in records:
        p = with_legacy_settings(rec.get("params") or {})
        if "trainer" in p:
            key = (p["trainer"], p.get("epochs"), p["source_replay"], p["anchor_docs"])
            seen.setdefault(key, None)
    if not seen:
        return None
    parts = []
    for trainer, epochs, replay, anchor in seen:
        kept = (
            f"each round keeps n / (n + {anchor:g}) of its update (n = target docs trained on; "
            "anchoring)"
            if anchor
            else "each round keeps its whole update (no anchoring)"
        )
        replayed = f"{replay:g} source docs replayed per target doc" if replay else "no replay"
        parts.append(f"trainer `{trainer}`, {epochs} epochs, {replayed}, {kept}")
    return "Rounds: " + "; ".join(parts) + "."


def source_models_line(models: dict[str, dict[str, list[int]]]) -> str:
    """The report's sentence on the source models: how many per source and whose seeds."""
    parts = []
    for src, by_model in models.items():
        n = len(by_model)
        served = "; ".join(
            f"{model if model == UNRECORDED else f'`{model}`'} "
            f"(seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))})"
            for model, seeds in by_model.items()
        )
        parts.append(f"{src}: {n} source model{'s' if n != 1 else ''}, {served}")
    return (
        "Source models: "
        + ". ".join(parts)
        + ". A seed's runs all start from its source model, so the gains over random pair "
        "runs on the same model."
    )


def _build_curve(key: tuple, by_seed: dict[int, list[dict]], eval_set: str) -> Curve:
    seeds = sorted(by_seed)
    series = [sorted(by_seed[s], key=lambda r: r["round"]) for s in seeds]
    n = min(len(s) for s in series)
    complete = all(s[-1].get("last") for s in series) and len({len(s) for s in series}) == 1
    first = series[0]
    fractions = numpy.array([r["labeled_fraction"] for r in first[:n]], dtype="float64")
    f1 = numpy.array(
        [[record_evals(r).get(eval_set, numpy.nan) for r in s[:n]] for s in series],
        dtype="float64",
    )
    src = numpy.array(
        [
            [numpy.nan if r.get("source_f1") is None else r["source_f1"] for r in s[:n]]
            for s in series
        ],
        dtype="float64",
    )
    timed = [r for s in series for r in s[:n] if r["round"] > 0]

    def mean_of(name: str) -> float:
        values = [r[name] for r in timed if name in r]
        return float(numpy.mean(values)) if values else float("nan")

    return Curve(
        *key,
        eval_holdout=_eval_holdout(first[0]),
        fractions=fractions,
        f1=f1,
        source_f1=src,
        seeds=seeds,
        pool_fraction=float(
            first[0].get(
                "pool_fraction", first[0].get("params", {}).get("pool_fraction", float("nan"))
            )
        ),
        eval_set=eval_set,
        protocol=str(first[0].get("protocol", "fixed_pool")),
        complete=complete,
        round_seconds=mean_of("round_seconds"),
        train_seconds=mean_of("train_seconds"),
        score_seconds=mean_of("score_seconds"),
    )


def _eval_holdout(rec: dict[str, Any]) -> float:
    """The held-out share of a record's run: its parameters, else its sizes (else 0)."""
    if "eval_holdout" in rec.get("params", {}):
        return float(rec["params"]["eval_holdout"])
    held, rest = rec.get("heldout_size"), rec.get("target_size")
    return float(held) / (held + rest) if held and rest else 0.0


def baseline_means(
    baselines: Iterable[dict[str, Any]],
) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """(source, target, kind, eval set) -> {"target_f1", "target_ci", "source_f1",
    "source_ci", "n"}: one entry per evaluation set the baselines were scored on."""
    groups: dict[tuple, list[tuple[float, dict]]] = defaultdict(list)
    for b in baselines:
        for eval_set, f1 in record_evals(b).items():
            groups[(b["source"], b["target"], b["kind"], eval_set)].append((f1, b))
    out = {}
    for key, pairs in sorted(groups.items()):
        items = [b for _, b in pairs]
        t_mean, t_ci = mean_ci([f1 for f1, _ in pairs])
        srcs = [b["source_f1"] for b in items if b.get("source_f1") is not None]
        s_mean, s_ci = mean_ci(srcs) if srcs else (float("nan"), float("nan"))
        out[key] = {
            "target_f1": float(t_mean),
            "target_ci": float(t_ci),
            "source_f1": float(s_mean),
            "source_ci": float(s_ci),
            "n": len(items),
        }
    return out


@dataclass
class Anchor:
    """One published curve (the paper's mBERT, News source)."""

    target: str
    strategy: str
    fractions: numpy.ndarray
    f1: numpy.ndarray
    samples: numpy.ndarray = field(default_factory=lambda: numpy.zeros(0))


_ANCHOR_NAME = re.compile(
    r"ALResult_(?P<source>[^_]+)_(?P<target>.+)_(?P<strategy>[a-z]+)_final\.csv$"
)


def load_anchors(anchors_dir: str | Path) -> dict[tuple[str, str], Anchor]:
    """The paper's curves: (target slug, adaptner strategy name) -> Anchor.

    Reads ``ALResult_News_<Target>_<strategy>_final.csv`` (columns f1, number_of_samples,
    percentage_of_samples); the paper's "confidence" is adaptner's "least_confidence".
    ``anchors_dir`` may be the folder of the CSVs or its parent (``../shared/anchors``).

    Raises:
        AdaptnerError: a missing folder, no anchor files, or a file without the columns (named).
    """
    anchors_dir = Path(anchors_dir)
    if (anchors_dir / "paper_al_curves").is_dir():
        anchors_dir = anchors_dir / "paper_al_curves"
    if not anchors_dir.is_dir():
        raise AdaptnerError(f"Anchors folder {anchors_dir} does not exist.")
    out: dict[tuple[str, str], Anchor] = {}
    for path in sorted(anchors_dir.glob("ALResult_*_final.csv")):
        m = _ANCHOR_NAME.search(path.name)
        if not m:
            continue
        target = m["target"].lower()
        strategy = ANCHOR_STRATEGIES.get(m["strategy"], m["strategy"])
        with path.open(encoding="utf8", newline="") as f:
            rows = list(csv.DictReader(f))
        need = {"f1", "number_of_samples", "percentage_of_samples"}
        if not rows or not need <= set(rows[0]):
            raise AdaptnerError(f"{path}: expected columns {', '.join(sorted(need))}.")
        try:
            fr = numpy.array([float(r["percentage_of_samples"]) for r in rows])
            f1 = numpy.array([float(r["f1"]) for r in rows])
            n = numpy.array([float(r["number_of_samples"]) for r in rows])
        except ValueError as e:
            raise AdaptnerError(f"{path}: a value is not a number ({e}).") from e
        order = numpy.argsort(fr)
        out[(target, strategy)] = Anchor(target, strategy, fr[order], f1[order], n[order])
    if not out:
        raise AdaptnerError(f"No ALResult_*_final.csv anchor files in {anchors_dir}.")
    return out


#: The references "95 % of the reference" compares with: the round trainer on all target
#: train docs, and every component fine-tuned on them (the stronger one counts).
REFERENCE_KINDS = ("target_full", "target_finetune")


def full_target_reference(
    curve: Curve, baselines: dict[tuple[str, str, str, str], dict[str, Any]]
) -> tuple[float, str]:
    """The reference F1 the thresholds refer to (on the curve's evaluation set), and its kind.

    The stronger (higher mean F1) of the ``target_full`` and ``target_finetune`` baselines,
    else the curve's own last point if it reaches 100 % of the target train set. The
    from-scratch baselines pick their checkpoint on dev, so they are never the reference.
    """
    found = [
        (baselines[key]["target_f1"], kind)
        for kind in REFERENCE_KINDS
        if (key := (curve.source, curve.target, kind, curve.eval_set)) in baselines
    ]
    if found:
        return max(found, key=lambda fk: fk[0])
    if len(curve.fractions) and curve.fractions[-1] >= 1.0 - 1e-9:
        return float(curve.f1[:, -1].mean()), "curve@100%"
    return float("nan"), "none"


#: Shares of the whole target train set (the paper's x-axis) at which rows give F1 for the
#: comparison with the paper.
PAPER_FRACTIONS: tuple[float, ...] = (0.25, 0.5)


def summarize_curve(
    curve: Curve, baselines: dict[tuple[str, str, str, str], dict[str, Any]]
) -> dict[str, Any]:
    """One table row: F1 at fixed fractions, AULC, label cost of 95/99 % of the reference.

    ``aulc`` runs from round 0 (the source pipeline, 0 labels) to the last round
    (:meth:`Curve.from_start`), so a first batch that hurts counts; ``aulc_labeled`` starts
    at the first labelled round (the paper's curves have no round 0). ``reachNN`` is the
    first round where the seed-mean curve reaches NN % of the stronger reference
    (:func:`full_target_reference`); ``reachNN_seeds`` the same per seed (None = never),
    ``reachNN_mean`` / ``reachNN_ci`` their mean ± 95 % CI when every seed reaches it (else
    None; ``reachNN_n`` counts the seeds that do). ``max_fraction_paper`` and
    ``f1_paper@F`` use the paper's x-axis (shares of the whole target train set).
    """
    x, y = curve.labeled()
    x0, y0 = curve.from_start()
    row: dict[str, Any] = {
        "source": curve.source,
        "target": curve.target,
        "strategy": curve.strategy,
        "mode": curve.mode,
        "eval_set": curve.eval_set,
        "protocol": curve.protocol,
        "pool_fraction": curve.pool_fraction,
        "seeds": len(curve.seeds),
        "complete": curve.complete,
        "max_fraction": float(x[-1]) if len(x) else 0.0,
        "eval_holdout": curve.eval_holdout,
    }
    row["max_fraction_paper"] = float(to_paper_units([row["max_fraction"]], curve.eval_holdout)[0])
    for at in REPORT_FRACTIONS:
        per_seed = [f1_at(x, s, at) for s in y]
        if any(math.isnan(v) for v in per_seed) or not per_seed:
            row[f"f1@{at:g}"], row[f"f1@{at:g}_ci"] = None, None
        else:
            m, ci = mean_ci(per_seed)
            row[f"f1@{at:g}"], row[f"f1@{at:g}_ci"] = float(m), _num(ci)
    for name, (xs, ys) in (("aulc", (x0, y0)), ("aulc_labeled", (x, y))):
        if len(xs):
            m, ci = mean_ci([aulc(xs, s) for s in ys])
            row[name], row[f"{name}_ci"] = float(m), _num(ci)
        else:
            row[name], row[f"{name}_ci"] = None, None
    paper_x = to_paper_units(x, curve.eval_holdout)
    for at in PAPER_FRACTIONS:
        row[f"f1_paper@{at:g}"] = _num(f1_at(paper_x, y.mean(axis=0), at)) if len(x) else None
    for kind in REFERENCE_KINDS:
        b = baselines.get((curve.source, curve.target, kind, curve.eval_set))
        row[f"{kind}_f1"] = None if b is None else b["target_f1"]
    ref, ref_kind = full_target_reference(curve, baselines)
    row["full_target_f1"] = None if math.isnan(ref) else ref
    row["reference"] = ref_kind
    mean_curve = y.mean(axis=0) if len(x) else numpy.zeros(0)
    for thr in REPORT_THRESHOLDS:
        name = f"reach{int(thr * 100)}"
        reached = None if math.isnan(ref) else fraction_to_reach(x, mean_curve, thr * ref)
        per_seed = [None if math.isnan(ref) else fraction_to_reach(x, ys, thr * ref) for ys in y]
        row[name] = reached
        row[f"{name}_seeds"] = per_seed
        row[f"{name}_n"] = sum(v is not None for v in per_seed)
        if per_seed and all(v is not None for v in per_seed):
            m, ci = mean_ci([float(v) for v in per_seed])  # type: ignore[arg-type]
            row[f"{name}_mean"], row[f"{name}_ci"] = float(m), _num(ci)
        else:
            row[f"{name}_mean"], row[f"{name}_ci"] = None, None
    src0 = curve.source_f1[:, 0] if curve.source_f1.shape[1] else numpy.zeros(0)
    src_last = curve.source_f1[:, -1] if curve.source_f1.shape[1] else numpy.zeros(0)
    if len(src0) and not numpy.isnan(src0).any() and curve.fractions[0] == 0:
        row["source_f1_start"] = float(src0.mean())
        row["source_f1_end"] = float(src_last.mean())
    else:
        row["source_f1_start"] = row["source_f1_end"] = None
    row.update(worst_round_vs_source(x0, y0))
    row["round_seconds"] = _num(curve.round_seconds)
    row["train_seconds"] = _num(curve.train_seconds)
    row["score_seconds"] = _num(curve.score_seconds)
    return row


def worst_round_vs_source(fractions: numpy.ndarray, f1: numpy.ndarray) -> dict[str, Any]:
    """The labelled round whose seed-mean F1 lies furthest below (or least above) round 0's,
    the source pipeline's: ``below_source`` = that difference (negative: adapting made the
    model worse there), ``below_source_at`` its label fraction. None without round 0 or a
    labelled round.
    """
    if len(fractions) < 2 or fractions[0] != 0:
        return {"below_source": None, "below_source_at": None}
    mean = f1.mean(axis=0)
    diffs = mean[1:] - mean[0]
    k = int(numpy.argmin(diffs))
    return {"below_source": float(diffs[k]), "below_source_at": float(fractions[1:][k])}


#: The strategy every gain is measured against.
CONTROL = "random"


def paired_gains(curves: Iterable[Curve], alpha: float = 0.05) -> list[dict[str, Any]]:
    """AULC gain (from round 0) of every strategy over random, paired by seed, Holm-corrected.

    The same seed gives both runs the same held-out set, source model and first candidate
    pool, so the per-seed differences are paired. Per (source, target, mode, evaluation
    set), each strategy with at least two seeds in common with random gets the mean gain,
    its 95 % t-interval, the two-sided paired t-test's p-value, and Holm's adjustment
    (:func:`holm`) over the strategies compared there. ``above_random`` = the Holm-adjusted
    p <= ``alpha`` and the gain is positive; ``ci_above_0`` = the (unadjusted) interval lies
    above 0.

    Returns:
        One dict per (source, target, mode, evaluation set, strategy), sorted.
    """
    families: dict[tuple, dict[str, Curve]] = defaultdict(dict)
    for c in curves:
        families[(c.source, c.target, c.mode, c.eval_set)][c.strategy] = c
    out: list[dict[str, Any]] = []
    for (source, target, mode, eval_set), by_strategy in sorted(families.items()):
        control = by_strategy.get(CONTROL)
        if control is None:
            continue
        rows = []
        for strategy, curve in sorted(by_strategy.items()):
            if strategy == CONTROL:
                continue
            seeds = sorted(set(curve.seeds) & set(control.seeds))
            n = min(len(curve.fractions), len(control.fractions))
            if not numpy.allclose(curve.fractions[:n], control.fractions[:n]):
                continue  # different label counts per round: nothing to pair
            mine, ctrl = _seed_aulcs(curve, n), _seed_aulcs(control, n)
            diffs = numpy.array([mine[s] - ctrl[s] for s in seeds], dtype="float64")
            row: dict[str, Any] = {
                "source": source,
                "target": target,
                "mode": mode,
                "eval_set": eval_set,
                "strategy": strategy,
                "seeds": len(seeds),
                "max_fraction": float(curve.fractions[n - 1]) if n else 0.0,
                "gain": float(diffs.mean()) if len(diffs) else None,
                "gain_ci": None,
                "p": None,
            }
            if len(diffs) >= 2:
                mean, ci = mean_ci(diffs)
                sd = float(diffs.std(ddof=1))
                if sd > 0:
                    t = float(mean) / (sd / math.sqrt(len(diffs)))
                else:  # every seed gains the same: certain unless that is 0
                    t = 0.0 if mean == 0 else math.copysign(math.inf, float(mean))
                row["gain_ci"], row["p"] = float(ci), t_pvalue(t, len(diffs) - 1)
            rows.append(row)
        tested = [r for r in rows if r["p"] is not None]
        for r, adjusted in zip(tested, holm([r["p"] for r in tested]), strict=True):
            r["p_holm"] = float(adjusted)
        for r in rows:
            r.setdefault("p_holm", None)
            r["family_size"] = len(tested)
            r["ci_above_0"] = r["gain_ci"] is not None and r["gain"] - r["gain_ci"] > 0
            r["above_random"] = r["p_holm"] is not None and r["p_holm"] <= alpha and r["gain"] > 0
        out.extend(rows)
    return out


def _seed_aulcs(curve: Curve, n: int) -> dict[int, float]:
    """Seed -> AULC from round 0 over the curve's first ``n`` rounds."""
    x = curve.fractions[:n]
    return {seed: aulc(x, f1[:n]) for seed, f1 in zip(curve.seeds, curve.f1, strict=True)}


#: Which of two strategies that select the same sentences a report keeps: the paper's ones
#: first, then the rest by name.
_KEEP_FIRST = ("random", "least_confidence", "margin", "vocab")


def find_duplicates(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Strategies that select the same sentences as another: for every seed they share, the
    same set of ``new_ids`` in every round (and the same seeds and rounds).

    Per (source, target, mode), each group of such strategies keeps one (random and the
    paper's strategies first, then by name); the others are listed with the reason.

    Returns:
        ``{"source", "target", "mode", "strategy" (dropped), "same_as" (kept), "seeds",
        "rounds", "reason"}`` per dropped strategy.
    """
    picks: dict[tuple, dict[str, dict[int, dict[int, frozenset]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(dict))
    )
    for rec in records:
        if "new_ids" not in rec:
            continue
        key = (rec["source"], rec["target"], rec["mode"])
        picks[key][rec["strategy"]][int(rec["seed"])][int(rec["round"])] = frozenset(rec["new_ids"])
    rank = {name: i for i, name in enumerate(_KEEP_FIRST)}
    out = []
    for (source, target, mode), by_strategy in sorted(picks.items()):
        order = sorted(by_strategy, key=lambda n: (rank.get(n, len(rank)), n))
        kept: list[str] = []
        for name in order:
            selection = by_strategy[name]
            twin = next((k for k in kept if by_strategy[k] == selection), None)
            if twin is None:
                kept.append(name)
                continue
            seeds = len(selection)
            rounds = max(len(r) for r in selection.values()) - 1
            out.append(
                {
                    "source": source,
                    "target": target,
                    "mode": mode,
                    "strategy": name,
                    "same_as": twin,
                    "seeds": seeds,
                    "rounds": rounds,
                    "reason": f"{name} selects {twin}'s sentences on {target} (source "
                    f"{source}, {mode}: the same docs in all {rounds} rounds of "
                    f"{seeds} seed{'s' if seeds != 1 else ''})",
                }
            )
    return out


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _fmt(value: float | None, ci: float | None = None) -> str:
    if value is None:
        return "–"
    text = f"{value:.3f}"
    if ci is not None:
        text += f" ± {ci:.3f}"
    return text


def _pct(value: float | None, max_fraction: float) -> str:
    if value is None:
        return f"> {max_fraction * 100:.0f} %"
    return f"{value * 100:.0f} %"


def _worst_cell(row: dict[str, Any]) -> str:
    """``-0.031 @5 %``: the seed-mean F1 of the worst labelled round minus round 0's."""
    if row.get("below_source") is None:
        return "–"
    return f"{row['below_source']:+.3f} @{row['below_source_at'] * 100:.0f} %"


def _reach_cell(row: dict[str, Any], thr: float) -> str:
    """``15 % (seeds 13 ± 6 %)``: the mean curve's label share, then the seeds' mean ± CI
    (or how many seeds reach it at all)."""
    name = f"reach{int(thr * 100)}"
    text = _pct(row[name], row["max_fraction"])
    seeds = row.get(f"{name}_seeds") or []
    if len(seeds) < 2:
        return text
    if row.get(f"{name}_mean") is not None:
        ci = row.get(f"{name}_ci")
        ci_text = f" ± {ci * 100:.0f}" if ci is not None else ""
        return f"{text} (seeds {row[f'{name}_mean'] * 100:.0f}{ci_text} %)"
    return f"{text} ({row[f'{name}_n']}/{len(seeds)} seeds)"


def anchor_aulc(anchor: Anchor, lo: float, hi: float, tol: float = 0.005) -> float:
    """The anchor's AULC restricted to [lo, hi] (so it compares with a shorter curve).

    ``tol`` as in :func:`f1_at`: the paper's first point is 84 of 1,690 docs = 4.97 %.
    """
    keep = (anchor.fractions >= lo - tol) & (anchor.fractions <= hi + tol)
    return aulc(anchor.fractions[keep], anchor.f1[keep])


def goal_summary(
    rows: Sequence[dict[str, Any]], gains: Sequence[dict[str, Any]] | None = None
) -> list[str]:
    """Lines answering the project's goals per (evaluation set, source, mode): no round below
    the source model (seed mean), 95 % of the reference with <= 15 % labels, and a strategy
    whose AULC beats random's on every target (by the mean; by more than both CIs; and, given
    ``gains`` (:func:`paired_gains`), by a paired gain whose Holm-adjusted p <= 0.05)."""
    lines = []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get("eval_set", "dev"), r["source"], r["mode"])].append(r)
    order = {name: i for i, name in enumerate(eval_set_order(k[0] for k in groups))}
    for (eval_set, source, mode), items in sorted(
        groups.items(), key=lambda kv: (order[kv[0][0]], kv[0])
    ):
        head = f"- [{eval_set}] source {source}, {mode}"
        dips = [
            f"{r['target']}/{r['strategy']} ({_worst_cell(r)})"
            for r in items
            if r.get("below_source") is not None and r["below_source"] < 0
        ]
        checked = [r for r in items if r.get("below_source") is not None]
        if checked:
            lines.append(
                f"{head}: every round at or above the source model (seed mean): "
                + (f"no, below it: {', '.join(dips)}" if dips else f"yes ({len(checked)} curves)")
            )
        hits = [
            f"{r['target']}/{r['strategy']} ({r['reach95'] * 100:.0f} %)"
            for r in items
            if r["reach95"] is not None and r["reach95"] <= 0.15 + 1e-9
        ]
        lines.append(
            f"{head}: 95 % of the reference F1 with ≤ 15 % labels: "
            + (", ".join(hits) if hits else "none")
        )
        targets = sorted({r["target"] for r in items})
        random = {r["target"]: r for r in items if r["strategy"] == CONTROL}
        if set(random) != set(targets):
            lines.append(f"{head}: no random runs for every target; AULC comparison skipped")
            continue
        winners, clear = [], []
        for strategy in sorted({r["strategy"] for r in items} - {CONTROL}):
            mine = {r["target"]: r for r in items if r["strategy"] == strategy}
            if set(mine) != set(targets) or any(
                mine[t]["aulc"] is None or random[t]["aulc"] is None for t in targets
            ):
                continue
            if all(mine[t]["aulc"] > random[t]["aulc"] for t in targets):
                winners.append(strategy)
            if all(_clearly_above(mine[t], random[t]) for t in targets):
                clear.append(strategy)
        line = (
            f"{head}: AULC above random on every target ({', '.join(targets)}): "
            + (", ".join(winners) if winners else "no strategy")
            + "; with non-overlapping 95 % CIs: "
            + (", ".join(clear) if clear else "no strategy")
        )
        if gains is not None:
            above: dict[str, set[str]] = defaultdict(set)
            for g in gains:
                if (g["eval_set"], g["source"], g["mode"]) == (eval_set, source, mode) and g[
                    "above_random"
                ]:
                    above[g["strategy"]].add(g["target"])
            holm_winners = sorted(k for k, v in above.items() if v >= set(targets))
            line += "; paired gain, Holm p ≤ 0.05: " + (
                ", ".join(holm_winners) if holm_winners else "no strategy"
            )
        lines.append(line)
    return lines


def _clearly_above(row: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether a row's AULC CI lies entirely above the other's (False without CIs)."""
    if row["aulc_ci"] is None or other["aulc_ci"] is None:
        return False
    return row["aulc"] - row["aulc_ci"] > other["aulc"] + other["aulc_ci"]


def _eval_set_text(name: str) -> str:
    return EVAL_SET_DESCRIPTIONS.get(name, f"the target's {name} split")


def _p_text(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _ref_cell(row: dict[str, Any], kind: str) -> str:
    value = row.get(f"{kind}_f1")
    if value is None:
        return "–"
    return f"**{value:.3f}**" if row["reference"] == kind else f"{value:.3f}"


def markdown_report(
    rows: Sequence[dict[str, Any]],
    baselines: dict[tuple[str, str, str, str], dict[str, Any]],
    anchors: dict[tuple[str, str], Anchor] | None = None,
    gains: Sequence[dict[str, Any]] | None = None,
    duplicates: Sequence[dict[str, Any]] | None = None,
    source_models: dict[str, dict[str, list[int]]] | None = None,
    made_by: str | None = None,
    rounds: str | None = None,
) -> str:
    """The Markdown report: one table per evaluation set (target x strategy), the paired
    gains over random (Holm-corrected), strategies reported once because they select another
    one's sentences, baselines per evaluation set, the paper's curves next to ours (in the
    paper's x-axis units), and the goals. ``source_models``
    (:func:`source_model_seeds`) adds which source model served which seeds; ``made_by``
    (the command and date) goes under the title."""
    out = ["# Active-learning simulation results", ""]
    if made_by:
        out += [f"Made by {made_by}.", ""]
    pools = sorted({r["pool_fraction"] for r in rows})
    protocols = sorted({r.get("protocol", "fixed_pool") for r in rows})
    eval_sets = eval_set_order(r.get("eval_set", "dev") for r in rows)
    holdouts = sorted({r.get("eval_holdout", 0.0) for r in rows})
    protocol_text = {
        "paper": "a fresh random candidate pool every round from the unlabelled docs, the "
        "strategy picks from round 1 on",
        "fixed_pool": "one pool drawn at random per seed, first batch random",
    }
    out += [
        f"Protocol: {'; '.join(f'{p} ({protocol_text.get(p, p)})' for p in protocols)}. "
        f"Pool: {', '.join(f'{p * 100:.0f} %' for p in pools)} of the target train set. "
        "F1 = span F1 on the evaluation set named in each table (and its `eval set` column); "
        "label fractions are shares of the target train set without the held-out docs "
        f"({' / '.join(f'{h * 100:.0f} %' for h in holdouts)} of each target's train docs "
        "held out); the `labels at end` column adds the paper's unit in brackets, the share of "
        "the whole target train set. Mean ± 95 % CI (t-distribution) over seeds. AULC = area "
        "under F1 vs label fraction from round 0 (the source pipeline, no labels) to the last "
        "round, divided by that range. References: `round trainer` = the source pipeline "
        "trained with the AL rounds' trainer on every target train doc, `full fine-tune` = "
        "every component fine-tuned on them; the stronger one (bold) is the reference of "
        "'95 % at' = the first round where the seed-mean curve reaches 95 % of it on the same "
        "evaluation set, then in brackets the per-seed mean ± 95 % CI, or how many seeds "
        "reach it; '> m %' = not reached within the curve (max m %). Source F1 = round 0 → "
        "last round (forgetting).",
        "",
    ]
    if rounds:
        out += [rounds, ""]
    if source_models:
        out += [source_models_line(source_models), ""]
    header = (
        "| eval set | source | target | strategy | mode | seeds | labels at end "
        + "".join(f"| F1 @{a * 100:.0f} % " for a in REPORT_FRACTIONS)
        + "| AULC from 0 | worst round − round 0 | 95 % at | 99 % at | round trainer F1 "
        "| full fine-tune F1 | source F1 | s/round |"
    )
    sep = "|" + "---|" * (header.count("|") - 1)
    for eval_set in eval_sets:
        out += [
            f"## Evaluation set: {eval_set}",
            "",
            f"`{eval_set}` = {_eval_set_text(eval_set)}.",
            "",
            header,
            sep,
        ]
        for r in rows:
            if r.get("eval_set", "dev") != eval_set:
                continue
            src = (
                f"{r['source_f1_start']:.3f} → {r['source_f1_end']:.3f}"
                if r["source_f1_start"] is not None
                else "–"
            )
            secs = f"{r['round_seconds']:.1f}" if r["round_seconds"] is not None else "–"
            seeds = f"{r['seeds']}" + ("" if r["complete"] else " (incomplete)")
            end = f"{r['max_fraction'] * 100:.0f} % ({r['max_fraction_paper'] * 100:.0f} %)"
            cells = [
                eval_set, r["source"], r["target"], r["strategy"], r["mode"], seeds, end,
                *(_fmt(r[f"f1@{a:g}"], r[f"f1@{a:g}_ci"]) for a in REPORT_FRACTIONS),
                _fmt(r["aulc"], r["aulc_ci"]), _worst_cell(r),
                _reach_cell(r, 0.95), _reach_cell(r, 0.99),
                _ref_cell(r, "target_full"), _ref_cell(r, "target_finetune"), src, secs,
            ]  # fmt: skip
            out.append("| " + " | ".join(str(c) for c in cells) + " |")
        out.append("")
    if gains:
        out += [
            "## AULC gain over random (paired by seed, Holm-corrected)",
            "",
            "Gain = AULC from round 0 minus random's, per seed (the same seed shares the "
            "held-out set, the source pipeline and round 1's candidate pool), then mean ± 95 % "
            "CI; p = two-sided paired t-test; Holm = p adjusted over the m strategies compared "
            "with random in the same target, mode and evaluation set (m in its column); "
            "'above random' = Holm p ≤ 0.05 and a positive gain. Strategies reported once "
            "(Duplicates) are not counted.",
            "",
            "| eval set | source | target | mode | strategy | seeds | gain | p | Holm p | m "
            "| CI above 0 | above random |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        order = {name: i for i, name in enumerate(eval_set_order(g["eval_set"] for g in gains))}
        for g in sorted(gains, key=lambda g: (order[g["eval_set"]], g["source"], g["target"])):
            gain = "–" if g["gain"] is None else f"{g['gain']:+.3f}"
            if g["gain_ci"] is not None:
                gain += f" ± {g['gain_ci']:.3f}"
            out.append(
                f"| {g['eval_set']} | {g['source']} | {g['target']} | {g['mode']} "
                f"| {g['strategy']} | {g['seeds']} | {gain} | {_p_text(g['p'])} "
                f"| {_p_text(g['p_holm'])} | {g['family_size']} "
                f"| {'yes' if g['ci_above_0'] else 'no'} | {'yes' if g['above_random'] else 'no'} |"
            )
        out.append("")
    if duplicates:
        out += [
            "## Duplicates",
            "",
            "Strategies that selected exactly the same sentences as another in every round of "
            "every seed are reported once, under the kept strategy's name:",
            "",
            *(f"- {d['reason']}: reported as {d['same_as']}." for d in duplicates),
            "",
        ]
    if baselines:
        out += [
            "## Baselines",
            "",
            "`target_only` and `joint` train from scratch and keep the checkpoint that scores "
            "best on the dev split of their domains (the target's included): their dev and "
            "merged figures are optimistic, and they are never the reference.",
            "",
            "| eval set | source | target | baseline | n | target F1 | source F1 |",
            "|---|---|---|---|---|---|---|",
        ]
        border = {name: i for i, name in enumerate(eval_set_order(k[3] for k in baselines))}
        for (source, target, kind, eval_set), b in sorted(
            baselines.items(), key=lambda kv: (border[kv[0][3]], kv[0][:3])
        ):
            out.append(
                f"| {eval_set} | {source} | {target} | {kind} | {b['n']} "
                f"| {_fmt(b['target_f1'], _num(b['target_ci']))} "
                f"| {_fmt(_num(b['source_f1']), _num(b['source_ci']))} |"
            )
        out.append("")
    if anchors:
        lines = []
        for r in rows:
            a = anchors.get((r["target"], r["strategy"]))
            if a is None or r["source"] != "news" or r["aulc_labeled"] is None:
                continue
            hi = r["max_fraction_paper"]
            lo = min(REPORT_FRACTIONS[0], hi)
            lines.append(
                f"| {r.get('eval_set', 'dev')} | {r['target']} | {r['strategy']} | {r['mode']} "
                f"| {hi * 100:.0f} % | {_fmt(r['aulc_labeled'], r['aulc_labeled_ci'])} "
                f"| {anchor_aulc(a, lo, hi):.3f} | {aulc(a.fractions, a.f1):.3f} "
                f"| {_fmt(r['f1_paper@0.25'])} | {f1_at(a.fractions, a.f1, 0.25):.3f} "
                f"| {_fmt(r['f1_paper@0.5'])} | {f1_at(a.fractions, a.f1, 0.5):.3f} |"
            )
        if lines:
            out += [
                "## Against the paper (mBERT, News source, its protocol: fresh 20 % pool, 5 % "
                "per round, reset, 10 repeats; its own evaluation split)",
                "",
                "In the paper's x-axis units: shares of the whole target train set (ours hold "
                "some of it out for evaluation). The paper's curves start at the first labelled "
                "round, so both AULCs here do too.",
                "",
                "| eval set (ours) | target | strategy | mode | our labels at end "
                "| our AULC | paper AULC (same range) | paper AULC (5–100 %) "
                "| our F1 @25 % | paper F1 @25 % | our F1 @50 % | paper F1 @50 % |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
                *lines,
                "",
            ]
    out += ["## Goals", "", *goal_summary(rows, gains), ""]
    return "\n".join(out)


def plot_target(
    curves: Sequence[Curve],
    baselines: dict[tuple[str, str, str, str], dict[str, Any]],
    path: str | Path,
    anchors: dict[tuple[str, str], Anchor] | None = None,
    same_as: dict[str, list[str]] | None = None,
    caption: str | None = None,
) -> Path:
    """One PNG per (source, target), one panel per evaluation set: strategies (mean ± CI),
    baselines as horizontal lines, the paper's curves dashed (News source only; the x-axis is
    then the paper's, shares of the whole target train set). ``same_as`` names the strategies
    a curve also stands for (duplicates); ``caption`` (the command and date that drew it)
    goes under the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eval_sets = eval_set_order(c.eval_set for c in curves)
    fig, axes = plt.subplots(
        1, len(eval_sets), figsize=(6.5 * len(eval_sets) + 3, 5), squeeze=False
    )
    for ax, eval_set in zip(axes[0], eval_sets, strict=True):
        _plot_panel(
            ax, [c for c in curves if c.eval_set == eval_set], baselines, anchors, same_as or {}
        )
    handles, labels = axes[0][-1].get_legend_handles_labels()
    axes[0][-1].legend(
        handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0
    )
    fig.tight_layout()
    if caption:
        fig.subplots_adjust(bottom=0.16)
        fig.text(0.005, 0.005, caption, fontsize=7, ha="left", va="bottom", wrap=True)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def _plot_panel(
    ax: Any,
    curves: Sequence[Curve],
    baselines: dict[tuple[str, str, str, str], dict[str, Any]],
    anchors: dict[tuple[str, str], Anchor] | None,
    same_as: dict[str, list[str]],
) -> None:
    source, target, eval_set = curves[0].source, curves[0].target, curves[0].eval_set
    paper_axis = bool(anchors) and source == "news"
    xmax, ymin, ymax = 0.0, 1.0, 0.0
    for c in curves:
        color = _STRATEGY_COLORS.get(c.strategy)
        mean, ci = mean_ci(c.f1)
        x = (c.paper_fractions() if paper_axis else c.fractions) * 100
        xmax = max(xmax, float(x[-1]) if len(x) else 0.0)
        style = "-" if c.mode == "reset" else ":"
        ymin, ymax = min(ymin, float(numpy.min(mean))), max(ymax, float(numpy.max(mean)))
        twins = same_as.get(c.strategy, [])
        name = c.strategy + (f" = {', '.join(twins)}" if twins else "")
        (line,) = ax.plot(x, mean, style, marker="o", ms=3, color=color, label=f"{name} ({c.mode})")
        if len(c.seeds) > 1:
            lo, hi = numpy.clip(mean - ci, 0, 1), numpy.clip(mean + ci, 0, 1)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    for kind, (color, style) in _BASELINE_STYLES.items():
        b = baselines.get((source, target, kind, eval_set))
        if b is not None:
            ymin, ymax = min(ymin, b["target_f1"]), max(ymax, b["target_f1"])
            ax.axhline(
                b["target_f1"], color=color, ls=style, lw=1.2,
                label=f"{kind} ({b['target_f1']:.3f})",
            )  # fmt: skip
    if paper_axis:
        assert anchors is not None
        for c in {c.strategy: c for c in curves}.values():
            a = anchors.get((target, c.strategy))
            if a is None:
                continue
            keep = a.fractions * 100 <= max(xmax, 5.0) * 1.05
            if keep.any():
                ymin = min(ymin, float(a.f1[keep].min()))
                ymax = max(ymax, float(a.f1[keep].max()))
            ax.plot(
                a.fractions[keep] * 100, a.f1[keep], "--", color=_STRATEGY_COLORS.get(c.strategy),
                alpha=0.6, lw=1, label=f"paper mBERT {c.strategy}",
            )  # fmt: skip
    pool = sorted({c.pool_fraction for c in curves})
    protocols = sorted({c.protocol for c in curves})
    ax.set_title(
        f"{target} [{eval_set}]: source {source}, {'/'.join(protocols)}, pool "
        f"{', '.join(f'{p * 100:.0f} %' for p in pool)}, {max(len(c.seeds) for c in curves)} "
        "seed(s)",
        fontsize=9,
    )
    ax.set_xlabel(
        "labeled share of the whole target train set (%, the paper's x-axis)"
        if paper_axis
        else "labeled share of the target train set without the held-out docs (%)"
    )
    ax.set_ylabel(f"span F1 on {target} ({eval_set})")
    ax.set_ylim(max(0.0, ymin - 0.05), min(1.0, ymax + 0.05))
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)


def write_report(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    anchors_dir: str | Path | None = None,
    force: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Aggregate a results folder into ``report.md``, ``summary.json`` and one PNG per
    (source, target) with a panel per evaluation set. ``command`` (what made the report) is
    named with the date at the top of the report and under every figure.

    Strategies that select the same sentences as another (:func:`find_duplicates`) are
    reported once; the gains over random are paired by seed and Holm-corrected
    (:func:`paired_gains`). ``output_dir`` follows the output policy
    (:func:`adaptner.util.claim_output_dir`): a folder that ``curves`` did not write is
    refused unless ``force``.

    Returns:
        {"rows", "gains", "duplicates", "source_models" (:func:`source_model_seeds`),
        "report": Path, "summary": Path, "plots": [Path, ...]}.
    """
    records = load_records(input_dir)
    duplicates = find_duplicates(records)
    dropped = {(d["source"], d["target"], d["strategy"], d["mode"]) for d in duplicates}
    same_as: dict[tuple, list[str]] = defaultdict(list)
    for d in duplicates:
        same_as[(d["source"], d["target"], d["mode"], d["same_as"])].append(d["strategy"])
    curves = {k: c for k, c in build_curves(records).items() if k[:4] not in dropped}
    baselines = baseline_means(load_baselines(input_dir))
    anchors = load_anchors(anchors_dir) if anchors_dir is not None else None
    rows = [summarize_curve(c, baselines) for c in curves.values()]
    for r in rows:
        r["same_as"] = same_as.get((r["source"], r["target"], r["mode"], r["strategy"]), [])
    gains = paired_gains(curves.values())
    models = source_model_seeds(records)
    output_dir = claim_output_dir(
        output_dir, "curves", force=force, owned_files=("summary.json", "report.md")
    )
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = command or "adaptner curves"
    caption = f"{command}  ({made})"
    plots = []
    by_pair: dict[tuple[str, str], list[Curve]] = defaultdict(list)
    for c in curves.values():
        by_pair[(c.source, c.target)].append(c)
    for (source, target), group in sorted(by_pair.items()):
        twins = {c.strategy: same_as.get((source, target, c.mode, c.strategy), []) for c in group}
        plots.append(
            plot_target(
                group,
                baselines,
                output_dir / f"curves_{source_slug(source)}_{target}.png",
                anchors,
                twins,
                caption,
            )
        )
    report = output_dir / "report.md"
    text = markdown_report(
        rows,
        baselines,
        anchors,
        gains,
        duplicates,
        models,
        made_by=f"`{command}` ({made})",
        rounds=round_settings_line(records),
    )
    write_text(report, text)
    summary = output_dir / "summary.json"
    write_json(
        summary,
        {
            "rows": rows,
            "gains": gains,
            "duplicates": duplicates,
            "source_models": models,
            "baselines": [
                {"source": s, "target": t, "kind": k, "eval_set": e, **v}
                for (s, t, k, e), v in sorted(baselines.items())
            ],
            "goals": goal_summary(rows, gains),
        },
    )
    return {
        "rows": rows,
        "gains": gains,
        "duplicates": duplicates,
        "source_models": models,
        "report": report,
        "summary": summary,
        "plots": plots,
    }
