"""Unit tests for AUM: fake-class construction, noise injection, flags, cleaning, a toy run."""

from itertools import product
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

from adaptner.dynamics.aum import (
    FAKE_LABEL,
    AUMResult,
    SpanFlag,
    TrainSpec,
    add_fake_class,
    choose_fake_tokens,
    default_fake_count,
    doc_bio,
    fake_eligible,
    find_flags,
    measure_aum,
    prodigy_tasks,
    summary_markdown,
    with_bio,
)
from adaptner.dynamics.noise import Flip, flag_precision_recall, flip, inject_noise, sieve
from adaptner.errors import AdaptnerError

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"

NAMES = ["Mette Frederiksen", "Lars", "Anna Hansen", "Peter"]
CITIES = ["København", "Aarhus", "Odense", "Aalborg", "Esbjerg"]


def make_doc(vocab, words, ents, domain="news"):
    spaces = [i + 1 < len(words) and words[i + 1] != "." for i in range(len(words))]
    doc = Doc(vocab, words=words, spaces=spaces)
    doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
    doc._.domain = domain
    return doc


def toy_docs(vocab):
    """40 sentences: '<name> bor i <city> .' and 'I <city> møder <name> pressen .'."""
    docs = []
    for name, city in product(NAMES, CITIES):
        n = name.split()
        docs.append(
            make_doc(
                vocab,
                [*n, "bor", "i", city, "."],
                [(0, len(n), "PERSON"), (len(n) + 2, len(n) + 3, "GPE")],
            )
        )
        docs.append(
            make_doc(
                vocab,
                ["I", city, "møder", *n, "pressen", "."],
                [(1, 2, "GPE"), (3, 3 + len(n), "PERSON")],
                "legal",
            )
        )
    return docs


@pytest.fixture
def vocab():
    return spacy.blank("da").vocab


# --- fake class ------------------------------------------------------------------------------


def test_fake_eligible_keeps_other_tags():
    tags = ["B-PERSON", "I-PERSON", "O", "B-GPE", None, "B-X", "I-X", "I-X"]
    assert fake_eligible(tags).tolist() == [False, True, True, True, False, False, False, True]


def test_add_fake_class_changes_only_the_chosen_tokens(vocab):
    doc = make_doc(
        vocab,
        ["Mette", "Frederiksen", "bor", "i", "Aarhus", "."],
        [(0, 2, "PERSON"), (4, 5, "GPE")],
    )
    (out,) = add_fake_class([doc], [(0, 1), (0, 3), (0, 4)])
    assert doc_bio(out) == [
        "B-PERSON",
        f"B-{FAKE_LABEL}",
        "O",
        f"B-{FAKE_LABEL}",
        f"B-{FAKE_LABEL}",
        "O",
    ]
    assert doc_bio(doc)[1] == "I-PERSON"  # the input is not modified
    assert out._.domain == "news"
    with pytest.raises(AdaptnerError, match="Token 0 of doc 0 cannot join the fake class"):
        add_fake_class([doc], [(0, 0)])


def test_choose_fake_tokens_disjoint_and_deterministic(vocab):
    docs = toy_docs(vocab)
    tags = [doc_bio(d) for d in docs]
    first = choose_fake_tokens(tags, 20, numpy.random.default_rng(0))
    again = choose_fake_tokens(tags, 20, numpy.random.default_rng(0))
    second = choose_fake_tokens(tags, 20, numpy.random.default_rng(1), exclude=set(first))
    assert first == again and len(first) == 20 and not set(first) & set(second)
    assert all(fake_eligible(tags[d])[t] for d, t in first + second)
    assert default_fake_count(380, 37) == 10


def test_with_bio_keeps_missing(vocab):
    doc = make_doc(vocab, ["a", "b", "c"], [(0, 1, "X")])
    out = with_bio(doc, ["B-X", None, "O"])
    assert doc_bio(out) == ["B-X", None, "O"]


# --- noise ---------------------------------------------------------------------------------


def test_inject_noise_flips_the_right_share(vocab):
    docs = toy_docs(vocab)
    noisy, flips = inject_noise(docs, 0.25, numpy.random.default_rng(0))
    assert len(flips) == 20  # 25 % of 80 spans
    for f in flips:
        assert f.old != f.new
        ents = [(e.start, e.end, e.label_) for e in noisy[f.doc].ents]
        assert (f.start, f.end, f.new) in ents
        assert (f.start, f.end, f.old) in [(e.start, e.end, e.label_) for e in docs[f.doc].ents]
    changed = sum(
        [(e.start, e.end, e.label_) for e in a.ents] != [(e.start, e.end, e.label_) for e in b.ents]
        for a, b in zip(docs, noisy, strict=True)
    )
    assert changed == len({f.doc for f in flips})
    assert inject_noise(docs, 0.25, numpy.random.default_rng(0))[1] == flips
    with pytest.raises(AdaptnerError, match=r"Noise fraction must be in \(0, 1\]"):
        inject_noise(docs, 0.0, numpy.random.default_rng(0))


# --- flags, cleaning, Prodigy ----------------------------------------------------------------


def fake_result(docs, aums, final_tags=None, threshold=-1.0):
    """An AUMResult with chosen token AUMs (one list per doc)."""
    lengths = [len(d) for d in docs]
    offsets = numpy.concatenate([[0], numpy.cumsum(lengths)])
    flat = numpy.concatenate([numpy.asarray(a, float) for a in aums])
    tags = final_tags or [numpy.array(["O"] * len(flat), dtype=object)]
    return AUMResult(
        offsets,
        flat,
        numpy.ones(len(flat), int),
        numpy.array([-3.0, threshold]),
        threshold,
        100.0,
        tags,
        [[], []],
        3,
    )


