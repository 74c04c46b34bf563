"""Batch review: displaCy entities plus a per-token uncertainty highlight, as one HTML page."""

import html
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spacy import displacy
from spacy.language import Language
from spacy.tokens import Doc

from ..errors import AdaptnerError
from ..scoring import fresh_doc
from ..util import read_jsonl, write_text
from . import formats
from .loop import load_pipeline, open_store, token_uncertainty

PAGE = """<!DOCTYPE html>
<html lang="da">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; }}
.task {{ border-top: 1px solid #ddd; padding: 1em 0; }}
.meta {{ color: #555; font-size: 0.9em; margin-bottom: 0.4em; }}
.heat {{ line-height: 2.2; margin-top: 0.5em; }}
.tok {{ padding: 0.15em 0.25em; margin-right: 0.15em; border-radius: 0.25em; }}
.legend .tok {{ display: inline-block; width: 3em; text-align: center; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{intro}</p>
<p class="legend">token uncertainty (1 - top tag probability):
<span class="tok" style="background: rgba(230, 60, 40, 0.05)">0</span>
<span class="tok" style="background: rgba(230, 60, 40, 0.5)">0.5</span>
<span class="tok" style="background: rgba(230, 60, 40, 0.95)">1</span></p>
{body}
</body>
</html>
"""


#: displaCy colours for the DANSK label names (displaCy's own palette knows ORG, LOC, ...).
COLORS: dict[str, str] = {
    "ORGANIZATION": "#7aecec",
    "LOCATION": "#ff9561",
    "FACILITY": "#9cc9cc",
    "WORK OF ART": "#f0d0ff",
}


def read_tasks(path: str | Path) -> list[dict[str, Any]]:
    """Tasks of a Prodigy-format batch file.

    Raises:
        AdaptnerError: a missing file or a line that is not a task object with ``text``.
    """
    path = Path(path)
    if not path.exists():
        raise AdaptnerError(f"Batch file {path} does not exist.")
    tasks = []
    hint = (
        "Review reads Prodigy-format batches (the copy under <session dir>/batches/ works "
        "for any --format)."
    )
    for lineno, task in read_jsonl(path, objects=False, hint=hint):
        if not isinstance(task, dict) or not isinstance(task.get("text"), str):
            raise AdaptnerError(f'{path}:{lineno}: not a task (an object with "text").')
        tasks.append(task)
    if not tasks:
        raise AdaptnerError(f"Batch file {path} holds no tasks.")
    return tasks


def task_doc(nlp: Language, task: dict[str, Any]) -> Doc:
    """The task's text as a Doc with the task's tokens (or the pipeline's, if it has none)."""
    text = task["text"]
    if isinstance(task.get("tokens"), list) and task["tokens"]:
        offsets = [(t["start"], t["end"]) for t in task["tokens"]]
    else:
        offsets = formats.doc_offsets(nlp.make_doc(text))
    return formats.doc_from_offsets(nlp.vocab, text, offsets)


