"""The scalar mix on hand-made transformer outputs: its sum, its gradients (against finite
differences), pass-through docs, the config switch, and bad settings."""

from pathlib import Path

import numpy
import pytest
from spacy.util import load_config, registry

pytest.importorskip("spacy_transformers")
from spacy_transformers.data_classes import TransformerData  # noqa: E402
from thinc.api import Ragged  # noqa: E402
from transformers.file_utils import ModelOutput  # noqa: E402

from adaptner.encoders.layer_mix import LAST, build_scalar_mix_listener, scalar_mix  # noqa: E402
from adaptner.errors import AdaptnerError  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bio_trf_e5.cfg"
WIDTH = 5


def doc_data(rng, pieces: int, layers: int, below: int) -> TransformerData:
    """Outputs as adaptner.TransformerModel.v1 gives them: the last state, then top down."""
    output = ModelOutput(last_hidden_state=rng.normal(size=(1, pieces, WIDTH)).astype("f"))
    output["pooler_output"] = rng.normal(size=(1, WIDTH)).astype("f")
    for j in range(layers - 1, layers - 1 - below, -1):
        output[f"hidden_state_{j}"] = rng.normal(size=(1, pieces, WIDTH)).astype("f")
    align = Ragged(numpy.arange(pieces, dtype="i"), numpy.ones(pieces, dtype="i"))
    return TransformerData(wordpieces=None, model_output=output, align=align)


def mix_layer(weights, gamma, n=3, grad_factor=1.0):
    model = scalar_mix(n, grad_factor)
    model.initialize()
    model.set_param("weights", numpy.asarray(weights, dtype="f"))
    model.set_param("gamma", numpy.asarray([gamma], dtype="f"))
    return model


def softmax(w):
    e = numpy.exp(w - w.max())
    return e / e.sum()


def test_the_mix_is_gamma_times_the_softmax_weighted_sum_bottom_up():
    rng = numpy.random.default_rng(0)
    data = [doc_data(rng, 4, 6, 3), doc_data(rng, 7, 6, 3)]
    weights = numpy.array([0.5, -1.0, 2.0], dtype="f")
    model = mix_layer(weights, 1.5)
    out, _ = model(data, is_train=False)
    share = softmax(weights)
    for d, o in zip(data, out, strict=True):
        states = [d.model_output[k] for k in ("hidden_state_4", "hidden_state_5", LAST)]
        want = 1.5 * sum(s * h for s, h in zip(share, states, strict=True))
        assert numpy.allclose(o.model_output[LAST], want, atol=1e-6)
        assert list(o.model_output.keys()) == [LAST]


def test_uniform_start_is_the_mean_of_the_states():
    rng = numpy.random.default_rng(1)
    data = [doc_data(rng, 3, 4, 1)]
    model = scalar_mix(2)
    model.initialize()
    out, _ = model(data, is_train=False)
    mean = (data[0].model_output[LAST] + data[0].model_output["hidden_state_3"]) / 2
    assert numpy.allclose(out[0].model_output[LAST], mean, atol=1e-6)


def _loss(model, data, targets):
    out, backprop = model(data, is_train=True)
    loss = sum(float((o.model_output[LAST] * t).sum()) for o, t in zip(out, targets, strict=True))
    return loss, out, backprop


