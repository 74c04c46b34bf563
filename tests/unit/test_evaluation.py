"""Unit tests for span evaluation (seqeval vs spaCy's scorer) and the matrix outputs."""

import json

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span
from spacy.vocab import Vocab
from typer.testing import CliRunner

import adaptner  # noqa: F401 - installs extensions
from adaptner.errors import AdaptnerError
from adaptner.evaluation import (
    doc_to_bio,
    evaluate_docs,
    evaluate_model,
    load_eval_docs,
    load_pipeline,
    max_difference,
    report_to_markdown,
    score_docs,
    seqeval_scores,
    split_name,
    write_report,
)
from adaptner.labels import ONTONOTES_LABELS
from adaptner.matrix import matrix_to_markdown, plan_rows, plot_heatmap
from adaptner.scoring import fresh_doc, ner_prf

VOCAB = Vocab()


def make_doc(words, ents=(), *, annotated=True, spaces=None, domain=None, split="dev"):
    """A gold-style Doc; ``ents`` are (start, end, label) token spans."""
    doc = Doc(VOCAB, words=list(words), spaces=spaces)
    if annotated:
        doc.set_ents([Span(doc, s, e, label=lab) for s, e, lab in ents], default="outside")
    doc._.domain = domain
    doc.user_data["split"] = split
    return doc


def with_ents(doc, ents):
    """A prediction-style copy of ``doc`` with the given entities."""
    pred = fresh_doc(doc, VOCAB)
    pred.set_ents([Span(pred, s, e, label=lab) for s, e, lab in ents], default="outside")
    return pred


SENT1 = ["Anna", "Hansen", "bor", "i", "Aarhus", "."]
SENT2 = ["Mødet", "er", "i", "morgen", "kl.", "10", "."]


@pytest.fixture
def gold_pred():
    """Gold and predictions with 1 TP, 2 FP, 2 FN (P = R = F = 1/3)."""
    gold = [
        make_doc(SENT1, [(0, 2, "PERSON"), (4, 5, "GPE")]),
        make_doc(SENT2, [(3, 4, "DATE")]),
    ]
    pred = [
        with_ents(gold[0], [(0, 2, "PERSON"), (4, 5, "LOCATION")]),  # TP PERSON, wrong label
        with_ents(gold[1], [(2, 4, "DATE")]),  # wrong boundary
    ]
    return gold, pred


def test_doc_to_bio_iob2():
    doc = make_doc(SENT1, [(0, 2, "PERSON"), (4, 5, "WORK OF ART")])
    assert doc_to_bio(doc) == ["B-PERSON", "I-PERSON", "O", "O", "B-WORK OF ART", "O"]
    assert doc_to_bio(make_doc([])) == []


def test_fresh_doc_keeps_tokens_and_spaces():
    doc = make_doc(
        ["Hej", ",", "Anna", "!"], [(2, 3, "PERSON")], spaces=[False, True, False, False]
    )
    copy = fresh_doc(doc, Vocab())
    assert [t.text for t in copy] == [t.text for t in doc]
    assert copy.text == doc.text == "Hej, Anna!"
    assert copy.ents == ()


def test_known_scores(gold_pred):
    gold, pred = gold_pred
    s = score_docs(gold, pred)
    assert s["docs"] == 2 and s["words"] == 13
    assert s["gold_ents"] == 3 and s["pred_ents"] == 3
    for scores in (s, s["seqeval"]):
        assert scores["ents_p"] == pytest.approx(1 / 3)
        assert scores["ents_r"] == pytest.approx(1 / 3)
        assert scores["ents_f"] == pytest.approx(1 / 3)
    per = s["ents_per_type"]
    assert per["PERSON"] == {"p": 1.0, "r": 1.0, "f": 1.0, "support": 1, "predicted": 1}
    assert per["GPE"]["r"] == 0.0 and per["GPE"]["support"] == 1 and per["GPE"]["predicted"] == 0
    assert per["LOCATION"]["p"] == 0.0 and per["LOCATION"]["support"] == 0
    assert per["DATE"]["f"] == 0.0 and per["DATE"]["support"] == 1
    assert set(s["seqeval"]["ents_per_type"]) == set(per)
    assert s["max_abs_diff"] < 1e-9


