"""Unit tests for session formats: Prodigy hashes, task shapes, pools, answer validation."""

import json

import pytest
import spacy
import srsly
from murmurhash import mrmr

from adaptner.errors import AdaptnerError
from adaptner.session import answers as answer_files
from adaptner.session import formats
from adaptner.session import pool as pool_files

LABELS = ["GPE", "ORGANIZATION", "PERSON"]
TEXT = "Mette Frederiksen besøgte Aarhus."


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("da")


def offsets_of(nlp, text):
    return formats.doc_offsets(nlp.make_doc(text))


# --- hashes -------------------------------------------------------------------------------
def test_input_hash_hand_computed():
    # Prodigy: murmurhash (signed 32 bit) of the sorted JSON dump of the input keys.
    dump = '{"text":"Mette Frederiksen bes\\u00f8gte Aarhus."}'
    assert srsly.json_dumps({"text": TEXT}, sort_keys=True) == dump
    expected = mrmr.hash(dump)
    assert formats.input_hash({"text": TEXT, "meta": {"x": 1}}) == expected
    assert expected == 623208731  # the same number, written down once


def test_task_hash_hand_computed():
    spans = [{"start": 0, "end": 17, "label": "PERSON"}]
    task = {"text": TEXT, "spans": spans, "meta": {"ignored": True}}
    in_hash = mrmr.hash('{"text":"Mette Frederiksen bes\\u00f8gte Aarhus."}')
    dump = '{"spans":[{"end":17,"label":"PERSON","start":0}]}'
    expected = mrmr.hash(str(in_hash) + dump)
    assert formats.task_hash(task) == expected
    assert expected == 1067079741
    hashed = formats.set_hashes(dict(task))
    assert (hashed["_input_hash"], hashed["_task_hash"]) == (in_hash, expected)


def test_hashes_ignore_meta_and_keep_existing():
    a = formats.set_hashes({"text": "Hej", "meta": {"round": 1}})
    b = formats.set_hashes({"text": "Hej", "meta": {"round": 2}})
    assert a["_input_hash"] == b["_input_hash"] and a["_task_hash"] == b["_task_hash"]
    kept = formats.set_hashes({"text": "Hej", "_input_hash": 1, "_task_hash": 2})
    assert (kept["_input_hash"], kept["_task_hash"]) == (1, 2)
    assert formats.set_hashes(dict(kept), overwrite=True)["_input_hash"] == a["_input_hash"]


# --- task shapes ----------------------------------------------------------------------------
def test_prodigy_task_shape(nlp):
    offsets = offsets_of(nlp, TEXT)
    task = formats.make_task(TEXT, offsets, [(26, 32, "GPE"), (0, 17, "PERSON")], {"round": 0})
    assert [t["text"] for t in task["tokens"]] == ["Mette", "Frederiksen", "besøgte", "Aarhus", "."]
    assert task["tokens"][0] == {"text": "Mette", "start": 0, "end": 5, "id": 0, "ws": True}
    assert task["tokens"][3]["ws"] is False
    assert task["spans"] == [
        {"start": 0, "end": 17, "label": "PERSON", "token_start": 0, "token_end": 1},
        {"start": 26, "end": 32, "label": "GPE", "token_start": 3, "token_end": 3},
    ]
    assert task["_input_hash"] == formats.input_hash({"text": TEXT})
    assert task["_task_hash"] == formats.task_hash({"text": TEXT, "spans": task["spans"]})


def test_labelstudio_shape(nlp):
    task = formats.make_task(TEXT, offsets_of(nlp, TEXT), [(0, 17, "PERSON")], {"score": 0.5})
    data = json.loads(formats.render_batch([task], "labelstudio", "demo-round-1"))
    assert isinstance(data, list) and len(data) == 1
    item = data[0]
    assert item["data"]["text"] == TEXT
    pred = item["predictions"][0]
    assert pred["model_version"] == "demo-round-1"
    (result,) = pred["result"]
    assert result["from_name"] == "label" and result["to_name"] == "text"
    assert result["type"] == "labels"
    assert result["value"] == {
        "start": 0,
        "end": 17,
        "text": "Mette Frederiksen",
        "labels": ["PERSON"],
    }


def test_doccano_shape(nlp):
    spans = [(0, 17, "PERSON"), (26, 32, "GPE")]
    task = formats.make_task(TEXT, offsets_of(nlp, TEXT), spans, {})
    lines = formats.render_batch([task, task], "doccano", "m").splitlines()
    assert len(lines) == 2
    line = json.loads(lines[0])
    assert line["text"] == TEXT
    assert line["label"] == [[0, 17, "PERSON"], [26, 32, "GPE"]]


def test_unknown_format():
    with pytest.raises(AdaptnerError, match="Unknown batch format 'brat'"):
        formats.render_batch([], "brat", "m")


