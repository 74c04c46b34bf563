"""A synthetic-noise study of AUM flags: flip a share of the entity labels, flag, clean, retrain.

For every noise rate: flip that share of entity spans, measure AUM on the noisy docs, and
compare the F1 of models trained on the clean, noisy, sieved (flagged spans removed) and
flipped (flagged spans relabelled) docs; F1 is :mod:`adaptner.scoring`'s.
"""

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
from spacy.tokens import Doc

from ..components.bio_ner import spans_to_bio
from ..errors import AdaptnerError
from .aum import (
    DEFAULT_PERCENTILE,
    SpanFlag,
    TrainSpec,
    config_labels,
    doc_bio,
    entity_spans,
    find_flags,
    measure_aum,
    train_on_docs,
    with_bio,
)

# --- synthetic noise ------------------------------------------------------------------------


@dataclass(frozen=True)
class Flip:
    """One injected label error: the span (doc, start, end) had ``old``, now has ``new``."""

    doc: int
    start: int
    end: int
    old: str
    new: str


def inject_noise(
    docs: Sequence[Doc], fraction: float, rng: numpy.random.Generator
) -> tuple[list[Doc], list[Flip]]:
    """Flip the label of ``fraction`` of the entity spans (chosen uniformly).

    The new label is drawn from the other labels in proportion to their frequency in
    ``docs``, so confusions go mostly to common types, as real annotation errors do.

    Raises:
        AdaptnerError: a fraction outside (0, 1], or fewer than two labels to flip between.
    """
    if not 0.0 < fraction <= 1.0:
        raise AdaptnerError(f"Noise fraction must be in (0, 1], got {fraction}.")
    spans = entity_spans(docs)
    freq = Counter(label for *_, label in spans)
    if len(freq) < 2:
        raise AdaptnerError(
            f"Need at least two entity labels to flip between; the docs have {len(freq)}."
        )
    labels = sorted(freq)
    n = int(round(fraction * len(spans)))
    chosen = sorted(rng.choice(len(spans), n, replace=False)) if n else []
    flips: list[Flip] = []
    tags = {d: doc_bio(docs[d]) for d in {spans[i][0] for i in chosen}}
    for i in chosen:
        d, s, e, old = spans[i]
        others = [lab for lab in labels if lab != old]
        weights = numpy.array([freq[lab] for lab in others], dtype="float64")
        new = others[int(rng.choice(len(others), p=weights / weights.sum()))]
        tags[d][s:e] = spans_to_bio(e - s, [(0, e - s, new)])
        flips.append(Flip(d, s, e, old, new))
    out = list(docs)
    for d, t in tags.items():
        out[d] = with_bio(docs[d], t)
    return out, flips


# --- cleaning ---------------------------------------------------------------------------


def sieve(docs: Sequence[Doc], flags: Sequence[SpanFlag]) -> list[Doc]:
    """Copies of ``docs`` where flagged gold spans are removed: their tokens become missing
    annotation (ignored by the loss), the rest of each sentence is kept."""
    out = list(docs)
    for d in sorted({f.doc for f in flags if f.label != "O"}):
        tags = doc_bio(docs[d])
        for f in flags:
            if f.doc == d and f.label != "O":
                for i in range(f.start, f.end):
                    tags[i] = None
        out[d] = with_bio(docs[d], tags)
    return out


def flip(docs: Sequence[Doc], flags: Sequence[SpanFlag]) -> list[Doc]:
    """Copies of ``docs`` where each flagged gold span gets the models' predicted label
    (same boundaries; "O" removes the entity; unchanged when the prediction is the gold)."""
    out = list(docs)
    for d in sorted({f.doc for f in flags if f.label != "O"}):
        tags = doc_bio(docs[d])
        for f in flags:
            if f.doc == d and f.label != "O" and f.predicted != f.label:
                if f.predicted == "O":
                    tags[f.start : f.end] = ["O"] * (f.end - f.start)
                else:
                    tags[f.start : f.end] = spans_to_bio(
                        f.end - f.start, [(0, f.end - f.start, f.predicted)]
                    )
        out[d] = with_bio(docs[d], tags)
    return out


def flag_precision_recall(
    flags: Sequence[SpanFlag], flips: Sequence[Flip]
) -> dict[str, float | int]:
    """Precision and recall of the flagged gold spans against the injected flips (exact span)."""
    flagged = {(f.doc, f.start, f.end) for f in flags if f.label != "O"}
    noisy = {(f.doc, f.start, f.end) for f in flips}
    hit = len(flagged & noisy)
    return {
        "flagged": len(flagged),
        "flipped": len(noisy),
        "true_positives": hit,
        "precision": hit / len(flagged) if flagged else 0.0,
        "recall": hit / len(noisy) if noisy else 0.0,
    }


# --- evaluation -------------------------------------------------------------------------


def ner_f1(model_dir: str | Path, gold_docs: Sequence[Doc]) -> dict[str, float]:
    """Span P/R/F (micro) of a trained pipeline on gold Docs (:mod:`adaptner.scoring`)."""
    from ..evaluation import load_pipeline
    from ..scoring import score_ner

    scores = score_ner(load_pipeline(model_dir), gold_docs)
    return {k: scores[k] for k in ("ents_p", "ents_r", "ents_f")}


