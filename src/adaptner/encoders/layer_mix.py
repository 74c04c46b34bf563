"""A learnt scalar mix of a transformer's top hidden layers as the input of the NER head.

ELMo's scalar mix: the head reads ``gamma × Σ_i softmax(w)_i × h_i`` over the last N hidden
states h_i of the encoder instead of the last one alone; w (N weights, uniform at first) and
gamma (1 at first) are thinc parameters of the head's model, trained with the head at its learn
rate and saved with the pipeline. Two registered architectures carry it:

- ``adaptner.TransformerModel.v1``: ``spacy-transformers.TransformerModel.v3`` plus
  ``output_layers`` N. With N > 1 the encoder is called with ``output_hidden_states`` and keeps
  the N - 1 states below the last as ``hidden_state_<j>`` (j is Hugging Face's index in
  ``hidden_states``, 0 = the embeddings) next to ``last_hidden_state``, and backpropagates into
  each of them. N = 1 is spacy-transformers' model itself: no extra state is kept.
- ``adaptner.ScalarMixListener.v1``: ``spacy-transformers.TransformerListener.v1`` plus
  ``mix_layers`` N: a :func:`scalar_mix` layer between the listener and the word-piece pooling.
  N = 1 is spacy-transformers' listener itself (no mix, no parameters).

``configs/bio_trf_e5.cfg`` ties the two with ``output_layers =
${components.bio_ner.model.tok2vec.mix_layers}``, so one override switches the mix on. With
cached lower layers (``cache_layers = k``, :mod:`adaptner.encoders.lower_cache`) the states
from index k up are exact, so the mix needs k <= L + 1 - N for an encoder of L layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spacy.util import registry
from thinc.api import Model, chain

from ..errors import AdaptnerError

#: The model-output key of the encoder's last hidden state (spacy-transformers' name).
LAST = "last_hidden_state"
#: Prefix of the keys of the hidden states below it: ``hidden_state_<j>``.
PREFIX = "hidden_state_"


def state_keys(model_output: Any) -> list[str]:
    """The keys of a model output's hidden states in its own order: the last, then top down."""
    return [k for k in model_output.keys() if k == LAST or k.startswith(PREFIX)]


# --------------------------------------------------------------------------- the encoder


@registry.architectures("adaptner.TransformerModel.v1")
def build_transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict | None = None,
    transformer_config: dict | None = None,
    mixed_precision: bool = False,
    grad_scaler_config: dict | None = None,
    output_layers: int = 1,
) -> Model:
    """``spacy-transformers.TransformerModel.v3`` that also outputs the hidden states below the
    last one, for a scalar mix in the head.

    Args:
        name: The Hugging Face model name or directory.
        get_spans: Splits docs into the spans the encoder reads.
        tokenizer_config: Settings of the Hugging Face tokenizer.
        transformer_config: Settings of the Hugging Face model config.
        mixed_precision: Mixed precision (GPU).
        grad_scaler_config: Gradient scaling in mixed-precision training.
        output_layers: How many of the top hidden states to output (1: the last only, as
            spacy-transformers; N: also the N - 1 below it).
    """
    from spacy_transformers.layers import TransformerModel

    if output_layers < 1:
        raise AdaptnerError(
            f"output_layers must be >= 1 (1 = the last hidden state only), got {output_layers}."
        )
    model = TransformerModel(
        name,
        get_spans,
        dict(tokenizer_config or {}),
        dict(transformer_config or {}),
        mixed_precision,
        dict(grad_scaler_config or {}),
    )
    if output_layers > 1:
        wrapper = model.layers[0]
        wrapper.attrs["output_layers"] = output_layers
        wrapper.attrs["convert_inputs"] = _convert_inputs
        wrapper.attrs["convert_outputs"] = _convert_outputs
    return model


