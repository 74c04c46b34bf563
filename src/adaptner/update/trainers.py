"""Round trainers: in-process updates of a loaded pipeline on gold Docs (fast AL rounds).

Shared by the simulation (:mod:`adaptner.simulation`) and annotation sessions
(:mod:`adaptner.session`): ``fine_tune`` (every component learns), ``cached_head`` (the head
learns on cached encoder outputs, :mod:`adaptner.update.features`) and ``top_layers`` (the
encoder's top layers and the head learn on cached lower layers). Add a trainer with
``@trainers_registry.register("name")`` or the ``spacy_al_trainers`` entry point.
"""

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import catalogue
import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import fix_random_seed, minibatch, registry

from ..errors import AdaptnerError
from ..scoring import fresh_doc, score_ner
from ..train_loop import apply_weights, collect_weights, same_frozen_weights

# One guarded registry of per-round trainers (re-import must not fail).
if not hasattr(registry, "al_trainers"):
    registry.create("al_trainers", entry_points=True)
trainers_registry: catalogue.Registry = registry.al_trainers  # type: ignore[attr-defined]


class RoundSettings(Protocol):
    """What a round trainer reads of its settings (:class:`adaptner.simulation.ALSettings`
    has these fields)."""

    epochs: int
    patience: int
    batch_size: int
    dropout: float
    learn_rate: float | None


@dataclass
class UpdateStats:
    """What one call of :func:`update_pipeline` did."""

    epochs: int = 0
    steps: int = 0
    losses: list[float] = field(default_factory=list)  # summed loss per epoch
    dev_f1: list[float] = field(default_factory=list)  # per epoch, when dev docs were given
    best_epoch: int = 0
    best_dev: dict[str, object] = field(default_factory=dict)  # score_ner of the kept epoch
    seconds: float = 0.0


def make_examples(nlp: Language, gold_docs: Iterable[Doc]) -> list[Example]:
    """Training examples: predicted = the gold tokens without annotation, reference = gold."""
    return [Example(fresh_doc(gold, nlp.vocab), gold) for gold in gold_docs]


def _trainable(nlp: Language) -> list[tuple[str, object]]:
    return [(name, proc) for name, proc in nlp.pipeline if hasattr(proc, "model")]


def snapshot_weights(nlp: Language) -> dict[str, numpy.ndarray]:
    """A copy of every weight training can change (restore with :func:`restore_weights`).

    The same weights a training checkpoint keeps (:func:`adaptner.train_loop.collect_weights`):
    every thinc parameter and every trainable PyTorch tensor.
    """
    return collect_weights(nlp, copy=True)


def restore_weights(nlp: Language, weights: dict[str, numpy.ndarray]) -> None:
    """Put weights from :func:`snapshot_weights` back, in place: the modules stay the same
    objects, so frozen parameters and cached lower layers (:mod:`adaptner.encoders.lower_cache`)
    stay as they were set up."""
    apply_weights(nlp, weights)


def copy_trained_weights(source: Language, target: Language) -> bool:
    """Make ``target`` a copy of ``source`` in place by copying the weights training can change
    (:func:`snapshot_weights`), when that is all they differ in (the same components and every
    frozen tensor equal). Returns False, leaving ``target`` as it was, otherwise."""
    if not same_frozen_weights(source, target):
        return False
    apply_weights(target, collect_weights(source))
    return True


def clear_gradients(nlp: Language) -> None:
    """Set the gradient of every parameter of every trainable component to zeros.

    spaCy leaves the last batch's gradients in a tok2vec with listeners after an update, and
    :func:`restore_weights` does not reset them; a freshly loaded pipeline has no gradients
    at all, which the optimizer treats differently from zeros. Zeros everywhere make an
    update depend only on the weights, the docs and the seed, not on earlier updates.
    """
    for _, proc in _trainable(nlp):
        for node in proc.model.walk():  # type: ignore[attr-defined]
            for name in node.param_names:
                if node.has_param(name):
                    node.set_grad(name, node.ops.alloc(node.get_param(name).shape))


