"""Source replay: a seeded sample of the source's labelled docs trained on with every AL round.

A round that trains only on a few target docs pulls the model away from what it knew on the
source (after 5 % of social media, the e5 News pipeline's held-out F1 fell from 0.47 to
0.25-0.31). Mixing source docs into the round's training set holds it back. The simulation
(:meth:`adaptner.simulation.engine.Simulation.retrain`) and annotation sessions
(:func:`adaptner.session.loop.train_round`) both draw their sample here.
"""

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy

from ..errors import AdaptnerError

T = TypeVar("T")

#: Source docs per target doc in a round's training set, the default of simulations and
#: sessions. Measured with bench/replay_ratio.py (News -> social media, 3 rounds of 5 %):
#: 2 gained the most target F1 over no replay on e5 (+3.7 ± 1.3, 6 seeds) and kept the most
#: source F1 on e5 and the CNN; 4 gained no more at twice the cost (docs/active-learning.md).
DEFAULT_SOURCE_REPLAY = 2.0


def check_ratio(ratio: float, cap: int = 0, *, what: str = "source_replay") -> None:
    """Validate a replay ratio and cap.

    Raises:
        AdaptnerError: a negative or non-finite ratio, or a negative cap (named by ``what``).
    """
    if not math.isfinite(ratio) or ratio < 0:
        raise AdaptnerError(
            f"{what} must be a number >= 0 (source docs per target doc; 0 = off), got {ratio}."
        )
    if cap < 0:
        raise AdaptnerError(f"{what}_max must be >= 0 (0 = no cap), got {cap}.")


def replay_count(n_target: int, ratio: float, available: int, cap: int = 0) -> int:
    """How many source docs go with ``n_target`` target docs.

    ``ratio * n_target`` rounded half up, then at most ``cap`` (0 = no cap) and at most the
    ``available`` source docs.
    """
    check_ratio(ratio, cap)
    n = math.floor(ratio * n_target + 0.5)
    if cap:
        n = min(n, cap)
    return max(0, min(n, available))


def sample_replay(
    source_docs: Sequence[T],
    n_target: int,
    ratio: float,
    rng: numpy.random.Generator,
    cap: int = 0,
) -> list[T]:
    """A seeded sample, without repeats and in source order, of :func:`replay_count` docs.

    Args:
        source_docs: The source's labelled docs to draw from.
        n_target: Target docs in the round's training set.
        ratio: Source docs per target doc (0 = none).
        rng: The draw's generator (seed it from the run or session seed and the round).
        cap: At most this many source docs (0 = no cap).
    """
    n = replay_count(n_target, ratio, len(source_docs), cap)
    if not n:
        return []
    picked = sorted(int(i) for i in rng.choice(len(source_docs), n, replace=False))
    return [source_docs[i] for i in picked]
