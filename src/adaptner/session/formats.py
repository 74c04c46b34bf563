"""Task and answer formats: Prodigy hashes and tasks, Label Studio, doccano, pools, validation."""

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
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


def to_labelstudio(task: dict[str, Any], model_version: str) -> dict[str, Any]:
    """One Label Studio task with the model's entities as a prediction (pre-annotation)."""
    text = task["text"]
    meta = task.get("meta", {})
    results = []
    for i, span in enumerate(task["spans"]):
        results.append(
            {
                "id": f"{task['_input_hash']}_{i}",
                "from_name": "label",
                "to_name": "text",
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


# --- pools -------------------------------------------------------------------------
@dataclass
class PoolItem:
    """One pool sentence: text, token offsets, and where it comes from."""

    text: str
    offsets: Offsets
    domain: str | None = None
    source: str | None = None


def read_pool(
    path: str | Path,
    tokenize: Callable[[str], Doc],
    vocab: Vocab,
    *,
    domain: str | None = None,
) -> list[PoolItem]:
    """Read a target pool: a DocBin (.spacy; gold entities dropped), JSONL or plain text.

    JSONL lines are objects with ``text`` (and optionally ``meta.domain``/``meta.source``);
    any other file is read as one sentence per line (blank lines skipped).

    Args:
        path: The pool file.
        tokenize: Makes a Doc from a text (the pipeline's tokenizer).
        vocab: The vocab for reading DocBins.
        domain: Domain to record for texts without one.

    Raises:
        AdaptnerError: a missing or empty file, or a bad JSONL line (file:line and why).
    """
    from ..readers import read_docbin

    path = Path(path)
    if not path.exists():
        raise AdaptnerError(f"Pool file {path} does not exist.")
    items: list[PoolItem] = []
    if path.suffix == ".spacy":
        for doc in read_docbin(path, vocab):
            if doc.text.strip():
                items.append(
                    PoolItem(doc.text, doc_offsets(doc), doc._.domain or domain, doc._.source)
                )
    elif path.suffix == ".jsonl":
        for lineno, raw in enumerate(path.read_text(encoding="utf8").splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise AdaptnerError(f"{path}:{lineno}: invalid JSON ({e.msg}).") from None
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise AdaptnerError(
                    f'{path}:{lineno}: expected an object with a non-empty "text" string.'
                )
            meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
            offsets = doc_offsets(tokenize(text))
            items.append(PoolItem(text, offsets, meta.get("domain", domain), meta.get("source")))
    else:
        for line in path.read_text(encoding="utf8").splitlines():
            text = line.strip()
            if text:
                items.append(PoolItem(text, doc_offsets(tokenize(text)), domain, None))
    if not items:
        raise AdaptnerError(f"Pool file {path} holds no sentences.")
    return items


# --- answers -----------------------------------------------------------------------
@dataclass
class Answer:
    """One validated answer line."""

    line: int
    text: str
    answer: str
    spans: list[CharSpan]
    offsets: Offsets
    input_hash: int
    task_hash: int
    answer_hash: int
    timestamp: int | None
    task: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """The row the store keeps."""
        return {
            "line": self.line,
            "text": self.text,
            "answer": self.answer,
            "spans": [list(s) for s in self.spans],
            "tokens": [list(t) for t in self.offsets],
            "input_hash": self.input_hash,
            "task_hash": self.task_hash,
            "answer_hash": self.answer_hash,
            "timestamp": self.timestamp,
            "task": self.task,
        }


@dataclass
class LineError:
    """Why one line of an answers file was rejected."""

    line: int
    reason: str
    raw: str


def validate_answers(
    path: str | Path,
    labels: Sequence[str],
    get_offsets: Callable[[str, int], Offsets],
) -> tuple[list[Answer], list[LineError]]:
    """Parse and check every line of an answers file (Prodigy ``db-out`` or an edited batch).

    Checks: JSON syntax, an object with ``text`` and ``answer`` (accept/reject/ignore),
    ``spans`` (required for accepted answers) with offsets inside the text and on token
    boundaries, labels from ``labels``, no overlapping spans, tokens (when given) inside the
    text and in order, and an ``_input_hash`` (when given) that matches the text.

    Args:
        path: The answers file.
        labels: The session's label set.
        get_offsets: Token offsets for a text without ``tokens`` (given text and input hash).

    Returns:
        The valid answers and one error per bad line, both in file order.

    Raises:
        AdaptnerError: the file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise AdaptnerError(f"Answers file {path} does not exist.")
    if path.is_dir():
        raise AdaptnerError(f"Answers file {path} is a directory; pass a JSONL file.")
    answers: list[Answer] = []
    errors: list[LineError] = []
    label_set = set(labels)
    for lineno, raw_bytes in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            raw = raw_bytes.decode("utf8")
        except UnicodeDecodeError as e:
            errors.append(LineError(lineno, f"not UTF-8 ({e.reason} at byte {e.start})", ""))
            continue
        if not raw.strip():
            continue
        try:
            answers.append(_validate_line(lineno, raw, label_set, labels, get_offsets))
        except _BadLine as e:
            errors.append(LineError(lineno, str(e), raw))
    return answers, errors


class _BadLine(Exception):
    pass


def _validate_line(
    lineno: int,
    raw: str,
    label_set: set[str],
    labels: Sequence[str],
    get_offsets: Callable[[str, int], Offsets],
) -> Answer:
    try:
        task = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _BadLine(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(task, dict):
        raise _BadLine(f"expected a JSON object, got {type(task).__name__}")
    for key in ("text", "answer"):
        if key not in task:
            raise _BadLine(f"missing required key {key!r}")
    text = task["text"]
    if not isinstance(text, str) or not text.strip():
        raise _BadLine("'text' must be a non-empty string")
    answer = task["answer"]
    if answer not in ANSWERS:
        raise _BadLine(f"answer {answer!r} is not one of {', '.join(ANSWERS)}")
    in_hash = input_hash(task)
    given = task.get("_input_hash")
    if given is not None and given != in_hash:
        raise _BadLine(
            f"_input_hash {given!r} does not match the text (expected {in_hash}); was the "
            "text edited? Annotate the text as given, or drop _input_hash/_task_hash"
        )
    offsets = _check_tokens(task, text) if "tokens" in task else get_offsets(text, in_hash)
    if "spans" not in task:
        if answer == "accept":
            raise _BadLine("missing required key 'spans' (an accepted answer needs its entities)")
        raw_spans: list = []
    else:
        raw_spans = task["spans"]
    if not isinstance(raw_spans, list):
        raise _BadLine(f"'spans' must be a list, got {type(raw_spans).__name__}")
    spans = _check_spans(raw_spans, text, offsets, label_set, labels)
    t_hash = task.get("_task_hash")
    if t_hash is None:
        t_hash = task_hash(task, in_hash)
    elif not isinstance(t_hash, int) or isinstance(t_hash, bool):
        raise _BadLine(f"_task_hash must be an integer, got {t_hash!r}")
    timestamp = task.get("_timestamp")
    if timestamp is not None and (not isinstance(timestamp, int) or isinstance(timestamp, bool)):
        raise _BadLine(f"_timestamp must be an integer, got {timestamp!r}")
    task = dict(task)
    task["_input_hash"] = in_hash
    task["_task_hash"] = t_hash
    return Answer(
        line=lineno,
        text=text,
        answer=answer,
        spans=spans,
        offsets=offsets,
        input_hash=in_hash,
        task_hash=t_hash,
        answer_hash=answer_hash(t_hash, answer, spans),
        timestamp=timestamp,
        task=task,
    )


def _check_tokens(task: dict[str, Any], text: str) -> Offsets:
    tokens = task["tokens"]
    if not isinstance(tokens, list):
        raise _BadLine(f"'tokens' must be a list, got {type(tokens).__name__}")
    offsets: Offsets = []
    prev_end = 0
    for i, tok in enumerate(tokens):
        if (
            not isinstance(tok, dict)
            or not _is_int(tok.get("start"))
            or not _is_int(tok.get("end"))
        ):
            raise _BadLine(f"token {i} needs integer 'start' and 'end'")
        start, end = tok["start"], tok["end"]
        if not 0 <= start < end <= len(text):
            raise _BadLine(f"token {i} ({start}-{end}) is outside the text (length {len(text)})")
        if start < prev_end:
            raise _BadLine(f"token {i} ({start}-{end}) overlaps or precedes token {i - 1}")
        if text[prev_end:start].strip():
            raise _BadLine(
                f"text {text[prev_end:start]!r} before token {i} ({start}-{end}) is in no token"
            )
        if "text" in tok and tok["text"] != text[start:end]:
            raise _BadLine(
                f"token {i} text {tok['text']!r} does not match the text at {start}-{end} "
                f"({text[start:end]!r})"
            )
        offsets.append((start, end))
        prev_end = end
    if text[prev_end:].strip():
        raise _BadLine(f"text {text[prev_end:]!r} after the last token is in no token")
    return offsets


def _check_spans(
    raw_spans: list,
    text: str,
    offsets: Offsets,
    label_set: set[str],
    labels: Sequence[str],
) -> list[CharSpan]:
    starts = {s: i for i, (s, _) in enumerate(offsets)}
    ends = {e: i for i, (_, e) in enumerate(offsets)}
    spans: list[CharSpan] = []
    for i, span in enumerate(raw_spans, start=1):
        if not isinstance(span, dict):
            raise _BadLine(f"span {i} must be an object, got {type(span).__name__}")
        missing = [k for k in ("start", "end", "label") if k not in span]
        if missing:
            raise _BadLine(f"span {i} is missing {', '.join(repr(k) for k in missing)}")
        start, end, label = span["start"], span["end"], span["label"]
        if not _is_int(start) or not _is_int(end):
            raise _BadLine(f"span {i}: 'start' and 'end' must be integers")
        desc = f"span {i} ({start}-{end} {label!r})"
        if not 0 <= start < end <= len(text):
            raise _BadLine(f"{desc} is outside the text (length {len(text)}) or empty")
        if start not in starts:
            raise _BadLine(f"{desc} starts inside a token{_token_at(text, offsets, start)}")
        if end not in ends:
            raise _BadLine(f"{desc} ends inside a token{_token_at(text, offsets, end - 1)}")
        if label not in label_set:
            raise _BadLine(
                f"{desc}: label {label!r} is not in the session's label set ({', '.join(labels)})"
            )
        for key, expected in (("token_start", starts[start]), ("token_end", ends[end])):
            if key in span and span[key] != expected:
                raise _BadLine(
                    f"{desc}: {key} {span[key]!r} does not match its offsets (token {expected})"
                )
        spans.append((start, end, label))
    ordered = sorted(spans)
    for (s1, e1, l1), (s2, e2, l2) in zip(ordered, ordered[1:], strict=False):
        if s2 < e1:
            raise _BadLine(
                f"spans overlap: {s1}-{e1} {l1!r} ({text[s1:e1]!r}) and {s2}-{e2} {l2!r} "
                f"({text[s2:e2]!r})"
            )
    return ordered


def _token_at(text: str, offsets: Offsets, char: int) -> str:
    for s, e in offsets:
        if s <= char < e:
            return f" ({text[s:e]!r} at {s}-{e}); spans must start and end on token boundaries"
    return "; spans must start and end on token boundaries"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