def test_partial_credit_per_label():
    gold = [make_doc(SENT1, [(0, 2, "PERSON"), (4, 5, "GPE")]), make_doc(SENT2, [(3, 4, "DATE")])]
    pred = [with_ents(gold[0], [(0, 2, "PERSON"), (4, 5, "GPE")]), with_ents(gold[1], [])]
    s = score_docs(gold, pred)
    assert s["ents_p"] == pytest.approx(1.0)
    assert s["ents_r"] == pytest.approx(2 / 3)
    assert s["ents_f"] == pytest.approx(0.8)
    assert s["seqeval"]["ents_f"] == pytest.approx(0.8)
    assert s["ents_per_type"]["DATE"]["r"] == 0.0


def test_seqeval_equals_spacy_on_random_docs():
    """Many random gold/pred pairs, incl. the label with spaces and adjacent same-label spans."""
    rng = numpy.random.default_rng(0)
    labels = ["PERSON", "GPE", "WORK OF ART", "DATE"]

    def random_ents(n):
        ents, i = [], 0
        while i < n:
            if rng.random() < 0.3:
                length = int(rng.integers(1, 4))
                end = min(n, i + length)
                ents.append((i, end, labels[int(rng.integers(len(labels)))]))
                i = end
            else:
                i += 1
        return ents

    for _ in range(20):
        gold, pred = [], []
        for _ in range(int(rng.integers(1, 6))):
            n = int(rng.integers(0, 12))
            words = [f"w{i}" for i in range(n)]
            g = make_doc(words, random_ents(n))
            gold.append(g)
            pred.append(with_ents(g, random_ents(n)))
        a, b = seqeval_scores(gold, pred), ner_prf(gold, pred)
        assert max_difference(a, b) < 1e-6


def test_empty_docs_and_empty_batch():
    gold = [make_doc([]), make_doc(SENT1, [(0, 2, "PERSON")]), make_doc([])]
    pred = [with_ents(gold[0], []), with_ents(gold[1], [(0, 2, "PERSON")]), with_ents(gold[2], [])]
    s = score_docs(gold, pred)
    assert s["ents_f"] == pytest.approx(1.0) and s["seqeval"]["ents_f"] == pytest.approx(1.0)
    only_empty = score_docs([make_doc([])], [with_ents(make_doc([]), [])])
    assert only_empty["ents_f"] == 0.0 and only_empty["gold_ents"] == 0
    assert score_docs([], [])["docs"] == 0


def test_no_entities_anywhere_is_zero_not_error():
    gold = [make_doc(SENT2, [])]
    s = score_docs(gold, [with_ents(gold[0], [])])
    assert (s["ents_p"], s["ents_r"], s["ents_f"]) == (0.0, 0.0, 0.0)
    assert s["seqeval"]["ents_f"] == 0.0 and s["ents_per_type"] == {}


def test_unannotated_gold_counts_as_outside_in_both_scorers():
    gold = [make_doc(SENT1, annotated=False)]
    pred = [with_ents(gold[0], [(0, 1, "PERSON")])]
    s = score_docs(gold, pred)
    assert s["ents_p"] == 0.0 and s["seqeval"]["ents_p"] == 0.0  # a false positive for both
    assert s["ents_per_type"]["PERSON"]["predicted"] == 1
    assert s["max_abs_diff"] == 0.0


def test_misaligned_tokens_rejected():
    gold = [make_doc(SENT1, [(0, 1, "PERSON")])]
    other = Doc(VOCAB, words=["Anna Hansen", "bor", "i", "Aarhus", "."])
    with pytest.raises(AdaptnerError, match="different tokens"):
        score_docs(gold, [other])
    with pytest.raises(AdaptnerError, match="1 gold docs but 0"):
        score_docs(gold, [])


# --- a real pipeline that sets doc.ents, without training ------------------------------------


def ruler_nlp():
    nlp = spacy.blank("da")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": "Anna"},
            {"label": "GPE", "pattern": "Aarhus"},
            {"label": "DATE", "pattern": "morgen"},
        ]
    )
    return nlp


