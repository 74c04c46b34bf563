"""Area Under the Margin (Pleiss et al. 2020) for NER: fake-class threshold, flags, Prodigy tasks.

The synthetic-noise study that measures how well the flags find flipped labels is
:mod:`adaptner.dynamics.noise`.
"""

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
from spacy.tokens import Doc, DocBin, Span

from ..components.bio_ner import bio_to_spans
from ..errors import AdaptnerError
from ..util import atomic_path, write_json, write_jsonl, write_text
from .callback import dynamics_overrides
from .stats import compute_datamap, load_dynamics

#: The extra label of the threshold (fake-class) tokens.
FAKE_LABEL = "AUM_FAKE"

#: Default percentile of the fake tokens' AUMs used as the flagging threshold (Pleiss et al.).
DEFAULT_PERCENTILE = 99.0

#: A token-level flag position: (doc index, token index).
Position = tuple[int, int]


# --- BIO helpers ------------------------------------------------------------------------------


def doc_bio(doc: Doc) -> list[str | None]:
    """The BIO tags of a Doc's entities; None where the annotation is missing."""
    out: list[str | None] = []
    for token in doc:
        if token.ent_iob_ == "":
            out.append(None)
        elif token.ent_iob_ == "O":
            out.append("O")
        else:
            out.append(f"{token.ent_iob_}-{token.ent_type_}")
    return out


def with_bio(doc: Doc, tags: Sequence[str | None]) -> Doc:
    """A copy of ``doc`` (tokens, user data) whose entities are ``tags`` (None = missing)."""
    if len(tags) != len(doc):
        raise AdaptnerError(f"{len(tags)} tags for a doc of {len(doc)} tokens.")
    out = doc.copy()
    spans = [Span(out, s, e, label=label) for s, e, label in bio_to_spans([t or "O" for t in tags])]
    missing = [out[i : i + 1] for i, t in enumerate(tags) if t is None]
    out.set_ents(spans, missing=missing, default="outside")
    return out


def entity_spans(docs: Sequence[Doc]) -> list[tuple[int, int, int, str]]:
    """Every gold entity as (doc index, start token, end token, label)."""
    return [(i, e.start, e.end, e.label_) for i, doc in enumerate(docs) for e in doc.ents]


def fake_eligible(tags: Sequence[str | None]) -> numpy.ndarray:
    """Tokens that can join the fake class without changing any other token's tag.

    A token qualifies when its gold tag is known and the next token does not continue an
    entity (its tag is not I-): O tokens, single-token entities and the last token of an
    entity. Relabelling such a token as a one-token fake entity leaves every other tag as it
    was (the entity it ended just becomes one token shorter).
    """
    n = len(tags)
    out = numpy.zeros(n, dtype=bool)
    for i, tag in enumerate(tags):
        nxt = tags[i + 1] if i + 1 < n else None
        out[i] = tag is not None and not (nxt is not None and nxt.startswith("I-"))
    return out


def default_fake_count(n_tokens: int, n_tags: int) -> int:
    """Pleiss et al.'s threshold-set size: N / (c + 1) for N samples and c classes (>= 1)."""
    return max(1, int(round(n_tokens / (n_tags + 1))))


def choose_fake_tokens(
    tag_lists: Sequence[Sequence[str | None]],
    n: int,
    rng: numpy.random.Generator,
    exclude: set[Position] | None = None,
) -> list[Position]:
    """Draw ``n`` eligible tokens (see :func:`fake_eligible`) uniformly, avoiding ``exclude``.

    Fewer are returned when fewer are eligible.
    """
    exclude = exclude or set()
    candidates = [
        (d, int(t))
        for d, tags in enumerate(tag_lists)
        for t in numpy.flatnonzero(fake_eligible(tags))
        if (d, int(t)) not in exclude
    ]
    if not candidates:
        return []
    picked = rng.choice(len(candidates), min(n, len(candidates)), replace=False)
    return sorted(candidates[i] for i in picked)


