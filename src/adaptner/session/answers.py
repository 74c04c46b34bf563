"""Answer files: Prodigy, Label Studio (JSON and JSON_MIN) and doccano exports, read and checked."""

import bisect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import AdaptnerError
from .formats import ANSWERS, CharSpan, Offsets, answer_hash, input_hash, task_hash

#: Answer files ``session import`` reads (``--format``); by default detected from the content.
ANSWER_FORMATS: dict[str, str] = {
    "prodigy": "Prodigy JSONL (db-out or an edited batch: one task per line with an 'answer')",
    "labelstudio": "Label Studio JSON export (a JSON list of tasks with 'data' and 'annotations')",
    "labelstudio-min": "Label Studio JSON_MIN export (a JSON list of flat tasks with "
    "'annotation_id')",
    "doccano": "doccano sequence-labelling JSONL export (one text per line with "
    "'label': [[start, end, label], ...])",
}


@dataclass
class Answer:
    """One validated answer (a line of a JSONL file, or a task of a JSON list)."""

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
    where: str = ""
    snaps: list[str] = field(default_factory=list)

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
    """Why one line (or one task of a JSON list) of an answers file was rejected.

    ``where`` names the task inside a JSON list (``task 3 (id 17)``), empty for JSONL.
    """

    line: int
    reason: str
    raw: str
    where: str = ""

    def message(self, path: str | Path) -> str:
        """``file:line: [task ...: ]reason``."""
        prefix = f"{self.where}: " if self.where else ""
        return f"{path}:{self.line}: {prefix}{self.reason}"


@dataclass
class AnswerFile:
    """An answers file, read and checked: its format, answers and bad lines."""

    path: Path
    fmt: str
    answers: list[Answer]
    errors: list[LineError]
    #: Tasks the tool exported without any annotation (nothing to import for them).
    unannotated: int = 0
    #: Older annotations of a task that has a later one in the same file (JSON_MIN).
    superseded: int = 0


@dataclass
class _Record:
    line: int
    raw: str
    obj: Any = None
    where: str = ""
    error: str | None = None


class _BadLine(Exception):
    pass


def validate_answers(
    path: str | Path,
    labels: Sequence[str],
    get_offsets: Callable[[str, int], Offsets],
    *,
    fmt: str | None = None,
    snap: bool = False,
    handed_out_task_hash: Callable[[int], int | None] | None = None,
) -> AnswerFile:
    """Read, convert and check every answer of a file in any of :data:`ANSWER_FORMATS`.

    Label Studio's JSON export gives per task the latest annotation that was not cancelled
    (a task whose annotations were all cancelled, i.e. skipped, is an ``ignore``; an
    annotation with no result is an accept with no entities); tasks with no annotation at
    all are counted in ``unannotated``. doccano lines are accepts. Answers are matched to
    the tasks handed out by the ``_input_hash``/``_task_hash`` the tool kept (checked
    against the text), by exact text otherwise.

    Checks: an object with ``text`` and ``answer`` (accept/reject/ignore), ``spans``
    (required for accepted Prodigy answers) with offsets inside the text and on token
    boundaries (or snapped to them with ``snap``, each snap noted on the answer), labels
    from ``labels``, no overlapping spans, tokens (when given) inside the text and in order,
    and an ``_input_hash`` (when given) that matches the text.

    Args:
        path: The answers file.
        labels: The session's label set.
        get_offsets: Token offsets for a text without ``tokens`` (given text and input hash).
        fmt: Force a format (default: detected from the content).
        snap: Widen spans that start or end inside a token to the token boundaries.
        handed_out_task_hash: The task hash a text was handed out with, for tools that do
            not keep ``_task_hash``.

    Returns:
        The file's format, its valid answers and one error per bad line, in file order.

    Raises:
        AdaptnerError: the file does not exist, is not in any of the formats (the message
            says which were expected and what was found), or a JSON list that does not parse.
    """
    path = Path(path)
    if not path.exists():
        raise AdaptnerError(f"Answers file {path} does not exist.")
    if path.is_dir():
        raise AdaptnerError(f"Answers file {path} is a directory; pass a JSONL or JSON file.")
    if fmt is not None and fmt not in ANSWER_FORMATS:
        raise AdaptnerError(
            f"Unknown answers format {fmt!r}; choose one of {', '.join(ANSWER_FORMATS)}."
        )
    data = path.read_bytes()
    is_list = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"["
    records = _read_list(path, data) if is_list else _read_lines(data)
    fmt = _check_format(path, records, is_list, fmt)
    convert = _CONVERTERS[fmt]
    answers: list[Answer] = []
    errors: list[LineError] = []
    unannotated = 0
    label_set = set(labels)
    for rec in records:
        if rec.error is not None:
            errors.append(LineError(rec.line, rec.error, rec.raw, rec.where))
            continue
        if rec.obj is None:
            continue
        try:
            task = convert(rec.obj)
            if task is None:
                unannotated += 1
                continue
            answers.append(
                _validate_task(
                    rec,
                    task,
                    label_set,
                    labels,
                    get_offsets,
                    snap=snap,
                    handed_out_task_hash=None if fmt == "prodigy" else handed_out_task_hash,
                )
            )
        except _BadLine as e:
            errors.append(LineError(rec.line, str(e), rec.raw, rec.where))
    superseded = 0
    if fmt == "labelstudio-min":  # one row per annotation: the latest per task counts
        answers, superseded = _latest_per_task(answers)
    return AnswerFile(path, fmt, answers, errors, unannotated, superseded)


