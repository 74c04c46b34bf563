"""The scalar mix of the top layers on a tiny 6-layer BERT and real DANSK text (configs/test/
bio_trf_e5.cfg): one layer is the plain path, four layers are Hugging Face's hidden states mixed,
trained, saved and loaded, and exact with cached lower layers and under int8.
"""

from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import load_model_from_config

from adaptner.encoders.layer_mix import LAST
from adaptner.encoders.lower_cache import attach, detach
from adaptner.encoders.training import transformer_modules
from adaptner.errors import AdaptnerError
from tests.conftest import block_network

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
TWIN = ROOT / "configs" / "test" / "bio_trf_e5.cfg"
LAYERS = 6  # hidden states 0 (embeddings) .. 6; a mix of 4 reads 3, 4, 5, 6
MIX = "components.bio_ner.model.tok2vec.mix_layers"


@pytest.fixture(scope="module")
def bert6(corpus_dir, tmp_path_factory) -> Path:
    from adaptner.tiny_bert import build_tiny_bert, corpus_texts

    with pytest.MonkeyPatch.context() as mp:
        block_network(mp)
        texts = corpus_texts(corpus_dir / "train", domains="news,legal", limit=300, seed=0)
        return build_tiny_bert(
            tmp_path_factory.mktemp("bert6") / "bert", texts, num_layers=LAYERS, seed=0
        )


def make_nlp(bert: Path, corpus_dir: Path, mix: int, **overrides):
    """The twin config on the tiny BERT, initialized on DANSK news (no training)."""
    from spacy.training.initialize import init_nlp

    from adaptner.training import load_training_config

    config = load_training_config(
        TWIN,
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        overrides={
            "paths.transformer": str(bert),
            MIX: mix,
            "corpora.train.limit": 40,
            **overrides,
        },
    )
    return init_nlp(config)


def dev_docs(corpus_dir: Path, n: int = 12) -> list:
    nlp = spacy.blank("da")
    return list(DocBin().from_disk(corpus_dir / "dev" / "news.spacy").get_docs(nlp.vocab))[:n]


def mix_node(nlp):
    return nlp.get_pipe("bio_ner").model.get_ref("tok2vec").get_ref("scalar_mix")


def set_mix(nlp, weights, gamma) -> None:
    mix = mix_node(nlp)
    mix.set_param("weights", numpy.asarray(weights, dtype="f"))
    mix.set_param("gamma", numpy.asarray([gamma], dtype="f"))


def probs(nlp, texts) -> list[numpy.ndarray]:
    return [numpy.asarray(doc._.ner_probs) for doc in nlp.pipe(texts)]


