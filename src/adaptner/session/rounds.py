"""Which finished round scores the pool and pre-annotates, and one round update at a time.

No spaCy import: ``session status`` uses it too.
"""

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..util import file_lock, lock_holder
from .store import RoundInfo

#: The lock file in a session folder, held while a round trains.
LOCK_NAME = "train.lock"


@dataclass(frozen=True)
class ModelChoice:
    """The model a batch comes from (see :func:`pick_model`).

    Attributes:
        round: The round whose model scores the pool and pre-annotates.
        newest: The newest finished round.
        reason: Why ``round`` is not the newest one (None when it is).
    """

    round: RoundInfo
    newest: RoundInfo
    reason: str | None = None


def heldout_f(info: RoundInfo) -> float | None:
    """A round's held-out F1 (0-1), or None when the session has no held-out set."""
    value = info.metrics.get("ents_f")
    return None if value is None else float(value)


def round_trainer(info: RoundInfo) -> str:
    """How a round's model was made: ``source`` for round 0, else its round trainer."""
    if info.round == 0:
        return "source"
    return str(info.metrics.get("trainer") or info.mode)


def pick_model(rounds: Sequence[RoundInfo]) -> ModelChoice:
    """The newest finished round, unless its held-out F1 is below the source's: then the
    best-scoring round so far (the newest of equals; at worst the source, round 0).

    Rounds are compared on the session's held-out set, the F1 every round records when it is
    saved (``session status``). A session without a held-out set always uses the newest round.
    """
    source, newest = rounds[0], rounds[-1]
    f_new, f_source = heldout_f(newest), heldout_f(source)
    if newest.round == source.round or f_new is None or f_source is None or f_new >= f_source:
        return ModelChoice(newest, newest)
    scored = [r for r in rounds if heldout_f(r) is not None]
    best = max(scored, key=lambda r: (heldout_f(r), r.round))
    reason = (
        f"round {newest.round} scored {100 * f_new:.1f} held-out F1, below the source's "
        f"{100 * f_source:.1f}; round {best.round} ({100 * heldout_f(best):.1f}) is the best "
        "so far"
    )
    return ModelChoice(best, newest, reason)


def needed_rounds(rounds: Sequence[RoundInfo]) -> set[int]:
    """The rounds whose models a later round or batch can still use: the source (round 0),
    the newest (warm rounds continue from it) and the one :func:`pick_model` chooses now. No
    other round can be chosen later: rounds only ever join the comparison, so the best one
    so far stays ahead of every round that is behind it now."""
    if not rounds:
        return set()
    return {rounds[0].round, rounds[-1].round, pick_model(rounds).round.round}


def lock_path(session_dir: str | Path) -> Path:
    """The session's round lock file."""
    return Path(session_dir) / LOCK_NAME


@contextlib.contextmanager
def round_lock(session_dir: str | Path, session: str) -> Iterator[Path]:
    """Hold the session's round lock: a second round update (another process or thread)
    waits until this one is saved, then trains from it."""
    with file_lock(lock_path(session_dir), f"Round update of session {session!r}", wait=True):
        yield lock_path(session_dir)


def training_pid(session_dir: str | Path) -> int | None:
    """The pid of the process training a round of the session right now, or None."""
    return lock_holder(lock_path(session_dir))
