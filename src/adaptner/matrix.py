"""The cross-domain matrix: train one model per domain, score each on every domain's data."""

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spacy.vocab import Vocab
from tqdm import tqdm

from .errors import AdaptnerError
from .evaluation import evaluate_docs, load_eval_docs, load_pipeline, select_domains, split_name
from .labels import DOMAINS
from .readers import available_domains
from .training import train_pipeline
from .util import atomic_path, check_output_file, relative_to_cwd, write_json, write_text

PathLike = str | Path

#: Rows/columns by default: the six DANSK domains with enough data (dannet and the
#: domain-less "unknown" rows are tiny: 4 and 22 dev sentences).
DEFAULT_MATRIX_DOMAINS: list[str] = [
    "news",
    "conversation",
    "legal",
    "social_media",
    "web",
    "wiki_books",
]


@dataclass(frozen=True)
class MatrixRow:
    """One model of the matrix: its name (also its folder) and the domains it trains on."""

    name: str
    train_domains: tuple[str, ...]
    joint: bool = False

    @property
    def domains_spec(self) -> str:
        """The domains as a train_pipeline selection, e.g. "news,legal"."""
        return ",".join(self.train_domains)


def plan_rows(domains: Sequence[str], joint: str | None = None) -> list[MatrixRow]:
    """One row per domain, then (with ``joint``) one row ``joint+target`` per other target."""
    rows = [MatrixRow(d, (d,)) for d in domains]
    if joint is not None:
        rows += [MatrixRow(f"{joint}+{d}", (joint, d), joint=True) for d in domains if d != joint]
    return rows


def _check_reuse(
    row: MatrixRow, model_dir: Path, seed: int, overrides: dict[str, Any]
) -> list[str]:
    """Differences between how an existing row model was trained and what was asked now."""
    meta_path = model_dir / "train_meta.json"
    if not meta_path.exists():
        return []
    try:
        meta = json.loads(meta_path.read_text(encoding="utf8"))
    except (OSError, ValueError):
        return [f"{meta_path} is unreadable"]
    notes = []
    if meta.get("seed") != seed:
        notes.append(f"seed {meta.get('seed')} (asked: {seed})")
    if meta.get("train_domains") != row.domains_spec:
        notes.append(f"domains {meta.get('train_domains')} (asked: {row.domains_spec})")
    if (meta.get("overrides") or {}) != json.loads(json.dumps(overrides)):
        notes.append(f"overrides {meta.get('overrides')} (asked: {overrides})")
    return notes


