"""Query strategies for active learning: a registry of scorers, one shared selection rule."""

from . import bald, cartography, diversity, uncertainty, vocab  # noqa: F401 - registers the strategies
from .bald import BaldStrategy
from .base import QueryStrategy, get_strategy, select, strategies_registry, strategy_names
from .diversity import DiversityStrategy, HybridStrategy, k_center
from .uncertainty import RandomStrategy, UncertaintyStrategy
from .vocab import VocabStrategy, source_counts_from_docbin

__all__ = [
    "BaldStrategy",
    "DiversityStrategy",
    "HybridStrategy",
    "QueryStrategy",
    "RandomStrategy",
    "UncertaintyStrategy",
    "VocabStrategy",
    "get_strategy",
    "k_center",
    "select",
    "source_counts_from_docbin",
    "strategies_registry",
    "strategy_names",
]
