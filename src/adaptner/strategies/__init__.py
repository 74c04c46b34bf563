"""Query strategies for active learning: a registry of scorers, one shared selection rule."""

from .base import QueryStrategy, get_strategy, select, strategy_names, strategies_registry

__all__ = ["QueryStrategy", "get_strategy", "select", "strategy_names", "strategies_registry"]
