"""Answers from Label Studio and doccano (hand-built exports), format detection, snapping."""

import json

import pytest
import spacy

from adaptner.errors import AdaptnerError
from adaptner.session import answers as answer_files
from adaptner.session import formats

LABELS = ["GPE", "ORGANIZATION", "PERSON", "WORK OF ART"]
TEXT = "Mette Frederiksen besøgte Aarhus."
OTHER = "Novo Nordisk har hovedsæde i Bagsværd."


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("da")


def read(path, nlp, **kwargs):
    return answer_files.validate_answers(
        path, LABELS, lambda text, h: formats.doc_offsets(nlp.make_doc(text)), **kwargs
    )


def ls_result(start, end, label, text=TEXT):
    return {
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "value": {"start": start, "end": end, "text": text[start:end], "labels": [label]},
    }


def ls_task(text, annotations, task_id=1, **data):
    return {"id": task_id, "data": {"text": text, **data}, "annotations": annotations}


def ls_annotation(result, ann_id=1, cancelled=False, updated="2026-12-01T10:00:00.000000Z"):
    return {
        "id": ann_id,
        "result": result,
        "was_cancelled": cancelled,
        "created_at": updated,
        "updated_at": updated,
        "completed_by": 1,
    }


def write_json(path, data):
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf8")
    return path


def write_lines(path, lines):
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf8")
    return path


# --- Label Studio JSON ------------------------------------------------------------------------
def test_labelstudio_latest_annotation_skips_and_empties(tmp_path, nlp):
    sent = formats.set_hashes({"text": TEXT})
    tasks = [
        ls_task(
            TEXT,
            [
                ls_annotation([ls_result(26, 32, "GPE")], 1, updated="2026-12-01T10:00:00Z"),
                ls_annotation(
                    [ls_result(0, 17, "PERSON"), ls_result(26, 32, "GPE")],
                    2,
                    updated="2026-12-01T11:00:00Z",
                ),
                ls_annotation([], 3, cancelled=True, updated="2026-12-01T12:00:00Z"),
            ],
            task_id=7,
            _input_hash=sent["_input_hash"],
            _task_hash=sent["_task_hash"],
            meta={"rank": 1},
        ),
        ls_task(OTHER, [ls_annotation([], 4, cancelled=True)], task_id=8),
        ls_task("Der var ingen mennesker.", [ls_annotation([], 5)], task_id=9),
        ls_task("Ikke annoteret.", [], task_id=10),
    ]
    path = write_json(tmp_path / "ls.json", tasks)
    r = read(path, nlp)
    assert r.fmt == "labelstudio" and r.errors == [] and r.unannotated == 1
    latest, skipped, empty = r.answers
    # the latest annotation that was not cancelled counts
    assert latest.answer == "accept" and latest.spans == [(0, 17, "PERSON"), (26, 32, "GPE")]
    assert latest.task_hash == sent["_task_hash"] and latest.timestamp is not None
    assert latest.task["_labelstudio"] == {"task": 7, "annotation": 2}
    assert latest.task["meta"] == {"rank": 1}
    # every annotation cancelled (skipped): ignore; empty result: accept with no entities
    assert (skipped.answer, skipped.spans) == ("ignore", [])
    assert (empty.answer, empty.spans) == ("accept", [])
    starts = [i for i, x in enumerate(path.read_text().splitlines(), 1) if x == "  {"]
    assert [a.line for a in r.answers] == starts[:3]  # the line each task starts on


