"""Session status: read from the store only (no spaCy import, so the command starts at once)."""

from pathlib import Path
from typing import Any

from .rounds import pick_model, round_trainer, training_pid
from .store import SessionStore


def session_status(db: str | Path, name: str) -> dict[str, Any]:
    """Settings, counts, the per-round history (F1 on the held-out set) of a session, which
    model makes the next batch, and which model made each batch handed out.

    ``model`` is the round the next batch comes from (the newest one, unless it scored below
    the source: then ``note`` says why); every batch names its ``round`` and ``trainer``,
    with a ``note`` when it did not come from the newest round of its time. ``training`` is
    the pid of a process training a round now (None when none is).
    """
    store = SessionStore(db)
    try:
        session = store.get_session(name)
        with store.read():
            counts = store.counts(session.id)
            rounds = store.rounds(session.id)
            batches = store.batches(session.id)
        choice = pick_model(rounds)
        by_round = {r.round: r for r in rounds}

        def batch_note(made: int, newest: int | None) -> str | None:
            if newest is None or newest == made:
                return None
            return pick_model([r for r in rounds if r.round <= newest]).reason

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
            "model": {
                "round": choice.round.round,
                "trainer": round_trainer(choice.round),
                "note": choice.reason,
            },
            "training": training_pid(session.session_dir),
            "counts": counts,
            "rounds": [
                {
                    "round": r.round,
                    "mode": r.mode,
                    "trainer": round_trainer(r),
                    "n_train": r.n_train,
                    "n_new": r.metrics.get("n_new"),
                    "n_replay": r.metrics.get("n_replay"),
                    "n_source_replay": r.metrics.get("n_source_replay"),
                    "anchor_alpha": r.metrics.get("anchor_alpha"),
                    "ents_f": r.metrics.get("ents_f"),
                    "epochs": r.metrics.get("epochs"),
                    "seconds": r.metrics.get("seconds"),
                    "model_dir": r.model_dir,
                    "model_saved": Path(r.model_dir).is_dir(),
                }
                for r in rounds
            ],
            "batches": [
                {
                    "batch": b["id"],
                    "round": b["round"],
                    "trainer": round_trainer(by_round[b["round"]])
                    if b["round"] in by_round
                    else None,
                    "newest_round": b["newest_round"],
                    "note": batch_note(b["round"], b["newest_round"]),
                    "n": b["n"],
                    "path": b["path"],
                    "format": b["format"],
                }
                for b in batches
            ],
        }
    finally:
        store.close()