def max_diff(a: list, b: list) -> float:
    return max(float(numpy.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_one_layer_is_the_spacy_transformers_path(bert6, corpus_dir):
    from spacy_transformers.layers.transformer_model import _convert_transformer_outputs

    nlp = make_nlp(bert6, corpus_dir, 1)
    trf = nlp.get_pipe("transformer").model
    assert trf.layers[0].attrs["convert_outputs"] is _convert_transformer_outputs
    assert "scalar_mix" not in [n.name for n in nlp.get_pipe("bio_ner").model.walk()]
    texts = [d.text for d in dev_docs(corpus_dir)]
    ours = probs(nlp, texts)
    # no state besides spacy-transformers' own is kept on the docs
    assert list(nlp(texts[0])._.trf_data.model_output) == [LAST, "pooler_output"]
    # the same weights under spacy-transformers' own architectures predict the same
    config = nlp.config.copy()
    model = config["components"]["transformer"]["model"]
    model["@architectures"] = "spacy-transformers.TransformerModel.v3"
    del model["output_layers"]
    listener = config["components"]["bio_ner"]["model"]["tok2vec"]
    listener["@architectures"] = "spacy-transformers.TransformerListener.v1"
    del listener["mix_layers"]
    plain = load_model_from_config(config, auto_fill=True).from_bytes(nlp.to_bytes())
    assert max_diff(probs(plain, texts), ours) == 0.0


def test_the_mix_reads_hugging_faces_top_hidden_states(bert6, corpus_dir):
    nlp = make_nlp(bert6, corpus_dir, 4)
    weights, gamma = numpy.array([0.3, -1.2, 0.8, 0.1], dtype="f"), 1.7
    set_mix(nlp, weights, gamma)
    trf = nlp.get_pipe("transformer")
    docs = [nlp.make_doc(d.text) for d in dev_docs(corpus_dir, 6)]
    batch = trf.model.predict(docs)
    keys = [LAST, "pooler_output", "hidden_state_5", "hidden_state_4", "hidden_state_3"]
    assert list(batch.model_output) == keys
    module = transformer_modules(nlp)[0].eval()
    wp = batch.wordpieces
    with torch.no_grad():
        hf = module(
            input_ids=torch.from_numpy(wp.input_ids),
            attention_mask=torch.from_numpy(wp.attention_mask),
            output_hidden_states=True,
        ).hidden_states
    assert len(hf) == LAYERS + 1
    for j in (3, 4, 5):
        assert torch.allclose(batch.model_output[f"hidden_state_{j}"], hf[j], atol=1e-6)
    assert torch.allclose(batch.model_output[LAST], hf[6], atol=1e-6)
    # the head's input per doc: gamma × softmax(weights) over states 3, 4, 5, 6 (bottom up)
    trf.set_annotations(docs, batch)
    mixed, _ = mix_node(nlp)([doc._.trf_data for doc in docs], is_train=False)
    share = numpy.exp(weights) / numpy.exp(weights).sum()
    for doc, out in zip(docs, mixed, strict=True):
        states = [doc._.trf_data.model_output[k] for k in keys[:1:-1]] + [
            doc._.trf_data.model_output[LAST]
        ]
        want = gamma * sum(s * h for s, h in zip(share, states, strict=True))
        assert numpy.allclose(out.model_output[LAST], want, atol=1e-5)


def _no_dropout(module) -> None:
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0
        if hasattr(sub, "dropout_prob"):
            sub.dropout_prob = 0.0


@pytest.mark.parametrize("n_grads", [1, 4])
def test_the_encoder_backpropagates_into_every_output_state(bert6, corpus_dir, n_grads):
    """Gradients for the last state and the three below it reach the weights as in PyTorch.

    A listener that reads only the last state (n_grads 1) sends one gradient: the
    encoder pairs it with the last state alone.
    """
    from spacy_transformers.data_classes import FullTransformerBatch
    from thinc.api import xp2torch
    from transformers.file_utils import ModelOutput

    nlp = make_nlp(bert6, corpus_dir, 4)
    module = transformer_modules(nlp)[0]
    _no_dropout(module)
    docs = [nlp.make_doc(d.text) for d in dev_docs(corpus_dir, 4)]
    batch, backprop = nlp.get_pipe("transformer").model.begin_update(docs)
    keys = [LAST, "hidden_state_5", "hidden_state_4", "hidden_state_3"][:n_grads]
    rng = numpy.random.default_rng(0)
    targets = {k: rng.normal(size=batch.model_output[k].shape).astype("f") for k in keys}
    d_output = ModelOutput()
    for i, k in enumerate(keys):
        d_output[f"output_{i}"] = xp2torch(targets[k])
    module.zero_grad()
    backprop(
        FullTransformerBatch(
            spans=batch.spans, wordpieces=batch.wordpieces, model_output=d_output, align=batch.align
        )
    )
    ours = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad()
    wp = batch.wordpieces
    hidden = module(
        input_ids=torch.from_numpy(wp.input_ids),
        attention_mask=torch.from_numpy(wp.attention_mask),
        output_hidden_states=True,
    ).hidden_states
    index = {LAST: LAYERS, "hidden_state_5": 5, "hidden_state_4": 4, "hidden_state_3": 3}
    loss = sum((hidden[index[k]] * torch.from_numpy(t)).sum() for k, t in targets.items())
    loss.backward()
    want = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    assert set(ours) == set(want)
    worst = max(float((ours[n] - want[n]).abs().max()) for n in want)
    assert worst <= 1e-5
    # a gradient on the lower states changes the layers below the top, not only through it
    if n_grads == 4:
        name = "encoder.layer.3.output.dense.weight"
        assert float(ours[name].abs().sum()) > 0


def test_an_update_trains_the_mix_weights(bert6, corpus_dir):
    from thinc.api import Adam

    nlp = make_nlp(bert6, corpus_dir, 4)
    mix = mix_node(nlp)
    assert numpy.array_equal(mix.get_param("weights"), numpy.zeros(4, dtype="f"))
    assert float(mix.get_param("gamma")[0]) == 1.0
    examples = [Example(nlp.make_doc(d.text), d) for d in dev_docs(corpus_dir, 8)]
    optimizer = Adam(0.01)
    nlp.update(examples, sgd=optimizer)
    weights = mix.get_param("weights").copy()
    assert numpy.abs(weights).min() > 0 and float(mix.get_param("gamma")[0]) != 1.0
    nlp.update(examples, sgd=optimizer)
    assert not numpy.array_equal(mix.get_param("weights"), weights)


@pytest.fixture(scope="module")
def trained_mix(bert6, corpus_dir, tmp_path_factory) -> Path:
    """The twin with a mix of 4 trained 6 steps on DANSK news with 3 cached lower layers (the
    most a mix of 4 allows on 6 layers: state 3 comes from the cache, without gradient)."""
    from adaptner.training import train_pipeline

    tmp = tmp_path_factory.mktemp("mix4")
    best = train_pipeline(
        TWIN,
        tmp / "model",
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        dev_domains="news",
        overrides={
            "paths.transformer": str(bert6),
            MIX: 4,
            "initialize.after_init.cache_layers": 3,
            "initialize.after_init.cache_dir": str(tmp / "cache"),
            "corpora.train.limit": 60,
            "corpora.dev.limit": 20,
            "training.max_steps": 6,
            "training.eval_frequency": 3,
        },
        verbose=False,
    )
    return best.parent / "model-last"


def test_the_mix_weights_round_trip(trained_mix, corpus_dir, tmp_path):
    nlp = spacy.load(trained_mix)
    assert nlp.config.interpolate()["components"]["transformer"]["model"]["output_layers"] == 4
    weights = mix_node(nlp).get_param("weights").copy()
    gamma = mix_node(nlp).get_param("gamma").copy()
    assert len(set(weights.tolist())) == 4, "training left the mix weights uniform"
    texts = [d.text for d in dev_docs(corpus_dir)]
    before = probs(nlp, texts)
    nlp.to_disk(tmp_path / "copy")
    for loaded in (
        spacy.load(tmp_path / "copy"),
        load_model_from_config(nlp.config).from_disk(tmp_path / "copy"),
    ):
        assert numpy.array_equal(mix_node(loaded).get_param("weights"), weights)
        assert numpy.array_equal(mix_node(loaded).get_param("gamma"), gamma)
        assert max_diff(probs(loaded, texts), before) == 0.0


def test_cached_lower_layers_give_the_same_mixed_outputs(trained_mix, corpus_dir, tmp_path):
    nlp = spacy.load(trained_mix)
    module = transformer_modules(nlp)[0]
    texts = [d.text for d in dev_docs(corpus_dir, 30)]

    def outputs():
        docs = list(nlp.pipe(texts))
        states = [  # at the real word pieces (the cache keeps zeros on the padding)
            d._.trf_data.model_output["hidden_state_3"][
                d._.trf_data.wordpieces.attention_mask.astype(bool)
            ]
            for d in docs
        ]
        return states, [numpy.asarray(d._.ner_probs) for d in docs]

    full_states, full_probs = outputs()
    cache = attach(module, 3, tmp_path / "cache")
    try:
        for _ in range(2):  # fills the cache, then reads it
            states, cached_probs = outputs()
            assert max_diff(states, full_states) <= 1e-5
            assert max_diff(cached_probs, full_probs) <= 1e-5
        assert cache.hits > 0 and cache.misses > 0
    finally:
        detach(module)
    attach(module, 4)
    try:
        with pytest.raises(AdaptnerError, match=r"cache_layers = 4 .*at most 3"):
            nlp(texts[0])
    finally:
        detach(module)


def test_int8_keeps_the_mix(trained_mix, corpus_dir, tmp_path):
    from adaptner.encoders.quantize import quantize_pipeline

    assert quantize_pipeline(trained_mix, tmp_path / "int8") > 0
    fp32, int8 = spacy.load(trained_mix), spacy.load(tmp_path / "int8")
    assert numpy.array_equal(
        mix_node(int8).get_param("weights"), mix_node(fp32).get_param("weights")
    )
    texts = [d.text for d in dev_docs(corpus_dir)]
    got = probs(int8, texts)
    assert all(numpy.allclose(p.sum(axis=1), 1.0, atol=1e-4) for p in got)
    assert 0 < max_diff(got, probs(fp32, texts)) < 0.5


def test_mixing_more_states_than_the_encoder_has_is_refused(bert6, corpus_dir):
    with pytest.raises(AdaptnerError, match=r"output_layers = 8, but the encoder has 6 layers"):
        make_nlp(bert6, corpus_dir, 8)


def test_a_mix_without_the_encoders_states_names_the_setting(bert6, corpus_dir):
    nlp = make_nlp(bert6, corpus_dir, 4, **{"components.transformer.model.output_layers": 1})
    with pytest.raises(AdaptnerError, match=r"got 1 hidden state.*output_layers >= 4"):
        nlp("Mette Frederiksen besøgte Aarhus.")