def render_review(
    tasks: list[dict[str, Any]], docs: list[Doc], tags: list[Sequence[str]], title: str
) -> str:
    """The HTML page: per task its meta line, its entities (displaCy) and the heat strip.

    ``docs`` are the tasks' texts processed by the model (``doc._.ner_probs`` set, columns
    in the order of the matching ``tags``); the entities shown are the task's spans (the
    pre-annotations, or edits made to the file).
    """
    parts = []
    labels = sorted({s["label"] for t in tasks for s in t.get("spans", [])})
    for task, doc, doc_tags in zip(tasks, docs, tags, strict=True):
        meta = task.get("meta", {})
        shown = fresh_doc(doc, doc.vocab)
        ents = []
        for span in task.get("spans", []):
            ent = shown.char_span(span["start"], span["end"], label=span["label"])
            if ent is not None:
                ents.append(ent)
        shown.ents = ents
        with warnings.catch_warnings():  # W006: a sentence without entities is fine here
            warnings.filterwarnings("ignore", message=r"\[W006\]")
            ent_html = displacy.render(
                shown,
                style="ent",
                page=False,
                jupyter=False,
                options={"ents": labels or None, "colors": COLORS},
            )
        unc = token_uncertainty(doc)
        probs = doc._.ner_probs
        heat = []
        for tok in doc:
            if tok.is_space:
                continue
            u = float(unc[tok.i])
            tip = f"uncertainty {u:.3f}"
            if probs is not None and len(doc_tags) == probs.shape[1]:
                top = probs[tok.i].argsort()[::-1][:2]
                tip += "; " + ", ".join(f"{doc_tags[j]} {probs[tok.i][j]:.2f}" for j in top)
            alpha = 0.05 + 0.9 * min(max(u, 0.0), 1.0)
            heat.append(
                f'<span class="tok" style="background: rgba(230, 60, 40, {alpha:.2f})" '
                f'title="{html.escape(tip)}">{html.escape(tok.text)}</span>'
            )
        score = meta.get("score")
        bits = [
            f"#{meta.get('rank', '?')}",
            f"score {score:.4f}" if isinstance(score, int | float) else "score n/a",
            f"strategy {meta.get('strategy', '?')}",
            f"round {meta.get('round', '?')}",
            f"domain {meta.get('domain') or '?'}",
            f"input hash {task.get('_input_hash', '?')}",
        ]
        top_tokens = ", ".join(
            f"{t['token']} ({t['uncertainty']:.2f})" for t in meta.get("uncertain_tokens", [])
        )
        if top_tokens:
            bits.append(f"most uncertain: {top_tokens}")
        parts.append(
            '<div class="task">'
            f'<div class="meta">{html.escape(" · ".join(bits))}</div>'
            f"{ent_html}"
            f'<div class="heat">{"".join(heat)}</div>'
            "</div>"
        )
    intro = (
        f"{len(tasks)} tasks. Entities: the model's pre-annotations. Below each sentence, every "
        "token is shaded by how unsure the model is about its tag (hover for the top tags)."
    )
    return PAGE.format(title=html.escape(title), intro=html.escape(intro), body="\n".join(parts))


def review_batch(
    db: str | Path, name: str, output: str | Path, *, batch: str | Path | None = None
) -> Path:
    """Write the review page of a batch (default: the session's latest batch).

    Each task is re-run through the model of the round that produced it (the current
    model if that round is gone), to get every token's probabilities.

    Raises:
        AdaptnerError: no batch yet, a bad batch file, or a missing model.
    """
    from ..strategies.common import find_bio_ner

    store = open_store(db)
    try:
        session = store.get_session(name)
        if batch is None:
            batches = store.batches(session.id)
            if not batches:
                raise AdaptnerError(f"Session {name!r} has no batch yet; run `next` first.")
            batch = batches[-1]["copy_path"]
        model_dirs = {r.round: r.model_dir for r in store.rounds(session.id)}
        current = store.current_round(session.id).model_dir
    finally:
        store.close()
    tasks = read_tasks(batch)
    docs: list[Doc] = [None] * len(tasks)  # type: ignore[list-item]
    tags: list[Sequence[str]] = [()] * len(tasks)
    groups: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        model_dir = model_dirs.get(task.get("meta", {}).get("round"), current)
        if not Path(model_dir).exists():
            model_dir = current
        groups.setdefault(model_dir, []).append(i)
    for model_dir, idx in groups.items():
        nlp = load_pipeline(model_dir)
        model_tags = find_bio_ner(nlp)[1].tags
        for i, doc in zip(idx, nlp.pipe([task_doc(nlp, tasks[i]) for i in idx]), strict=True):
            docs[i], tags[i] = doc, model_tags
    output = Path(output)
    write_text(output, render_review(tasks, docs, tags, f"Session {name}: {Path(batch).name}"))
    return output
