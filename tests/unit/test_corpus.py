"""Unit tests for row conversion and validation in adaptner.corpus."""

import json

import pytest
from spacy.vocab import Vocab

from adaptner.corpus import RowError, convert_corpus, row_to_doc
from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin


def make_row(text="Anne bor i Aarhus .", ents=None, domain="News", **extra):
    tokens, pos = [], 0
    for i, word in enumerate(text.split(" ")):
        tokens.append({"id": i, "start": pos, "end": pos + len(word)})
        pos += len(word) + 1
    row = {
        "text": text,
        "tokens": tokens,
        "ents": ents if ents is not None else [{"start": 0, "end": 4, "label": "PERSON"}],
        "sents": [{"start": 0, "end": len(text)}],
        "dagw_domain": domain,
        "dagw_source": "danavis",
        "dagw_source_full": "Danish daily newspapers",
    }
    row.update(extra)
    return row


def test_row_to_doc():
    doc = row_to_doc(make_row(), Vocab(), "train", 0)
    assert doc.text == "Anne bor i Aarhus ."
    assert [(e.text, e.label_) for e in doc.ents] == [("Anne", "PERSON")]
    assert doc._.domain == "news"
    assert doc._.source == "danavis"


def test_null_domain_goes_to_unknown():
    doc = row_to_doc(make_row(domain=None, dagw_source=None), Vocab(), "dev", 3)
    assert doc._.domain == "unknown"


@pytest.mark.parametrize(
    "ents,reason",
    [
        ([{"start": 0, "end": 3, "label": "PERSON"}], "does not align to token boundaries"),
        ([{"start": 0, "end": 4, "label": "PER"}], "unknown label 'PER'"),
        (
            [
                {"start": 0, "end": 8, "label": "PERSON"},
                {"start": 5, "end": 8, "label": "GPE"},
            ],
            "overlap",
        ),
    ],
)
def test_bad_entities_name_split_row_reason(ents, reason):
    with pytest.raises(RowError, match=rf"split 'train', row 7: .*{reason}"):
        row_to_doc(make_row(ents=ents), Vocab(), "train", 7)


def test_bad_tokens():
    row = make_row()
    row["tokens"][1]["start"] = 6
    with pytest.raises(RowError, match="row 0: .*gap"):
        row_to_doc(row, Vocab(), "train", 0)
    with pytest.raises(RowError, match="missing or non-string 'text'"):
        row_to_doc({"tokens": []}, Vocab(), "train", 0)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf8")


def test_convert_jsonl_per_domain(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_jsonl(src / "train.jsonl", [make_row(), make_row(domain="Legal"), make_row(domain=None)])
    write_jsonl(src / "dev.jsonl", [make_row(domain="Social Media")])
    report = convert_corpus(src, tmp_path / "corpus", report_path=tmp_path / "report.json")
    train_dir = tmp_path / "corpus" / "train"
    assert sorted(p.name for p in train_dir.iterdir() if not p.name.startswith(".")) == [
        "all.spacy",
        "legal.spacy",
        "news.spacy",
        "unknown.spacy",
    ]
    assert report["missing_splits"].keys() == {"test"}
    assert report["splits"]["train"]["stats"]["all"]["sentences"] == 3
    docs = read_docbin(tmp_path / "corpus" / "dev" / "social_media.spacy", Vocab())
    assert docs[0]._.domain == "social_media"
    assert "test" in (tmp_path / "report.md").read_text()


def test_bad_row_stops_and_writes_nothing(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    bad = make_row(ents=[{"start": 1, "end": 4, "label": "PERSON"}])
    write_jsonl(src / "train.jsonl", [make_row(), bad])
    with pytest.raises(AdaptnerError, match=r"train.jsonl split 'train', row 1: entity 0"):
        convert_corpus(src, tmp_path / "corpus")
    assert not (tmp_path / "corpus" / "train").exists()


def test_skip_invalid_writes_rejects(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    bad = make_row(ents=[{"start": 0, "end": 4, "label": "FOO"}])
    write_jsonl(src / "train.jsonl", [make_row(), bad, make_row()])
    rejects = tmp_path / "rejects.jsonl"
    report = convert_corpus(src, tmp_path / "corpus", skip_invalid=True, rejects_path=rejects)
    assert report["splits"]["train"]["rejected"] == 1
    lines = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert lines[0]["row"] == 1 and "unknown label 'FOO'" in lines[0]["reason"]


def test_malformed_jsonl_names_line(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "train.jsonl").write_text(json.dumps(make_row()) + "\n{not json\n")
    with pytest.raises(AdaptnerError, match=r"train.jsonl:2: invalid JSON"):
        convert_corpus(src, tmp_path / "corpus")


def test_missing_input_dir(tmp_path):
    with pytest.raises(AdaptnerError, match="does not exist"):
        convert_corpus(tmp_path / "nope", tmp_path / "corpus")


def test_corrupt_docbin(tmp_path):
    path = tmp_path / "x.spacy"
    path.write_bytes(b"this is not a docbin")
    with pytest.raises(AdaptnerError, match="x.spacy is corrupt"):
        read_docbin(path, Vocab())