def _latest_per_task(answers: list[Answer]) -> tuple[list[Answer], int]:
    """Keep the latest of several annotations of one Label Studio task (JSON_MIN rows)."""

    def key(a: Answer) -> tuple[int, int]:
        ann = a.task["_labelstudio"].get("annotation")
        return (a.timestamp or 0, ann if _is_int(ann) else 0)

    latest: dict[Any, Answer] = {}
    for a in answers:
        task_id = a.task["_labelstudio"].get("task")
        if task_id is None:
            task_id = ("line", a.line)
        if task_id not in latest or key(a) > key(latest[task_id]):
            latest[task_id] = a
    kept = {id(a) for a in latest.values()}
    return [a for a in answers if id(a) in kept], len(answers) - len(kept)


def _read_lines(data: bytes) -> list[_Record]:
    records = []
    for lineno, raw_bytes in enumerate(data.splitlines(), start=1):
        if lineno == 1:
            raw_bytes = raw_bytes.removeprefix(b"\xef\xbb\xbf")
        try:
            raw = raw_bytes.decode("utf8")
        except UnicodeDecodeError as e:
            records.append(_Record(lineno, "", error=f"not UTF-8 ({e.reason} at byte {e.start})"))
            continue
        if not raw.strip():
            continue
        try:
            records.append(_Record(lineno, raw, json.loads(raw)))
        except json.JSONDecodeError as e:
            records.append(
                _Record(lineno, raw, error=f"invalid JSON ({e.msg} at column {e.colno})")
            )
    return records


