"""Data-map outputs: token and sentence tables, a PNG per domain, the hardest sentences."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy

from ..components.bio_ner import bio_to_spans
from ..errors import AdaptnerError
from ..util import atomic_path, write_json, write_text
from .stats import CONF_THRESHOLD, REGIONS, VAR_THRESHOLD, DataMap, regions

#: Table formats understood by :func:`write_table`.
TABLE_FORMATS = ("parquet", "csv")

#: Colours of the region labels in the plots.
REGION_COLOURS = {"easy-to-learn": "#1a7f37", "ambiguous": "#9a6700", "hard-to-learn": "#cf222e"}


def doc_text(words: Sequence[str], spaces: Sequence[bool]) -> str:
    """The text of a doc from its words and trailing-space flags."""
    return "".join(w + (" " if s else "") for w, s in zip(words, spaces, strict=True))


def entities_text(words: Sequence[str], tags: Sequence[str | None]) -> str:
    """Entities of a BIO sequence as ``LABEL: words`` joined by "; " (unknown tags as O)."""
    spans = bio_to_spans([t or "O" for t in tags])
    return "; ".join(f"{label}: {' '.join(words[s:e])}" for s, e, label in spans)


def write_table(path: str | Path, columns: dict[str, Sequence[Any]], fmt: str) -> Path:
    """Write columns as Parquet or CSV (atomically); returns the path.

    Raises:
        AdaptnerError: an unknown format.
    """
    import pyarrow
    import pyarrow.csv
    import pyarrow.parquet

    if fmt not in TABLE_FORMATS:
        raise AdaptnerError(
            f"Unknown table format {fmt!r}; choose from {', '.join(TABLE_FORMATS)}."
        )
    table = pyarrow.table(
        {
            k: list(v) if isinstance(v, numpy.ndarray) and v.dtype == object else v
            for k, v in columns.items()
        }
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            pyarrow.parquet.write_table(table, tmp)
        else:
            pyarrow.csv.write_csv(table, tmp)
    return path


def _float_col(values: numpy.ndarray) -> numpy.ndarray:
    return numpy.round(numpy.asarray(values, dtype="float64"), 6)


def token_table(
    dm: DataMap, domains: Sequence[str] | None = None, **thresholds: float
) -> dict[str, Any]:
    """Columns of the token table (selected tokens of ``domains``, default all): stats, word,
    gold and final prediction."""
    dyn = dm.dynamics
    docs = dyn.docs()
    mask = dm.token_mask
    if domains is not None:
        mask = mask & numpy.isin(dyn.domains()[dyn.doc], list(domains))
    idx = numpy.flatnonzero(mask)
    t = dm.tokens.subset(idx)
    doc, tok = dyn.doc[idx], dyn.token[idx]
    tags = numpy.array(dyn.tags, dtype=object)
    return {
        "domain": [docs[d].get("domain") or "unknown" for d in doc],
        "doc": doc.astype("int64"),
        "token": tok.astype("int64"),
        "word": [docs[d]["words"][i] for d, i in zip(doc, tok, strict=True)],
        "gold": list(tags[dyn.gold[idx]]),
        "pred": list(tags[dm.last_pred[idx]]),
        "confidence": _float_col(t.confidence),
        "variability": _float_col(t.variability),
        "correctness": _float_col(t.correctness),
        "aum": _float_col(t.aum),
        "n_epochs": t.n_epochs.astype("int64"),
        "region": list(regions(t.confidence, t.variability, **thresholds)),
    }


def predicted_tags(dm: DataMap, doc: int) -> list[str]:
    """The final snapshot's predicted tags of one doc."""
    dyn = dm.dynamics
    rows = numpy.flatnonzero(dyn.doc == doc)
    out = ["O"] * len(dyn.docs()[doc]["words"])
    for r in rows:
        out[int(dyn.token[r])] = dyn.tags[int(dm.last_pred[r])]
    return out


