"""Faster CPU inference for a transformer pipeline: dynamic int8 quantization at load time.

The component ``int8_transformer`` (after ``transformer`` in the pipeline) quantizes the
``nn.Linear`` layers of every transformer in the pipeline when the pipeline is loaded
(``from_disk`` / ``from_bytes`` run in pipeline order, so the transformer's fp32 weights are in
place by then): weights to int8 (per output channel by default), activations quantized on the
fly (``torch.ao.quantization.quantize_dynamic``). Layers whose module name matches one of
``keep_fp32`` (regular expressions, e.g. ``"output\\.dense"`` or ``"layer\\.11\\."``) stay in
fp32. The weights on disk stay fp32, so the same directory or wheel can be loaded without the
component (``spacy.load(path, exclude=["int8_transformer"])``) for training or for reference.

Dynamic quantization gives a whole activation tensor one scale, so a few input channels far
larger than the rest (after a LayerNorm, after the GELU) crush the others to a few levels.
*Smoothing* moves that range into the weights, where int8 scales are per output channel: from
a calibration pass over sample docs (:func:`calibrate`, the per-input-channel max |x_j| of each
linear layer), each layer gets scales ``s_j = max|x_j|**alpha / max|W[:, j]|**(1 - alpha)``
(:func:`smoothing_scales`; ``alpha = "auto"``: per layer, the alpha whose int8 layer is
closest to fp32 on held-out calibration docs, :func:`smooth_pipeline`); its weight columns are
multiplied by ``s`` and its input divided by ``s`` (:class:`SmoothedLinear`, an explicit
multiply before the layer), which in fp32 is the same function. The 1/s is not folded into
the LayerNorm before q/k/v or the intermediate layer: in these post-LN encoders that
LayerNorm's output also feeds the residual connection, so folding would change the model.
The scales are saved with the component (``smooth_scales.msgpack``) and applied at load
before quantizing: loading needs no calibration data. A component saved without scales
loads as before.

A quantized pipeline is for inference only: its linear layers have no gradient.
``adaptner encoder quantize MODEL -o OUT [--calibrate corpus/train]`` adds the component to a
trained pipeline; ``adaptner package OUT`` ships it like any other pipeline.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import srsly
from spacy.language import Language
from spacy.tokens import Doc

from ..errors import AdaptnerError
from ..util import write_json
from .training import transformer_modules

FACTORY = "int8_transformer"
#: Linear layers kept in fp32 unless told otherwise: the attention and feed-forward output
#: projections (the regex matches both). Without smoothing, on an e5-small pipeline (dev 72.9)
#: every linear layer in int8 cost 7.3 dev F1 (10.8 with per-tensor scales); with these two
#: kept in fp32, 2.4, at 1.28x fp32's words/s (`python bench/e5_bench.py int8 MODEL`,
#: bench/results/e5/int8.md, an idle machine).
DEFAULT_KEEP_FP32 = (r"output\.dense",)
#: The same with smoothing (``--calibrate``), by measurement: on the sweep's llrd-len6 e5
#: pipeline (dev 78.46 in fp32) these two in fp32 and the rest smoothed with per-layer alphas
#: (``auto``) scored 78.51 (unsmoothed: 77.44; alpha 0.5: 77.88); every layer in int8 cost
#: 0.9 to 1.0 F1 smoothed (alpha 0.8: 77.54, auto: 77.42; alpha 0.5: 67.90; unsmoothed
#: 74.35), so ``--all-linear`` is the faster choice at that cost. On 2 idle cores: fp32 1,779
#: words/s, these defaults smoothed 2,208 (1.24x), every layer smoothed 2,508 (1.41x), every
#: layer unsmoothed 2,778 (1.56x) (bench/results/e5/int8_smooth.md).
DEFAULT_KEEP_FP32_SMOOTHED: tuple[str, ...] = DEFAULT_KEEP_FP32
#: ``--smooth-alpha auto``: each layer's alpha searched on held-out calibration docs.
AUTO = "auto"
#: Smoothing strength: near 1 the activations' range moves into the weights, near 0 the
#: weights' range into the activations. ``auto`` by measurement (above): no single alpha
#: suits every layer (0.5 broke the feed-forward output projections).
DEFAULT_ALPHA: float | str = AUTO
#: Calibration docs sampled from ``--calibrate`` by default.
DEFAULT_CALIBRATION_DOCS = 256
#: The component's file of smoothing scales (msgpack: one ``{layer name: float32 array}`` per
#: transformer, plus how they were made).
SCALES_FILE = "smooth_scales.msgpack"
#: The alphas :func:`search_alpha` tries per layer (None: the layer is not smoothed).
ALPHA_GRID: tuple[float | None, ...] = (None, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
#: Input rows (word pieces) per layer that the calibration keeps for :func:`search_alpha`.
SAMPLE_ROWS = 2048
#: Floor for a channel's max |x| or max |W| in the scale formula (all-zero channels get s = 1).
_EPS = 1e-5


def _linear_layers(module: Any, keep_fp32: Iterable[str]) -> list[str]:
    """Names of the module's ``nn.Linear`` layers that no ``keep_fp32`` regex matches."""
    import torch

    patterns = [re.compile(p) for p in keep_fp32]
    return [
        name
        for name, sub in module.named_modules()
        if isinstance(sub, torch.nn.Linear) and not any(p.search(name) for p in patterns)
    ]


