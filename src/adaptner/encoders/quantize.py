"""Faster CPU inference for a transformer pipeline: dynamic int8 quantization at load time.

The component ``int8_transformer`` (after ``transformer`` in the pipeline) quantizes the
``nn.Linear`` layers of every transformer in the pipeline when the pipeline is loaded
(``from_disk`` / ``from_bytes`` run in pipeline order, so the transformer's fp32 weights are in
place by then): weights to int8 (per output channel by default), activations quantized on the
fly (``torch.ao.quantization.quantize_dynamic``). Layers whose module name matches one of
``keep_fp32`` (regular expressions, e.g. ``"output\\.dense"`` or ``"layer\\.11\\."``) stay in
fp32. The weights on disk stay fp32, so the same directory or wheel can be loaded without the
component (``spacy.load(path, exclude=["int8_transformer"])``) for training or for reference.

A quantized pipeline is for inference only: its linear layers have no gradient.
``adaptner encoder quantize MODEL -o OUT`` adds the component to a trained pipeline;
``adaptner package OUT`` ships it like any other pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import srsly
from spacy.language import Language
from spacy.tokens import Doc

from ..errors import AdaptnerError
from .training import transformer_modules

FACTORY = "int8_transformer"
#: Linear layers kept in fp32 unless told otherwise: the attention and feed-forward output
#: projections. On an e5-small pipeline (dev 72.9) every linear layer in int8 cost 7.3 dev F1
#: (10.8 with per-tensor scales); with these two kept in fp32, 2.4, at 1.28x fp32's words/s
#: (`python bench/e5_bench.py int8 MODEL`, bench/results/e5/int8.md).
DEFAULT_KEEP_FP32 = (r"output\.dense",)


def _linear_layers(module: Any, keep_fp32: Iterable[str]) -> list[str]:
    """Names of the module's ``nn.Linear`` layers that no ``keep_fp32`` regex matches."""
    import torch

    patterns = [re.compile(p) for p in keep_fp32]
    return [
        name
        for name, sub in module.named_modules()
        if isinstance(sub, torch.nn.Linear) and not any(p.search(name) for p in patterns)
    ]


def quantize_module(module: Any, keep_fp32: Iterable[str] = (), per_channel: bool = True) -> int:
    """Quantize a PyTorch module's linear layers in place; returns how many were quantized."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name in _linear_layers(module, keep_fp32)}
    if spec:
        torch.ao.quantization.quantize_dynamic(module, qconfig_spec=spec, dtype=torch.qint8,
                                               inplace=True)  # fmt: skip
    return len(spec)


class Int8Transformer:
    """A pass-through component that quantizes the pipeline's transformers when it is loaded."""

    def __init__(
        self, nlp: Language, name: str, keep_fp32: list[str], per_channel: bool
    ) -> None:
        self.nlp, self.name = nlp, name
        self.keep_fp32, self.per_channel = list(keep_fp32), bool(per_channel)
        for pattern in self.keep_fp32:
            try:
                re.compile(pattern)
            except re.error as e:
                raise AdaptnerError(f"keep_fp32 pattern {pattern!r} is not a regex: {e}") from e
        self.quantized = 0

    def __call__(self, doc: Doc) -> Doc:
        return doc

    def quantize(self) -> int:
        """Quantize every transformer of the pipeline (idempotent); returns the layer count."""
        modules = transformer_modules(self.nlp)
        if not modules:
            raise AdaptnerError(
                f"The {FACTORY} component found no transformer in {self.nlp.pipe_names}."
            )
        count = 0
        for module in modules:
            if not getattr(module, "_adaptner_int8", False):
                count += quantize_module(module, self.keep_fp32, self.per_channel)
                module._adaptner_int8 = True
        self.quantized += count
        return count

    def initialize(self, get_examples=None, *, nlp=None) -> None:
        return None

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        return srsly.msgpack_dumps({"keep_fp32": self.keep_fp32, "per_channel": self.per_channel})

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> Int8Transformer:
        self.quantize()
        return self

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "int8.json", {"keep_fp32": self.keep_fp32,
                                        "per_channel": self.per_channel})  # fmt: skip

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> Int8Transformer:
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


def quantize_pipeline(
    model_dir: str | Path,
    output: str | Path,
    *,
    keep_fp32: Iterable[str] | None = None,
    per_channel: bool = True,
    force: bool = False,
) -> int:
    """Write ``model_dir`` to ``output`` with the ``int8_transformer`` component added.

    ``keep_fp32`` None keeps :data:`DEFAULT_KEEP_FP32` in fp32; ``[]`` quantizes every
    linear layer.

    Returns:
        The number of linear layers that will be quantized at load time.

    Raises:
        AdaptnerError: not a transformer pipeline, a bad pattern, an output the policy refuses.
    """
    from ..util import atomic_output, load_pipeline

    nlp = load_pipeline(model_dir, "Pass a trained transformer pipeline (its model-best).")
    if FACTORY in nlp.pipe_names:
        raise AdaptnerError(f"{model_dir} already has an {FACTORY} component.")
    if "transformer" not in nlp.pipe_names:
        raise AdaptnerError(
            f"{model_dir} has no transformer component (pipeline {nlp.pipe_names}); int8 "
            "quantization is for transformer pipelines."
        )
    keep = list(DEFAULT_KEEP_FP32 if keep_fp32 is None else keep_fp32)
    config = {"keep_fp32": keep, "per_channel": per_channel}
    pipe = nlp.add_pipe(FACTORY, after="transformer", config=config)
    with atomic_output(output, "encoder quantize", force=force) as tmp:
        nlp.to_disk(tmp)
    return sum(len(_linear_layers(m, pipe.keep_fp32)) for m in transformer_modules(nlp))
