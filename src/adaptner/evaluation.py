"""Span-level NER evaluation per domain and label: adaptner.scoring, checked against seqeval."""

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2
from spacy.language import Language
from spacy.tokens import Doc
from spacy.vocab import Vocab
from tqdm import tqdm

from .errors import AdaptnerError
from .labels import DOMAINS
from .readers import available_domains, read_docbin
from .scoring import PRF_KEYS, fresh_doc, ner_prf
from .util import check_output_file, parse_domains, write_json, write_text
from .util import load_pipeline as load_trained

PathLike = str | Path

#: seqeval and spaCy's scorer must agree to this tolerance on every P/R/F they both report.
AGREEMENT_TOLERANCE = 1e-6


# --- loading ------------------------------------------------------------------------------


def load_pipeline(model_dir: PathLike) -> Language:
    """Load a trained pipeline that sets ``doc.ents`` (:func:`adaptner.util.load_pipeline`).

    Raises:
        AdaptnerError: the directory is missing, is not a spaCy pipeline, cannot be
            loaded, or has no component that assigns ``doc.ents``.
    """
    nlp = load_trained(model_dir, "Re-train it or point to another model directory.")
    if not entity_components(nlp):
        raise AdaptnerError(
            f"The pipeline in {model_dir} has no component that sets doc.ents "
            f"(components: {', '.join(nlp.pipe_names) or 'none'}); evaluate an NER pipeline."
        )
    return nlp


def entity_components(nlp: Language) -> list[str]:
    """Names of the enabled components that assign ``doc.ents`` (bio_ner, ner, entity_ruler)."""
    return [name for name in nlp.pipe_names if "doc.ents" in nlp.get_pipe_meta(name).assigns]


def resolve_data_path(data: PathLike) -> Path:
    """Check that the evaluation data (a split directory or one ``.spacy`` file) exists.

    Raises:
        AdaptnerError: with a pointer to dev when the (held-back) test split is asked for
            but missing, otherwise naming the missing path.
    """
    data = Path(data)
    if data.exists():
        return data
    split_dir = data.parent if data.suffix == ".spacy" else data
    if split_dir.name == "test":
        dev = split_dir.with_name("dev")
        raise AdaptnerError(
            f"The test split is missing: {data} does not exist. DANSK's test split is held back "
            f"in this setup; score on dev instead (--data {dev}), or convert a full release "
            "with `adaptner download` and `adaptner corpus`."
        )
    raise AdaptnerError(
        f"Evaluation data {data} does not exist. Run `adaptner corpus` first, or pass "
        "--data <split directory> (e.g. corpus/dev)."
    )


def select_domains(
    spec: str | Sequence[str], available: Sequence[str], where: PathLike
) -> list[str]:
    """Resolve a domain selection against the domains that have data in ``where``.

    Raises:
        AdaptnerError: an unknown domain name, or a known domain with no data in ``where``.
    """
    try:
        return parse_domains(spec, available)
    except AdaptnerError:
        known = list(dict.fromkeys([*DOMAINS, *available]))
        parse_domains(spec, known)  # re-raises for a name that is not a domain at all
        raise AdaptnerError(
            f"No data in {where} for the selected domains {spec!r}; available there: "
            f"{', '.join(available) or 'none'}."
        ) from None


def load_eval_docs(
    data: PathLike, domains: str | Sequence[str] = "all", vocab: Vocab | None = None
) -> dict[str, list[Doc]]:
    """Gold docs per domain from a split directory (``<domain>.spacy``) or one ``.spacy`` file.

    A single file is grouped by ``doc._.domain`` (no domain -> "unknown").

    Raises:
        AdaptnerError: missing data, an unknown domain, a corrupt DocBin, or a selected
            domain whose DocBin holds no documents.
    """
    data = resolve_data_path(data)
    vocab = vocab if vocab is not None else Vocab()
    by_domain: dict[str, list[Doc]] = {}
    if data.is_file():
        grouped: dict[str, list[Doc]] = {}
        for doc in read_docbin(data, vocab):
            grouped.setdefault(doc._.domain or "unknown", []).append(doc)
        present = [d for d in DOMAINS if d in grouped] + sorted(set(grouped) - set(DOMAINS))
        for domain in select_domains(domains, present, data):
            by_domain[domain] = grouped[domain]
        if not by_domain:
            raise AdaptnerError(f"DocBin {data} holds no documents; nothing to evaluate.")
        return by_domain
    available = available_domains(data)
    if not available:
        raise AdaptnerError(
            f"{data} holds no <domain>.spacy files. Run `adaptner corpus`, or pass --data "
            "<split directory>."
        )
    ordered = [d for d in DOMAINS if d in available] + [d for d in available if d not in DOMAINS]
    for domain in select_domains(domains, ordered, data):
        path = data / f"{domain}.spacy"
        docs = read_docbin(path, vocab)
        if not docs:
            raise AdaptnerError(
                f"DocBin {path} holds no documents. Re-create it with `adaptner corpus`, or "
                f"leave the domain out with --domains all-but:{domain}."
            )
        by_domain[domain] = docs
    return by_domain