def test_labelstudio_errors_name_line_and_task(tmp_path, nlp):
    tasks = [
        ls_task(TEXT, [ls_annotation([ls_result(0, 17, "PERSON")])], task_id=1),
        ls_task(TEXT, [ls_annotation([ls_result(0, 3, "PERSON")])], task_id=2),
        ls_task(TEXT, [ls_annotation([{"type": "choices", "value": {"choices": ["x"]}}])], 3),
        ls_task(TEXT, [ls_annotation([ls_result(0, 5, "PER")])], task_id=4),
        {"id": 5, "annotations": []},
    ]
    bad = ls_result(26, 32, "GPE")
    bad["value"]["text"] = "Aarhus!"
    tasks.append(ls_task(TEXT, [ls_annotation([bad])], task_id=6))
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf8")  # one line
    r = read(path, nlp)
    assert len(r.answers) == 1
    messages = [e.message(path) for e in r.errors]
    assert messages[0].startswith(f"{path}:1: task 2 (id 2): span 1 (0-3 'PERSON') ends inside")
    assert "task 3 (id 3): annotation result item 1 has type 'choices'" in messages[1]
    assert "task 4 (id 4): span 1 (0-5 'PER'): label 'PER' is not in" in messages[2]
    assert "task 5 (id 5): expected a Label Studio task" in messages[3]
    assert "says its text is 'Aarhus!' but the text there is 'Aarhus'" in messages[4]


def test_labelstudio_edited_text_is_refused(tmp_path, nlp):
    sent = formats.set_hashes({"text": TEXT})
    task = ls_task(TEXT + " ", [ls_annotation([])], _input_hash=sent["_input_hash"])
    r = read(write_json(tmp_path / "ls.json", [task]), nlp)
    assert "does not match the text" in r.errors[0].reason


# --- Label Studio JSON_MIN ----------------------------------------------------------------------
def test_labelstudio_min(tmp_path, nlp):
    sent = formats.set_hashes({"text": TEXT})
    rows = [
        {
            "text": TEXT,
            "_input_hash": sent["_input_hash"],
            "_task_hash": sent["_task_hash"],
            "meta": {"rank": 1},
            "id": 7,
            "label": [{"start": 0, "end": 17, "text": "Mette Frederiksen", "labels": ["PERSON"]}],
            "annotator": 1,
            "annotation_id": 2,
            "created_at": "2026-12-01T10:00:00Z",
            "updated_at": "2026-12-01T11:00:00Z",
            "lead_time": 3.2,
        },
        {"text": OTHER, "id": 8, "annotator": 1, "annotation_id": 3},  # no entities
    ]
    r = read(write_json(tmp_path / "min.json", rows), nlp)
    assert r.fmt == "labelstudio-min" and r.errors == []
    first, second = r.answers
    assert first.spans == [(0, 17, "PERSON")] and first.task_hash == sent["_task_hash"]
    assert (second.answer, second.spans) == ("accept", [])


# --- doccano ------------------------------------------------------------------------------------
def test_doccano_keeps_our_metadata(tmp_path, nlp):
    sent = formats.set_hashes({"text": TEXT})
    lines = [
        {
            "id": 3,
            "text": TEXT,
            "label": [[0, 17, "PERSON"], [26, 32, "GPE"]],
            "meta": {"rank": 2, "_input_hash": sent["_input_hash"], "_task_hash": 5},
        },
        {"id": 4, "text": OTHER, "label": [], "_input_hash": formats.input_hash({"text": OTHER})},
        {"id": 5, "text": OTHER, "label": [[0, 4]]},
    ]
    r = read(write_lines(tmp_path / "doccano.jsonl", lines), nlp)
    assert r.fmt == "doccano"
    first, second = r.answers
    assert first.answer == "accept" and first.spans == [(0, 17, "PERSON"), (26, 32, "GPE")]
    assert first.task_hash == 5 and first.task["meta"] == {"rank": 2}
    assert second.spans == []
    (error,) = r.errors
    assert error.line == 3 and "label 1 must be [start, end, label], got [0, 4]" in error.reason


def test_text_matching_uses_handed_out_task_hash(tmp_path, nlp):
    path = write_lines(tmp_path / "d.jsonl", [{"text": TEXT, "label": []}])
    r = read(path, nlp, handed_out_task_hash={formats.input_hash({"text": TEXT}): 42}.get)
    assert r.answers[0].task_hash == 42