@functools.cache
def _smoothed_linear_class() -> type:
    import torch

    class SmoothedLinear(torch.nn.Module):
        """``linear(x * inv_scale)``: a linear layer whose weight columns were scaled by s."""

        def __init__(self, linear: torch.nn.Module, inv_scale: torch.Tensor) -> None:
            super().__init__()
            self.linear = linear
            self.register_buffer("inv_scale", inv_scale)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x * self.inv_scale)

    return SmoothedLinear


def __getattr__(name: str) -> Any:
    if name == "SmoothedLinear":  # torch is imported only when it is asked for
        return _smoothed_linear_class()
    raise AttributeError(name)


@dataclass
class Calibration:
    """What a calibration pass saw, per transformer of the pipeline: each linear layer's
    max |x| per input channel (``act_max``) and, if asked for, a uniform sample of its input
    rows (``inputs``, for :func:`search_alpha`)."""

    act_max: list[dict[str, numpy.ndarray]]
    inputs: list[dict[str, numpy.ndarray]]
    docs: int


def calibrate(
    nlp: Language,
    docs: Sequence[Doc],
    *,
    batch_size: int = 32,
    sample_rows: int = 0,
    seed: int = 0,
) -> Calibration:
    """Run the fp32 pipeline over ``docs`` and record each linear layer's inputs.

    Args:
        nlp: A transformer pipeline, not quantized and not smoothed.
        docs: Calibration docs; their tokens are copied (annotations are not used).
        batch_size: ``nlp.pipe`` batch size.
        sample_rows: Keep a uniform sample of this many input rows (word pieces) per layer.
        seed: Seed of that sample.

    Returns:
        Per transformer (:func:`transformer_modules` order), the max |x| of every input channel
        of every ``nn.Linear`` layer (float32, one value per input), and the sampled rows.

    Raises:
        AdaptnerError: no transformer, an already quantized one, or no docs.
    """
    import torch

    from ..scoring import fresh_doc

    modules = transformer_modules(nlp)
    if not modules:
        raise AdaptnerError(f"Calibration needs a transformer pipeline; got {nlp.pipe_names}.")
    if any(getattr(m, "_adaptner_int8", False) for m in modules):
        raise AdaptnerError(
            "Calibrate the fp32 pipeline: this one is already quantized. Load it with "
            f"spacy.load(path, exclude=[{FACTORY!r}])."
        )
    if not docs:
        raise AdaptnerError("No calibration docs.")
    found: list[dict[str, torch.Tensor]] = [{} for _ in modules]
    # the sample: the rows with the smallest random keys seen so far (uniform, no replacement)
    sampled: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in modules]
    generator = torch.Generator().manual_seed(seed)
    handles = []

    def recorder(i: int, name: str):
        def hook(_module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            amax = x.abs().amax(dim=0)
            store = found[i]
            store[name] = torch.maximum(store[name], amax) if name in store else amax
            if sample_rows > 0:
                keys = torch.rand(x.shape[0], generator=generator)
                if name in sampled[i]:
                    old_keys, old_rows = sampled[i][name]
                    keys, x = torch.cat([old_keys, keys]), torch.cat([old_rows, x])
                if x.shape[0] > sample_rows:
                    keep = torch.topk(keys, sample_rows, largest=False).indices
                    keys, x = keys[keep], x[keep]
                sampled[i][name] = (keys, x.clone())

        return hook

    for i, module in enumerate(modules):
        for name, sub in module.named_modules():
            if isinstance(sub, torch.nn.Linear):
                handles.append(sub.register_forward_pre_hook(recorder(i, name)))
    try:
        copies = [fresh_doc(doc, nlp.vocab) for doc in docs]
        for _ in nlp.pipe(copies, batch_size=batch_size):
            pass
    finally:
        for handle in handles:
            handle.remove()
    return Calibration(
        act_max=[{k: v.cpu().numpy() for k, v in store.items()} for store in found],
        inputs=[{k: rows.cpu().numpy() for k, (_, rows) in s.items()} for s in sampled],
        docs=len(docs),
    )


def _scales(x_max: numpy.ndarray, w_max: numpy.ndarray, alpha: float) -> numpy.ndarray:
    x, w = numpy.asarray(x_max, dtype="float64"), numpy.asarray(w_max, dtype="float64")
    with numpy.errstate(divide="ignore", over="ignore", invalid="ignore"):
        s = numpy.maximum(x, _EPS) ** alpha / numpy.maximum(w, _EPS) ** (1.0 - alpha)
    s[(x <= 0) | (w <= 0) | ~numpy.isfinite(s) | (s <= 0)] = 1.0
    return s.astype("float32")


def _weight_max(layer: Any) -> numpy.ndarray:
    return layer.weight.detach().abs().amax(dim=0).double().cpu().numpy()


def smoothing_scales(
    module: Any,
    act_max: dict[str, numpy.ndarray],
    alpha: float | Mapping[str, float | None],
    keep_fp32: Iterable[str] = (),
) -> dict[str, numpy.ndarray]:
    """Per-input-channel scales ``s_j = max|x_j|**alpha / max|W[:, j]|**(1 - alpha)``.

    Args:
        module: The fp32 transformer whose weights ``act_max`` was recorded on.
        act_max: From :func:`calibrate`, for this module.
        alpha: 0 to 1, how much of the activation range moves into the weights; or one alpha
            per layer (:func:`search_alpha`), None for a layer left unsmoothed.
        keep_fp32: Regexes of the layers that stay fp32 (not smoothed either), as for
            :func:`quantize_module`.

    Returns:
        ``{layer name: float32 scales}``; a channel that is all zero in x or in W gets 1.

    Raises:
        AdaptnerError: alpha out of range, a layer missing from the calibration, or a width
            that does not match.
    """
    per_layer = alpha if isinstance(alpha, Mapping) else None
    for value in per_layer.values() if per_layer is not None else [alpha]:
        if value is not None and not 0.0 <= value <= 1.0:
            raise AdaptnerError(f"The smoothing alpha must be between 0 and 1, got {value}.")
    layers = dict(module.named_modules())
    scales = {}
    for name in _linear_layers(module, keep_fp32):
        if name not in act_max:
            raise AdaptnerError(
                f"Linear layer {name!r} was not seen in the calibration pass; calibrate this "
                "pipeline (fp32, not smoothed) again."
            )
        layer_alpha = per_layer.get(name) if per_layer is not None else alpha
        if layer_alpha is None:
            continue
        w_max = _weight_max(layers[name])
        if numpy.shape(act_max[name]) != w_max.shape:
            raise AdaptnerError(
                f"Layer {name!r} has {w_max.shape[0]} inputs but its calibration "
                f"{numpy.shape(act_max[name])[0]}; calibrate this pipeline again."
            )
        scales[name] = _scales(act_max[name], w_max, float(layer_alpha))
    return scales


def int8_error(layer: Any, x: Any, scale: numpy.ndarray | None, per_channel: bool) -> float:
    """Relative error (Frobenius) of the layer in dynamic int8 on the input rows ``x``."""
    import copy

    import torch

    with torch.no_grad():
        reference = layer(x)
        twin = torch.nn.Sequential(copy.deepcopy(layer))
        if scale is not None:
            s = torch.tensor(scale)
            twin[0].weight.mul_(s)
            x = x / s
        quantize_module(twin, per_channel=per_channel)
        error = (twin(x) - reference).norm() / reference.norm().clamp_min(1e-12)
    return float(error)


def search_alpha(
    module: Any,
    act_max: dict[str, numpy.ndarray],
    inputs: dict[str, numpy.ndarray],
    keep_fp32: Iterable[str] = (),
    per_channel: bool = True,
    grid: Sequence[float | None] = ALPHA_GRID,
) -> dict[str, float | None]:
    """For each layer to be quantized, the alpha of ``grid`` (None: no smoothing) whose int8
    layer is closest to fp32 on ``inputs`` (sampled input rows, best of docs other than those
    ``act_max`` came from: :func:`smooth_pipeline`).

    Raises:
        AdaptnerError: a layer without sampled inputs (calibrate with ``sample_rows``).
    """
    import torch

    layers = dict(module.named_modules())
    chosen: dict[str, float | None] = {}
    for name in _linear_layers(module, keep_fp32):
        if name not in inputs or name not in act_max:
            raise AdaptnerError(
                f"No calibration inputs sampled for layer {name!r}; calibrate with sample_rows."
            )
        layer = layers[name]
        x = torch.tensor(inputs[name])
        w_max = _weight_max(layer)
        errors = {
            a: int8_error(
                layer, x, None if a is None else _scales(act_max[name], w_max, a), per_channel
            )  # fmt: skip
            for a in grid
        }
        chosen[name] = min(errors, key=errors.__getitem__)
    return chosen


def smooth_module(module: Any, scales: dict[str, numpy.ndarray]) -> list[str]:
    """Scale the named linear layers' weight columns by s and wrap each so its input is
    divided by s (:class:`SmoothedLinear`); in fp32 the module computes the same function.

    Returns:
        The names of the wrapped ``nn.Linear`` layers (``<name>.linear``).

    Raises:
        AdaptnerError: a named layer that is not a linear layer of the module, or a width
            that does not match.
    """
    import torch

    wrapper = _smoothed_linear_class()
    layers = dict(module.named_modules())
    wrapped = []
    for name, s in scales.items():
        layer = layers.get(name)
        if not isinstance(layer, torch.nn.Linear):
            raise AdaptnerError(
                f"The saved smoothing scales name {name!r}, which is not a linear layer of this "
                "transformer; quantize the pipeline again with `adaptner encoder quantize`."
            )
        scale = torch.tensor(numpy.array(s, dtype="float32"), device=layer.weight.device)
        if scale.shape != (layer.in_features,):
            raise AdaptnerError(
                f"The saved smoothing scales of {name!r} have {tuple(scale.shape)} values for "
                f"{layer.in_features} inputs; quantize the pipeline again."
            )
        with torch.no_grad():
            layer.weight.mul_(scale)
        parent_name, _, child = name.rpartition(".")
        parent = layers[parent_name] if parent_name else module
        setattr(parent, child, wrapper(layer, 1.0 / scale))
        wrapped.append(f"{name}.linear")
    return wrapped


def quantize_module(
    module: Any,
    keep_fp32: Iterable[str] = (),
    per_channel: bool = True,
    scales: dict[str, numpy.ndarray] | None = None,
) -> int:
    """Quantize a PyTorch module's linear layers in place; returns how many were quantized.

    With ``scales`` (:func:`smoothing_scales`), those layers are smoothed first.
    """
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    names = _linear_layers(module, keep_fp32)
    if scales:
        smooth_module(module, scales)
        names = [f"{name}.linear" if name in scales else name for name in names]
    spec = dict.fromkeys(names, qconfig)
    if spec:
        torch.ao.quantization.quantize_dynamic(module, qconfig_spec=spec, dtype=torch.qint8,
                                               inplace=True)  # fmt: skip
    return len(spec)


def _pack_scales(scales: list[dict[str, numpy.ndarray]], info: dict) -> dict[str, Any]:
    arrays = [{k: numpy.asarray(v, dtype="float32") for k, v in s.items()} for s in scales]
    return {"scales": arrays, "info": info}


def _unpack_scales(packed: Any, where: str) -> tuple[list[dict[str, numpy.ndarray]], dict]:
    scales = packed.get("scales") if isinstance(packed, dict) else None
    if not isinstance(scales, list) or not all(isinstance(s, dict) for s in scales):
        raise AdaptnerError(
            f"{where} holds no smoothing scales (expected a list of layer -> scales); quantize "
            "the pipeline again with `adaptner encoder quantize --calibrate`."
        )
    arrays = [{str(k): numpy.asarray(v, dtype="float32") for k, v in s.items()} for s in scales]
    return arrays, dict(packed.get("info") or {})


class Int8Transformer:
    """A pass-through component that quantizes the pipeline's transformers when it is loaded.

    ``scales`` (one ``{layer name: float32 array}`` per transformer, or None) smooth those
    layers before they are quantized; ``smoothing`` records how they were made (alpha, docs).
    """

    def __init__(self, nlp: Language, name: str, keep_fp32: list[str], per_channel: bool) -> None:
        self.nlp, self.name = nlp, name
        self.keep_fp32, self.per_channel = list(keep_fp32), bool(per_channel)
        for pattern in self.keep_fp32:
            try:
                re.compile(pattern)
            except re.error as e:
                raise AdaptnerError(f"keep_fp32 pattern {pattern!r} is not a regex: {e}") from e
        self.quantized = 0
        self.scales: list[dict[str, numpy.ndarray]] | None = None
        self.smoothing: dict[str, Any] = {}

    def __call__(self, doc: Doc) -> Doc:
        return doc

    def quantize(self) -> int:
        """Smooth and quantize every transformer of the pipeline (idempotent); returns the
        number of layers quantized."""
        modules = transformer_modules(self.nlp)
        if not modules:
            raise AdaptnerError(
                f"The {FACTORY} component found no transformer in {self.nlp.pipe_names}."
            )
        if self.scales is not None and len(self.scales) != len(modules):
            raise AdaptnerError(
                f"The {FACTORY} component has smoothing scales for {len(self.scales)} "
                f"transformer(s) but the pipeline has {len(modules)}; quantize it again."
            )
        count = 0
        for i, module in enumerate(modules):
            if not getattr(module, "_adaptner_int8", False):
                scales = self.scales[i] if self.scales is not None else None
                count += quantize_module(module, self.keep_fp32, self.per_channel, scales)
                module._adaptner_int8 = True
        self.quantized += count
        return count

    def initialize(self, get_examples=None, *, nlp=None) -> None:
        return None

    def _settings(self) -> dict[str, Any]:
        return {"keep_fp32": self.keep_fp32, "per_channel": self.per_channel,
                "smoothing": self.smoothing or None}  # fmt: skip

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        data = self._settings()
        if self.scales is not None:
            data["smooth"] = _pack_scales(self.scales, self.smoothing)
        return srsly.msgpack_dumps(data)

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> Int8Transformer:
        msg = srsly.msgpack_loads(data)
        if isinstance(msg, dict) and msg.get("smooth") is not None:
            self.scales, self.smoothing = _unpack_scales(msg["smooth"], f"The {FACTORY} bytes")
        self.quantize()
        return self

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / "int8.json", self._settings())
        if self.scales is not None:
            packed = _pack_scales(self.scales, self.smoothing)
            (path / SCALES_FILE).write_bytes(srsly.msgpack_dumps(packed))

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> Int8Transformer:
        scales_file = Path(path) / SCALES_FILE
        if scales_file.exists():
            try:
                packed = srsly.msgpack_loads(scales_file.read_bytes())
            except Exception as e:  # noqa: BLE001 - any decoding error of a damaged file
                raise AdaptnerError(
                    f"{scales_file} is damaged ({type(e).__name__}: {e}); quantize the "
                    "pipeline again with `adaptner encoder quantize --calibrate`."
                ) from e
            self.scales, self.smoothing = _unpack_scales(packed, str(scales_file))
        self.quantize()
        return self