def add_fake_class(
    docs: Sequence[Doc], positions: Sequence[Position], label: str = FAKE_LABEL
) -> list[Doc]:
    """Copies of ``docs`` where every token in ``positions`` is a one-token ``label`` entity.

    Raises:
        AdaptnerError: a position that is not eligible (it would change a neighbour's tag).
    """
    by_doc: dict[int, list[int]] = {}
    for d, t in positions:
        by_doc.setdefault(d, []).append(t)
    out = list(docs)
    for d, toks in by_doc.items():
        tags = doc_bio(docs[d])
        ok = fake_eligible(tags)
        for t in toks:
            if not ok[t]:
                raise AdaptnerError(
                    f"Token {t} of doc {d} cannot join the fake class: the next token "
                    "continues its entity."
                )
            tags[t] = f"B-{label}"
        out[d] = with_bio(docs[d], tags)
    return out


# --- training runs and AUM ------------------------------------------------------------------


def config_labels(config_path: str | Path, docs: Sequence[Doc]) -> list[str]:
    """The label scheme the config initializes bio_ner with (else the labels in ``docs``)."""
    from confection import Config
    from spacy.util import registry

    from ..training import load_training_config

    config = load_training_config(config_path)
    block = config.get("initialize", {}).get("components", {}).get("bio_ner", {})
    labels = None
    if block.get("labels") is not None:
        labels = registry.resolve(Config({"x": {"labels": block["labels"]}}))["x"]["labels"]
    if labels is None:
        labels = sorted({e.label_ for doc in docs for e in doc.ents})
    return sorted(set(labels) | {e.label_ for doc in docs for e in doc.ents})


def write_docbin(path: str | Path, docs: Sequence[Doc]) -> Path:
    """Write Docs (with user data: domain, source) to a DocBin, atomically."""
    path = Path(path)
    db = DocBin(store_user_data=True)
    for doc in docs:
        db.add(doc)
    with atomic_path(path) as tmp:
        db.to_disk(tmp)
    return path


@dataclass
class TrainSpec:
    """How the AUM and evaluation trainings run.

    Attributes:
        config: Training config (e.g. configs/bio_cnn.cfg).
        dev_path: Dev split directory (model selection inside training; not reported).
        dev_domains: Dev domains for that selection.
        epochs: Epochs per training (max_steps is switched off).
        seed: The one seed.
        overrides: Further config overrides.
        verbose: Show spaCy's training tables.
    """

    config: Path
    dev_path: Path
    dev_domains: str
    epochs: int = 10
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    verbose: bool = False