def make_optimizer(nlp: Language):
    """A fresh optimizer from the pipeline's ``[training.optimizer]``.

    Unlike ``nlp.create_optimizer()`` this interpolates the config first: a saved transformer
    pipeline's schedule refers to ``${training.max_steps}``, which spaCy would not resolve.
    """
    config = nlp.config.interpolate() if not nlp.config.is_interpolated else nlp.config
    return registry.resolve({"optimizer": config["training"]["optimizer"]})["optimizer"]


def update_pipeline(
    nlp: Language,
    train_docs: Sequence[Doc],
    dev_docs: Sequence[Doc] | None = None,
    *,
    epochs: int = 10,
    patience: int = 0,
    seed: int = 0,
    batch_size: int = 16,
    dropout: float = 0.1,
    learn_rate: float | None = None,
    on_epoch: Callable[[int, float, float | None], None] | None = None,
) -> UpdateStats:
    """Fine-tune a loaded pipeline in place on gold Docs.

    A fresh optimizer (the pipeline's ``[training.optimizer]``) is created and leftover
    gradients are cleared on every call, so the result depends only on the weights, the
    docs and the seed, not on earlier updates (a resumed run repeats an uninterrupted one).
    Examples are shuffled per epoch with a generator seeded from ``seed``; spaCy/thinc
    randomness (dropout) is fixed with ``fix_random_seed(seed)``.

    Args:
        nlp: The pipeline to update (e.g. ``spacy.load(source_model)``).
        train_docs: Gold Docs (tokenization and ``doc.ents`` are the reference).
        dev_docs: Gold Docs for early stopping; with ``patience > 0`` training stops after
            ``patience`` epochs without a better dev F1 and the best epoch's weights are kept.
        epochs: Maximum number of passes over ``train_docs``.
        patience: Epochs without dev improvement before stopping (0 = train all epochs).
        seed: The one seed of this update.
        batch_size: Docs per update.
        dropout: Dropout rate during the update.
        learn_rate: Override the optimizer's learning rate (None = the config's).
        on_epoch: Called with (epoch, loss, dev_f1 or None) after every epoch.

    Raises:
        AdaptnerError: on non-positive epochs or batch size.
    """
    if epochs < 1:
        raise AdaptnerError(f"epochs must be at least 1, got {epochs}.")
    if batch_size < 1:
        raise AdaptnerError(f"batch_size must be at least 1, got {batch_size}.")
    start = time.perf_counter()
    stats = UpdateStats()
    if not train_docs:
        return stats
    clear_gradients(nlp)
    fix_random_seed(seed)
    rng = numpy.random.default_rng(seed)
    examples = make_examples(nlp, train_docs)
    optimizer = make_optimizer(nlp)
    if learn_rate is not None:  # a constant rate replaces the config's schedule
        getattr(optimizer, "schedules", {}).pop("learn_rate", None)
        optimizer.learn_rate = learn_rate
    use_dev = bool(dev_docs) and patience > 0
    best_f1, best_weights, since_best = -1.0, None, 0
    for epoch in range(1, epochs + 1):
        losses: dict[str, float] = {}
        order = rng.permutation(len(examples))
        for batch in minibatch([examples[i] for i in order], size=batch_size):
            nlp.update(batch, drop=dropout, sgd=optimizer, losses=losses)
            optimizer.step_schedules()  # as spaCy's training loop: warm-up starts at rate 0
            stats.steps += 1
        loss = float(sum(losses.values()))
        stats.losses.append(loss)
        stats.epochs = epoch
        dev_f1 = None
        if use_dev:
            dev_scores = score_ner(nlp, dev_docs)  # type: ignore[arg-type]
            dev_f1 = float(dev_scores["ents_f"])
            stats.dev_f1.append(dev_f1)
            if dev_f1 > best_f1:
                best_f1, best_weights, since_best = dev_f1, snapshot_weights(nlp), 0
                stats.best_epoch = epoch
                stats.best_dev = dev_scores
            else:
                since_best += 1
        else:
            stats.best_epoch = epoch
        if on_epoch is not None:
            on_epoch(epoch, loss, dev_f1)
        if use_dev and since_best >= patience:
            break
    if use_dev and best_weights is not None and stats.best_epoch != stats.epochs:
        restore_weights(nlp, best_weights)
    stats.seconds = time.perf_counter() - start
    return stats