def split_name(data: PathLike, docs: Iterable[Doc] = ()) -> str:
    """The split scored: ``doc.user_data["split"]`` if the docs agree, else the folder name."""
    found = sorted({str(doc.user_data["split"]) for doc in docs if "split" in doc.user_data})
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        return "mixed (" + ", ".join(found) + ")"
    data = Path(data)
    folder = data.parent if data.suffix == ".spacy" else data
    return folder.name or "unknown"


# --- prediction ---------------------------------------------------------------------------


def predict_docs(
    nlp: Language,
    gold_docs: Sequence[Doc],
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[list[Doc], float]:
    """Run the pipeline on copies of the gold tokens; returns (predicted docs, seconds).

    The copies are made from the gold tokens' words and spaces, not by re-tokenising the
    text, so predicted and gold tokens are identical one-to-one: the BIO sequences that
    seqeval compares line up position by position, and spaCy's alignment is the identity.
    (Re-tokenising could split differently from DANSK's tokenization, which would make the
    two scorers disagree on what a token-level match is.) ``nlp.pipe`` skips the tokenizer
    for a Doc input and runs every component on it. Only the ``nlp.pipe`` call is timed.
    """
    if batch_size < 1:
        raise AdaptnerError(f"--batch-size must be positive, got {batch_size}.")
    copies = [fresh_doc(doc, nlp.vocab) for doc in gold_docs]
    start = time.perf_counter()
    stream = nlp.pipe(copies, batch_size=batch_size)
    if progress:
        stream = tqdm(stream, total=len(copies), desc="predict", unit="doc", leave=False)
    preds = list(stream)
    return preds, time.perf_counter() - start


# --- metrics ------------------------------------------------------------------------------


def doc_to_bio(doc: Doc) -> list[str]:
    """IOB2 tags of ``doc.ents`` (tokens outside any entity, or unannotated, are "O")."""
    tags = ["O"] * len(doc)
    for ent in doc.ents:
        tags[ent.start] = f"B-{ent.label_}"
        for i in range(ent.start + 1, ent.end):
            tags[i] = f"I-{ent.label_}"
    return tags


def _check_aligned(gold: Sequence[Doc], pred: Sequence[Doc]) -> None:
    if len(gold) != len(pred):
        raise AdaptnerError(f"{len(gold)} gold docs but {len(pred)} predicted docs.")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if [t.text for t in g] != [t.text for t in p]:
            raise AdaptnerError(
                f"Gold and predicted doc {i} have different tokens ({len(g)} vs {len(p)}); "
                "predict on copies made with adaptner.scoring.fresh_doc()."
            )


def seqeval_scores(gold: Sequence[Doc], pred: Sequence[Doc]) -> dict[str, Any]:
    """Strict IOB2 span P/R/F (micro) and per label from seqeval: the side-by-side check.

    Returns:
        {"ents_p", "ents_r", "ents_f", "ents_per_type": {label: {"p", "r", "f"}}} (the keys
        of :mod:`adaptner.scoring`); 0.0 where undefined.
    """
    _check_aligned(gold, pred)
    y_true = [doc_to_bio(doc) for doc in gold if len(doc)]
    y_pred = [doc_to_bio(doc) for doc in pred if len(doc)]
    if not y_true:
        return {"ents_p": 0.0, "ents_r": 0.0, "ents_f": 0.0, "ents_per_type": {}}
    opts = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    out: dict[str, Any] = {
        "ents_p": float(precision_score(y_true, y_pred, **opts)),
        "ents_r": float(recall_score(y_true, y_pred, **opts)),
        "ents_f": float(f1_score(y_true, y_pred, **opts)),
        "ents_per_type": {},
    }
    has_ents = any(t != "O" for seq in (*y_true, *y_pred) for t in seq)
    if has_ents:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = classification_report(y_true, y_pred, output_dict=True, **opts)
        for label, row in sorted(report.items()):
            if label.endswith(" avg"):
                continue
            out["ents_per_type"][label] = {
                "p": float(row["precision"]),
                "r": float(row["recall"]),
                "f": float(row["f1-score"]),
            }
    return out


def max_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest |a - b| over micro P/R/F and every type's P/R/F (a missing type counts as 0)."""
    diffs = [abs(a[k] - b[k]) for k in PRF_KEYS]
    zero = {"p": 0.0, "r": 0.0, "f": 0.0}
    for label in set(a["ents_per_type"]) | set(b["ents_per_type"]):
        la, lb = a["ents_per_type"].get(label, zero), b["ents_per_type"].get(label, zero)
        diffs.extend(abs(la[k] - lb[k]) for k in ("p", "r", "f"))
    return max(diffs)


def _count_labels(docs: Iterable[Doc]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in docs:
        for ent in doc.ents:
            counts[ent.label_] = counts.get(ent.label_, 0) + 1
    return counts


def score_docs(gold: Sequence[Doc], pred: Sequence[Doc]) -> dict[str, Any]:
    """Counts, the project's scores and seqeval's check for one set of aligned gold/pred docs.

    Returns:
        {"docs", "words", "gold_ents", "pred_ents", "ents_p", "ents_r", "ents_f",
        "ents_per_type": {label: {"p", "r", "f", "support", "predicted"}},
        "seqeval": {"ents_p", "ents_r", "ents_f", "ents_per_type"}, "max_abs_diff"}: the
        scores are :func:`adaptner.scoring.ner_prf`'s, "max_abs_diff" the largest
        disagreement with seqeval (strict IOB2).
    """
    _check_aligned(gold, pred)
    prf = ner_prf(gold, pred)
    seq = seqeval_scores(gold, pred)
    support, predicted = _count_labels(gold), _count_labels(pred)
    per_type = {
        label: {**scores, "support": support.get(label, 0), "predicted": predicted.get(label, 0)}
        for label, scores in prf["ents_per_type"].items()
    }
    return {
        "docs": len(gold),
        "words": sum(len(doc) for doc in gold),
        "gold_ents": sum(support.values()),
        "pred_ents": sum(predicted.values()),
        **{key: prf[key] for key in PRF_KEYS},
        "ents_per_type": per_type,
        "seqeval": seq,
        "max_abs_diff": max_difference(prf, seq),
    }


def evaluate_docs(
    nlp: Language,
    docs_by_domain: dict[str, list[Doc]],
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict every doc once and score it per domain, pooled (micro), and macro over domains.

    The macro average is the mean over the domains that have at least one gold entity
    (F1 is undefined without gold entities); the report lists which domains it covered.

    Returns:
        A report dict: "domains", "per_domain", "overall" (all docs pooled), "macro",
        "speed" and "agreement" (see :func:`score_docs` for one scope's fields).
    """
    domains = list(docs_by_domain)
    gold = [doc for domain in domains for doc in docs_by_domain[domain]]
    if not gold:
        raise AdaptnerError("No documents to evaluate.")
    pred, seconds = predict_docs(nlp, gold, batch_size=batch_size, progress=progress)
    per_domain: dict[str, Any] = {}
    start = 0
    for domain in domains:
        end = start + len(docs_by_domain[domain])
        per_domain[domain] = score_docs(gold[start:end], pred[start:end])
        start = end
    overall = score_docs(gold, pred)
    covered = [d for d in domains if per_domain[d]["gold_ents"] > 0]
    macro: dict[str, Any] = {
        "domains": covered,
        "excluded": [d for d in domains if d not in covered],
    }
    for key in PRF_KEYS:
        macro[key] = sum(per_domain[d][key] for d in covered) / len(covered) if covered else None
    n_words = overall["words"]
    diffs = [overall["max_abs_diff"], *(s["max_abs_diff"] for s in per_domain.values())]
    return {
        "domains": domains,
        "per_domain": per_domain,
        "overall": overall,
        "macro": macro,
        "speed": {
            "docs": len(gold),
            "words": n_words,
            "seconds": round(seconds, 4),
            "words_per_second": round(n_words / seconds, 1) if seconds > 0 else None,
            "batch_size": batch_size,
        },
        "agreement": {
            "max_abs_diff": max(diffs),
            "tolerance": AGREEMENT_TOLERANCE,
            "ok": max(diffs) <= AGREEMENT_TOLERANCE,
        },
    }


def evaluate_model(
    model_dir: PathLike,
    data: PathLike = "corpus/dev",
    *,
    domains: str | Sequence[str] = "all",
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a trained pipeline on a split, per domain and label.

    Args:
        model_dir: A pipeline directory (e.g. training/news/model-best) that sets doc.ents.
        data: A split directory with ``<domain>.spacy`` files, or one ``.spacy`` file.
        domains: "all", "news", "news,legal" or "all-but:legal".
        batch_size: ``nlp.pipe`` batch size (also used for the speed measurement).
        progress: Show a progress bar while predicting.

    Returns:
        The report of :func:`evaluate_docs` plus "model", "data", "split" and "pipeline".

    Raises:
        AdaptnerError: a bad model directory, missing/empty/corrupt data, unknown domain.
    """
    docs_by_domain = load_eval_docs(data, domains)
    nlp = load_pipeline(model_dir)
    report = evaluate_docs(nlp, docs_by_domain, batch_size=batch_size, progress=progress)
    gold = [doc for docs in docs_by_domain.values() for doc in docs]
    return {
        "model": str(model_dir),
        "data": str(data),
        "split": split_name(data, gold),
        "pipeline": list(nlp.pipe_names),
        "entity_components": entity_components(nlp),
        **report,
    }


# --- output -------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.2f}"


def summary_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: one per domain, the pooled micro average and the macro average."""
    lines = [
        "| domain | docs | words | gold ents | pred ents | P | R | F | F (seqeval) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, s: dict[str, Any]) -> str:
        f = _pct(s["ents_f"]) if s["gold_ents"] else "–"
        return (
            f"| {name} | {s['docs']} | {s['words']} | {s['gold_ents']} | {s['pred_ents']} | "
            f"{_pct(s['ents_p'])} | {_pct(s['ents_r'])} | {f} | {_pct(s['seqeval']['ents_f'])} |"
        )

    for domain in report["domains"]:
        lines.append(row(domain, report["per_domain"][domain]))
    lines.append(row("**all (micro)**", report["overall"]))
    macro = report["macro"]
    lines.append(
        f"| **macro ({len(macro['domains'])} domains)** | | | | | {_pct(macro['ents_p'])} | "
        f"{_pct(macro['ents_r'])} | {_pct(macro['ents_f'])} | |"
    )
    return lines


def report_to_markdown(report: dict[str, Any]) -> str:
    """The evaluation report as Markdown: per-domain table, per-label table, speed."""
    macro = report["macro"]
    speed = report["speed"]
    lines = [
        f"# NER evaluation: {report.get('model', '')}",
        "",
        f"Scored on **{report.get('split', '?')}** ({report.get('data', '')}); span-level, "
        "exact match (spaCy's scorer, checked against seqeval strict IOB2; max difference "
        f"{report['agreement']['max_abs_diff']:.2e}). Scores in %.",
        "",
        *summary_table(report),
        "",
        f"Macro = mean over the domains with at least one gold entity: "
        f"{', '.join(macro['domains']) or 'none'}"
        + (f" (left out: {', '.join(macro['excluded'])})." if macro["excluded"] else "."),
        "",
        "## Per label (all docs pooled)",
        "",
        "| label | support | predicted | P | R | F |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, s in sorted(report["overall"]["ents_per_type"].items()):
        lines.append(
            f"| {label} | {s['support']} | {s['predicted']} | {_pct(s['p'])} | {_pct(s['r'])} | "
            f"{_pct(s['f'])} |"
        )
    labels = sorted(report["overall"]["ents_per_type"])
    if labels and len(report["domains"]) > 1:
        lines += [
            "",
            "## F per domain x label",
            "",
            "| domain | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for domain in report["domains"]:
            per = report["per_domain"][domain]["ents_per_type"]
            cells = [
                _pct(per[lab]["f"]) if lab in per and per[lab]["support"] else "–" for lab in labels
            ]
            lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    wps = speed["words_per_second"]
    lines += [
        "",
        f"Speed: {wps if wps is not None else '–'} words/s over {speed['docs']} docs / "
        f"{speed['words']} words (nlp.pipe, batch size {speed['batch_size']}, "
        f"{speed['seconds']:.2f} s).",
        "",
    ]
    return "\n".join(lines)


def check_report_output(output: PathLike) -> tuple[Path, Path]:
    """The report's JSON and Markdown paths, checked before scoring (the output policy).

    Raises:
        AdaptnerError: ``output`` is not a .json path, is a directory or lies under a file.
    """
    output = Path(output)
    md_path = output.with_suffix(".md")
    if md_path == output:
        raise AdaptnerError(f"--output {output} must be a .json path (Markdown goes beside it).")
    check_output_file(output, "evaluate", beside=[md_path])
    return output, md_path


def write_report(report: dict[str, Any], output: PathLike) -> tuple[Path, Path]:
    """Write the report as JSON at ``output`` and as Markdown beside it (``.md``), atomically."""
    output, md_path = check_report_output(output)
    write_json(output, report)
    write_text(md_path, report_to_markdown(report))
    return output, md_path


def format_summary(report: dict[str, Any], log: Callable[[str], None] = print) -> None:
    """Print the per-domain table, the split scored and the speed."""
    speed = report["speed"]
    log(
        f"Scored on {report['split']} ({report['data']}): {speed['docs']} docs, "
        f"{speed['words']} words, {len(report['domains'])} domain(s)"
    )
    for line in summary_table(report):
        log(line)
    macro = report["macro"]
    log(f"Macro over: {', '.join(macro['domains']) or 'none'}")
    wps = speed["words_per_second"]
    log(f"Speed: {wps if wps is not None else '–'} words/s (batch size {speed['batch_size']})")
