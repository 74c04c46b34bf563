"""Active-learning simulation: one run (engine), grids (grid), learning-curve reports (curves)."""

from ..scoring import score_ner
from .baselines import BASELINES, BaselineConfig, run_baseline
from .config import MODES, TIMING_FIELDS, ALSettings, SimulationConfig, load_al_settings
from .engine import Simulation, plan_sizes, read_records, run_simulation
from .grid import GridSpec, plan_grid, run_grid
from .trainer import update_pipeline

__all__ = [
    "BASELINES",
    "MODES",
    "TIMING_FIELDS",
    "ALSettings",
    "BaselineConfig",
    "GridSpec",
    "Simulation",
    "SimulationConfig",
    "load_al_settings",
    "plan_grid",
    "plan_sizes",
    "read_records",
    "run_baseline",
    "run_grid",
    "run_simulation",
    "score_ner",
    "update_pipeline",
]