def noise_experiment(
    docs: Sequence[Doc],
    dev_docs: Sequence[Doc],
    spec: TrainSpec,
    work_dir: str | Path,
    *,
    rates: Sequence[float] = (0.1, 0.2),
    percentile: float = DEFAULT_PERCENTILE,
    also_percentiles: Sequence[float] = (50.0, 90.0),
    fake_count: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Inject label noise, flag it with AUM, and compare training on clean / noisy / cleaned data.

    For every rate: flip that share of entity spans (:func:`inject_noise`), measure AUM on the
    noisy docs, report precision / recall of the flagged spans against the flipped ones, and
    the dev F1 of training (a fixed number of epochs, last model) on the noisy docs, on the
    noisy docs with flagged spans removed (:func:`sieve`) and relabelled (:func:`flip`). The
    clean docs' F1 is trained once.

    Args:
        docs: Clean training docs.
        dev_docs: Gold docs for the F1 (clean).
        spec: Training settings (shared by every training).
        work_dir: Folder for every training (``clean/``, ``noise_10/...``).
        rates: Noise fractions, e.g. (0.1, 0.2).
        percentile: AUM threshold percentile (used for sieving and flipping).
        also_percentiles: Further percentiles whose flag precision / recall is reported too
            (from the same AUM runs; no extra training).
        fake_count: Fake tokens per AUM run (default N / (n_tags + 1)).
        progress: Called with a message before each training.

    Returns:
        ``{"clean": {...F1}, "rates": [{rate, precision, recall, ..., f1: {noisy, sieved,
        flipped}}]}``.
    """
    if not dev_docs:
        raise AdaptnerError("The noise experiment needs dev docs to score on; none were given.")
    work_dir = Path(work_dir)
    say = progress or (lambda msg: None)
    labels = config_labels(spec.config, docs)
    say("training on the clean docs")
    clean = ner_f1(train_on_docs(spec, docs, work_dir / "clean"), dev_docs)
    rows = []
    for rate in rates:
        tag = f"noise_{int(round(rate * 100))}"
        rng = numpy.random.default_rng([spec.seed, int(round(rate * 1000))])
        noisy, flips = inject_noise(docs, rate, rng)
        result = measure_aum(
            noisy,
            spec,
            work_dir / tag / "aum",
            percentile=percentile,
            fake_count=fake_count,
            labels=labels,
            progress=lambda m, tag=tag: say(f"{tag}: {m}"),
        )
        flags = find_flags(noisy, result)
        pr = flag_precision_recall(flags, flips)
        by_percentile = {}
        for p in sorted({*also_percentiles, percentile}):
            at_p = result.at_percentile(p)
            by_percentile[f"{p:g}"] = {
                "threshold": at_p.threshold,
                **flag_precision_recall(find_flags(noisy, at_p), flips),
            }
        f1 = {}
        for name, train_docs in (
            ("noisy", noisy),
            ("sieved", sieve(noisy, flags)),
            ("flipped", flip(noisy, flags)),
        ):
            say(f"{tag}: training on the {name} docs")
            f1[name] = ner_f1(train_on_docs(spec, train_docs, work_dir / tag / name), dev_docs)
        corrected = sum(
            1
            for f in flags
            if f.label != "O"
            and any(
                (x.doc, x.start, x.end) == (f.doc, f.start, f.end) and x.old == f.predicted
                for x in flips
            )
        )
        rows.append(
            {
                "rate": rate,
                "spans": len(entity_spans(docs)),
                **pr,
                "flips_restored_by_flipping": corrected,
                "threshold": result.threshold,
                "percentile": percentile,
                "by_percentile": by_percentile,
                "f1": f1,
            }
        )
    return {"clean": clean, "rates": rows, "epochs": spec.epochs, "seed": spec.seed}


def noise_markdown(report: dict[str, Any], domain: str) -> str:
    """The noise experiment as Markdown tables (flag quality; F1 by training data)."""
    lines = [
        f"# AUM on synthetic label noise: {domain}",
        "",
        f"Entity spans flipped to another label at random; AUM from two fake-class runs of "
        f"{report['epochs']} epochs (seed {report['seed']}). A gold span is flagged when the "
        "mean AUM of its tokens is at or below the threshold (a percentile of the fake tokens' "
        f"AUM); precision and recall against the flipped spans. F1 = span F1 on {domain} dev "
        "of the last model after the same number of epochs; sieving and flipping use the "
        "flags at the main percentile.",
        "",
        "| noise | percentile | threshold | flipped | flagged | precision | recall |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rates"]:
        main = f"{r.get('percentile', 99.0):g}"
        for pct, q in r.get("by_percentile", {main: r}).items():
            mark = " (main)" if pct == main else ""
            lines.append(
                f"| {r['rate']:.0%} | {pct}{mark} | {q['threshold']:.2f} | {q['flipped']} | "
                f"{q['flagged']} | {q['precision']:.3f} | {q['recall']:.3f} |"
            )
    lines += [
        "",
        "| noise | clean F1 | noisy F1 | sieved F1 | flipped F1 | flips undone by flipping |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rates"]:
        f = r["f1"]
        lines.append(
            f"| {r['rate']:.0%} | {report['clean']['ents_f']:.3f} | {f['noisy']['ents_f']:.3f} | "
            f"{f['sieved']['ents_f']:.3f} | {f['flipped']['ents_f']:.3f} | "
            f"{r['flips_restored_by_flipping']} of {r['flipped']} |"
        )
    return "\n".join(lines) + "\n"