@pytest.fixture
def ruler_dir(tmp_path):
    path = tmp_path / "ruler"
    ruler_nlp().to_disk(path)
    return path


def write_docbin(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(store_user_data=True, docs=docs).to_disk(path)


@pytest.fixture
def split_dir(tmp_path):
    """corpus/dev with news (PERSON/GPE/DATE), legal (one miss) and social_media (no ents)."""
    dev = tmp_path / "corpus" / "dev"
    news = [
        make_doc(SENT1, [(0, 2, "PERSON"), (4, 5, "GPE")], domain="news"),  # ruler: Anna only
        make_doc(SENT2, [(3, 4, "DATE")], domain="news"),
    ]
    legal = [make_doc(["Loven", "gælder", "i", "Aarhus"], [(3, 4, "GPE")], domain="legal")]
    social = [make_doc(["ok", "tak"], [], domain="social_media")]
    write_docbin(dev / "news.spacy", news)
    write_docbin(dev / "legal.spacy", legal)
    write_docbin(dev / "social_media.spacy", social)
    write_docbin(dev / "all.spacy", news + legal + social)
    return dev


def test_evaluate_docs_micro_macro_and_domain_without_entities(split_dir):
    docs = load_eval_docs(split_dir, "all")
    assert list(docs) == ["news", "legal", "social_media"]  # DOMAINS order, all.spacy excluded
    report = evaluate_docs(ruler_nlp(), docs, batch_size=2)
    news, legal = report["per_domain"]["news"], report["per_domain"]["legal"]
    # news: gold PERSON(0,2), GPE, DATE; ruler: PERSON(0,1) wrong boundary, GPE ok, DATE ok
    assert news["ents_p"] == pytest.approx(2 / 3) and news["ents_r"] == pytest.approx(2 / 3)
    assert legal["ents_f"] == pytest.approx(1.0)
    assert report["per_domain"]["social_media"]["gold_ents"] == 0
    assert report["macro"]["domains"] == ["news", "legal"]
    assert report["macro"]["excluded"] == ["social_media"]
    assert report["macro"]["ents_f"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert report["overall"]["ents_p"] == pytest.approx(3 / 4)
    assert report["overall"]["ents_r"] == pytest.approx(3 / 4)
    assert report["agreement"]["ok"]
    assert report["speed"]["words"] == 13 + 4 + 2 and report["speed"]["docs"] == 4
    assert report["speed"]["words_per_second"] > 0


def test_evaluate_model_writes_json_and_markdown(ruler_dir, split_dir, tmp_path):
    report = evaluate_model(ruler_dir, split_dir, domains="news,legal", batch_size=8)
    assert report["split"] == "dev"
    assert report["domains"] == ["news", "legal"]
    assert report["entity_components"] == ["entity_ruler"]
    json_path, md_path = write_report(report, tmp_path / "metrics" / "eval.json")
    assert md_path.name == "eval.md"
    assert json.loads(json_path.read_text())["overall"]["ents_f"] == pytest.approx(
        report["overall"]["ents_f"]
    )
    md = md_path.read_text()
    assert "Scored on **dev**" in md and "| news |" in md and "macro (2 domains)" in md
    assert "words/s" in report_to_markdown(report)


def test_single_docbin_grouped_by_domain(split_dir):
    docs = load_eval_docs(split_dir / "all.spacy", "all-but:legal")
    assert {d: len(v) for d, v in docs.items()} == {"news": 2, "social_media": 1}


def test_split_name_from_user_data_then_folder(tmp_path):
    assert split_name(tmp_path / "whatever", [make_doc(["a"], split="test")]) == "test"
    assert split_name(tmp_path / "dev", []) == "dev"
    assert split_name(tmp_path / "dev" / "news.spacy", []) == "dev"


def test_cli_evaluate(ruler_dir, split_dir, tmp_path):
    from adaptner.cli import app

    out = tmp_path / "m" / "eval.json"
    result = CliRunner().invoke(
        app, ["evaluate", str(ruler_dir), "--data", str(split_dir), "-d", "news", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "scored on dev" in result.output
    assert out.exists() and out.with_suffix(".md").exists()


# --- bad input -----------------------------------------------------------------------------


def test_missing_test_split_suggests_dev(tmp_path, split_dir):
    with pytest.raises(AdaptnerError, match=r"test split is missing.*--data .*dev"):
        load_eval_docs(split_dir.parent / "test")
    with pytest.raises(AdaptnerError, match="does not exist"):
        load_eval_docs(tmp_path / "nowhere")


def test_not_a_pipeline(tmp_path, ruler_dir):
    with pytest.raises(AdaptnerError, match="does not exist"):
        load_pipeline(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdaptnerError, match="not a spaCy pipeline"):
        load_pipeline(tmp_path / "empty")
    (tmp_path / "outer" / "model-best").mkdir(parents=True)
    for name in ("config.cfg", "meta.json"):
        (tmp_path / "outer" / "model-best" / name).write_text("{}")
    with pytest.raises(AdaptnerError, match="Did you mean"):
        load_pipeline(tmp_path / "outer")


def test_pipeline_without_entities(tmp_path):
    nlp = spacy.blank("da")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(tmp_path / "sents")
    with pytest.raises(AdaptnerError, match="no component that sets doc.ents"):
        load_pipeline(tmp_path / "sents")


def test_bad_docbins_and_domains(split_dir):
    (split_dir / "web.spacy").write_bytes(b"not a docbin")
    with pytest.raises(AdaptnerError, match="web.spacy is corrupt"):
        load_eval_docs(split_dir, "web")
    write_docbin(split_dir / "wiki_books.spacy", [])
    with pytest.raises(AdaptnerError, match="wiki_books.spacy holds no documents"):
        load_eval_docs(split_dir, "wiki_books")
    with pytest.raises(AdaptnerError, match="Unknown domain 'nonsense'"):
        load_eval_docs(split_dir, "nonsense")
    with pytest.raises(AdaptnerError, match="No data .* for the selected domains 'conversation'"):
        load_eval_docs(split_dir, "conversation")


# --- matrix outputs ------------------------------------------------------------------------


def test_plan_rows_joint():
    rows = plan_rows(["news", "legal", "web"], joint="news")
    assert [r.name for r in rows] == ["news", "legal", "web", "news+legal", "news+web"]
    assert rows[3].domains_spec == "news,legal" and rows[3].joint


def test_matrix_markdown_and_heatmap(tmp_path):
    matrix = {
        "config": "configs/test/bio_cnn.cfg",
        "data": "corpus/dev",
        "split": "dev",
        "seed": 0,
        "overrides": {},
        "rows": ["news", "legal", "news+legal"],
        "cols": ["news", "legal"],
        "ents_f": [[0.5, 0.25], [0.125, None], [0.5, 0.75]],
        "row_meta": {
            "news": {"train_domains": ["news"], "joint": False},
            "legal": {"train_domains": ["legal"], "joint": False},
            "news+legal": {"train_domains": ["news", "legal"], "joint": True},
        },
        "summary": {
            "news": {"out_of_domain_mean": 0.25},
            "legal": {"out_of_domain_mean": 0.125},
            "news+legal": {"out_of_domain_mean": None},
        },
    }
    md = matrix_to_markdown(matrix)
    assert "| news | **50.0** | 25.0 | 25.0 |" in md
    assert "| legal | 12.5 | **–** | 12.5 |" in md
    assert "scored on **dev**" in md
    png = plot_heatmap(matrix, tmp_path / "m.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_all_labels_survive_seqeval_parsing():
    """Every OntoNotes label (incl. "WORK OF ART") round-trips through seqeval's tag parsing."""
    words = [f"w{i}" for i in range(len(ONTONOTES_LABELS))]
    ents = [(i, i + 1, lab) for i, lab in enumerate(ONTONOTES_LABELS)]
    gold = [make_doc(words, ents)]
    s = score_docs(gold, [with_ents(gold[0], ents)])
    assert sorted(s["ents_per_type"]) == sorted(ONTONOTES_LABELS)
    assert s["ents_f"] == 1.0 and s["seqeval"]["ents_f"] == 1.0