# --- docs from offsets ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["Hej  med dig", " Hej\nmed\tdig ", "Hej", "a  \n b", "ord. ", "Thyge  Thygesen, § 8 a.\n"],
)
def test_doc_from_offsets_matches_spacy(nlp, text):
    reference = nlp.make_doc(text)
    offsets = offsets_of(nlp, text)
    doc = formats.doc_from_offsets(nlp.vocab, text, offsets)
    assert doc.text == text
    assert [(t.text, t.whitespace_) for t in doc] == [(t.text, t.whitespace_) for t in reference]
    tokens = formats.prodigy_tokens(text, offsets)
    assert [t["ws"] for t in tokens] == [bool(t.whitespace_) for t in reference]


def test_spans_may_end_on_whitespace_tokens(tmp_path, nlp):
    # real DANSK entities sometimes include a trailing newline token
    text = "efter rentelovens § 8 a.\n"
    task = {"text": text, "answer": "accept", "spans": [{"start": 6, "end": 25, "label": "GPE"}]}
    (answer,), errors = validate(tmp_path, nlp, [task])
    assert not errors and answer.spans == [(6, 25, "GPE")]


# --- pools --------------------------------------------------------------------------------
def test_read_pool_text_and_jsonl(tmp_path, nlp):
    txt = tmp_path / "pool.txt"
    txt.write_text("Første sætning.\n\n  Anden sætning her.  \n", encoding="utf8")
    items = pool_files.read_pool(txt, nlp.make_doc, nlp.vocab, domain="legal")
    assert [i.text for i in items] == ["Første sætning.", "Anden sætning her."]
    assert items[0].domain == "legal" and items[0].offsets == [(0, 6), (7, 14), (14, 15)]
    jl = tmp_path / "pool.jsonl"
    jl.write_text('{"text": "En tekst.", "meta": {"domain": "web"}}\n', encoding="utf8")
    (item,) = pool_files.read_pool(jl, nlp.make_doc, nlp.vocab)
    assert item.domain == "web"


def test_read_pool_errors(tmp_path, nlp):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n', encoding="utf8")
    with pytest.raises(AdaptnerError, match=r"bad.jsonl:2: expected an object with a non-empty"):
        pool_files.read_pool(bad, nlp.make_doc, nlp.vocab)
    bad.write_text('{"text": "ok"\n', encoding="utf8")
    with pytest.raises(AdaptnerError, match=r"bad.jsonl:1: invalid JSON"):
        pool_files.read_pool(bad, nlp.make_doc, nlp.vocab)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf8")
    with pytest.raises(AdaptnerError, match="holds no sentences"):
        pool_files.read_pool(empty, nlp.make_doc, nlp.vocab)
    with pytest.raises(AdaptnerError, match="does not exist"):
        pool_files.read_pool(tmp_path / "nope.txt", nlp.make_doc, nlp.vocab)


def test_read_pool_folder_of_documents(tmp_path, nlp):
    """Documents split into sentences; each keeps its document and character offset."""
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    a = "Dom i sag 12\n\nMette Frederiksen besøgte Aarhus. Hun talte med\nLars Løkke i går.\n"
    b = "\ufeffKort note.  Novo Nordisk svarede ikke!\n"
    (docs / "a.txt").write_text(a, encoding="utf8")
    (docs / "sub" / "b.txt").write_text(b, encoding="utf8")
    (docs / "notes.md").write_text("Not a document.", encoding="utf8")
    items = pool_files.read_pool(docs, nlp.make_doc, nlp.vocab, domain="legal")
    assert [(i.source, i.text) for i in items] == [
        ("a.txt:0", "Dom i sag 12"),  # a heading: the blank line ends it
        ("a.txt:14", "Mette Frederiksen besøgte Aarhus."),
        ("a.txt:48", "Hun talte med\nLars Løkke i går."),
        ("sub/b.txt:0", "Kort note."),
        ("sub/b.txt:12", "Novo Nordisk svarede ikke!"),
    ]
    texts = {"a.txt": a, "sub/b.txt": b.lstrip("\ufeff")}
    for item in items:
        name, offset = item.source.rsplit(":", 1)
        doc_text, start = texts[name], int(offset)
        assert doc_text[start : start + len(item.text)] == item.text
        assert item.domain == "legal"
        # token offsets are the tokenizer's, relative to the sentence
        assert item.offsets == formats.doc_offsets(nlp.make_doc(item.text))


def test_read_pool_folder_errors(tmp_path, nlp):
    folder = tmp_path / "docs"
    folder.mkdir()
    with pytest.raises(AdaptnerError, match=r"docs has no \*\.txt documents"):
        pool_files.read_pool(folder, nlp.make_doc, nlp.vocab)
    (folder / "latin1.txt").write_bytes("Bøger.".encode("latin-1"))
    with pytest.raises(AdaptnerError, match=r"latin1.txt: not UTF-8 .* at byte 1"):
        pool_files.read_pool(folder, nlp.make_doc, nlp.vocab)


