"""The transformer config on a tiny local BERT: build, train, load offline, predict, round-trip.

The tests marked ``integration`` build the tiny BERT from ~300 DANSK train sentences and
fine-tune configs/test/bio_trf.cfg for a few steps on a small news/legal slice (well under
a minute on 2 CPU cores). The unmarked ones check ``build_tiny_bert`` and ``adaptner tiny-bert``
on hand-written sentences. Everything runs with the network blocked: nothing may reach the hub.
"""

import sys
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin

import adaptner  # noqa: F401 - installs the Doc extensions
from adaptner.components.bio_ner import make_tags
from adaptner.errors import AdaptnerError
from adaptner.labels import ONTONOTES_LABELS
from adaptner.tiny_bert import SPECIAL_TOKENS, build_tiny_bert, corpus_texts
from tests.conftest import block_network

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_trf.cfg"
DOMAINS = "news,legal"
SENTENCE = "Mette Frederiksen besøgte Aarhus Universitet i går og talte med 300 studerende."
HAND_TEXTS = [
    "Mette Frederiksen bor i København.",
    "Hun arbejder for Danske Bank i Aarhus.",
    "Folketinget vedtog loven den 3. juni 2021.",
    "Ærø og Æbeltoft ligger i Danmark.",
]


_block_network = block_network


@pytest.fixture
def offline(monkeypatch):
    _block_network(monkeypatch)


def _weights(model_dir: Path) -> dict:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- build_tiny_bert and the CLI on hand-written text (seconds) ---------------------------


def test_tiny_bert_loads_as_cased_bert(tmp_path, offline):
    from transformers import AutoConfig, AutoTokenizer

    out = build_tiny_bert(tmp_path / "bert", HAND_TEXTS, vocab_size=120, hidden_size=16)
    assert out == tmp_path / "bert"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dir left"
    tokenizer = AutoTokenizer.from_pretrained(str(out), use_fast=True)
    assert tokenizer.is_fast
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3, 4]
    enc = tokenizer("Danske Bank", return_offsets_mapping=True)
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert "".join(p.removeprefix("##") for p in pieces[1:-1]) == "DanskeBank"  # cased
    config = AutoConfig.from_pretrained(str(out))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (16, 2, 2)
    assert config.vocab_size == tokenizer.backend_tokenizer.get_vocab_size()


def test_tiny_bert_weights_follow_the_seed(tmp_path, offline):
    a = _weights(build_tiny_bert(tmp_path / "a", HAND_TEXTS, vocab_size=80, seed=1))
    b = _weights(build_tiny_bert(tmp_path / "b", HAND_TEXTS, vocab_size=80, seed=1))
    c = _weights(build_tiny_bert(tmp_path / "c", HAND_TEXTS, vocab_size=80, seed=2))
    key = "embeddings.word_embeddings.weight"
    assert all((a[k] == b[k]).all() for k in a)
    assert not (a[key] == c[key]).all()


@pytest.mark.parametrize(
    "texts,kwargs,message",
    [
        (["", "  "], {}, "non-empty text"),
        (HAND_TEXTS, {"hidden_size": 30, "num_heads": 4}, "multiple of num_heads"),
        (HAND_TEXTS, {"vocab_size": 3}, "vocab_size must exceed"),
    ],
)
def test_tiny_bert_bad_input(tmp_path, texts, kwargs, message):
    with pytest.raises(AdaptnerError, match=message):
        build_tiny_bert(tmp_path / "bert", texts, **kwargs)
    assert not list(tmp_path.iterdir()), "nothing is written on bad input"


def _run_cli(monkeypatch, *args: str) -> None:
    from adaptner.cli import main

    monkeypatch.setattr(sys, "argv", ["adaptner", *args])
    main()