def sentence_table(
    dm: DataMap, domains: Sequence[str] | None = None, **thresholds: float
) -> dict[str, Any]:
    """Columns of the sentence table (sentences of ``domains`` with selected tokens): text,
    gold entities, stats."""
    docs = dm.dynamics.docs()
    sel = dm.sentences.n_epochs > 0
    if domains is not None:
        sel &= numpy.isin(dm.dynamics.domains(), list(domains))
    keep = numpy.flatnonzero(sel)
    s = dm.sentences.subset(keep)
    counts = numpy.bincount(dm.dynamics.doc[dm.token_mask], minlength=len(docs))
    return {
        "domain": [docs[d].get("domain") or "unknown" for d in keep],
        "doc": keep.astype("int64"),
        "source": [docs[d].get("source") or "" for d in keep],
        "text": [doc_text(docs[d]["words"], docs[d]["spaces"]) for d in keep],
        "gold_entities": [entities_text(docs[d]["words"], docs[d]["gold"]) for d in keep],
        "n_tokens": counts[keep].astype("int64"),
        "confidence": _float_col(s.confidence),
        "variability": _float_col(s.variability),
        "correctness": _float_col(s.correctness),
        "n_epochs": s.n_epochs.astype("int64"),
        "region": list(regions(s.confidence, s.variability, **thresholds)),
    }


def plot_datamap(
    panels: Sequence[tuple[str, numpy.ndarray, numpy.ndarray, numpy.ndarray]],
    path: str | Path,
    *,
    title: str,
    conf_threshold: float = CONF_THRESHOLD,
    var_threshold: float = VAR_THRESHOLD,
    max_points: int = 20000,
    seed: int = 0,
) -> Path:
    """Write a data-map PNG: per panel, variability (x) against confidence (y), coloured by
    correctness, with the easy / ambiguous / hard-to-learn regions marked.

    Args:
        panels: (panel title, confidence, variability, correctness) per panel.
        path: The PNG to write (atomically).
        title: The figure title.
        max_points: Plot at most this many points per panel (a seeded random sample).
        seed: Seed of the sample.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = numpy.random.default_rng(seed)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.2 * len(panels), 5.6), squeeze=False, layout="constrained"
    )
    scatter = None
    for ax, (name, conf, var, corr) in zip(axes[0], panels, strict=True):
        conf, var, corr = (numpy.asarray(a, dtype="float64") for a in (conf, var, corr))
        ok = numpy.flatnonzero(~(numpy.isnan(conf) | numpy.isnan(var)))
        n_total = len(ok)
        if len(ok) > max_points:
            ok = numpy.sort(rng.choice(ok, max_points, replace=False))
        scatter = ax.scatter(
            var[ok],
            conf[ok],
            c=corr[ok],
            cmap="RdYlBu",
            vmin=0.0,
            vmax=1.0,
            s=9,
            alpha=0.6,
            linewidths=0,
        )
        x_max = max(0.5, float(numpy.nanmax(var[ok])) * 1.05 if len(ok) else 0.5)
        ax.axvline(var_threshold, color="0.3", lw=1, ls="--")
        ax.hlines(conf_threshold, 0, var_threshold, color="0.3", lw=1, ls="--")
        label_kw = {
            "fontsize": 10,
            "weight": "bold",
            "ha": "center",
            "va": "center",
            "bbox": {"boxstyle": "round", "fc": "white", "alpha": 0.8},
        }
        counts = (
            dict(
                zip(
                    *numpy.unique(
                        regions(
                            conf[ok],
                            var[ok],
                            conf_threshold=conf_threshold,
                            var_threshold=var_threshold,
                        ),
                        return_counts=True,
                    ),
                    strict=True,
                )
            )
            if len(ok)
            else {}
        )
        spots = {
            "easy-to-learn": (var_threshold / 2, (1 + conf_threshold) / 2),
            "hard-to-learn": (var_threshold / 2, conf_threshold / 2 - 0.15),
            "ambiguous": ((var_threshold + x_max) / 2, 0.5),
        }
        for region in REGIONS:
            x, y = spots[region]
            share = counts.get(region, 0) / max(len(ok), 1)
            ax.text(x, y, f"{region}\n{share:.0%}", color=REGION_COLOURS[region], **label_kw)
        ax.set_xlim(0, x_max)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("variability")
        ax.set_ylabel("confidence")
        shown = f"{len(ok)} of {n_total}" if len(ok) < n_total else f"{n_total}"
        ax.set_title(f"{name} ({shown})")
    if scatter is not None:
        fig.colorbar(scatter, ax=list(axes[0]), label="correctness", shrink=0.9)
    fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def hardest_markdown(
    dm: DataMap, domains: Sequence[str], *, top: int = 10, **thresholds: float
) -> str:
    """A Markdown list of each domain's hardest sentences (lowest confidence first)."""
    docs = dm.dynamics.docs()
    s = dm.sentences
    reg = regions(s.confidence, s.variability, **thresholds)
    dom = dm.dynamics.domains()
    which = "entity tokens (gold tag not O)" if dm.exclude_o else "all tokens"
    lines = [
        "# Hardest training sentences",
        "",
        f"Data-map statistics over {dm.dynamics.n_snapshots} epochs, computed on {which}; "
        "lowest confidence (mean probability of the gold tags) first. Variability is the "
        "standard deviation of that probability across epochs, correctness the share of epochs "
        "in which every counted token was tagged correctly.",
        "",
    ]
    for domain in domains:
        idx = numpy.flatnonzero((dom == domain) & (s.n_epochs > 0))
        counts = {r: int(numpy.sum(reg[idx] == r)) for r in REGIONS}
        lines += [
            f"## {domain}",
            "",
            f"{len(idx)} sentences: " + ", ".join(f"{counts[r]} {r}" for r in REGIONS) + ".",
            "",
        ]
        order = idx[numpy.lexsort((s.variability[idx], s.confidence[idx]))][:top]
        for rank, d in enumerate(order, start=1):
            doc = docs[d]
            gold = entities_text(doc["words"], doc["gold"]) or "(none)"
            pred = entities_text(doc["words"], predicted_tags(dm, int(d))) or "(none)"
            lines += [
                f"{rank}. **confidence {s.confidence[d]:.3f}, variability "
                f"{s.variability[d]:.3f}, correctness {s.correctness[d]:.2f}** ({reg[d]}; "
                f"doc {d}, {doc.get('source') or 'no source'})  ",
                f"   {_md(doc_text(doc['words'], doc['spaces']))}  ",
                f"   gold: {_md(gold)}  ",
                f"   predicted (last epoch): {_md(pred)}",
                "",
            ]
    return "\n".join(lines) + "\n"


