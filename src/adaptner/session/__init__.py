"""Annotation sessions: hand out batches, import answers, update the model, repeat."""

from .formats import input_hash, set_hashes, task_hash
from .loop import (
    export_session,
    import_answers,
    init_session,
    next_batch,
    run_loop,
    session_status,
    train_round,
)
from .review import review_batch
from .store import SessionStore
from .trainer import DEFAULT_SETTINGS, UpdateSettings

__all__ = [
    "DEFAULT_SETTINGS",
    "SessionStore",
    "UpdateSettings",
    "export_session",
    "import_answers",
    "init_session",
    "input_hash",
    "next_batch",
    "review_batch",
    "run_loop",
    "session_status",
    "set_hashes",
    "task_hash",
    "train_round",
]
