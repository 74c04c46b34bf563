"""Active-learning simulation: one run (engine), grids (grid), learning-curve reports (curves).

The names below are imported on first use (PEP 562): importing one submodule (e.g.
``adaptner.simulation.config``) does not load the grid, the engine or the Ray backend.
"""

from ..util import lazy_exports

#: Public name -> the module that defines it.
_EXPORTS = {
    "BASELINES": ".baselines",
    "BaselineConfig": ".baselines",
    "run_baseline": ".baselines",
    "MODES": ".config",
    "TIMING_FIELDS": ".config",
    "ALSettings": ".config",
    "SimulationConfig": ".config",
    "load_al_settings": ".config",
    "Simulation": ".engine",
    "plan_sizes": ".engine",
    "read_records": ".engine",
    "run_simulation": ".engine",
    "GridSpec": ".grid",
    "plan_grid": ".grid",
    "run_grid": ".grid",
    "score_ner": "..scoring",
    "update_pipeline": "..update.trainers",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
