"""In-process model updates for session rounds: warm (continue) and reset (from the source)."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc
from tqdm import tqdm

from ..errors import AdaptnerError
from ..scoring import score_ner
from ..update.anchor import anchor_alpha, anchor_weights, check_anchor_docs
from ..update.replay import DEFAULT_SOURCE_REPLAY, check_ratio
from ..update.trainers import AUTO, CachedHead, TopLayers, has_transformer, snapshot_weights
from ..update.trainers import resolve_trainer as resolve_round_trainer
from ..update.trainers import update_pipeline as run_update

MODES: tuple[str, ...] = ("warm", "reset")

#: Round trainers of a session: "auto" = ``top_layers`` for a transformer pipeline (the top
#: layers of the encoder and the head learn; the lower layers' outputs are cached under
#: ``<session dir>/features/lower/``, so a round and the next pool scoring run only the top),
#: ``fine_tune`` otherwise (every component learns). ``cached_head`` is the fastest for a
#: transformer (the encoder stays frozen; the head trains on cached encoder outputs);
#: ``fine_tune`` on a transformer re-encodes the pool every round.
TRAINERS: tuple[str, ...] = (AUTO, "top_layers", "cached_head", "fine_tune")

#: The constant learning rate of a cached trainer's round (its own default).
CACHED_LEARN_RATES = {
    "cached_head": CachedHead.default_learn_rate,
    "top_layers": TopLayers.default_learn_rate,
}


#: Anchoring per resolved round trainer when a session does not set ``--anchor-docs``: the
#: value configs/al/e5_top_layers.cfg uses, measured there (docs/active-learning.md); the
#: other trainers keep their whole update by default.
DEFAULT_ANCHOR_DOCS: dict[str, float] = {"top_layers": 35.0}


@dataclass
class UpdateSettings:
    """How one round updates the pipeline.

    Attributes:
        max_epochs: Passes over the round's training docs.
        patience: Stop after this many epochs without a better held-out F1 (needs a
            held-out set; without one every epoch runs and the last one is kept).
        batch_size: Docs per update.
        dropout: Dropout during updates; None = the pipeline config's training.dropout.
        replay: Warm mode: at most this many earlier accepted answers are replayed with
            the new ones (sampled with the session seed). Reset mode ignores it.
        trainer: One of :data:`TRAINERS`.
        source_replay: Source docs (from ``session init --source-docs``) added per answer in
            the round's training set, in both modes, a fresh sample (session seed, round)
            every round; 0 = off. A session without source docs replays none.
        source_replay_max: At most this many source docs per round (0 = no cap).
        anchor_docs: Anchoring (:mod:`adaptner.update.anchor`): a round keeps the share
            ``n / (n + anchor_docs)`` of its update (n = the answers it trained on) and moves
            the rest of the way back to the model it started from; 0 = keep all of it;
            None = the trainer's default (:data:`DEFAULT_ANCHOR_DOCS`).
    """

    max_epochs: int = 20
    patience: int = 4
    batch_size: int = 32
    dropout: float | None = None
    replay: int = 300
    trainer: str = "auto"
    source_replay: float = DEFAULT_SOURCE_REPLAY
    source_replay_max: int = 0
    anchor_docs: float | None = None

    def __post_init__(self) -> None:
        check_ratio(self.source_replay, self.source_replay_max)
        if self.anchor_docs is not None:
            check_anchor_docs(self.anchor_docs)

    def anchor_for(self, trainer: str) -> float:
        """``anchor_docs``, or the default of the resolved ``trainer`` when it is None."""
        if self.anchor_docs is not None:
            return self.anchor_docs
        return DEFAULT_ANCHOR_DOCS.get(trainer, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for the store and metrics)."""
        return asdict(self)


#: Defaults per mode. Warm continues from the current model on the new answers plus up to 300
#: replayed earlier ones, so its cost stays bounded as a session grows; reset retrains from the
#: source on everything. Measured with bench/session_bench.py (Legal pool, News source, 6
#: rounds of 50, seeds 0-2): warm with 20 epochs / patience 4 ended at 64.3 F1 on average
#: (next batch in at most 6.7 s on 2 cores) against 63.3 for reset and 62.7 for warm with
#: 8 epochs / patience 3.
DEFAULT_SETTINGS: dict[str, UpdateSettings] = {
    "warm": UpdateSettings(max_epochs=20, patience=4, batch_size=32, replay=300),
    "reset": UpdateSettings(max_epochs=20, patience=4, batch_size=32, replay=0),
}


def resolve_trainer(nlp: Language, trainer: str) -> str:
    """``top_layers``, ``cached_head`` or ``fine_tune`` for ``trainer`` (see :data:`TRAINERS`;
    ``auto`` by :func:`adaptner.update.trainers.resolve_trainer`).

    Raises:
        AdaptnerError: an unknown trainer name.
    """
    if trainer not in TRAINERS:
        raise AdaptnerError(f"Unknown trainer {trainer!r}; choose one of {', '.join(TRAINERS)}.")
    return resolve_round_trainer(nlp, trainer)


def background_by_default(source: str | Path, trainer: str) -> bool:
    """What ``--background`` is when a command is given neither it nor ``--no-background``:
    on when the rounds fine-tune a transformer (``auto`` = ``top_layers``, or ``fine_tune``:
    tens of seconds a round on a CPU), so that answers -> next batch stays a few seconds; off
    for a CNN (its rounds take about a second) and for ``cached_head``. Reads only the source
    pipeline's config.cfg (a pipeline that cannot be read counts as a CNN here; loading it
    later reports what is wrong).
    """
    if trainer == "cached_head":
        return False
    from spacy.util import load_config

    from ..trf import config_needs_trf

    try:
        config = load_config(Path(source) / "config.cfg", interpolate=False)
    except (OSError, ValueError):
        return False
    return config_needs_trf(config, lookup=False)


