"""A registered training callback that records bio_ner's per-token training dynamics to disk."""

import random
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy
import srsly
from spacy.language import Language
from spacy.training import Example
from spacy.util import registry, resolve_dot_names

from ..components.bio_ner import BioNER, softmax
from ..components.bio_ner import find_bio_ner as _find_bio_ner
from ..errors import AdaptnerError
from ..scoring import fresh_doc
from ..util import atomic_path, write_json

#: The manifest of a dynamics directory (tags, snapshots, corpus size).
MANIFEST = "dynamics.json"
#: One JSON line per recorded training doc: its words, gold tags, domain and source.
DOCS_FILE = "docs.jsonl"
#: Version of the on-disk layout.
FORMAT_VERSION = 1
#: Docs per batch in the recording pass.
BATCH_SIZE = 256

# The recorder of each nlp being trained, so the before_to_disk hook can find it.
_RECORDERS: "weakref.WeakKeyDictionary[Language, DynamicsRecorder]" = weakref.WeakKeyDictionary()


def find_bio_ner(nlp: Language, name: str | None = None) -> tuple[str, BioNER]:
    """The pipeline's bio_ner (the first one, or the one called ``name``) for recording."""
    return _find_bio_ner(nlp, name, why="Recording training dynamics needs one.")


def margins(logits: numpy.ndarray, gold: numpy.ndarray) -> numpy.ndarray:
    """Gold logit minus the largest other logit, per row (NaN where ``gold`` is -1).

    Args:
        logits: (n_tokens x n_tags) scores before the softmax.
        gold: (n_tokens,) gold tag indices, -1 for unknown.
    """
    logits = numpy.asarray(logits, dtype="float64")
    out = numpy.full(len(logits), numpy.nan, dtype="float64")
    known = gold >= 0
    if not known.any() or logits.shape[1] < 2:
        return out
    rows = numpy.flatnonzero(known)
    g = gold[known]
    gold_score = logits[rows, g]
    others = logits[rows].copy()
    others[numpy.arange(len(rows)), g] = -numpy.inf
    out[rows] = gold_score - others.max(axis=1)
    return out


class RandomState:
    """Save the global RNG states (random, numpy, torch if loaded) and restore them on exit."""

    def __enter__(self) -> "RandomState":
        self.py = random.getstate()
        self.np = numpy.random.get_state()
        torch = sys.modules.get("torch")
        self.torch = torch.get_rng_state() if torch is not None else None
        return self

    def __exit__(self, *exc: object) -> None:
        random.setstate(self.py)
        numpy.random.set_state(self.np)
        if self.torch is not None:
            sys.modules["torch"].set_rng_state(self.torch)