def region_summary(dm: DataMap, domains: Sequence[str], **thresholds: float) -> dict[str, Any]:
    """Per domain: counts per region and mean statistics, for tokens and sentences."""
    dom_docs = dm.dynamics.domains()
    dom_tokens = dom_docs[dm.dynamics.doc]
    out: dict[str, Any] = {}
    for domain in domains:
        entry: dict[str, Any] = {}
        for unit, st, sel in (
            ("tokens", dm.tokens, dm.token_mask & (dom_tokens == domain)),
            ("sentences", dm.sentences, (dom_docs == domain) & (dm.sentences.n_epochs > 0)),
        ):
            sub = st.subset(numpy.flatnonzero(sel))
            reg = regions(sub.confidence, sub.variability, **thresholds)
            entry[unit] = {
                "n": len(sub),
                "regions": {r: int(numpy.sum(reg == r)) for r in REGIONS},
                "mean_confidence": float(numpy.nanmean(sub.confidence)) if len(sub) else None,
                "mean_variability": float(numpy.nanmean(sub.variability)) if len(sub) else None,
                "mean_correctness": float(numpy.nanmean(sub.correctness)) if len(sub) else None,
            }
        out[domain] = entry
    return out


def record_training_dynamics(
    config: str | Path,
    output_dir: str | Path,
    *,
    domains: str = "all",
    epochs: int = 10,
    train_path: str | Path = "corpus/train",
    dev_path: str | Path = "corpus/dev",
    every_n_steps: int = 0,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    verbose: bool = False,
) -> Path:
    """Train a pipeline for ``epochs`` epochs with the dynamics callback on.

    Writes ``<output_dir>/model/`` (model-best, model-last) and ``<output_dir>/dynamics/``
    (atomically: a killed run leaves no half recording).

    Returns:
        The dynamics directory.

    Raises:
        AdaptnerError: the config already uses [training.before_update] / before_to_disk.
    """
    from ..training import load_training_config, train_pipeline
    from .callback import dynamics_overrides

    if epochs < 1:
        raise AdaptnerError(f"epochs must be at least 1, got {epochs}.")
    output_dir = Path(output_dir)
    opts = dict(overrides or {})
    cfg = load_training_config(config, overrides=opts)
    for hook in ("before_update", "before_to_disk"):
        if cfg["training"].get(hook) is not None:
            raise AdaptnerError(
                f"{config}: [training.{hook}] is already set; recording needs it for the "
                "dynamics callback. Set it to null, or train with your own config and read "
                "its recording with --dynamics."
            )
    opts.update({"training.max_epochs": epochs, "training.max_steps": 0, "training.patience": 0})
    dyn_dir = output_dir / "dynamics"
    with atomic_path(dyn_dir, is_dir=True) as tmp:
        opts.update(dynamics_overrides(tmp, every_n_steps=every_n_steps))
        train_pipeline(
            config,
            output_dir / "model",
            train_path=train_path,
            dev_path=dev_path,
            train_domains=domains,
            seed=seed,
            overrides=opts,
            verbose=verbose,
        )
    return dyn_dir