def prepare_scoring(
    nlp: Language, docs: Sequence[Doc], trainer: str, cache_dir: Path | None
) -> None:
    """Before a pool is scored: a ``cached_head`` session serves the head cached encoder
    outputs (encoding only docs not cached yet); ``top_layers`` attaches the cache of the
    encoder's lower layers (under ``<cache_dir>/lower``); ``fine_tune`` runs the full pipeline."""
    from ..update.features import attach, detach

    name = resolve_trainer(nlp, trainer)
    if name == "cached_head":
        attach(nlp, docs, cache_dir=cache_dir)
        return
    detach(nlp)
    if name == "top_layers":
        TopLayers().prepare(nlp, docs, cache_dir=cache_dir)


def finish_scoring(nlp: Language) -> None:
    """After a pool was scored or a round trained: write the lower-layer rows computed meanwhile
    (``top_layers``), so the next command reads them instead of computing them again."""
    from ..encoders.lower_cache import flush_pipeline_caches

    if has_transformer(nlp):
        flush_pipeline_caches(nlp)


def config_dropout(nlp: Language) -> float:
    """The training dropout from the pipeline's config (0.1 if unset)."""
    value = nlp.config.get("training", {}).get("dropout", 0.1)
    return float(value) if isinstance(value, int | float) else 0.1


def evaluate(nlp: Language, gold: Sequence[Doc]) -> dict[str, Any]:
    """Entity P/R/F (0-1) and F1 per type of ``nlp`` on gold Docs."""
    return _metrics(score_ner(nlp, gold))


def _metrics(scores: dict[str, Any]) -> dict[str, Any]:
    """The scores a round keeps (:mod:`adaptner.scoring` keys, without the doc count)."""
    return {k: scores[k] for k in ("ents_p", "ents_r", "ents_f", "ents_per_type")}


def update_pipeline(
    nlp: Language,
    train_docs: Sequence[Doc],
    heldout: Sequence[Doc] | None,
    settings: UpdateSettings,
    *,
    seed: int,
    progress: bool = False,
    cache_dir: Path | None = None,
    n_target: int | None = None,
) -> dict[str, Any]:
    """Update ``nlp`` in place on gold Docs, with early stopping on the held-out Docs.

    The loop is the round trainers' (:func:`adaptner.update.trainers.update_pipeline`):
    every epoch shuffles the docs (seeded), updates in minibatches with a fresh optimizer
    from the pipeline's config, and scores the held-out set; the best epoch's weights are
    kept. The first epoch always runs, so a round always changes the model. With the
    ``cached_head`` trainer only the head learns, on cached encoder outputs (kept under
    ``cache_dir``), at :attr:`CachedHead.default_learn_rate`; with ``top_layers`` the top
    layers and the head learn on cached lower layers, at :attr:`TopLayers.default_learn_rate`.
    With ``settings.anchor_docs`` the kept weights then move back toward the ones the update
    started from (:mod:`adaptner.update.anchor`), by the number of answers ``n_target`` among
    ``train_docs`` (default: all of them; the rest are replayed source docs).

    Returns:
        Metrics: held-out scores of the kept weights (if any), epochs run, best epoch,
        per-epoch losses and F1, number of docs and seconds.
    """
    if not train_docs:
        raise AdaptnerError("No training documents for this round.")
    if settings.max_epochs < 1:
        raise AdaptnerError(f"max_epochs must be at least 1, got {settings.max_epochs}.")
    dropout = config_dropout(nlp) if settings.dropout is None else settings.dropout
    trainer = resolve_trainer(nlp, settings.trainer)
    prepare_scoring(nlp, [*train_docs, *(heldout or [])], trainer, cache_dir)
    learn_rate = CACHED_LEARN_RATES.get(trainer)
    history: list[dict[str, Any]] = []
    bar = tqdm(
        total=settings.max_epochs,
        desc="train",
        unit="epoch",
        leave=False,
        disable=None if progress else True,  # None: only on a terminal
    )

    def on_epoch(epoch: int, loss: float, dev_f1: float | None) -> None:
        entry: dict[str, Any] = {"epoch": epoch, "loss": round(loss, 4)}
        if dev_f1 is not None:
            entry["ents_f"] = dev_f1
        history.append(entry)
        bar.update(1)

    anchor_docs = settings.anchor_for(trainer)
    start = snapshot_weights(nlp) if anchor_docs else {}
    with bar:
        stats = run_update(
            nlp,
            train_docs,
            heldout,
            epochs=settings.max_epochs,
            patience=settings.patience if heldout else 0,
            seed=seed,
            batch_size=settings.batch_size,
            dropout=dropout,
            learn_rate=learn_rate,
            on_epoch=on_epoch,
        )
    alpha = anchor_alpha(len(train_docs) if n_target is None else n_target, anchor_docs)
    anchor_weights(nlp, start, alpha)
    finish_scoring(nlp)
    best = _metrics(stats.best_dev) if heldout and stats.best_dev else {}
    if heldout and alpha < 1.0:  # the anchored weights are the ones kept
        best = evaluate(nlp, heldout)
    return {
        **best,
        "anchor_alpha": alpha,
        "epochs": stats.epochs,
        "best_epoch": stats.best_epoch,
        "history": history,
        "n_train": len(train_docs),
        "seconds": round(stats.seconds, 3),
        "trainer": trainer,
        "settings": settings.to_dict(),
    }