@Language.factory(
    FACTORY,
    default_config={"keep_fp32": [], "per_channel": True},
)
def make_int8_transformer(
    nlp: Language, name: str, keep_fp32: list[str], per_channel: bool
) -> Int8Transformer:
    """See :class:`Int8Transformer`."""
    return Int8Transformer(nlp, name, keep_fp32, per_channel)


def calibration_docs(
    path: str | Path, n_docs: int = DEFAULT_CALIBRATION_DOCS, seed: int = 0
) -> list[Doc]:
    """``n_docs`` docs sampled with ``seed`` from a ``.spacy`` file or a corpus split directory
    (all its ``<domain>.spacy`` files); all of them when there are fewer.

    Raises:
        AdaptnerError: a missing path, a directory without DocBins, no docs with tokens, or
            ``n_docs`` < 1.
    """
    from spacy.vocab import Vocab

    from ..readers import available_domains, load_domain_docs, read_docbin

    path = Path(path)
    remedy = (
        "Pass --calibrate a DANSK split directory (e.g. corpus/train, made by `adaptner "
        "corpus`) or one .spacy file."
    )
    if n_docs < 1:
        raise AdaptnerError(f"--calibration-docs must be at least 1, got {n_docs}.")
    if not path.exists():
        raise AdaptnerError(f"Calibration data {path} does not exist. {remedy}")
    vocab = Vocab()
    if path.is_dir():
        if not available_domains(path):
            raise AdaptnerError(f"Calibration directory {path} holds no <domain>.spacy files. "
                                f"{remedy}")  # fmt: skip
        docs = load_domain_docs(path, "all", vocab)
    else:
        docs = read_docbin(path, vocab)
    docs = [doc for doc in docs if len(doc)]
    if not docs:
        raise AdaptnerError(f"Calibration data {path} holds no documents with tokens. {remedy}")
    if len(docs) <= n_docs:
        return docs
    rng = numpy.random.default_rng(seed)
    return [docs[i] for i in sorted(rng.choice(len(docs), n_docs, replace=False))]