def _read_list(path: Path, data: bytes) -> list[_Record]:
    """The items of a JSON list, each with the line it starts on."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AdaptnerError(
            f"{path}: not UTF-8 ({e.reason} at byte {e.start}); nothing was imported."
        ) from None
    newlines = [i for i, c in enumerate(text) if c == "\n"]

    def line_of(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    decoder = json.JSONDecoder()
    records: list[_Record] = []
    pos = _skip_ws(text, text.index("[") + 1)
    if text[pos : pos + 1] == "]":
        pos += 1
    else:
        while True:
            try:
                obj, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise AdaptnerError(
                    f"{path}:{e.lineno}: invalid JSON in the list ({e.msg} at column "
                    f"{e.colno}); nothing was imported."
                ) from None
            task_id = obj.get("id") if isinstance(obj, dict) else None
            where = f"task {len(records) + 1}" + (f" (id {task_id})" if task_id is not None else "")
            records.append(_Record(line_of(pos), text[pos:end], obj, where))
            pos = _skip_ws(text, end)
            if text[pos : pos + 1] == ",":
                pos = _skip_ws(text, pos + 1)
                continue
            if text[pos : pos + 1] == "]":
                pos += 1
                break
            raise AdaptnerError(
                f"{path}:{line_of(pos)}: invalid JSON in the list (expected ',' or ']'); "
                "nothing was imported."
            )
    if text[pos:].strip():
        raise AdaptnerError(
            f"{path}:{line_of(_skip_ws(text, pos))}: extra data after the JSON list; nothing was "
            "imported."
        )
    return records


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _expected() -> str:
    return "; ".join(f"{name}: {desc}" for name, desc in ANSWER_FORMATS.items())


def _check_format(path: Path, records: list[_Record], is_list: bool, fmt: str | None) -> str:
    """The format of the records: ``fmt`` if given (checked), else detected."""
    objs = [r.obj for r in records if isinstance(r.obj, dict)]
    if is_list:
        if fmt in ("prodigy", "doccano"):
            raise AdaptnerError(
                f"{path} is a JSON list, but --format {fmt} reads JSON lines (one object per line)."
            )
        if not records:
            raise AdaptnerError(f"{path} is an empty JSON list; nothing was imported.")
        if fmt is not None:
            return fmt
        if not objs:
            kind = type(records[0].obj).__name__
            raise AdaptnerError(
                f"{path} is a JSON list of {kind}, not of tasks. Expected one of: {_expected()}."
            )
        keys = set(objs[0])
        if "annotations" in keys or "data" in keys:
            return "labelstudio"
        if "annotation_id" in keys or "annotator" in keys:
            return "labelstudio-min"
        raise AdaptnerError(
            f"{path}:{records[0].line}: a JSON list whose first item has keys "
            f"{', '.join(sorted(keys)) or 'none'}; not a Label Studio JSON or JSON_MIN export. "
            f"Expected one of: {_expected()}."
        )
    if fmt in ("labelstudio", "labelstudio-min"):
        raise AdaptnerError(
            f"{path} is not a JSON list, but --format {fmt} reads a Label Studio export "
            "(a JSON list of tasks)."
        )
    if fmt is not None:
        return fmt
    if records and all(r.obj is None for r in records) and records[0].raw.lstrip()[:1] != "{":
        first = records[0].raw.strip() or "(not UTF-8)"
        raise AdaptnerError(
            f"{path}:{records[0].line}: not JSON (the file starts with {first[:60]!r}); a CSV or "
            f"CoNLL export cannot be imported. Expected one of: {_expected()}."
        )
    if not objs or any("answer" in o for o in objs):
        return "prodigy"  # bad lines are then named one by one
    if any("label" in o for o in objs):
        return "doccano"
    first = next(r for r in records if isinstance(r.obj, dict))
    hint = (
        " This looks like a batch as handed out by `session next`: import the annotated "
        "answers instead."
        if "_task_hash" in first.obj or "_input_hash" in first.obj.get("meta", {})
        else ""
    )
    raise AdaptnerError(
        f"{path}:{first.line}: no line has an 'answer' (Prodigy) or a 'label' (doccano); the "
        f"first object has keys {', '.join(sorted(first.obj)) or 'none'}.{hint} Expected one "
        f"of: {_expected()}."
    )


# --- converters: one tool's record -> a Prodigy-style answer task (None: not annotated) ---
def _from_prodigy(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _BadLine(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _our_ids(*sources: Any) -> dict[str, Any]:
    """The ``_input_hash``/``_task_hash`` we sent, wherever the tool kept them."""
    out: dict[str, Any] = {}
    for src in sources:
        if not isinstance(src, dict):
            continue
        for key in ("_input_hash", "_task_hash"):
            if key in src and key not in out:
                out[key] = src[key]
    return out


def _iso_seconds(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def _labelstudio_spans(results: Any, text: str, what: str) -> list[dict[str, Any]]:
    """Label Studio ``labels`` results (or JSON_MIN ``label`` items) -> Prodigy spans."""
    if not isinstance(results, list):
        raise _BadLine(f"{what} must be a list, got {type(results).__name__}")
    spans = []
    for i, res in enumerate(results, start=1):
        if not isinstance(res, dict):
            raise _BadLine(f"{what} item {i} must be an object, got {type(res).__name__}")
        if "value" in res:  # full export: {"type": "labels", "value": {...}}
            if res.get("type") != "labels":
                raise _BadLine(
                    f"{what} item {i} has type {res.get('type')!r}; expected 'labels' "
                    "(a <Labels> control over the text, as in adaptner's batches)"
                )
            value = res["value"]
        else:  # JSON_MIN: the value itself
            value = res
        if not isinstance(value, dict):
            raise _BadLine(f"{what} item {i}: 'value' must be an object")
        tags = value.get("labels")
        if not isinstance(tags, list) or len(tags) != 1:
            raise _BadLine(f"{what} item {i} must have exactly one label, got {tags!r}")
        start, end = value.get("start"), value.get("end")
        if not _is_int(start) or not _is_int(end):
            raise _BadLine(f"{what} item {i}: 'start' and 'end' must be integers")
        shown = value.get("text")
        if isinstance(shown, str) and 0 <= start <= end <= len(text) and text[start:end] != shown:
            raise _BadLine(
                f"{what} item {i} ({start}-{end} {tags[0]!r}) says its text is {shown!r} but the "
                f"text there is {text[start:end]!r} (offsets counted differently?)"
            )
        spans.append({"start": start, "end": end, "label": tags[0]})
    return spans


def _from_labelstudio(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), dict):
        raise _BadLine("expected a Label Studio task (an object with 'data' and 'annotations')")
    data = obj["data"]
    annotations = obj.get("annotations", [])
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise _BadLine("'annotations' must be a list of objects")
    if not annotations:
        return None

    def when(a: dict[str, Any]) -> tuple:
        t = _iso_seconds(a.get("updated_at")) or _iso_seconds(a.get("created_at")) or 0
        return (t, a.get("id") if _is_int(a.get("id")) else 0)

    done = [a for a in annotations if not a.get("was_cancelled")]
    latest = max(done or annotations, key=when)
    text = data.get("text")
    task: dict[str, Any] = {
        "text": text,
        "answer": "accept" if done else "ignore",
        "spans": (
            _labelstudio_spans(latest.get("result", []), text, "annotation result")
            if done and isinstance(text, str)
            else []
        ),
        "meta": data.get("meta") if isinstance(data.get("meta"), dict) else {},
        **_our_ids(data),
        "_labelstudio": {"task": obj.get("id"), "annotation": latest.get("id")},
    }
    ts = when(latest)[0]
    if ts:
        task["_timestamp"] = ts
    if _is_int(latest.get("completed_by")):
        task["_annotator_id"] = str(latest["completed_by"])
    return task


def _from_labelstudio_min(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _BadLine(f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    task: dict[str, Any] = {
        "text": text,
        "answer": "accept",
        "spans": _labelstudio_spans(obj.get("label", []), text, "'label'")
        if isinstance(text, str)
        else [],
        "meta": obj.get("meta") if isinstance(obj.get("meta"), dict) else {},
        **_our_ids(obj),
        "_labelstudio": {"task": obj.get("id"), "annotation": obj.get("annotation_id")},
    }
    ts = _iso_seconds(obj.get("updated_at")) or _iso_seconds(obj.get("created_at"))
    if ts:
        task["_timestamp"] = ts
    return task


def _from_doccano(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _BadLine(f"expected a JSON object, got {type(obj).__name__}")
    raw = obj.get("label", [])
    if not isinstance(raw, list):
        raise _BadLine(f"'label' must be a list of [start, end, label], got {type(raw).__name__}")
    spans = []
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, list) or len(item) != 3:
            raise _BadLine(f"label {i} must be [start, end, label], got {item!r}")
        spans.append({"start": item[0], "end": item[1], "label": item[2]})
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return {
        "text": obj.get("text"),
        "answer": "accept",
        "spans": spans,
        "meta": {k: v for k, v in meta.items() if k not in ("_input_hash", "_task_hash")},
        **_our_ids(obj, meta),
        "_doccano": {"id": obj.get("id")},
    }


_CONVERTERS: dict[str, Callable[[Any], dict[str, Any] | None]] = {
    "prodigy": _from_prodigy,
    "labelstudio": _from_labelstudio,
    "labelstudio-min": _from_labelstudio_min,
    "doccano": _from_doccano,
}


# --- checks --------------------------------------------------------------------------
def _validate_task(
    rec: _Record,
    task: dict[str, Any],
    label_set: set[str],
    labels: Sequence[str],
    get_offsets: Callable[[str, int], Offsets],
    *,
    snap: bool = False,
    handed_out_task_hash: Callable[[int], int | None] | None = None,
) -> Answer:
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
    snaps: list[str] = []
    spans = _check_spans(raw_spans, text, offsets, label_set, labels, snaps if snap else None)
    t_hash = task.get("_task_hash")
    if t_hash is None and handed_out_task_hash is not None:
        t_hash = handed_out_task_hash(in_hash)
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
    if snaps:
        task["spans"] = [{"start": s, "end": e, "label": label} for s, e, label in spans]
    return Answer(
        line=rec.line,
        text=text,
        answer=answer,
        spans=spans,
        offsets=offsets,
        input_hash=in_hash,
        task_hash=t_hash,
        answer_hash=answer_hash(t_hash, answer, spans),
        timestamp=timestamp,
        task=task,
        where=rec.where,
        snaps=snaps,
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


def snap_span(text: str, offsets: Offsets, start: int, end: int) -> tuple[int, int] | None:
    """Widen a character span to token boundaries (after trimming whitespace at its ends).

    Returns:
        The snapped ``(start, end)``, or None if the span covers no token.
    """
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    covered = [(s, e) for s, e in offsets if s < end and e > start]
    if start >= end or not covered:
        return None
    return min(start, covered[0][0]), max(end, covered[-1][1])


def _check_spans(
    raw_spans: list,
    text: str,
    offsets: Offsets,
    label_set: set[str],
    labels: Sequence[str],
    snaps: list[str] | None = None,
) -> list[CharSpan]:
    """Check spans; with a ``snaps`` list, snap off-boundary spans and note each snap there."""
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
        if label not in label_set:
            raise _BadLine(
                f"{desc}: label {label!r} is not in the session's label set ({', '.join(labels)})"
            )
        off_boundary = start not in starts or end not in ends
        if off_boundary and snaps is not None:
            snapped = snap_span(text, offsets, start, end)
            if snapped is None:
                raise _BadLine(f"{desc} ({text[start:end]!r}) covers no token; cannot snap it")
            snaps.append(
                f"{desc} {text[start:end]!r} snapped to {snapped[0]}-{snapped[1]} "
                f"{text[snapped[0] : snapped[1]]!r}"
            )
            spans.append((snapped[0], snapped[1], label))
            continue
        if start not in starts:
            raise _BadLine(f"{desc} starts inside a token{_token_at(text, offsets, start)}")
        if end not in ends:
            raise _BadLine(f"{desc} ends inside a token{_token_at(text, offsets, end - 1)}")
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
    hint = "; spans must start and end on token boundaries (or pass --snap)"
    for s, e in offsets:
        if s <= char < e:
            return f" ({text[s:e]!r} at {s}-{e}){hint}"
    return hint


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
