"""bio_ner over a tiny XLM-R (from a synthetic E5S1 file): the e5 config's training path, the
disk round trip with the SentencePiece model, and vocabulary pruning of the trained pipeline."""

import numpy as np
import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import load_config, load_model_from_config, registry

from adaptner.encoders.e5 import convert_e5
from adaptner.encoders.prune import prune_pipeline
from adaptner.errors import AdaptnerError
from tests.unit.test_encoder_e5 import write_e5s1

TEXTS = [
    ("hej med dig", []),
    ("hej Aarhus .", [(1, 2, "GPE")]),
    ("dig Aarhus", [(1, 2, "GPE")]),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, root):
    tmp = tmp_path_factory.mktemp("tiny_xlmr")
    write_e5s1(tmp / "tiny.bin")
    convert_e5(tmp / "hf", source=tmp / "tiny.bin", verify=False)
    config = load_config(
        root / "configs" / "bio_trf_e5.cfg", overrides={"paths.transformer": str(tmp / "hf")}
    )
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    examples = []
    for text, ents in TEXTS:
        words = text.split()
        gold = Doc(nlp.vocab, words=words)
        gold.ents = [Span(gold, s, e, label=lab) for s, e, lab in ents]
        examples.append(Example(nlp.make_doc(text), gold))
    filled = config.interpolate()
    optimizer = registry.resolve({"o": filled["training"]["optimizer"]})["o"]
    nlp.initialize(lambda: examples, sgd=optimizer)
    registry.resolve({"cb": filled["initialize"]["after_init"]})["cb"](nlp)  # freeze embeddings
    for _ in range(4):
        nlp.update(examples, sgd=optimizer)
        optimizer.step_schedules()
    nlp.to_disk(tmp / "model")
    return tmp / "model"


def _probs(nlp, text):
    return nlp(text)._.ner_probs


def test_xlmr_pipeline_round_trips_through_disk(trained):
    nlp = spacy.load(trained)
    assert nlp.get_pipe("transformer").model.tokenizer.is_fast
    assert (trained / "transformer" / "model").stat().st_size > 0
    probs = _probs(nlp, "hej Aarhus dig")
    assert probs.shape == (3, len(nlp.get_pipe("bio_ner").tags))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_pruning_keeps_predictions_for_text_it_keeps(trained, tmp_path):
    report = prune_pipeline(trained, tmp_path / "pruned", scripts=(), texts=["hej dig Aarhus ."])
    assert report.vocab_after < report.vocab_before
    assert report.parameters_after < report.parameters_before
    full, pruned = spacy.load(trained), spacy.load(tmp_path / "pruned")
    for text in ["hej dig Aarhus .", "Aarhus hej"]:
        np.testing.assert_allclose(_probs(pruned, text), _probs(full, text), atol=1e-5)
    tok = pruned.get_pipe("transformer").model.tokenizer
    assert "▁med" not in tok.get_vocab() and len(tok) == report.vocab_after


def test_pruning_refuses_a_pipeline_without_transformer(tiny_news_model, tmp_path):
    with pytest.raises(AdaptnerError, match="no transformer"):
        prune_pipeline(tiny_news_model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