def test_find_flags_spans_and_o_runs(vocab):
    docs = [
        make_doc(vocab, ["Lars", "bor", "i", "Aarhus", "."], [(0, 1, "PERSON"), (3, 4, "GPE")]),
        make_doc(vocab, ["Det", "var", "Novo", "Nordisk", "."], []),
    ]
    final = numpy.array(
        ["B-PERSON", "O", "O", "B-PERSON", "O", "O", "O", "B-ORGANIZATION", "I-ORGANIZATION", "O"],
        dtype=object,
    )
    result = fake_result(docs, [[2.0, 3.0, 3.0, -4.0, 3.0], [3.0, 3.0, -2.0, -1.5, 1.0]], [final])
    flags = find_flags(docs, result)
    assert [(f.doc, f.start, f.end, f.label, f.predicted) for f in flags] == [
        (0, 3, 4, "GPE", "PERSON"),
        (1, 2, 4, "O", "ORGANIZATION"),
    ]
    assert flags[1].aum == pytest.approx(-1.75)
    tasks = prodigy_tasks(docs, flags, result)
    assert [t["meta"]["doc"] for t in tasks] == [0, 1]
    first = tasks[0]
    assert first["spans"] == [
        {"start": 0, "end": 4, "token_start": 0, "token_end": 0, "label": "PERSON"},
        {"start": 11, "end": 17, "token_start": 3, "token_end": 3, "label": "GPE"},
    ]
    assert first["tokens"][3] == {"text": "Aarhus", "start": 11, "end": 17, "id": 3, "ws": False}
    assert first["meta"]["aum"] == -4.0 and "PERSON over the gold GPE" in first["meta"]["reason"]
    assert tasks[1]["spans"] == [] and tasks[1]["flags"][0]["token_end"] == 3
    md = summary_markdown(docs, flags, result)
    assert "| GPE | 1 | 1 | 100.0 | -4.00 |" in md and "| PERSON | 1 | 0 | 0.0 | 2.00 |" in md


def test_at_percentile(vocab):
    docs = [make_doc(vocab, ["a"], [])]
    result = fake_result(docs, [[0.0]])
    result.fake_aum = numpy.array([-4.0, -2.0, 0.0, 2.0])
    assert result.at_percentile(50).threshold == -1.0
    assert result.at_percentile(100).threshold == 2.0 and result.threshold == -1.0
    with pytest.raises(AdaptnerError, match="Percentile must be in"):
        result.at_percentile(0)


def test_sieve_and_flip(vocab):
    doc = make_doc(
        vocab,
        ["Lars", "bor", "i", "Aarhus", "og", "Odense", "."],
        [(0, 1, "PERSON"), (3, 4, "PERSON"), (5, 6, "GPE")],
    )
    flags = [
        SpanFlag(0, 3, 4, "PERSON", -3.0, "GPE", "r"),
        SpanFlag(0, 5, 6, "GPE", -2.0, "O", "r"),
        SpanFlag(0, 1, 3, "O", -2.0, "ORGANIZATION", "r"),  # O runs are left alone
    ]
    (sieved,) = sieve([doc], flags)
    assert doc_bio(sieved) == ["B-PERSON", "O", "O", None, "O", None, "O"]
    (flipped,) = flip([doc], flags)
    assert doc_bio(flipped) == ["B-PERSON", "O", "O", "B-GPE", "O", "O", "O"]
    assert doc_bio(doc)[3] == "B-PERSON"


def test_flag_precision_recall():
    flags = [
        SpanFlag(0, 1, 2, "GPE", -1, "O", ""),
        SpanFlag(1, 0, 1, "GPE", -1, "O", ""),
        SpanFlag(2, 0, 1, "O", -1, "O", ""),
    ]
    flips = [Flip(0, 1, 2, "GPE", "PERSON"), Flip(3, 0, 2, "GPE", "DATE")]
    pr = flag_precision_recall(flags, flips)
    assert (pr["flagged"], pr["flipped"], pr["true_positives"]) == (2, 2, 1)
    assert pr["precision"] == 0.5 and pr["recall"] == 0.5


# --- a toy run -------------------------------------------------------------------------------


def test_flipped_label_has_the_lowest_aum(vocab, tmp_path):
    """One GPE span relabelled PERSON on purpose: AUM ranks that token lowest and flags it."""
    docs = toy_docs(vocab)
    target = 10  # "Lars bor i København ."
    assert [t.text for t in docs[target]][3] == "København"
    tags = doc_bio(docs[target])
    tags[3] = "B-PERSON"
    docs[target] = with_bio(docs[target], tags)
    db = DocBin(store_user_data=True)
    for d in docs:
        db.add(d)
    db.to_disk(tmp_path / "dev.spacy")
    spec = TrainSpec(TEST_CONFIG, tmp_path / "dev.spacy", "all", epochs=12, seed=0)
    result = measure_aum(docs, spec, tmp_path / "runs")
    assert result.n_runs.min() >= 1 and result.n_runs.max() == 2
    fake = [set(p) for p in result.fake_positions]
    assert fake[0] and fake[1] and not fake[0] & fake[1]
    flipped = result.offsets[target] + 3
    assert int(numpy.nanargmin(result.aum)) == flipped
    assert result.aum[flipped] <= result.threshold
    flags = find_flags(docs, result)
    assert (target, 3, 4, "PERSON") in [(f.doc, f.start, f.end, f.label) for f in flags]
    assert result.predicted_label(target, 3, 4) == "GPE"
