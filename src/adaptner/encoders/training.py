"""Fine-tuning a pretrained transformer on a CPU: a lower learning rate for the encoder than for
the head, and a frozen word-embedding matrix.

Both are registered functions, so a config selects them (``configs/bio_trf_e5.cfg``):

- ``adaptner.Adam.v1``: thinc's Adam with ``encoder_lr_scale``. The PyTorch shim that wraps a
  Hugging Face model names its parameters with their dotted PyTorch names
  (``encoder.layer.0.attention.self.query.weight``), thinc layers with plain ones (``W``, ``b``),
  so the shim's parameters take ``learn_rate × encoder_lr_scale`` and the head the full rate.
- ``adaptner.freeze_transformer.v1``: an ``[initialize.after_init]`` callback that stops the
  gradient of matching parameters (by default the 96M-row word embeddings of e5-small): no
  gradient, no Adam moments, about 1 GB less memory on CPU, and unchanged embeddings for the
  pieces that the training data never shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from spacy.language import Language
from spacy.util import registry
from thinc.api import Optimizer
from thinc.types import FloatsXd

from ..errors import AdaptnerError

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


class ScaledOptimizer(Optimizer):
    """thinc's Optimizer with a separate learning-rate factor for PyTorch (encoder) parameters.

    With ``layer_decay`` d < 1 and ``encoder_layers`` L, encoder layer i (0-based) learns at
    ``encoder_lr_scale × d^(L - 1 - i)`` and the embeddings at ``encoder_lr_scale × d^L``:
    the top layer at the encoder rate, each layer below it d times slower.
    """

    def __init__(
        self,
        *args,
        encoder_lr_scale: float = 1.0,
        layer_decay: float = 1.0,
        encoder_layers: int = 12,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.encoder_lr_scale = float(encoder_lr_scale)
        self.layer_decay = float(layer_decay)
        self.encoder_layers = int(encoder_layers)
        self._scales: dict[str, float] = {}

    def param_scale(self, name: str) -> float:
        """The learn-rate factor of a PyTorch parameter, from its dotted name."""
        scale = self._scales.get(name)
        if scale is None:
            scale = self.encoder_lr_scale
            if self.layer_decay != 1.0:
                match = _LAYER.search(name)
                if match:
                    depth = self.encoder_layers - 1 - int(match.group(1))
                elif "embeddings" in name:
                    depth = self.encoder_layers
                else:
                    depth = 0
                scale *= self.layer_decay ** max(depth, 0)
            self._scales[name] = scale
        return scale

    def __call__(
        self,
        key: tuple[int, str],
        weights: FloatsXd,
        gradient: FloatsXd,
        *,
        lr_scale: float = 1.0,
    ):
        if isinstance(key, tuple) and len(key) == 2 and "." in str(key[1]):
            lr_scale *= self.param_scale(str(key[1]))
        return super().__call__(key, weights, gradient, lr_scale=lr_scale)


@registry.optimizers("adaptner.Adam.v1")
def make_adam(
    learn_rate: float | list[float] | Iterator[float] = 0.001,
    *,
    encoder_lr_scale: float = 1.0,
    L2: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    grad_clip: float = 1.0,
    use_averages: bool = False,
    L2_is_weight_decay: bool = True,
) -> Optimizer:
    """Adam whose transformer parameters learn at ``learn_rate × encoder_lr_scale``."""
    return make_adam_v2(
        learn_rate,
        encoder_lr_scale=encoder_lr_scale,
        L2=L2,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        grad_clip=grad_clip,
        use_averages=use_averages,
        L2_is_weight_decay=L2_is_weight_decay,
    )


@registry.optimizers("adaptner.Adam.v2")
def make_adam_v2(
    learn_rate: float | list[float] | Iterator[float] = 0.001,
    *,
    encoder_lr_scale: float = 1.0,
    layer_decay: float = 1.0,
    encoder_layers: int = 12,
    L2: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    grad_clip: float = 1.0,
    use_averages: bool = False,
    L2_is_weight_decay: bool = True,
) -> Optimizer:
    """``adaptner.Adam.v1`` plus layer-wise decay of the encoder's learn rate.

    ``layer_decay`` d (0 < d <= 1; 1 = none) scales encoder layer i of ``encoder_layers`` by
    d^(L - 1 - i) and the embeddings by d^L, on top of ``encoder_lr_scale``.
    """
    if not 0 < layer_decay <= 1:
        raise AdaptnerError(f"layer_decay must be in (0, 1], got {layer_decay}.")
    if encoder_layers < 1:
        raise AdaptnerError(f"encoder_layers must be >= 1, got {encoder_layers}.")
    if encoder_lr_scale <= 0:
        raise AdaptnerError(f"encoder_lr_scale must be > 0, got {encoder_lr_scale}.")
    return ScaledOptimizer(
        learn_rate,
        L2=L2,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        grad_clip=grad_clip,
        L2_is_weight_decay=L2_is_weight_decay,
        use_averages=use_averages,
        use_radam=False,
        encoder_lr_scale=encoder_lr_scale,
        layer_decay=layer_decay,
        encoder_layers=encoder_layers,
    )


def transformer_modules(nlp: Language, *, disabled: bool = False) -> list:
    """The PyTorch modules inside every ``transformer`` component of the pipeline (with
    ``disabled``, of disabled components too: spaCy's initialization disables the components
    a pipeline sources from another, e.g. ``adaptner train --init-from``, while
    ``[initialize.after_init]`` runs)."""
    modules = []
    for _, pipe in nlp.components if disabled else nlp.pipeline:
        model = getattr(pipe, "model", None)
        if model is None:
            continue
        for node in model.walk():
            for shim in node.shims:
                module = getattr(shim, "_model", None)
                if module is not None and hasattr(module, "named_parameters"):
                    modules.append(module)
    return modules


def freeze_parameters(nlp: Language, patterns: list[str]) -> int:
    """Stop gradients of transformer parameters whose name matches a regex; returns the count."""
    regexes = [re.compile(p) for p in patterns]
    frozen = 0
    for module in transformer_modules(nlp, disabled=True):
        for name, param in module.named_parameters():
            if any(r.search(name) for r in regexes):
                param.requires_grad_(False)
                frozen += param.numel()
    return frozen


@registry.callbacks("adaptner.freeze_transformer.v1")
def make_freeze_transformer(
    patterns: list[str] = ("word_embeddings",),  # type: ignore[assignment]
) -> Callable[[Language], Language]:
    """``[initialize.after_init]``: freeze matching transformer parameters after initialization."""
    patterns = list(patterns)

    def freeze(nlp: Language) -> Language:
        if not transformer_modules(nlp, disabled=True):
            raise AdaptnerError(
                "adaptner.freeze_transformer.v1 found no transformer in the pipeline "
                f"{nlp.component_names}; remove it from [initialize.after_init]."
            )
        if patterns and freeze_parameters(nlp, patterns) == 0:
            raise AdaptnerError(
                f"adaptner.freeze_transformer.v1: no transformer parameter matches {patterns}."
            )
        return nlp

    return freeze


@registry.callbacks("adaptner.freeze_transformer.v2")
def make_freeze_transformer_v2(
    patterns: list[str] = ("word_embeddings",),  # type: ignore[assignment]
    cache_layers: int = 0,
    cache_dir: str | None = None,
) -> Callable[[Language], Language]:
    """``adaptner.freeze_transformer.v1`` plus cached lower layers.

    ``cache_layers`` k > 0 also freezes the embeddings and the bottom k layers and serves
    their output from a :class:`~adaptner.encoders.lower_cache.LowerLayerCache` (kept under
    ``cache_dir`` when given), so a training step runs only the top layers and the head.
    """
    patterns = list(patterns)
    if cache_layers < 0:
        raise AdaptnerError(f"cache_layers must be >= 0, got {cache_layers}.")
    freeze_patterns = make_freeze_transformer(patterns)

    def freeze(nlp: Language) -> Language:
        if patterns or not cache_layers:
            freeze_patterns(nlp)
        if cache_layers:
            from .lower_cache import attach

            modules = transformer_modules(nlp, disabled=True)
            if not modules:
                raise AdaptnerError(
                    "adaptner.freeze_transformer.v2 found no transformer in the pipeline "
                    f"{nlp.component_names}; remove it from [initialize.after_init]."
                )
            for module in modules:
                attach(module, cache_layers, cache_dir)
        return nlp

    return freeze
