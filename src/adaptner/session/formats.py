"""Tasks out: Prodigy hashes and tasks, and batch files for Prodigy, Label Studio and doccano.

Pools in: :mod:`adaptner.session.pool`; answer files in: :mod:`adaptner.session.answers`.
"""

import json
from collections.abc import Iterable, Sequence
from typing import Any

import srsly
from murmurhash import mrmr
from spacy.tokens import Doc
from spacy.vocab import Vocab

from ..errors import AdaptnerError

#: Prodigy's default keys: the input hash covers these, the task hash these plus the input.
INPUT_KEYS: tuple[str, ...] = ("text", "image", "html", "input")
TASK_KEYS: tuple[str, ...] = ("spans", "label", "options")
#: Keys never hashed when a task has none of the requested keys (Prodigy's fallback).
IGNORE_HASH_KEYS: tuple[str, ...] = (
    "_input_hash",
    "_task_hash",
    "_session_id",
    "_view_id",
    "_timestamp",
    "_annotator_id",
    "answer",
    "meta",
    "score",
)

ANSWERS: tuple[str, ...] = ("accept", "reject", "ignore")
FORMATS: tuple[str, ...] = ("prodigy", "labelstudio", "doccano")

Offsets = list[tuple[int, int]]
CharSpan = tuple[int, int, str]


# --- hashing -----------------------------------------------------------------------
def get_hash(task: dict[str, Any], keys: Sequence[str], prefix: str = "") -> int:
    """Hash the given keys of a task, computed as Prodigy does.

    The present keys form a dict, dumped with ``srsly.json_dumps(..., sort_keys=True)``;
    ``prefix + dump`` is hashed with murmurhash (``mrmr.hash``, a signed 32-bit int). A task
    with none of the keys is hashed over all its keys but the bookkeeping ones.
    """
    values = {key: task[key] for key in keys if key in task}
    if not values:
        values = {k: v for k, v in task.items() if k not in IGNORE_HASH_KEYS}
    return int(mrmr.hash(prefix + srsly.json_dumps(values, sort_keys=True)))


def input_hash(task: dict[str, Any]) -> int:
    """Prodigy's ``_input_hash``: over the input keys (for text tasks, just ``text``)."""
    return get_hash(task, INPUT_KEYS)


def task_hash(task: dict[str, Any], in_hash: int | None = None) -> int:
    """Prodigy's ``_task_hash``: task keys (spans, label, options), prefixed by the input hash."""
    if in_hash is None:
        in_hash = input_hash(task)
    return get_hash(task, TASK_KEYS, prefix=str(in_hash))