def parse_alpha(value: str | float) -> float | str:
    """``"auto"`` or a float between 0 and 1 (as given to ``--smooth-alpha``).

    Raises:
        AdaptnerError: anything else.
    """
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        alpha = float(value)
    except ValueError:
        alpha = float("nan")
    if not 0.0 <= alpha <= 1.0:
        raise AdaptnerError(
            f"--smooth-alpha must be {AUTO!r} or a number between 0 and 1, got {value!r}."
        )
    return alpha


def smooth_pipeline(
    nlp: Language,
    docs: Sequence[Doc],
    alpha: float | str = DEFAULT_ALPHA,
    keep_fp32: Iterable[str] = (),
    per_channel: bool = True,
    seed: int = 0,
) -> tuple[list[dict[str, numpy.ndarray]], dict[str, Any]]:
    """Calibrate the fp32 pipeline on ``docs`` and compute the smoothing scales of the layers
    to be quantized.

    ``alpha`` is a number, or ``"auto"``: every fourth doc is held out, the scales of each
    alpha of :data:`ALPHA_GRID` are made from the other docs' ranges, and each layer gets the
    alpha whose int8 layer is closest to fp32 on the held-out docs' inputs
    (:func:`search_alpha`). (Scored on the docs they were made from, alphas near 1 always win:
    they flatten exactly the ranges seen, and lose on new text.) The final scales use the
    ranges of all docs.

    Returns:
        The scales per transformer (for :class:`Int8Transformer`) and how they were made.
    """
    alpha = parse_alpha(alpha)
    modules = transformer_modules(nlp)
    info: dict[str, Any] = {"alpha": alpha, "docs": len(docs), "seed": seed}
    if alpha != AUTO:
        found = calibrate(nlp, docs)
        scales = [
            smoothing_scales(m, found.act_max[i], alpha, keep_fp32) for i, m in enumerate(modules)
        ]
        return scales, info
    held = list(docs[3::4]) or list(docs[-1:])
    fit = [doc for i, doc in enumerate(docs) if i % 4 != 3] or held
    fitted = calibrate(nlp, fit)
    checked = calibrate(nlp, held, sample_rows=SAMPLE_ROWS, seed=seed)
    scales, chosen = [], []
    for i, module in enumerate(modules):
        fit_max, inputs = fitted.act_max[i], checked.inputs[i]
        alphas = search_alpha(module, fit_max, inputs, keep_fp32, per_channel)
        act_max = {k: numpy.maximum(v, checked.act_max[i][k]) for k, v in fit_max.items()}
        scales.append(smoothing_scales(module, act_max, alphas, keep_fp32))
        chosen.append(alphas)
    info["alphas"] = chosen
    return scales, info


