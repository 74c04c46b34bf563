"""Distillation on real DANSK docs: e5 static vectors and teacher labelling (tiny teacher)."""

import json

import numpy
import pytest
import spacy
from spacy.tokens import DocBin

from adaptner.distil import TEACHER_META, label_corpus
from adaptner.encoders.vectors import build_vectors, word_types
from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def legal_docs(corpus_dir):
    return read_docbin(corpus_dir / "dev" / "legal.spacy", spacy.blank("da").vocab)[:40]


@pytest.fixture(scope="module")
def e5_vectors(e5_encoder, legal_docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("vectors") / "e5_vectors"
    words = word_types(legal_docs)
    return words, build_vectors(e5_encoder, words, out), out


def test_word_types_keep_order_and_add_lowercase(legal_docs):
    words = word_types(legal_docs)
    assert len(words) == len(set(words))
    first = legal_docs[0][0].text
    assert words[0] == first
    assert all(w.lower() in words for w in words)
    assert len(word_types(legal_docs, lowercase=False)) < len(words)


def test_vectors_are_the_mean_of_the_pieces_input_embeddings(e5_encoder, e5_vectors):
    from safetensors import safe_open
    from transformers import AutoTokenizer

    words, report, out = e5_vectors
    assert report.words == len(words) and report.width == report.encoder_width == 384
    nlp = spacy.load(out)
    assert nlp.vocab.vectors.shape == (len(words), 384)
    # An independent path: transformers' tokenizer and the raw safetensors matrix.
    tok = AutoTokenizer.from_pretrained(str(e5_encoder))
    with safe_open(str(e5_encoder / "model.safetensors"), framework="numpy") as f:
        name = next(k for k in f.keys() if k.endswith("word_embeddings.weight"))
        table = f.get_tensor(name)
    checked = 0
    for word in [w for w in words if len(w) > 6][:5] + ["§", "Landsretten"]:
        if word not in words:
            continue
        ids = [i for i in tok(word, add_special_tokens=False)["input_ids"]
               if i != tok.convert_tokens_to_ids("\u2581")] or [tok.unk_token_id]
        numpy.testing.assert_allclose(
            nlp.vocab.get_vector(word), table[ids].mean(axis=0), rtol=1e-5, atol=1e-6
        )
        checked += 1
    assert checked >= 5
    # Two different words get different vectors.
    assert not numpy.allclose(nlp.vocab.get_vector(words[0]), nlp.vocab.get_vector(words[1]))


def test_vectors_load_as_initialize_vectors(e5_vectors):
    from spacy.training.initialize import load_vectors_into_model

    words, _, out = e5_vectors
    nlp = spacy.blank("da")
    load_vectors_into_model(nlp, str(out))
    assert nlp.vocab.vectors.shape == (len(words), 384)
    assert nlp.vocab.vectors.name


def test_vectors_reduced_width(e5_encoder, legal_docs, tmp_path):
    words = word_types(legal_docs[:10])
    report = build_vectors(e5_encoder, words, tmp_path / "v16", width=16)
    assert report.width == 16
    assert spacy.load(tmp_path / "v16").vocab.vectors.shape == (len(words), 16)


def test_vectors_missing_encoder_is_named(tmp_path):
    with pytest.raises(AdaptnerError, match="nowhere.*does not exist.*adaptner encoder e5-small"):
        build_vectors(tmp_path / "nowhere", ["ord"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdaptnerError, match="empty has no tokenizer.json"):
        build_vectors(tmp_path / "empty", ["ord"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def small_docbin(legal_docs, tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "legal.spacy"
    db = DocBin(store_user_data=True)
    for doc in legal_docs[:12]:
        db.add(doc)
    db.to_disk(path)
    return path


def test_teacher_labels_real_docs(tiny_news_model, small_docbin, tmp_path):
    out = tmp_path / "teacher"
    report = label_corpus(tiny_news_model, small_docbin, out, progress=False)
    teacher = spacy.load(tiny_news_model)
    tags = list(teacher.get_pipe("bio_ner").tags)
    assert report.tags == tags and report.docs == 12
    gold = read_docbin(small_docbin, teacher.vocab)
    labelled = read_docbin(out / "legal.spacy", teacher.vocab)
    for g, d in zip(gold, labelled, strict=True):
        assert [t.text for t in g] == [t.text for t in d]
        assert [(e.start, e.end, e.label_) for e in g.ents] == [
            (e.start, e.end, e.label_) for e in d.ents
        ]
        probs = d._.teacher_probs
        assert probs.dtype == numpy.float32 and probs.shape == (len(d), len(tags))
        numpy.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert list(d._.teacher_tags) == tags
        assert d._.domain == g._.domain
    # The stored rows are the teacher's own predictions on the gold tokens.
    doc = teacher(teacher.make_doc(gold[0].text))
    if [t.text for t in doc] == [t.text for t in gold[0]]:
        numpy.testing.assert_allclose(labelled[0]._.teacher_probs, doc._.ner_probs, atol=1e-6)
    meta = json.loads((out / TEACHER_META).read_text(encoding="utf8"))
    assert meta["tags"] == tags and meta["files"]["legal.spacy"]["gold_kept"] is True


def test_drop_gold_writes_an_unlabelled_pool(tiny_news_model, small_docbin, tmp_path):
    out = tmp_path / "pool"
    label_corpus(tiny_news_model, small_docbin, out, drop_gold=True, progress=False)
    docs = read_docbin(out / "legal.spacy", spacy.blank("da").vocab)
    assert all(not d.has_annotation("ENT_IOB") for d in docs)
    assert all(d._.teacher_probs is not None for d in docs)
    meta = json.loads((out / TEACHER_META).read_text(encoding="utf8"))
    assert meta["files"]["legal.spacy"]["gold_kept"] is False


def test_student_trains_on_the_labelled_corpus(tiny_news_model, small_docbin, corpus_dir,
                                               tmp_path, root):
    from adaptner.training import train_pipeline

    labelled = tmp_path / "teacher"
    label_corpus(tiny_news_model, small_docbin, labelled, progress=False)
    best = train_pipeline(
        root / "configs" / "test" / "bio_cnn.cfg",
        tmp_path / "student",
        train_path=labelled / "legal.spacy",
        dev_path=small_docbin,
        overrides={"components.bio_ner.distill_weight": 0.5, "training.max_steps": 10,
                   "training.eval_frequency": 5},
        verbose=False,
    )
    assert spacy.load(best).get_pipe("bio_ner").tags == spacy.load(
        tiny_news_model).get_pipe("bio_ner").tags


@pytest.mark.parametrize("content", [None, b"not a docbin at all"])
def test_missing_or_corrupt_input_is_named(tiny_news_model, tmp_path, content):
    path = tmp_path / "broken.spacy"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AdaptnerError, match="broken.spacy"):
        label_corpus(tiny_news_model, path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "broken.spacy").exists()


def test_teacher_without_bio_ner_is_refused(small_docbin, tmp_path):
    nlp = spacy.blank("da")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "GPE", "pattern": "Aarhus"}])
    nlp.to_disk(tmp_path / "ruler")
    with pytest.raises(AdaptnerError, match="no bio_ner component"):
        label_corpus(tmp_path / "ruler", small_docbin, tmp_path / "out", progress=False)