def set_hashes(task: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    """Add ``_input_hash`` and ``_task_hash`` to a task (as ``prodigy.set_hashes`` does).

    A task that has both hashes keeps them unless ``overwrite``.
    """
    if not overwrite and "_input_hash" in task and "_task_hash" in task:
        return task
    task["_input_hash"] = input_hash(task)
    task["_task_hash"] = task_hash(task, task["_input_hash"])
    return task


def text_key(text: str) -> int:
    """Hash of a text with its whitespace normalised: spots held-out texts in any spacing."""
    return input_hash({"text": " ".join(text.split())})


def answer_hash(t_hash: int, answer: str, spans: Iterable[CharSpan]) -> int:
    """Identity of one answer's content: decision and entities, keyed by the task hash."""
    content = {"answer": answer, "spans": sorted([list(s) for s in spans])}
    return int(mrmr.hash(str(t_hash) + srsly.json_dumps(content, sort_keys=True)))


# --- tokens and docs ---------------------------------------------------------------
def doc_offsets(doc: Doc) -> Offsets:
    """Character offsets of a Doc's tokens (whitespace tokens included, as Prodigy keeps them)."""
    return [(t.idx, t.idx + len(t)) for t in doc]


def prodigy_tokens(text: str, offsets: Offsets) -> list[dict[str, Any]]:
    """Prodigy's ``tokens``: text, start, end, id and ws (followed by whitespace) per token."""
    out = []
    for i, (start, end) in enumerate(offsets):
        next_start = offsets[i + 1][0] if i + 1 < len(offsets) else len(text)
        out.append(
            {
                "text": text[start:end],
                "start": start,
                "end": end,
                "id": i,
                "ws": next_start > end and text[end] == " ",
            }
        )
    return out


def doc_from_offsets(vocab: Vocab, text: str, offsets: Offsets) -> Doc:
    """A Doc whose tokens are ``offsets`` over ``text``; uncovered whitespace becomes tokens.

    ``doc.text == text`` always holds, so character spans carry over unchanged.
    """
    words: list[str] = []
    spaces: list[bool] = []
    pos = 0

    def add_gap(gap: str) -> None:
        if not gap:
            return
        if words and gap[0] == " " and not spaces[-1]:
            spaces[-1] = True
            gap = gap[1:]
        if gap:
            words.append(gap)
            spaces.append(False)

    for start, end in offsets:
        add_gap(text[pos:start])
        words.append(text[start:end])
        spaces.append(False)
        pos = end
    add_gap(text[pos:])
    doc = Doc(vocab, words=words, spaces=spaces)
    if doc.text != text:  # pragma: no cover - guarded by validation
        raise AdaptnerError(f"Cannot rebuild {text!r} from its token offsets.")
    return doc


def token_spans(offsets: Offsets, spans: Iterable[CharSpan]) -> list[tuple[int, int]]:
    """Token index ranges (first, last inclusive) of character spans on token boundaries."""
    starts = {s: i for i, (s, _) in enumerate(offsets)}
    ends = {e: i for i, (_, e) in enumerate(offsets)}
    return [(starts[s], ends[e]) for s, e, _ in spans]


# --- task shapes -------------------------------------------------------------------
def make_task(
    text: str,
    offsets: Offsets,
    spans: Sequence[CharSpan],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """A Prodigy ``ner_manual`` task with pre-annotated spans and hashes.

    ``spans`` are character offsets on token boundaries; ``token_end`` is inclusive, as in
    Prodigy.
    """
    spans = sorted(spans)
    task: dict[str, Any] = {
        "text": text,
        "tokens": prodigy_tokens(text, offsets),
        "spans": [
            {"start": s, "end": e, "label": label, "token_start": ts, "token_end": te}
            for (s, e, label), (ts, te) in zip(spans, token_spans(offsets, spans), strict=True)
        ],
        "meta": meta,
    }
    return set_hashes(task)


def to_labelstudio(
    task: dict[str, Any], model_version: str, *, from_name: str = "label", to_name: str = "text"
) -> dict[str, Any]:
    """One Label Studio task with the model's entities as a prediction (pre-annotation).

    ``from_name``/``to_name`` name the project's ``<Labels>`` control and ``<Text>`` object.
    """
    text = task["text"]
    meta = task.get("meta", {})
    results = []
    for i, span in enumerate(task["spans"]):
        results.append(
            {
                "id": f"{task['_input_hash']}_{i}",
                "from_name": from_name,
                "to_name": to_name,
                "type": "labels",
                "value": {
                    "start": span["start"],
                    "end": span["end"],
                    "text": text[span["start"] : span["end"]],
                    "labels": [span["label"]],
                },
            }
        )
    return {
        "data": {
            "text": text,
            "meta": meta,
            "_input_hash": task["_input_hash"],
            "_task_hash": task["_task_hash"],
        },
        "predictions": [
            {
                "model_version": model_version,
                "score": meta.get("confidence"),
                "result": results,
            }
        ],
    }


def to_doccano(task: dict[str, Any]) -> dict[str, Any]:
    """One doccano sequence-labeling line: text and [start, end, label] triples."""
    return {
        "text": task["text"],
        "label": [[s["start"], s["end"], s["label"]] for s in task["spans"]],
        "meta": {
            **task.get("meta", {}),
            "_input_hash": task["_input_hash"],
            "_task_hash": task["_task_hash"],
        },
    }


def render_batch(tasks: Sequence[dict[str, Any]], fmt: str, model_version: str) -> str:
    """The text of a batch file: JSONL (prodigy, doccano) or a JSON list (labelstudio)."""
    if fmt == "prodigy":
        lines = [json.dumps(t, ensure_ascii=False) for t in tasks]
    elif fmt == "doccano":
        lines = [json.dumps(to_doccano(t), ensure_ascii=False) for t in tasks]
    elif fmt == "labelstudio":
        data = [to_labelstudio(t, model_version) for t in tasks]
        return json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    else:
        raise AdaptnerError(f"Unknown batch format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    return "".join(line + "\n" for line in lines)