def run_matrix(
    config_path: PathLike,
    *,
    domains: str | Sequence[str] = DEFAULT_MATRIX_DOMAINS,
    joint: str | None = None,
    train_path: PathLike = "corpus/train",
    dev_path: PathLike = "corpus/dev",
    data: PathLike = "corpus/dev",
    models_dir: PathLike = "training/matrix",
    output: PathLike = "metrics/matrix.json",
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    retrain: bool = False,
    batch_size: int = 256,
    verbose: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or reuse) one model per row and score it on every column domain.

    Rows are the training domains (plus ``joint+target`` rows with ``joint``); columns are
    the evaluated domains of ``data``. A row whose ``<models_dir>/<row>/model-best`` exists
    is reused, not retrained, unless ``retrain``; a reused model trained with another seed,
    domains or overrides is reported through ``log``. Each model is selected (model-best)
    on the dev data of its own training domains, so in-domain dev scores are slightly
    optimistic when ``data`` is the dev split.

    Args:
        config_path: Training config (e.g. configs/bio_cnn.cfg).
        domains: Row/column domains ("news,legal", "all-but:web", or a list).
        joint: A source domain; adds rows trained on source+target for every other domain.
        train_path / dev_path: Split directories for training and model selection.
        data: The split directory scored (default corpus/dev).
        models_dir: Row models go to ``<models_dir>/<row>/model-best``.
        output: JSON path; Markdown (.md) and heatmap (.png) are written beside it.
        seed: The one seed for every training.
        overrides: Config overrides, e.g. {"training.max_steps": 20}.
        retrain: Retrain rows whose model exists.
        batch_size: ``nlp.pipe`` batch size for scoring.
        verbose: Print spaCy's training tables.
        progress: Show a progress bar over the rows.
        log: Where messages go (reuse, training, outputs).

    Returns:
        The matrix as written to ``output``.

    Raises:
        AdaptnerError: an unknown domain, missing data, a bad config (from training).
    """
    overrides = dict(overrides or {})
    output = Path(output)
    if output.suffix != ".json":
        raise AdaptnerError(f"--output {output} must be a .json path (.md and .png go beside it).")
    beside = [output.with_suffix(".md"), output.with_suffix(".png")]
    check_output_file(output, "matrix", beside=beside)
    models_dir = Path(models_dir)
    if not Path(config_path).exists():
        raise AdaptnerError(
            f"Config file {config_path} does not exist{relative_to_cwd(config_path)}."
        )
    found = available_domains(train_path)
    train_available = [d for d in DOMAINS if d in found] + [d for d in found if d not in DOMAINS]
    cols = select_domains(domains, train_available, train_path)
    if joint is not None:
        sources = select_domains(joint, train_available, train_path)
        if len(sources) != 1:
            raise AdaptnerError(f"--joint takes one source domain, got {joint!r}.")
        joint = sources[0]
        if not [d for d in cols if d != joint]:
            raise AdaptnerError(f"--joint {joint} needs at least one other domain in --domains.")
    gold = load_eval_docs(data, cols, Vocab())  # fail on bad data before any training
    split = split_name(data, [doc for docs in gold.values() for doc in docs])
    rows = plan_rows(cols, joint)

    cells: dict[str, dict[str, Any]] = {}
    row_meta: dict[str, dict[str, Any]] = {}
    bar = tqdm(rows, desc="matrix rows", unit="row", disable=not progress)
    for row in bar:
        bar.set_postfix_str(row.name)
        out_dir = models_dir / row.name
        best = out_dir / "model-best"
        trained = False
        if (best / "config.cfg").exists() and not retrain:
            log(f"↻ reusing {best} (exists; --retrain to train it again)")
            notes = _check_reuse(row, out_dir, seed, overrides)
            if notes:
                log(f"⚠ {best} was trained with {'; '.join(notes)}; pass --retrain to redo it")
        else:
            log(f"⏳ training {row.name} on {row.domains_spec} -> {best}")
            start = time.perf_counter()
            train_pipeline(
                config_path,
                out_dir,
                train_path=train_path,
                dev_path=dev_path,
                train_domains=row.domains_spec,
                seed=seed,
                overrides=overrides,
                verbose=verbose,
            )
            trained = True
            log(f"✔ trained {row.name} in {time.perf_counter() - start:.1f} s")
        nlp = load_pipeline(best)
        report = evaluate_docs(nlp, gold, batch_size=batch_size)
        cells[row.name] = {
            col: {
                k: report["per_domain"][col][k]
                for k in ("ents_p", "ents_r", "ents_f", "docs", "gold_ents", "pred_ents")
            }
            for col in cols
        }
        for col in cols:
            if not cells[row.name][col]["gold_ents"]:
                cells[row.name][col]["ents_f"] = None
        row_meta[row.name] = {
            "train_domains": list(row.train_domains),
            "joint": row.joint,
            "model": str(best),
            "trained_now": trained,
            "words_per_second": report["speed"]["words_per_second"],
        }
    bar.close()

    matrix = {
        "config": str(config_path),
        "data": str(data),
        "split": split,
        "seed": seed,
        "overrides": overrides,
        "metric": "ents_f: span F1, micro within each evaluated domain (adaptner.scoring)",
        "rows": [r.name for r in rows],
        "cols": cols,
        "ents_f": [[cells[r.name][c]["ents_f"] for c in cols] for r in rows],
        "cells": cells,
        "row_meta": row_meta,
        "summary": _row_summary(rows, cols, cells),
    }
    md_path, png_path = output.with_suffix(".md"), output.with_suffix(".png")
    write_json(output, matrix)
    write_text(md_path, matrix_to_markdown(matrix))
    plot_heatmap(matrix, png_path)
    log(f"✔ wrote {output}, {md_path} and {png_path}")
    return matrix


def _row_summary(
    rows: Sequence[MatrixRow], cols: Sequence[str], cells: dict[str, dict[str, Any]]
) -> dict[str, dict[str, float | None]]:
    """Per row: F on its own domain(s) and the mean F on the domains it did not train on."""
    out: dict[str, dict[str, float | None]] = {}
    for row in rows:
        own = [cells[row.name][c]["ents_f"] for c in cols if c in row.train_domains]
        other = [cells[row.name][c]["ents_f"] for c in cols if c not in row.train_domains]
        own = [f for f in own if f is not None]
        other = [f for f in other if f is not None]
        out[row.name] = {
            "in_domain": sum(own) / len(own) if own else None,
            "out_of_domain_mean": sum(other) / len(other) if other else None,
        }
    return out


def _fmt(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def matrix_to_markdown(matrix: dict[str, Any]) -> str:
    """The matrix as a Markdown table (F1 in %), rows = trained on, columns = evaluated on."""
    cols = matrix["cols"]
    lines = [
        "# Cross-domain NER matrix",
        "",
        f"Span F1 (%) scored on **{matrix['split']}** ({matrix['data']}); rows = trained on, "
        f"columns = evaluated on. Config {matrix['config']}, seed {matrix['seed']}"
        + (f", overrides {matrix['overrides']}" if matrix["overrides"] else "")
        + ". Model-best is selected on the dev data of the row's own domains.",
        "",
        "| trained on \\ evaluated on | " + " | ".join(cols) + " | out-of-domain mean |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for name, values in zip(matrix["rows"], matrix["ents_f"], strict=True):
        trained = set(matrix["row_meta"][name]["train_domains"])
        cells = [
            f"**{_fmt(v)}**" if c in trained else _fmt(v) for c, v in zip(cols, values, strict=True)
        ]
        ood = matrix["summary"][name]["out_of_domain_mean"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(ood)} |")
    lines += [
        "",
        "Bold: the row was trained on that domain. –: undefined (no gold entities in that "
        "domain, or no domain left out of the row's training).",
        "",
    ]
    return "\n".join(lines)


def plot_heatmap(matrix: dict[str, Any], path: PathLike) -> Path:
    """An annotated heatmap PNG of the F1 matrix (Agg backend; written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy

    rows, cols = matrix["rows"], matrix["cols"]
    values = numpy.array(
        [[numpy.nan if v is None else 100 * v for v in row] for row in matrix["ents_f"]],
        dtype=float,
    )
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 3, 0.6 * len(rows) + 2.2))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("trained on")
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = values[i, j]
            text = "–" if numpy.isnan(v) else f"{v:.1f}"
            color = "black" if not numpy.isnan(v) and v > 60 else "white"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    n_single = sum(1 for name in rows if not matrix["row_meta"][name]["joint"])
    if n_single < len(rows):
        ax.axhline(n_single - 0.5, color="white", linewidth=2)
    ax.set_title(f"Cross-domain span F1 (%) — scored on {matrix['split']}")
    fig.colorbar(image, ax=ax, label="F1 (%)")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