@pytest.mark.parametrize("grad_factor", [1.0, 0.5])
def test_gradients_match_finite_differences(grad_factor):
    rng = numpy.random.default_rng(2)
    data = [doc_data(rng, 4, 6, 3), doc_data(rng, 6, 6, 3)]
    targets = [rng.normal(size=d.model_output[LAST].shape).astype("f") for d in data]
    weights, gamma = numpy.array([0.3, -0.7, 0.2], dtype="f"), 1.3
    model = mix_layer(weights, gamma, grad_factor=grad_factor)
    _, out, backprop = _loss(model, data, targets)
    d_out = [
        TransformerData(
            wordpieces=None, model_output=ModelOutput(last_hidden_state=t), align=o.align
        )
        for o, t in zip(out, targets, strict=True)
    ]
    d_data = backprop(d_out)
    d_weights = model.get_grad("weights").copy()
    d_gamma = float(model.get_grad("gamma")[0])

    def at(w, g):
        return _loss(mix_layer(w, g, grad_factor=grad_factor), data, targets)[0]

    eps = 1e-2
    for i in range(3):
        step = numpy.zeros(3, dtype="f")
        step[i] = eps
        numeric = (at(weights + step, gamma) - at(weights - step, gamma)) / (2 * eps)
        assert d_weights[i] == pytest.approx(numeric, rel=2e-2, abs=1e-3)
    numeric = (at(weights, gamma + eps) - at(weights, gamma - eps)) / (2 * eps)
    assert d_gamma == pytest.approx(numeric, rel=2e-2, abs=1e-3)
    # each state gets gamma × its share × the upstream gradient (× grad_factor), top down
    share = softmax(weights)
    for d, t in zip(d_data, targets, strict=True):
        assert list(d.model_output.keys()) == [LAST, "hidden_state_5", "hidden_state_4"]
        for key, s in zip(d.model_output.keys(), share[::-1], strict=True):
            assert numpy.allclose(d.model_output[key], grad_factor * gamma * s * t, atol=1e-6)


def test_docs_without_output_and_zero_placeholders_pass_through():
    rng = numpy.random.default_rng(3)
    empty = TransformerData.empty()
    zeros = TransformerData.zeros(4, WIDTH)
    real = doc_data(rng, 4, 6, 2)
    model = scalar_mix(3)
    model.initialize()
    out, backprop = model([empty, zeros, real], is_train=True)
    assert out[0] is empty and out[1] is zeros
    d = [
        TransformerData(
            wordpieces=None,
            model_output=ModelOutput(last_hidden_state=o.model_output[LAST]),
            align=o.align,
        )
        for o in out[1:]
    ]
    d_data = backprop(d)
    assert len(d_data) == 2 and d_data[0] is d[0]


def test_too_few_states_name_the_setting():
    rng = numpy.random.default_rng(4)
    model = scalar_mix(4)
    model.initialize()
    with pytest.raises(AdaptnerError, match=r"mix_layers = 4\) got 2 .*output_layers >= 4"):
        model([doc_data(rng, 3, 6, 1)], is_train=False)


def test_bad_layer_counts_are_refused():
    pooling = registry.layers.get("reduce_mean.v1")()
    with pytest.raises(AdaptnerError, match="mix_layers must be >= 1"):
        build_scalar_mix_listener(pooling, mix_layers=0)
    build = registry.architectures.get("adaptner.TransformerModel.v1")
    with pytest.raises(AdaptnerError, match="output_layers must be >= 1"):
        build("unused", lambda docs: [], output_layers=0)


def test_one_layer_is_spacy_transformers_listener():
    pooling = registry.layers.get("reduce_mean.v1")()
    model = build_scalar_mix_listener(pooling, mix_layers=1)
    assert [n.name for n in model.walk()] == [
        "transformer-listener>>trfs2arrays",
        "transformer-listener",
        "trfs2arrays",
        "reduce_mean",
    ]
    model = build_scalar_mix_listener(pooling, mix_layers=4)
    assert model.get_ref("scalar_mix").get_dim("nL") == 4


@pytest.mark.parametrize("mix", [None, 4])
def test_the_e5_config_ties_the_encoder_outputs_to_the_mix(mix):
    overrides = {} if mix is None else {"components.bio_ner.model.tok2vec.mix_layers": mix}
    config = load_config(CONFIG, overrides=overrides, interpolate=True)
    model = config["components"]["transformer"]["model"]
    listener = config["components"]["bio_ner"]["model"]["tok2vec"]
    assert model["@architectures"] == "adaptner.TransformerModel.v1"
    assert listener["@architectures"] == "adaptner.ScalarMixListener.v1"
    assert model["output_layers"] == listener["mix_layers"] == (mix or 1)
