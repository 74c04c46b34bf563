"""Annotation sessions: hand out batches, import answers, update the model, repeat.

The names below are imported on first use (PEP 562), so ``adaptner session status`` can read
the store without importing spaCy (see :mod:`adaptner.session.status`).
"""

from ..util import lazy_exports

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "DEFAULT_SETTINGS": ".trainer",
    "RoundWorker": ".worker",
    "SessionStore": ".store",
    "UpdateSettings": ".trainer",
    "export_session": ".loop",
    "import_answers": ".loop",
    "init_session": ".loop",
    "input_hash": ".formats",
    "next_batch": ".loop",
    "push_session": ".labelstudio",
    "review_batch": ".review",
    "run_loop": ".loop",
    "session_status": ".status",
    "set_hashes": ".formats",
    "task_hash": ".formats",
    "train_round": ".loop",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