# --- answer validation ----------------------------------------------------------------------
def good_task(nlp, **changes):
    task = formats.make_task(TEXT, offsets_of(nlp, TEXT), [(0, 17, "PERSON")], {})
    task["answer"] = "accept"
    task.update(changes)
    return task


def validate(tmp_path, nlp, lines):
    path = tmp_path / "answers.jsonl"
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf8",
    )
    read = answer_files.validate_answers(path, LABELS, lambda text, h: offsets_of(nlp, text))
    return read.answers, read.errors


def test_valid_answer(tmp_path, nlp):
    answers, errors = validate(tmp_path, nlp, [good_task(nlp), "", good_task(nlp, answer="ignore")])
    assert errors == []
    assert [a.line for a in answers] == [1, 3]
    assert answers[0].spans == [(0, 17, "PERSON")]
    assert answers[0].answer_hash != answers[1].answer_hash
    assert answers[0].input_hash == formats.input_hash({"text": TEXT})


def test_answer_without_tokens_uses_tokenizer(tmp_path, nlp):
    task = {"text": TEXT, "answer": "accept", "spans": [{"start": 26, "end": 32, "label": "GPE"}]}
    (answer,), errors = validate(tmp_path, nlp, [task])
    assert not errors and answer.offsets == offsets_of(nlp, TEXT)
    assert answer.task_hash == formats.task_hash(task)


BAD_CASES = [
    ("not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ({"answer": "accept", "spans": []}, "missing required key 'text'"),
    ({"text": TEXT, "spans": []}, "missing required key 'answer'"),
    ({"text": TEXT, "answer": "accept"}, "missing required key 'spans'"),
    ({"text": "", "answer": "accept", "spans": []}, "'text' must be a non-empty string"),
    ({"text": TEXT, "answer": "maybe", "spans": []}, "answer 'maybe' is not one of accept"),
    ({"text": TEXT, "answer": "accept", "spans": {}}, "'spans' must be a list"),
    (
        {"text": TEXT, "answer": "accept", "spans": [{"start": 0, "end": 5}]},
        "span 1 is missing 'label'",
    ),
    (
        {"text": TEXT, "answer": "accept", "spans": [{"start": 20, "end": 99, "label": "GPE"}]},
        "span 1 (20-99 'GPE') is outside the text (length 33)",
    ),
    (
        {"text": TEXT, "answer": "accept", "spans": [{"start": 2, "end": 17, "label": "PERSON"}]},
        "span 1 (2-17 'PERSON') starts inside a token ('Mette' at 0-5)",
    ),
    (
        {"text": TEXT, "answer": "accept", "spans": [{"start": 0, "end": 9, "label": "PERSON"}]},
        "span 1 (0-9 'PERSON') ends inside a token ('Frederiksen' at 6-17)",
    ),
    (
        {"text": TEXT, "answer": "accept", "spans": [{"start": 0, "end": 5, "label": "PER"}]},
        "label 'PER' is not in the session's label set (GPE, ORGANIZATION, PERSON)",
    ),
    (
        {
            "text": TEXT,
            "answer": "accept",
            "spans": [
                {"start": 0, "end": 17, "label": "PERSON"},
                {"start": 6, "end": 17, "label": "GPE"},
            ],
        },
        "spans overlap: 0-17 'PERSON' ('Mette Frederiksen') and 6-17 'GPE'",
    ),
    (
        {
            "text": TEXT,
            "answer": "accept",
            "spans": [{"start": 0, "end": 17, "label": "PERSON", "token_end": 0}],
        },
        "token_end 0 does not match its offsets (token 1)",
    ),
    (
        {"text": TEXT, "answer": "reject", "spans": [], "_input_hash": 123},
        "_input_hash 123 does not match the text",
    ),
    (
        {"text": TEXT, "answer": "accept", "spans": [], "tokens": [{"start": 0, "end": 50}]},
        "token 0 (0-50) is outside the text",
    ),
    (
        {
            "text": TEXT,
            "answer": "accept",
            "spans": [],
            "tokens": [{"start": 0, "end": 5, "text": "Mette"}],
        },
        "after the last token is in no token",
    ),
]


@pytest.mark.parametrize("line,message", BAD_CASES)
def test_bad_answer_lines(tmp_path, nlp, line, message):
    answers, errors = validate(tmp_path, nlp, [good_task(nlp), line])
    assert len(answers) == 1
    (error,) = errors
    assert error.line == 2
    assert message in error.reason


def test_not_utf8_and_missing_file(tmp_path, nlp):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps({"text": "x", "answer": "ignore"}).encode() + b"\n\xe6\xf8\n")
    read = answer_files.validate_answers(path, LABELS, lambda t, h: offsets_of(nlp, t))
    answers, errors = read.answers, read.errors
    assert len(answers) == 1 and errors[0].line == 2 and "not UTF-8" in errors[0].reason
    with pytest.raises(AdaptnerError, match="does not exist"):
        answer_files.validate_answers(tmp_path / "nope.jsonl", LABELS, lambda t, h: [])