def train_on_docs(
    spec: TrainSpec,
    docs: Sequence[Doc],
    output_dir: str | Path,
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Train on ``docs`` (written to ``<output_dir>/train.spacy``) for a fixed number of epochs.

    Returns:
        The model-last directory (a fixed number of epochs, so no selection on dev).
    """
    from ..training import train_pipeline

    output_dir = Path(output_dir)
    train_file = write_docbin(output_dir / "train.spacy", docs)
    overrides = {
        "training.max_epochs": spec.epochs,
        "training.max_steps": 0,
        "training.patience": 0,
        "corpora.train.shuffle": False,
        "corpora.train.limit": 0,
        **spec.overrides,
        **(extra or {}),
    }
    train_pipeline(
        spec.config,
        output_dir / "model",
        train_path=train_file,
        dev_path=spec.dev_path,
        train_domains="all",
        dev_domains=spec.dev_domains,
        seed=spec.seed,
        overrides=overrides,
        verbose=spec.verbose,
    )
    return output_dir / "model" / "model-last"


@dataclass
class AUMResult:
    """Token AUMs of a set of docs, measured in two runs with disjoint fake-class subsets.

    Attributes:
        offsets: Flat index of each doc's first token (length n_docs + 1).
        aum: AUM per token (flat), averaged over the runs in which it was not a fake token.
        n_runs: Number of runs that measured each token (0 = unknown gold).
        fake_aum: AUMs of the fake tokens of both runs (pooled).
        threshold: The ``percentile`` of ``fake_aum``; tokens with AUM <= threshold are flagged.
        percentile: The percentile used.
        final_tags: Per run, the final epoch's predicted tag per token (flat; "" where the
            run did not measure it: unknown gold, or a fake token of that run).
        fake_positions: Per run, its fake tokens.
        epochs: Epochs per run.
    """

    offsets: numpy.ndarray
    aum: numpy.ndarray
    n_runs: numpy.ndarray
    fake_aum: numpy.ndarray
    threshold: float
    percentile: float
    final_tags: list[numpy.ndarray]
    fake_positions: list[list[Position]]
    epochs: int

    def at_percentile(self, percentile: float) -> "AUMResult":
        """The same AUMs with the threshold at another percentile of the fake tokens' AUMs."""
        if not 0.0 < percentile <= 100.0:
            raise AdaptnerError(f"Percentile must be in (0, 100], got {percentile}.")
        threshold = float(numpy.percentile(self.fake_aum, percentile))
        return dataclasses.replace(self, threshold=threshold, percentile=percentile)

    def token_aum(self, doc: int, token: int) -> float:
        """AUM of one token."""
        return float(self.aum[self.offsets[doc] + token])

    def span_aum(self, doc: int, start: int, end: int) -> float:
        """Mean AUM of a span's tokens (NaN when none was measured)."""
        vals = self.aum[self.offsets[doc] + start : self.offsets[doc] + end]
        vals = vals[~numpy.isnan(vals)]
        return float(vals.mean()) if len(vals) else math.nan

    def predicted_label(self, doc: int, start: int, end: int) -> str:
        """The label the final models predict most for a span's tokens ("O" for none).

        Votes: one per token and run that measured it; B-/I- merged; the fake label counts
        as O. Ties go to the label seen first.
        """
        votes: Counter[str] = Counter()
        lo, hi = self.offsets[doc] + start, self.offsets[doc] + end
        for tags in self.final_tags:
            for tag in tags[lo:hi]:
                if not tag:
                    continue
                label = "O" if tag == "O" else tag[2:]
                votes["O" if label == FAKE_LABEL else label] += 1
        return votes.most_common(1)[0][0] if votes else "O"