def write_datamap(
    dm: DataMap,
    output_dir: str | Path,
    *,
    domains: Sequence[str] | None = None,
    fmt: str = "parquet",
    top: int = 10,
    conf_threshold: float = CONF_THRESHOLD,
    var_threshold: float = VAR_THRESHOLD,
    max_points: int = 20000,
    seed: int = 0,
) -> dict[str, Any]:
    """Write tables, one PNG per domain, ``hardest.md`` and ``summary.json`` into ``output_dir``.

    Args:
        dm: The computed data map.
        output_dir: Destination folder (created).
        domains: Domains to plot and list (default: every domain in the recording).
        fmt: "parquet" or "csv" for ``tokens.*`` and ``sentences.*``.
        top: Hardest sentences listed per domain.
        conf_threshold / var_threshold: Region boundaries.
        max_points: Points per plot panel (a seeded sample beyond that).
        seed: Seed of the plot sample.

    Returns:
        The summary (also in ``summary.json``), with the written paths under "files".

    Raises:
        AdaptnerError: a requested domain is not in the recording.
    """
    output_dir = Path(output_dir)
    present = sorted(set(dm.dynamics.domains()))
    if domains is None:
        domains = present
    missing = [d for d in domains if d not in present]
    if missing:
        raise AdaptnerError(
            f"Domain(s) {', '.join(missing)} not in the recorded dynamics "
            f"(recorded: {', '.join(present)})."
        )
    th = {"conf_threshold": conf_threshold, "var_threshold": var_threshold}
    files: dict[str, Any] = {
        "tokens": str(
            write_table(output_dir / f"tokens.{fmt}", token_table(dm, domains, **th), fmt)
        ),
        "sentences": str(
            write_table(output_dir / f"sentences.{fmt}", sentence_table(dm, domains, **th), fmt)
        ),
        "png": {},
    }
    dom_docs = dm.dynamics.domains()
    dom_tokens = dom_docs[dm.dynamics.doc]
    unit = "entity tokens" if dm.exclude_o else "tokens"
    for domain in domains:
        tok = dm.tokens.subset(numpy.flatnonzero(dm.token_mask & (dom_tokens == domain)))
        sent = dm.sentences.subset(
            numpy.flatnonzero((dom_docs == domain) & (dm.sentences.n_epochs > 0))
        )
        png = plot_datamap(
            [
                (unit, tok.confidence, tok.variability, tok.correctness),
                ("sentences", sent.confidence, sent.variability, sent.correctness),
            ],
            output_dir / f"datamap_{domain}.png",
            title=f"Data map: {domain} ({dm.dynamics.n_snapshots} epochs)",
            max_points=max_points,
            seed=seed,
            **th,
        )
        files["png"][domain] = str(png)
    md = output_dir / "hardest.md"
    write_text(md, hardest_markdown(dm, domains, top=top, **th))
    files["hardest"] = str(md)
    summary = {
        "dynamics": str(dm.dynamics.path),
        "epochs": dm.dynamics.n_snapshots,
        "exclude_o": dm.exclude_o,
        **th,
        "domains": region_summary(dm, domains, **th),
        "files": files,
    }
    write_json(output_dir / "summary.json", summary)
    return summary
