"""Training dynamics: a recording callback, data maps, AUM label-noise flags."""

from .callback import (
    DynamicsRecorder,
    dynamics_overrides,
    make_record_dynamics,
    make_record_dynamics_end,
)
from .stats import (
    REGIONS,
    DataMap,
    Dynamics,
    MapStats,
    RunningStats,
    compute_datamap,
    load_dynamics,
    regions,
    sentence_statistics,
    token_statistics,
)

__all__ = [
    "REGIONS",
    "DataMap",
    "Dynamics",
    "DynamicsRecorder",
    "MapStats",
    "RunningStats",
    "compute_datamap",
    "dynamics_overrides",
    "load_dynamics",
    "make_record_dynamics",
    "make_record_dynamics_end",
    "regions",
    "sentence_statistics",
    "token_statistics",
]
