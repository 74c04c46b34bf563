"""Session status: read from the store only (no spaCy import, so the command starts at once)."""

from pathlib import Path
from typing import Any

from .store import SessionStore


def session_status(db: str | Path, name: str) -> dict[str, Any]:
    """Settings, counts and the per-round history (F1 on the held-out set) of a session."""
    store = SessionStore(db)
    try:
        session = store.get_session(name)
        with store.read():
            counts = store.counts(session.id)
            rounds = store.rounds(session.id)
            batches = store.batches(session.id)
        return {
            "session": session.name,
            "store": str(store.path),
            "source": session.source,
            "pool": session.pool_path,
            "heldout": session.heldout_path,
            "source_docs": (session.settings.get("source_docs") or {}).get("path"),
            "strategy": session.strategy,
            "strategy_params": session.strategy_params,
            "labels": session.labels,
            "session_dir": session.session_dir,
            "round": rounds[-1].round if rounds else 0,
            "counts": counts,
            "rounds": [
                {
                    "round": r.round,
                    "mode": r.mode,
                    "n_train": r.n_train,
                    "n_new": r.metrics.get("n_new"),
                    "n_replay": r.metrics.get("n_replay"),
                    "n_source_replay": r.metrics.get("n_source_replay"),
                    "ents_f": r.metrics.get("ents_f"),
                    "epochs": r.metrics.get("epochs"),
                    "seconds": r.metrics.get("seconds"),
                    "model_dir": r.model_dir,
                }
                for r in rounds
            ],
            "batches": [
                {
                    "batch": b["id"],
                    "round": b["round"],
                    "n": b["n"],
                    "path": b["path"],
                    "format": b["format"],
                }
                for b in batches
            ],
        }
    finally:
        store.close()
