"""In-process model updates for session rounds: warm (continue) and reset (from the source)."""

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import minibatch, registry
from thinc.api import Optimizer, fix_random_seed
from tqdm import tqdm

from ..errors import AdaptnerError

MODES: tuple[str, ...] = ("warm", "reset")


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
    """

    max_epochs: int = 8
    patience: int = 3
    batch_size: int = 32
    dropout: float | None = None
    replay: int = 300

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for the store and metrics)."""
        return asdict(self)


#: Defaults per mode: warm is tuned for a short round-trip (bench/session_bench.py: next
#: batch within ~10 s on 2 cores for sessions of a few hundred answers), reset for a full
#: retrain. Warm replays up to 300 earlier answers, so its cost stays bounded as a session
#: grows.
DEFAULT_SETTINGS: dict[str, UpdateSettings] = {
    "warm": UpdateSettings(max_epochs=8, patience=3, batch_size=32, replay=300),
    "reset": UpdateSettings(max_epochs=20, patience=4, batch_size=32, replay=0),
}


def make_optimizer(nlp: Language) -> Optimizer:
    """The optimizer of the pipeline's own training config (fresh state); Adam if it has none."""
    cfg = nlp.config.get("training", {}).get("optimizer")
    if cfg:
        try:
            return registry.resolve({"optimizer": cfg})["optimizer"]
        except Exception:  # noqa: BLE001 - an unresolvable config falls back to the default
            pass
    return nlp.create_optimizer()


def config_dropout(nlp: Language) -> float:
    """The training dropout from the pipeline's config (0.1 if unset)."""
    value = nlp.config.get("training", {}).get("dropout", 0.1)
    return float(value) if isinstance(value, int | float) else 0.1


def evaluate(nlp: Language, gold: Sequence[Doc]) -> dict[str, Any]:
    """Entity P/R/F (0-1) and per-type scores of ``nlp`` on gold Docs."""
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in gold]
    scores = nlp.evaluate(examples)
    return {
        "ents_p": float(scores.get("ents_p") or 0.0),
        "ents_r": float(scores.get("ents_r") or 0.0),
        "ents_f": float(scores.get("ents_f") or 0.0),
        "ents_per_type": scores.get("ents_per_type") or {},
    }


def update_pipeline(
    nlp: Language,
    train_docs: Sequence[Doc],
    heldout: Sequence[Doc] | None,
    settings: UpdateSettings,
    *,
    seed: int,
    progress: bool = False,
) -> dict[str, Any]:
    """Update ``nlp`` in place on gold Docs, with early stopping on the held-out Docs.

    Every epoch shuffles the docs (seeded), updates in minibatches, and scores the held-out
    set; the best epoch's weights are restored at the end. The first epoch always runs, so
    a round always changes the model.

    Returns:
        Metrics: held-out scores of the kept weights (if any), epochs run, best epoch,
        per-epoch losses and F1, number of docs and seconds.
    """
    if not train_docs:
        raise AdaptnerError("No training documents for this round.")
    if settings.max_epochs < 1:
        raise AdaptnerError(f"max_epochs must be at least 1, got {settings.max_epochs}.")
    start = time.perf_counter()
    fix_random_seed(seed)
    rng = numpy.random.default_rng(seed)
    optimizer = make_optimizer(nlp)
    dropout = config_dropout(nlp) if settings.dropout is None else settings.dropout
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in train_docs]
    trainable = [(name, proc) for name, proc in nlp.pipeline if hasattr(proc, "model")]
    history: list[dict[str, Any]] = []
    best_f = -1.0
    best_epoch = 0
    best_scores: dict[str, Any] = {}
    snapshot: dict[str, bytes] = {}
    bad_epochs = 0
    epochs = tqdm(
        range(1, settings.max_epochs + 1),
        desc="train",
        unit="epoch",
        leave=False,
        disable=None if progress else True,  # None: only on a terminal
    )
    for epoch in epochs:
        order = rng.permutation(len(examples))
        losses: dict[str, float] = {}
        for batch in minibatch([examples[i] for i in order], size=settings.batch_size):
            nlp.update(batch, drop=dropout, sgd=optimizer, losses=losses)
        entry: dict[str, Any] = {"epoch": epoch, "loss": round(sum(losses.values()), 4)}
        if heldout:
            scores = evaluate(nlp, heldout)
            entry["ents_f"] = scores["ents_f"]
            if scores["ents_f"] > best_f:
                best_f, best_epoch, best_scores = scores["ents_f"], epoch, scores
                snapshot = {name: proc.model.to_bytes() for name, proc in trainable}
                bad_epochs = 0
            else:
                bad_epochs += 1
        history.append(entry)
        if heldout and bad_epochs >= settings.patience:
            break
    if heldout:
        for name, proc in trainable:
            proc.model.from_bytes(snapshot[name])
    else:
        best_epoch = len(history)
    metrics: dict[str, Any] = {
        **best_scores,
        "epochs": len(history),
        "best_epoch": best_epoch,
        "history": history,
        "n_train": len(train_docs),
        "seconds": round(time.perf_counter() - start, 3),
        "settings": settings.to_dict(),
    }
    return metrics