class RoundTrainer(Protocol):
    """Updates the pipeline after an AL round (what ``registry.al_trainers`` factories make).

    The simulation restores the source weights before calling it in ``reset`` mode; the
    trainer only trains. A trainer may keep state between calls (e.g. cached encoder outputs).
    """

    def __call__(
        self,
        nlp: Language,
        train_docs: Sequence[Doc],
        dev_docs: Sequence[Doc] | None,
        *,
        settings: RoundSettings,
        seed: int,
    ) -> UpdateStats: ...


def update_as_set(
    nlp: Language,
    train_docs: Sequence[Doc],
    dev_docs: Sequence[Doc] | None,
    settings: RoundSettings,
    seed: int,
    learn_rate: float | None,
) -> UpdateStats:
    """:func:`update_pipeline` with the AL settings' epochs, patience, batch size and dropout."""
    return update_pipeline(
        nlp,
        train_docs,
        dev_docs if settings.patience else None,
        epochs=settings.epochs,
        patience=settings.patience,
        seed=seed,
        batch_size=settings.batch_size,
        dropout=settings.dropout,
        learn_rate=learn_rate,
    )


@trainers_registry.register("fine_tune")
def make_fine_tune() -> RoundTrainer:
    """Fine-tune every trainable component in process (:func:`update_pipeline`)."""

    def fine_tune(
        nlp: Language,
        train_docs: Sequence[Doc],
        dev_docs: Sequence[Doc] | None,
        *,
        settings: RoundSettings,
        seed: int,
    ) -> UpdateStats:
        return update_as_set(nlp, train_docs, dev_docs, settings, seed, settings.learn_rate)

    return fine_tune


class _CachedTrainer:
    """A round trainer that serves part of the pipeline from a cache: it makes sure the cache
    is attached, updates at its own constant rate (unless the settings give one), then lets
    the cache keep what the round computed."""

    #: The learning rate when the settings leave ``learn_rate`` unset (a pipeline's own
    #: schedule may start at 0 during warm-up, which a round never leaves).
    default_learn_rate: float

    def ensure_attached(self, nlp: Language) -> None:
        raise NotImplementedError

    def after_update(self, nlp: Language) -> None:
        """Called after every round's update (nothing by default)."""

    def __call__(
        self,
        nlp: Language,
        train_docs: Sequence[Doc],
        dev_docs: Sequence[Doc] | None,
        *,
        settings: RoundSettings,
        seed: int,
    ) -> UpdateStats:
        self.ensure_attached(nlp)
        learn_rate = settings.learn_rate or self.default_learn_rate
        stats = update_as_set(nlp, train_docs, dev_docs, settings, seed, learn_rate)
        self.after_update(nlp)
        return stats


class CachedHead(_CachedTrainer):
    """Round trainer ``cached_head``: the encoder stays as the source left it; every round
    retrains only the bio_ner head, on cached token vectors (:mod:`.features`).

    :meth:`prepare` attaches the cache and encodes the run's docs once (saved under
    ``cache_dir`` for the next run with the same encoder). Updates, pool scoring and
    evaluation then cost a lookup plus the head, so a round takes seconds on a CPU.
    """

    #: The head's learning rate when the AL settings leave ``learn_rate`` unset (the
    #: pipeline's own schedule may start at 0 during warm-up, which a round never leaves);
    #: sessions use it too. On legal, a linear head on cached e5 vectors reached 60.4 / 62.7
    #: (heldout / dev) at 0.01 against 55.7 / 59.9 at 0.001 (20 epochs, all 1,352 docs).
    default_learn_rate = 0.01

    def prepare(
        self, nlp: Language, docs: Sequence[Doc], *, cache_dir: Any = None, progress: bool = False
    ) -> None:
        from .features import attach

        attach(nlp, docs, cache_dir=cache_dir, progress=progress)

    def ensure_attached(self, nlp: Language) -> None:
        from .features import attach, is_attached

        if not is_attached(nlp):
            attach(nlp)


