"""The corpus conversion on the real DANSK release files."""

from collections import Counter

import pyarrow.parquet as pq
import pytest
from spacy.vocab import Vocab

from adaptner.components.bio_ner import bio_to_spans, spans_to_bio
from adaptner.labels import domain_slug
from adaptner.readers import read_docbin

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("split", ["train", "dev"])
def test_counts_per_domain_match_dataset(dansk_dir, dansk_corpus, split):
    table = pq.read_table(dansk_dir / f"{split}.parquet", columns=["dagw_domain", "ents"])
    expected = Counter(domain_slug(d) for d in table.column("dagw_domain").to_pylist())
    n_ents = sum(len(e) for e in table.column("ents").to_pylist())
    vocab = Vocab()
    got = {}
    for path in (dansk_corpus / split).glob("*.spacy"):
        if path.stem != "all":
            docs = read_docbin(path, vocab)
            assert all(d._.domain == path.stem for d in docs)
            got[path.stem] = len(docs)
    assert got == dict(expected)
    all_docs = read_docbin(dansk_corpus / split / "all.spacy", vocab)
    assert len(all_docs) == table.num_rows
    assert sum(len(d.ents) for d in all_docs) == n_ents


def test_null_domain_rows_kept(dansk_corpus):
    vocab = Vocab()
    assert len(read_docbin(dansk_corpus / "train" / "unknown.spacy", vocab)) == 227
    assert len(read_docbin(dansk_corpus / "dev" / "unknown.spacy", vocab)) == 22


@pytest.mark.parametrize("split", ["train", "dev"])
def test_bio_encoding_is_lossless(dansk_corpus, split):
    docs = read_docbin(dansk_corpus / split / "all.spacy", Vocab())
    for doc in docs:
        spans = [(e.start, e.end, e.label_) for e in doc.ents]
        assert bio_to_spans(spans_to_bio(len(doc), spans)) == spans, doc.text


def test_char_offsets_preserved(dansk_dir, dansk_corpus):
    rows = pq.read_table(dansk_dir / "dev.parquet", columns=["text", "ents"]).to_pylist()
    docs = read_docbin(dansk_corpus / "dev" / "all.spacy", Vocab())
    for row, doc in zip(rows, docs, strict=True):
        assert doc.text == row["text"]
        got = [(e.start_char, e.end_char, e.label_) for e in doc.ents]
        want = sorted((e["start"], e["end"], e["label"]) for e in row["ents"])
        assert got == want


def test_missing_test_split_reported(dansk_dir, tmp_path):
    from adaptner.corpus import convert_corpus

    messages = []
    report = convert_corpus(dansk_dir, tmp_path, splits=["dev", "test"], log=messages.append)
    assert "test" in report["missing_splits"]
    assert any("split 'test' is missing" in m for m in messages)