def quantize_pipeline(
    model_dir: str | Path,
    output: str | Path,
    *,
    keep_fp32: Iterable[str] | None = None,
    per_channel: bool = True,
    force: bool = False,
    calibrate_on: str | Path | None = None,
    alpha: float | str = DEFAULT_ALPHA,
    calibration_n: int = DEFAULT_CALIBRATION_DOCS,
    seed: int = 0,
) -> int:
    """Write ``model_dir`` to ``output`` with the ``int8_transformer`` component added.

    ``keep_fp32`` None keeps :data:`DEFAULT_KEEP_FP32` in fp32 (with ``calibrate_on``,
    :data:`DEFAULT_KEEP_FP32_SMOOTHED`); ``[]`` quantizes every linear layer. With
    ``calibrate_on`` (a ``.spacy`` file or split directory), ``calibration_n`` docs sampled
    with ``seed`` calibrate smoothing scales (``alpha``, a number or ``"auto"``) for the layers
    that will be quantized (:func:`smooth_pipeline`); they are saved with the component.

    Returns:
        The number of linear layers that will be quantized at load time.

    Raises:
        AdaptnerError: not a transformer pipeline, a bad pattern, bad calibration data, an
            output the policy refuses.
    """
    from ..util import atomic_output, load_pipeline

    alpha = parse_alpha(alpha)
    docs = calibration_docs(calibrate_on, calibration_n, seed) if calibrate_on else None
    nlp = load_pipeline(model_dir, "Pass a trained transformer pipeline (its model-best).")
    if FACTORY in nlp.pipe_names:
        raise AdaptnerError(f"{model_dir} already has an {FACTORY} component.")
    if "transformer" not in nlp.pipe_names:
        raise AdaptnerError(
            f"{model_dir} has no transformer component (pipeline {nlp.pipe_names}); int8 "
            "quantization is for transformer pipelines."
        )
    default = DEFAULT_KEEP_FP32_SMOOTHED if docs is not None else DEFAULT_KEEP_FP32
    keep = list(default if keep_fp32 is None else keep_fp32)
    config = {"keep_fp32": keep, "per_channel": per_channel}
    pipe = nlp.add_pipe(FACTORY, after="transformer", config=config)
    modules = transformer_modules(nlp)
    if docs is not None:
        pipe.scales, pipe.smoothing = smooth_pipeline(nlp, docs, alpha, keep, per_channel, seed)
        pipe.smoothing["calibration"] = str(calibrate_on)
    with atomic_output(output, "encoder quantize", force=force) as tmp:
        nlp.to_disk(tmp)
    return sum(len(_linear_layers(m, pipe.keep_fp32)) for m in modules)