@trainers_registry.register("cached_head")
def make_cached_head() -> RoundTrainer:
    """Retrain only the bio_ner head on cached encoder outputs (:class:`CachedHead`)."""
    return CachedHead()


class TopLayers(_CachedTrainer):
    """Round trainer ``top_layers``: the embeddings and all but the top ``train_layers`` layers
    of the encoder are frozen and cached (:mod:`adaptner.encoders.lower_cache`; at least one
    layer is cached); every round fine-tunes the top layers and the head (the real model, at a
    fraction of full fine-tuning's cost). Between ``cached_head`` (only the head learns) and
    ``fine_tune``.

    :meth:`prepare` attaches the cache (kept under ``<cache_dir>/lower`` for the next run with
    the same encoder). Weights are snapshot and restored in place, so the attachment stays.
    """

    #: The head's constant learning rate when the AL settings leave ``learn_rate`` unset; the
    #: encoder's top layers take it × the config's ``encoder_lr_scale``.
    default_learn_rate = 0.001

    def __init__(self, train_layers: int = 4) -> None:
        if train_layers < 1:
            raise AdaptnerError(f"train_layers must be at least 1, got {train_layers}.")
        self.train_layers = train_layers

    def prepare(
        self, nlp: Language, docs: Sequence[Doc], *, cache_dir: Any = None, progress: bool = False
    ) -> None:
        from ..encoders.lower_cache import attach, attached_cache
        from ..encoders.training import transformer_modules

        modules = transformer_modules(nlp)
        if not modules:
            raise AdaptnerError(
                f"The top_layers trainer needs a transformer pipeline; {nlp.pipe_names} has "
                "none. Use fine_tune."
            )
        for module in modules:
            if attached_cache(module) is None:
                directory = None if cache_dir is None else Path(cache_dir) / "lower"
                n_layers = len(module.encoder.layer)
                attach(module, max(1, n_layers - self.train_layers), directory)

    def ensure_attached(self, nlp: Language) -> None:
        self.prepare(nlp, ())

    def after_update(self, nlp: Language) -> None:
        from ..encoders.lower_cache import flush_pipeline_caches

        flush_pipeline_caches(nlp)  # the rows this round computed, for the next run


@trainers_registry.register("top_layers")
def make_top_layers(train_layers: int = 4) -> RoundTrainer:
    """Fine-tune the encoder's top layers and the head on cached lower layers
    (:class:`TopLayers`)."""
    return TopLayers(train_layers)


def prepare_trainer(
    trainer: RoundTrainer, nlp: Language, docs: Sequence[Doc], *, cache_dir: Any = None
) -> None:
    """Let a trainer set the pipeline up before its weights are snapshot (e.g. attach cached
    encoder outputs for ``docs``); a no-op for trainers without a ``prepare`` step."""
    prepare = getattr(trainer, "prepare", None)
    if prepare is not None:
        prepare(nlp, docs, cache_dir=cache_dir)


#: The trainer name that stands for the pipeline's default (:func:`resolve_trainer`).
AUTO = "auto"


def has_transformer(nlp: Language) -> bool:
    """Whether the pipeline has a transformer component (enabled or not)."""
    return any(nlp.get_pipe_meta(name).factory == "transformer" for name in nlp.component_names)


def resolve_trainer(nlp: Language, name: str) -> str:
    """The registered round trainer ``name`` stands for: ``auto`` is ``top_layers`` for a
    pipeline with a transformer (its top layers and the head learn on cached lower layers:
    the real model at a fraction of full fine-tuning's cost) and ``fine_tune`` otherwise;
    any other name is itself. Sessions and simulations resolve ``auto`` with this.
    """
    if name != AUTO:
        return name
    return "top_layers" if has_transformer(nlp) else "fine_tune"


def get_round_trainer(name: str, **params: Any) -> RoundTrainer:
    """Create a registered per-round trainer.

    Raises:
        AdaptnerError: an unknown name (the known ones listed).
    """
    try:
        factory = trainers_registry.get(name)
    except catalogue.RegistryError:
        known = ", ".join(sorted(trainers_registry.get_all()))
        raise AdaptnerError(f"Unknown AL trainer {name!r}. Known: {known}.") from None
    return factory(**params)