def test_cli_tiny_bert(tmp_path, monkeypatch, capsys):
    _block_network(monkeypatch)
    nlp = spacy.blank("da")
    docbin = DocBin(store_user_data=True)
    for text in HAND_TEXTS:
        doc: Doc = nlp(text)
        doc._.domain = "news"
        docbin.add(doc)
    docbin.to_disk(tmp_path / "news.spacy")
    out = tmp_path / "bert"
    _run_cli(
        monkeypatch,
        "tiny-bert",
        "-o",
        str(out),
        "--corpus",
        str(tmp_path / "news.spacy"),
        "--vocab-size",
        "100",
        "--hidden-size",
        "8",
        "--layers",
        "1",
        "--seed",
        "3",
    )
    assert "from 4 texts" in capsys.readouterr().out
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    with pytest.raises(SystemExit) as exit_info:
        _run_cli(monkeypatch, "tiny-bert", "-o", str(out), "--corpus", str(tmp_path / "nope"))
    assert exit_info.value.code == 1
    assert "nope does not exist" in capsys.readouterr().err


# --- the real code path on DANSK ---------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_trf):
    """Tiny BERT from 300 DANSK news/legal texts; the test config trained 20 steps on it."""
    return tiny_trf


@pytest.mark.integration
def test_texts_for_the_vocabulary(corpus_dir):
    texts = corpus_texts(corpus_dir / "train", domains=DOMAINS, limit=300, seed=0)
    assert len(texts) == 300 and len(set(texts)) > 250
    assert texts == corpus_texts(corpus_dir / "train", domains=DOMAINS, limit=300, seed=0)
    assert texts != corpus_texts(corpus_dir / "train", domains=DOMAINS, limit=300, seed=1)


@pytest.mark.integration
def test_trained_pipeline_predicts_offline(trained, offline):
    nlp = spacy.load(trained["best"])
    assert nlp.pipe_names == ["transformer", "bio_ner"]
    tags = nlp.get_pipe("bio_ner").tags
    assert list(tags) == make_tags(ONTONOTES_LABELS)
    doc = nlp(SENTENCE)
    probs = doc._.ner_probs
    assert probs.dtype == numpy.float32
    assert probs.shape == (len(doc), len(tags))
    numpy.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert all(ent.label_ in ONTONOTES_LABELS for ent in doc.ents)
    trf_data = doc._.trf_data
    assert trf_data is not None
    assert len(trf_data.align.lengths) == len(doc)
    hidden = trf_data.model_output.last_hidden_state
    assert hidden.shape[-1] == 32
    assert len(nlp("")._.ner_probs) == 0


@pytest.mark.integration
def test_pipeline_round_trips(trained, offline, tmp_path):
    nlp = spacy.load(trained["best"])
    before = nlp(SENTENCE)
    nlp.to_disk(tmp_path / "copy")
    again = spacy.load(tmp_path / "copy")
    after = again(SENTENCE)
    numpy.testing.assert_allclose(after._.ner_probs, before._.ner_probs, atol=1e-6)
    assert [(e.start, e.end, e.label_) for e in after.ents] == [
        (e.start, e.end, e.label_) for e in before.ents
    ]


@pytest.mark.integration
def test_listener_fine_tunes_the_transformer(trained, offline):
    """Gradients reach the transformer through the listener: its weights moved in training."""
    nlp = spacy.load(trained["last"])
    state = nlp.get_pipe("transformer").model.transformer.state_dict()
    initial = trained["initial"]
    key = "encoder.layer.0.attention.self.query.weight"
    assert state[key].shape == initial[key].shape
    assert not numpy.allclose(state[key].numpy(), initial[key].numpy())
    meta = (trained["best"].parent / "train_meta.json").read_text(encoding="utf8")
    assert '"train_domains": "news,legal"' in meta


def test_freezing_reaches_a_transformer_spacy_disabled(trained, offline):
    """spaCy's initialization disables the components a config sources from a trained
    pipeline (`adaptner train --init-from`) while [initialize.after_init] runs: the freeze
    callback must still find and freeze the transformer there."""
    from adaptner.encoders.training import make_freeze_transformer, transformer_modules

    nlp = spacy.load(trained["best"])
    with nlp.select_pipes(disable=nlp.pipe_names):
        assert transformer_modules(nlp) == [] and transformer_modules(nlp, disabled=True)
        make_freeze_transformer(["word_embeddings"])(nlp)
    (module,) = transformer_modules(nlp)
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    assert frozen and all("word_embeddings" in n for n in frozen)
    with pytest.raises(AdaptnerError, match=r"found no transformer in the pipeline \[\]"):
        make_freeze_transformer(["word_embeddings"])(spacy.blank("da"))