# --- detection --------------------------------------------------------------------------------
def test_unknown_formats_say_what_was_expected(tmp_path, nlp):
    cases = [
        (write_json(tmp_path / "a.json", [{"foo": 1}]), "first item has keys foo"),
        (write_json(tmp_path / "b.json", [1, 2]), "a JSON list of int, not of tasks"),
        (write_json(tmp_path / "c.json", []), "empty JSON list"),
        (write_lines(tmp_path / "d.jsonl", [{"text": TEXT}]), "first object has keys text"),
        (
            write_lines(tmp_path / "e.jsonl", [formats.set_hashes({"text": TEXT, "spans": []})]),
            "looks like a batch as handed out by `session next`",
        ),
    ]
    for path, message in cases:
        with pytest.raises(AdaptnerError) as err:
            read(path, nlp)
        assert message in str(err.value), str(err.value)
    with pytest.raises(AdaptnerError) as err:
        read(cases[0][0], nlp)
    for name in answer_files.ANSWER_FORMATS:
        assert f"{name}: " in str(err.value)
    conll = tmp_path / "export.conll"
    conll.write_text("-DOCSTART- -X- O\n\nMette -X- _ B-PERSON\n", encoding="utf8")
    with pytest.raises(AdaptnerError, match=r"export.conll:1: not JSON \(the file starts with "):
        read(conll, nlp)
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"data": {"text": "x"}},\n {"data": \n]', encoding="utf8")
    with pytest.raises(AdaptnerError, match=r"broken.json:4: invalid JSON in the list"):
        read(broken, nlp)


def test_forced_format(tmp_path, nlp):
    path = write_lines(tmp_path / "d.jsonl", [{"text": TEXT, "label": [], "answer": "x"}])
    assert read(path, nlp).fmt == "prodigy"
    r = read(path, nlp, fmt="doccano")
    assert r.fmt == "doccano" and r.answers[0].answer == "accept"
    with pytest.raises(AdaptnerError, match="--format labelstudio reads a Label Studio export"):
        read(path, nlp, fmt="labelstudio")
    lst = write_json(tmp_path / "l.json", [ls_task(TEXT, [])])
    with pytest.raises(AdaptnerError, match="is a JSON list, but --format doccano reads JSON"):
        read(lst, nlp, fmt="doccano")
    with pytest.raises(AdaptnerError, match="Unknown answers format 'csv'"):
        read(lst, nlp, fmt="csv")


# --- snapping -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "start,end,expected",
    [
        (0, 3, (0, 5)),  # "Met" -> "Mette"
        (2, 12, (0, 17)),  # "tte Freder" -> "Mette Frederiksen"
        (26, 33, (26, 33)),  # on boundaries ("Aarhus.") already
        (25, 32, (26, 32)),  # leading space trimmed
        (26, 29, (26, 32)),
    ],
)
def test_snap_span(nlp, start, end, expected):
    offsets = formats.doc_offsets(nlp.make_doc(TEXT))
    assert answer_files.snap_span(TEXT, offsets, start, end) == expected


def test_snap_reports_each_snap(tmp_path, nlp):
    task = ls_task(
        TEXT, [ls_annotation([ls_result(0, 9, "PERSON"), ls_result(27, 32, "WORK OF ART")])]
    )
    path = write_json(tmp_path / "ls.json", [task])
    refused = read(path, nlp)
    assert "ends inside a token ('Frederiksen' at 6-17)" in refused.errors[0].reason
    assert "(or pass --snap)" in refused.errors[0].reason
    r = read(path, nlp, snap=True)
    (a,) = r.answers
    assert a.spans == [(0, 17, "PERSON"), (26, 32, "WORK OF ART")]
    assert a.snaps == [
        "span 1 (0-9 'PERSON') 'Mette Fre' snapped to 0-17 'Mette Frederiksen'",
        "span 2 (27-32 'WORK OF ART') 'arhus' snapped to 26-32 'Aarhus'",
    ]
    assert a.task["spans"][0] == {"start": 0, "end": 17, "label": "PERSON"}
    spaces = ls_task(TEXT, [ls_annotation([ls_result(17, 18, "PERSON")])])
    r = read(write_json(tmp_path / "sp.json", [spaces]), nlp, snap=True)
    assert "covers no token; cannot snap it" in r.errors[0].reason