def _check_depth(module: Any, n: int) -> None:
    """Refuse an N the encoder cannot give, or cached layers that would hide a mixed state."""
    from .lower_cache import attached_cache

    layers = int(module.config.num_hidden_layers)
    if n > layers + 1:
        raise AdaptnerError(
            f"output_layers = {n}, but the encoder has {layers} layers ({layers + 1} hidden "
            f"states with the embeddings): set components.transformer.model.output_layers "
            f"(and the head's mix_layers) to at most {layers + 1}."
        )
    cache = attached_cache(module)
    if cache is not None and cache.n_layers > layers + 1 - n:
        raise AdaptnerError(
            f"initialize.after_init.cache_layers = {cache.n_layers} replaces hidden states "
            f"that the scalar mix of the last {n} layers reads: set cache_layers to at most "
            f"{layers + 1 - n}, or mix fewer layers (mix_layers)."
        )


def _convert_inputs(model: Model, wordpieces: Any, is_train: bool):
    """spacy-transformers' inputs, with ``output_hidden_states`` asked for."""
    from spacy_transformers.layers.transformer_model import _convert_transformer_inputs

    inputs, get_dx = _convert_transformer_inputs(model, wordpieces, is_train)
    _check_depth(model.shims[0]._model, model.attrs["output_layers"])
    inputs.kwargs["output_hidden_states"] = True
    return inputs, get_dx


def _convert_outputs(model: Model, inputs_outputs: tuple, is_train: bool):
    """Keep the top ``output_layers`` hidden states; backpropagate into each that has a gradient.

    The output lists ``last_hidden_state`` first and the states below it top down, so a
    listener that reads fewer of them (a plain listener: the last only) sends gradients for a
    prefix of that order, which is how they are matched to the states here.
    """
    from thinc.types import ArgsKwargs
    from transformers.file_utils import ModelOutput

    _, hf_output = inputs_outputs
    hidden = hf_output.hidden_states
    output = ModelOutput()
    for key, value in hf_output.items():
        if key != "hidden_states":
            output[key] = value
    top = len(hidden) - 1  # hidden[top] is last_hidden_state
    for j in range(top - 1, top - model.attrs["output_layers"], -1):
        output[f"{PREFIX}{j}"] = hidden[j]

    def backprop(d_output: Any) -> ArgsKwargs:
        grads = list(d_output.values())
        states = [output[k] for k in state_keys(output)]
        if len(grads) > len(states):
            raise AdaptnerError(
                f"The transformer got gradients for {len(grads)} hidden states but outputs "
                f"{len(states)}: raise components.transformer.model.output_layers."
            )
        pairs = [(s, g) for s, g in zip(states, grads, strict=False) if s.requires_grad]
        return ArgsKwargs(
            args=([s for s, _ in pairs],), kwargs={"grad_tensors": [g for _, g in pairs]}
        )

    return output, backprop


# --------------------------------------------------------------------------- the head's side


@registry.architectures("adaptner.ScalarMixListener.v1")
def build_scalar_mix_listener(
    pooling: Model,
    grad_factor: float = 1.0,
    upstream: str = "*",
    mix_layers: int = 1,
) -> Model:
    """``spacy-transformers.TransformerListener.v1`` whose token vectors are a learnt scalar mix
    of the last ``mix_layers`` hidden states.

    Args:
        pooling: Reduces the word pieces of a token to one vector (e.g. ``reduce_mean.v1``).
        grad_factor: Factor on the gradient sent to the transformer (not on the mix's own).
        upstream: The transformer component to listen to ("*": any).
        mix_layers: How many of the top hidden states to mix (1: the last only, the
            spacy-transformers listener itself). The transformer must output at least as
            many (``output_layers`` of ``adaptner.TransformerModel.v1``).
    """
    from spacy_transformers.architectures import transformer_listener_tok2vec_v1
    from spacy_transformers.layers import TransformerListener, trfs2arrays

    if mix_layers < 1:
        raise AdaptnerError(f"mix_layers must be >= 1 (1 = the last layer), got {mix_layers}.")
    if mix_layers == 1:
        return transformer_listener_tok2vec_v1(pooling, grad_factor, upstream)
    listener = TransformerListener(upstream_name=upstream)
    mix = scalar_mix(mix_layers, grad_factor)
    model = chain(listener, mix, trfs2arrays(pooling, 1.0))
    model.set_ref("listener", listener)
    model.set_ref("scalar_mix", mix)
    return model