def measure_aum(
    docs: Sequence[Doc],
    spec: TrainSpec,
    work_dir: str | Path,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    fake_count: int | None = None,
    labels: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> AUMResult:
    """Train twice with disjoint fake-class subsets, recording margins; compute token AUMs.

    Every run gives a random subset of eligible tokens the extra label :data:`FAKE_LABEL`
    (:func:`add_fake_class`); the second run's subset avoids the first's, so every token is
    measured at least once with its own label. The threshold is the ``percentile`` of the
    fake tokens' AUMs (the AUM of tokens the model can only memorise).

    Args:
        docs: The training docs (gold, possibly noisy).
        spec: Training settings.
        work_dir: Folder for the two runs (``run_0/``, ``run_1/``: train.spacy, model, dynamics).
        percentile: Percentile of the fake AUMs used as the threshold.
        fake_count: Fake tokens per run (default N / (n_tags + 1)).
        labels: The label scheme (default: the config's, plus labels in ``docs``).
        progress: Called with a short message before each run.

    Raises:
        AdaptnerError: no docs, no tokens, or a bad percentile.
    """
    if not docs or not sum(len(d) for d in docs):
        raise AdaptnerError("AUM needs training docs with tokens; the selection is empty.")
    if not 0.0 < percentile <= 100.0:
        raise AdaptnerError(f"Percentile must be in (0, 100], got {percentile}.")
    work_dir = Path(work_dir)
    labels = list(labels) if labels is not None else config_labels(spec.config, docs)
    if FAKE_LABEL in labels:
        raise AdaptnerError(f"The label scheme already has {FAKE_LABEL!r}; rename that label.")
    n_tags = 2 * (len(labels) + 1) + 1
    lengths = numpy.array([len(d) for d in docs])
    offsets = numpy.concatenate([[0], numpy.cumsum(lengths)]).astype("int64")
    n = int(offsets[-1])
    if fake_count is None:
        fake_count = default_fake_count(n, n_tags)
    rng = numpy.random.default_rng(spec.seed)
    tag_lists = [doc_bio(d) for d in docs]
    sums, counts = numpy.zeros(n), numpy.zeros(n, dtype="int64")
    fake_aum: list[float] = []
    final_tags: list[numpy.ndarray] = []
    fake_sets: list[list[Position]] = []
    used: set[Position] = set()
    for run in range(2):
        fake = choose_fake_tokens(tag_lists, fake_count, rng, exclude=used)
        used.update(fake)
        fake_sets.append(fake)
        run_dir = work_dir / f"run_{run}"
        if progress is not None:
            progress(f"AUM run {run + 1}/2: {len(fake)} fake tokens")
        train_on_docs(
            spec,
            add_fake_class(docs, fake),
            run_dir,
            extra={
                "initialize.components.bio_ner.labels": [*labels, FAKE_LABEL],
                **dynamics_overrides(run_dir / "dynamics"),
            },
        )
        dyn = load_dynamics(run_dir / "dynamics")
        dm = compute_datamap(dyn, exclude_o=False)
        recorded = dyn.docs()
        if len(recorded) != len(docs):
            raise AdaptnerError(
                f"{run_dir / 'dynamics'} recorded {len(recorded)} docs for {len(docs)} "
                "training docs; the training corpus was filtered or limited."
            )
        aligned = numpy.array(
            [r["words"] == [t.text for t in d] for r, d in zip(recorded, docs, strict=True)]
        )
        flat = offsets[dyn.doc] + dyn.token
        ok = aligned[dyn.doc] & dm.token_mask
        is_fake = numpy.zeros(n, dtype=bool)
        for d, t in fake:
            is_fake[offsets[d] + t] = True
        aum = dm.tokens.aum
        own = ok & ~is_fake[flat]
        sums[flat[own]] += aum[own]
        counts[flat[own]] += 1
        fake_rows = ok & is_fake[flat]
        fake_aum.extend(float(x) for x in aum[fake_rows])
        tags = numpy.full(n, "", dtype=object)
        tags[flat[own]] = numpy.array(dyn.tags, dtype=object)[dm.last_pred[own]]
        final_tags.append(tags)
    if not fake_aum:
        raise AdaptnerError("No fake tokens were measured; the docs have no eligible tokens.")
    fake_arr = numpy.array(fake_aum)
    aum = numpy.where(counts > 0, sums / numpy.maximum(counts, 1), numpy.nan)
    return AUMResult(
        offsets=offsets,
        aum=aum,
        n_runs=counts,
        fake_aum=fake_arr,
        threshold=float(numpy.percentile(fake_arr, percentile)),
        percentile=percentile,
        final_tags=final_tags,
        fake_positions=fake_sets,
        epochs=spec.epochs,
    )


# --- flags --------------------------------------------------------------------------------


@dataclass
class SpanFlag:
    """A gold span (or a run of O tokens) whose AUM is at or below the threshold."""

    doc: int
    start: int
    end: int
    label: str  # the gold label; "O" for a run of O tokens
    aum: float
    predicted: str  # the label the final models predict most
    reason: str


def score_spans(docs: Sequence[Doc], result: AUMResult) -> list[dict[str, Any]]:
    """Every gold entity span with its AUM (mean over its tokens) and whether it is flagged."""
    out = []
    for d, s, e, label in entity_spans(docs):
        aum = result.span_aum(d, s, e)
        out.append(
            {
                "doc": d,
                "start": s,
                "end": e,
                "label": label,
                "aum": aum,
                "flagged": bool(aum <= result.threshold),
            }
        )
    return out


def find_flags(docs: Sequence[Doc], result: AUMResult) -> list[SpanFlag]:
    """Flagged gold spans, and runs of flagged gold-O tokens (possibly missed entities).

    Sorted by AUM, lowest (most suspicious) first.
    """
    th = result.threshold
    flags: list[SpanFlag] = []
    for sp in score_spans(docs, result):
        if sp["flagged"]:
            pred = result.predicted_label(sp["doc"], sp["start"], sp["end"])
            flags.append(
                SpanFlag(
                    sp["doc"],
                    sp["start"],
                    sp["end"],
                    sp["label"],
                    sp["aum"],
                    pred,
                    f"AUM {sp['aum']:.2f} <= threshold {th:.2f}: the model keeps preferring "
                    f"{'no entity' if pred == 'O' else pred} over the gold {sp['label']}",
                )
            )
    for d, doc in enumerate(docs):
        tags = doc_bio(doc)
        i = 0
        while i < len(doc):
            a = result.token_aum(d, i)
            if tags[i] == "O" and not math.isnan(a) and a <= th:
                j = i
                while (
                    j + 1 < len(doc)
                    and tags[j + 1] == "O"
                    and not math.isnan(result.token_aum(d, j + 1))
                    and result.token_aum(d, j + 1) <= th
                ):
                    j += 1
                aum = result.span_aum(d, i, j + 1)
                pred = result.predicted_label(d, i, j + 1)
                flags.append(
                    SpanFlag(
                        d,
                        i,
                        j + 1,
                        "O",
                        aum,
                        pred,
                        f"AUM {aum:.2f} <= threshold {th:.2f} on tokens annotated as no "
                        f"entity: possibly a missed {pred if pred != 'O' else 'entity'}",
                    )
                )
                i = j + 1
            else:
                i += 1
    flags.sort(key=lambda f: (f.aum, f.doc, f.start))
    return flags


def prodigy_tasks(
    docs: Sequence[Doc], flags: Sequence[SpanFlag], result: AUMResult
) -> list[dict[str, Any]]:
    """One Prodigy ``ner_manual`` task per doc with flags, most suspicious first.

    The doc's original annotation is pre-filled in ``spans`` (``token_end`` inclusive, as
    Prodigy expects); ``meta`` holds the lowest AUM, the reason, the threshold and where the
    doc comes from; ``flags`` lists every flag of the doc in full.
    """
    by_doc: dict[int, list[SpanFlag]] = {}
    for f in flags:
        by_doc.setdefault(f.doc, []).append(f)
    order = sorted(by_doc, key=lambda d: min(f.aum for f in by_doc[d]))
    tasks = []
    for d in order:
        doc = docs[d]
        fl = sorted(by_doc[d], key=lambda f: f.aum)
        tokens = [
            {
                "text": t.text,
                "start": t.idx,
                "end": t.idx + len(t.text),
                "id": t.i,
                "ws": bool(t.whitespace_),
            }
            for t in doc
        ]
        spans = [
            {
                "start": e.start_char,
                "end": e.end_char,
                "token_start": e.start,
                "token_end": e.end - 1,
                "label": e.label_,
            }
            for e in doc.ents
        ]
        tasks.append(
            {
                "text": doc.text,
                "tokens": tokens,
                "spans": spans,
                "meta": {
                    "aum": round(fl[0].aum, 4),
                    "reason": fl[0].reason,
                    "flagged": "; ".join(
                        f"{doc[f.start : f.end].text!r} {f.label} (AUM {f.aum:.2f})" for f in fl
                    ),
                    "threshold": round(result.threshold, 4),
                    "domain": doc._.domain or "unknown",
                    "source": doc._.source or "",
                    "doc": d,
                },
                "flags": [
                    {
                        "token_start": f.start,
                        "token_end": f.end - 1,
                        "text": doc[f.start : f.end].text,
                        "label": f.label,
                        "predicted": f.predicted,
                        "aum": round(f.aum, 4),
                        "reason": f.reason,
                    }
                    for f in fl
                ],
            }
        )
    return tasks


def summary_markdown(
    docs: Sequence[Doc],
    flags: Sequence[SpanFlag],
    result: AUMResult,
    *,
    top: int = 10,
) -> str:
    """A Markdown summary: the threshold, then per domain and label the flag rate and mean AUM."""
    spans = score_spans(docs, result)
    domains = sorted({d._.domain or "unknown" for d in docs})
    lines = [
        "# AUM label-noise flags",
        "",
        f"Two runs of {result.epochs} epochs with disjoint fake-class subsets "
        f"({', '.join(str(len(p)) for p in result.fake_positions)} fake tokens labelled "
        f"{FAKE_LABEL}). Threshold = {result.percentile:g}th percentile of the fake tokens' "
        f"AUM = **{result.threshold:.3f}**; a span is flagged when the mean AUM of its tokens is "
        "at or below it. AUM also flags correct but hard spans (Pleiss et al. 2020): the flags "
        "are candidates for review, not errors.",
        "",
        f"{sum(f.label != 'O' for f in flags)} of {len(spans)} gold spans flagged; "
        f"{sum(f.label == 'O' for f in flags)} runs of O tokens flagged as possibly missed "
        "entities.",
        "",
    ]
    for domain in domains:
        dom_docs = {i for i, d in enumerate(docs) if (d._.domain or "unknown") == domain}
        ds = [s for s in spans if s["doc"] in dom_docs]
        missed = sum(1 for f in flags if f.label == "O" and f.doc in dom_docs)
        lines += [
            f"## {domain}",
            "",
            f"{sum(s['flagged'] for s in ds)} of {len(ds)} gold spans flagged; {missed} O runs "
            "flagged.",
            "",
            "| label | spans | flagged | flagged % | mean AUM |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for label in sorted({s["label"] for s in ds}):
            ls = [s for s in ds if s["label"] == label]
            k = sum(s["flagged"] for s in ls)
            vals = [s["aum"] for s in ls if not math.isnan(s["aum"])]
            mean = f"{numpy.mean(vals):.2f}" if vals else "–"
            lines.append(f"| {label} | {len(ls)} | {k} | {100 * k / len(ls):.1f} | {mean} |")
        lines += ["", f"Lowest AUM in {domain}:", ""]
        for f in [f for f in flags if f.doc in dom_docs][:top]:
            doc = docs[f.doc]
            text = doc.text.replace("|", "\\|")
            lines.append(
                f"- `{doc[f.start : f.end].text}` gold {f.label}, predicted {f.predicted}, "
                f"AUM {f.aum:.2f} — {text}"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def write_flags(
    docs: Sequence[Doc],
    result: AUMResult,
    output_dir: str | Path,
    *,
    top: int = 10,
) -> dict[str, Any]:
    """Write ``flags.jsonl`` (Prodigy tasks), ``aum_summary.md``, ``spans.jsonl`` (every gold
    span with its AUM) and ``aum.json`` (threshold and counts). Returns the summary dict."""
    output_dir = Path(output_dir)
    flags = find_flags(docs, result)
    spans = score_spans(docs, result)
    write_jsonl(output_dir / "flags.jsonl", prodigy_tasks(docs, flags, result))
    write_jsonl(
        output_dir / "spans.jsonl",
        [
            {
                **s,
                "text": docs[s["doc"]][s["start"] : s["end"]].text,
                "domain": docs[s["doc"]]._.domain or "unknown",
                "aum": None if math.isnan(s["aum"]) else round(s["aum"], 4),
            }
            for s in spans
        ],
    )
    write_text(output_dir / "aum_summary.md", summary_markdown(docs, flags, result, top=top))
    summary = {
        "threshold": result.threshold,
        "percentile": result.percentile,
        "epochs": result.epochs,
        "fake_tokens": [len(p) for p in result.fake_positions],
        "fake_aum_median": float(numpy.median(result.fake_aum)),
        "tokens": int(len(result.aum)),
        "gold_spans": len(spans),
        "flagged_spans": sum(s["flagged"] for s in spans),
        "flagged_o_runs": sum(f.label == "O" for f in flags),
        "flagged_docs": len({f.doc for f in flags}),
        "files": {
            name: str(output_dir / name)
            for name in ("flags.jsonl", "spans.jsonl", "aum_summary.md", "aum.json")
        },
    }
    write_json(output_dir / "aum.json", summary)
    return summary