class DynamicsRecorder:
    """Runs bio_ner in predict mode over the training docs and writes one snapshot file per epoch.

    Used as ``[training.before_update]``: when the epoch number changes (or every
    ``every_n_steps`` updates) the state after the finished epoch is recorded. The last
    epoch ends without another ``before_update`` call, so ``[training.before_to_disk]`` =
    ``adaptner.record_dynamics_end.v1`` records the final state when training stops.

    Each snapshot (``epoch_<k>.npz`` or ``step_<n>.npz``) holds, for every training token:
    ``doc`` and ``token`` indices, ``gold`` tag index (-1 = unknown), ``gold_prob``,
    ``margin`` (gold logit minus the largest other logit), ``correct`` and ``pred``.
    The docs are read once from the training corpus, in its fixed order (``docs.jsonl``).
    The pass has no dropout and restores the global RNG states, so training is unchanged.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        train_corpus: str = "corpora.train",
        component: str | None = None,
        every_n_steps: int = 0,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        """Create a recorder.

        Args:
            output_dir: Where the snapshots, ``docs.jsonl`` and ``dynamics.json`` go.
            train_corpus: Dot name of the training corpus in the config (as training.train_corpus).
            component: Name of the bio_ner component (None = the first one).
            every_n_steps: Record every N updates instead of at epoch ends (0 = epochs).
            batch_size: Docs per batch in the recording pass.
        """
        if every_n_steps < 0 or batch_size < 1:
            raise AdaptnerError(
                "adaptner.record_dynamics.v1: every_n_steps must be >= 0 and batch_size >= 1 "
                f"(got {every_n_steps}, {batch_size})."
            )
        self.output_dir = Path(output_dir)
        self.train_corpus = train_corpus
        self.component = component
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.examples: list[Example] | None = None
        self.gold: numpy.ndarray | None = None
        self.doc_index: numpy.ndarray | None = None
        self.token_index: numpy.ndarray | None = None
        self.tags: list[str] = []
        self.snapshots: list[dict[str, Any]] = []
        self.last_step = -1
        self.last_epoch = 0
        self.checkpoints_at_step = 0

    # --- hooks ------------------------------------------------------------------------
    def __call__(self, nlp: Language, info: dict[str, Any]) -> None:
        """The before_update hook: record when an epoch (or N steps) has just finished."""
        _RECORDERS[nlp] = self
        step, epoch = int(info["step"]), int(info["epoch"])
        if self.every_n_steps:
            if step > 0 and step % self.every_n_steps == 0:
                self.record(nlp, epoch=epoch, step=step)
        elif epoch != self.last_epoch and step > 0:
            self.record(nlp, epoch=self.last_epoch, step=step)
        self.last_step, self.last_epoch = step, epoch
        self.checkpoints_at_step = 0

    def on_checkpoint(self, nlp: Language) -> None:
        """The before_to_disk hook: record the final state once training has stopped.

        spaCy saves after evaluation steps (every ``training.eval_frequency``, read from the
        pipeline's config) and once more when training stops; a save after a step that was not
        an evaluation step, or a second save after the same step, is the final one. spaCy only
        saves with an output path, so the final epoch needs one.
        """
        if self.last_step < 0:
            return
        self.checkpoints_at_step += 1
        f = int(nlp.config.get("training", {}).get("eval_frequency") or 0)
        if f and self.last_step % f == 0 and self.checkpoints_at_step < 2:
            return  # an evaluation checkpoint: training may go on
        done = self.last_step + 1
        finals = [s for s in self.snapshots if s["final"]]
        if finals and finals[-1]["step"] == done:
            return
        # Without an eval_frequency every save may be the last: keep only the latest guess.
        self.snapshots = [s for s in self.snapshots if not s["final"]]
        self.record(nlp, epoch=self.last_epoch, step=done, final=True)

    # --- recording --------------------------------------------------------------------
    def _load(self, nlp: Language, bio: Any) -> None:
        try:
            (corpus,) = resolve_dot_names(nlp.config.interpolate(), [self.train_corpus])
        except Exception as e:  # noqa: BLE001 - config errors of many kinds
            raise AdaptnerError(
                f"adaptner.record_dynamics.v1: cannot resolve the training corpus "
                f"{self.train_corpus!r} from the config ({type(e).__name__}: {e})."
            ) from e
        self.examples = list(corpus(nlp))
        self.tags = list(bio.tags)
        tag_index = {t: i for i, t in enumerate(self.tags)}
        gold, doc_idx, tok_idx = [], [], []
        records = []
        for i, eg in enumerate(self.examples):
            tags = bio.gold_tags(eg)
            gold.extend(tag_index.get(t, -1) if t is not None else -1 for t in tags)
            doc_idx.extend([i] * len(tags))
            tok_idx.extend(range(len(tags)))
            ref = eg.reference
            records.append(
                {
                    "doc": i,
                    "domain": ref._.domain,
                    "source": ref._.source,
                    "words": [t.text for t in eg.predicted],
                    "spaces": [bool(t.whitespace_) for t in eg.predicted],
                    "gold": tags,
                }
            )
        self.gold = numpy.asarray(gold, dtype="int16")
        self.doc_index = numpy.asarray(doc_idx, dtype="int32")
        self.token_index = numpy.asarray(tok_idx, dtype="int32")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.output_dir / DOCS_FILE) as tmp:
            srsly.write_jsonl(tmp, records)

    def logits(self, nlp: Language) -> list[numpy.ndarray]:
        """bio_ner's logits (predict mode, no dropout) for every recorded doc, in order."""
        from ..strategies.common import run_upstream

        name, bio = find_bio_ner(nlp, self.component)
        assert self.examples is not None
        out: list[numpy.ndarray] = []
        n_tags = len(self.tags)
        for start in range(0, len(self.examples), self.batch_size):
            batch = self.examples[start : start + self.batch_size]
            docs = [fresh_doc(eg.predicted, nlp.vocab) for eg in batch]
            nonempty = [d for d in docs if len(d)]
            results = iter(bio.model.predict(run_upstream(nonempty, nlp, name)) if nonempty else [])
            for doc in docs:
                if len(doc):
                    out.append(numpy.asarray(bio.model.ops.to_numpy(next(results)), "float32"))
                else:
                    out.append(numpy.zeros((0, n_tags), dtype="float32"))
        return out

    def record(self, nlp: Language, *, epoch: int, step: int, final: bool = False) -> Path:
        """Write one snapshot of the current model's dynamics; returns its path."""
        with RandomState():
            name, bio = find_bio_ner(nlp, self.component)
            if self.examples is None:
                self._load(nlp, bio)
            if list(bio.tags) != self.tags:
                raise AdaptnerError(
                    f"bio_ner's tags changed during training ({len(self.tags)} -> "
                    f"{len(bio.tags)}); cannot record comparable dynamics."
                )
            logits = self.logits(nlp)
        assert self.gold is not None
        n = len(self.gold)
        flat = numpy.concatenate(logits) if logits else numpy.zeros((0, len(self.tags)), "float32")
        if len(flat) != n:
            raise AdaptnerError(
                f"Recording pass returned {len(flat)} token rows for {n} training tokens."
            )
        probs = softmax(flat) if n else flat
        known = self.gold >= 0
        g = numpy.where(known, self.gold, 0).astype("int64")
        gold_prob = numpy.where(known, probs[numpy.arange(n), g] if n else probs[:0, 0], numpy.nan)
        pred = flat.argmax(axis=1).astype("int16") if n else numpy.zeros(0, "int16")
        correct = known & (pred == self.gold)
        if final:
            fname = "final.npz"
        elif self.every_n_steps:
            fname = f"step_{step:06d}.npz"
        else:
            fname = f"epoch_{epoch:03d}.npz"
        path = self.output_dir / fname
        with atomic_path(path) as tmp:
            with tmp.open("wb") as f:
                numpy.savez(
                    f,
                    doc=self.doc_index,
                    token=self.token_index,
                    gold=self.gold,
                    gold_prob=gold_prob.astype("float32"),
                    margin=margins(flat, self.gold).astype("float32"),
                    correct=correct,
                    pred=pred,
                )
        self.snapshots.append({"file": fname, "epoch": epoch, "step": step, "final": final})
        self.write_manifest(name)
        return path

    def write_manifest(self, component: str) -> None:
        """Write ``dynamics.json``: tags, snapshot list, sizes."""
        write_json(
            self.output_dir / MANIFEST,
            {
                "format": FORMAT_VERSION,
                "component": component,
                "tags": self.tags,
                "n_docs": len(self.examples or []),
                "n_tokens": int(len(self.gold)) if self.gold is not None else 0,
                "mode": "steps" if self.every_n_steps else "epochs",
                "every_n_steps": self.every_n_steps,
                "snapshots": self.snapshots,
            },
        )


@registry.callbacks("adaptner.record_dynamics.v1")
def make_record_dynamics(
    output_dir: str,
    train_corpus: str = "corpora.train",
    component: str | None = None,
    every_n_steps: int = 0,
    batch_size: int = BATCH_SIZE,
) -> Callable[[Language, dict[str, Any]], None]:
    """A ``[training.before_update]`` callback recording per-token training dynamics.

    Pair it with ``[training.before_to_disk]`` = ``adaptner.record_dynamics_end.v1`` so the
    last epoch is recorded too (spaCy calls it only when training has an output path).

    Args:
        output_dir: Directory for ``epoch_<k>.npz`` snapshots, ``docs.jsonl``, ``dynamics.json``.
        train_corpus: Dot name of the training corpus (as training.train_corpus).
        component: Name of the bio_ner component (None = the first one).
        every_n_steps: Record every N updates instead of at epoch ends (0 = per epoch).
        batch_size: Docs per batch in the recording pass.
    """
    return DynamicsRecorder(
        output_dir,
        train_corpus=train_corpus,
        component=component,
        every_n_steps=every_n_steps,
        batch_size=batch_size,
    )


@registry.callbacks("adaptner.record_dynamics_end.v1")
def make_record_dynamics_end() -> Callable[[Language], Language]:
    """A ``[training.before_to_disk]`` callback that records the final epoch's dynamics.

    It does nothing unless ``adaptner.record_dynamics.v1`` is the before_update callback.
    """

    def before_to_disk(nlp: Language) -> Language:
        recorder = _RECORDERS.get(nlp)
        if recorder is not None:
            recorder.on_checkpoint(nlp)
        return nlp

    return before_to_disk


def dynamics_overrides(output_dir: str | Path, *, every_n_steps: int = 0) -> dict[str, Any]:
    """Config overrides that switch recording on (for ``train_pipeline(overrides=...)``)."""
    return {
        "training.before_update": {
            "@callbacks": "adaptner.record_dynamics.v1",
            "output_dir": str(output_dir),
            "every_n_steps": every_n_steps,
        },
        "training.before_to_disk": {"@callbacks": "adaptner.record_dynamics_end.v1"},
    }