def scalar_mix(n_layers: int, grad_factor: float = 1.0) -> Model:
    """``gamma × Σ_i softmax(weights)_i × h_i`` over the last ``n_layers`` hidden states of
    each doc's transformer output, as that output's ``last_hidden_state``.

    ``weights[0]`` belongs to the lowest mixed state, ``weights[-1]`` to the last one. A doc
    without transformer output passes through; so does the all-zero placeholder that
    spacy-transformers' listener makes for a doc the transformer did not annotate.
    """
    return Model(
        "scalar_mix",
        _mix_forward,
        init=_mix_init,
        dims={"nL": n_layers},
        params={"weights": None, "gamma": None},
        attrs={"grad_factor": float(grad_factor)},
    )


def _mix_init(model: Model, X: Any = None, Y: Any = None) -> None:
    model.set_param("weights", model.ops.alloc1f(model.get_dim("nL")))
    model.set_param("gamma", model.ops.asarray1f([1.0]))


def _mix_forward(model: Model, trf_datas: list, is_train: bool):
    from spacy_transformers.data_classes import TransformerData
    from transformers.file_utils import ModelOutput

    xp = model.ops.xp
    n = model.get_dim("nL")
    weights = model.get_param("weights")
    gamma = float(model.get_param("gamma")[0])
    share = xp.exp(weights - weights.max())
    share /= share.sum()
    outputs: list = []
    mixed_docs: list = []  # per doc with a last hidden state: (keys top down, states) or None
    for data in trf_datas:
        output = data.model_output
        if LAST not in output:
            outputs.append(data)
            continue
        keys = state_keys(output)[:n]
        if len(keys) < n:
            if not xp.any(output[LAST]):
                outputs.append(data)
                mixed_docs.append(None)
                continue
            raise AdaptnerError(
                f"The scalar mix of the last {n} layers (mix_layers = {n}) got {len(keys)} "
                f"hidden state(s) from the transformer: use @architectures = "
                f'"adaptner.TransformerModel.v1" with output_layers >= {n} in '
                "[components.transformer.model]."
            )
        states = [output[k] for k in reversed(keys)]  # bottom up, as the weights
        mixed = states[0] * (gamma * share[0])
        for i in range(1, n):
            mixed += states[i] * (gamma * share[i])
        outputs.append(
            TransformerData(
                wordpieces=data.wordpieces,
                model_output=ModelOutput(last_hidden_state=mixed),
                align=data.align,
            )
        )
        mixed_docs.append((keys, states))

    def backprop(d_outputs: list) -> list:
        # One gradient per doc with a last hidden state, in order (spacy-transformers' pooling).
        d_weights = xp.zeros((n,), dtype="f")
        d_gamma = 0.0
        d_inputs: list = []
        factor = model.attrs["grad_factor"]
        for d_data, mixed_doc in zip(d_outputs, mixed_docs, strict=True):
            if mixed_doc is None:
                d_inputs.append(d_data)
                continue
            keys, states = mixed_doc
            d_mixed = d_data.model_output[LAST]
            dots = xp.asarray([float((d_mixed * h).sum()) for h in states], dtype="f")
            d_gamma += float((share * dots).sum())
            d_share = gamma * dots
            d_weights += share * (d_share - float((share * d_share).sum()))
            d_states = ModelOutput()
            for i, key in enumerate(keys):  # top down: the transformer's order
                d_states[key] = d_mixed * (factor * gamma * share[n - 1 - i])
            d_inputs.append(
                TransformerData(
                    wordpieces=d_data.wordpieces, model_output=d_states, align=d_data.align
                )
            )
        model.inc_grad("weights", d_weights)
        model.inc_grad("gamma", model.ops.asarray1f([d_gamma]))
        return d_inputs

    return outputs, backprop
