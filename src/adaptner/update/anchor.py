"""Anchoring: a round keeps only part of its update when it trained on few target labels.

A round that fine-tunes on a handful of target docs is noisy: on social media (17 docs after
the first 5 %) the e5 News pipeline's held-out F1 fell below the source's in some seeds by
0.10, although the same update helped with more labels. Moving the trained weights back
toward the weights the round started from (weight-space interpolation, as in WiSE-FT)
removes most of that noise and keeps most of the gain:

    w = w_start + alpha * (w_trained - w_start),   alpha = n / (n + anchor_docs)

with ``n`` the target docs the round trained on. Few labels keep the model near where it
started (the source pipeline in mode ``reset``, the previous round's model in ``warm``);
many labels keep nearly all of the update. ``anchor_docs = 0`` keeps the whole update.

The simulation (:meth:`adaptner.simulation.engine.Simulation.retrain`) and annotation
sessions (:func:`adaptner.session.loop.train_round`) both anchor here.
"""

import math

import numpy
from spacy.language import Language

from ..errors import AdaptnerError
from ..train_loop import apply_weights, collect_weights


def check_anchor_docs(anchor_docs: float) -> None:
    """Validate ``anchor_docs``.

    Raises:
        AdaptnerError: a negative or non-finite value.
    """
    if not math.isfinite(anchor_docs) or anchor_docs < 0:
        raise AdaptnerError(
            "anchor_docs must be a number >= 0 (target docs at which a round keeps half of its "
            f"update; 0 = keep all of it), got {anchor_docs}."
        )


def anchor_alpha(n_target: int, anchor_docs: float) -> float:
    """The share of a round's update kept after training on ``n_target`` target docs:
    ``n / (n + anchor_docs)``; 1.0 when ``anchor_docs`` is 0, 0.0 without target docs."""
    check_anchor_docs(anchor_docs)
    if not anchor_docs:
        return 1.0
    if n_target <= 0:
        return 0.0
    return n_target / (n_target + anchor_docs)


def anchor_weights(nlp: Language, start: dict[str, numpy.ndarray], alpha: float) -> None:
    """Move the pipeline's weights in place to ``start + alpha * (current - start)``.

    Args:
        nlp: The trained pipeline.
        start: The weights the round started from (:func:`adaptner.update.trainers.
            snapshot_weights` before training); weights it lacks are left as trained.
        alpha: The share of the update to keep, in [0, 1].

    Raises:
        AdaptnerError: ``alpha`` outside [0, 1], or a start weight of another shape.
    """
    if not 0.0 <= alpha <= 1.0:
        raise AdaptnerError(f"The anchoring share must be in [0, 1], got {alpha}.")
    if alpha == 1.0:
        return
    current = collect_weights(nlp)
    mixed = {}
    for key, value in current.items():
        if key not in start:
            continue
        origin = start[key]
        if origin.shape != value.shape:
            raise AdaptnerError(
                f"Cannot anchor weight {key}: it has shape {value.shape} after training and "
                f"{origin.shape} before (a component was replaced during the round)."
            )
        mixed[key] = (origin + alpha * (value - origin)).astype(value.dtype, copy=False)
    apply_weights(nlp, mixed, "the anchored weights")
