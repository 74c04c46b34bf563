"""Pipelines a simulation grid trains from a config (sources, baselines), cached on disk."""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spacy
from spacy.tokens import DocBin

from ..errors import AdaptnerError
from ..readers import available_domains, read_docbin
from ..training import train_pipeline
from ..util import write_json
from .engine import split_heldout


@dataclass
class TrainTask:
    """Train one pipeline with ``train_pipeline`` unless ``<model_dir>/model-best`` exists.

    Attributes:
        name: What it is, for messages ("source news", "legal target_only s0").
        train_domains: Domain spec of the training data ("news", "all-but:legal").
        train_config: The training config.
        corpus_dir: Corpus with train/ and dev/ (dev of the same domains selects the model).
        model_dir: Output folder (model-best/, model-last/, train_meta.json).
        seed: Training seed.
        overrides: Config overrides (e.g. {"corpora.train.limit": 100}).
        holdout: ``(target, eval_holdout, holdout_seed, train_limit)``: train without the
            target's held-out evaluation set (and beyond ``train_limit``), on a filtered
            copy of the train split in ``<model_dir>_corpus/`` (see
            :func:`~adaptner.simulation.engine.split_heldout`). None = the whole corpus.
    """

    name: str
    train_domains: str
    train_config: Path
    corpus_dir: Path
    model_dir: Path
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    holdout: tuple[str, float, int, int] | None = None

    @property
    def model(self) -> Path:
        """The trained pipeline (``model-best``)."""
        return Path(self.model_dir) / "model-best"

    def done(self) -> bool:
        """Whether the pipeline exists already."""
        return (self.model / "config.cfg").exists()


def _holdout_meta(task: TrainTask) -> dict[str, Any] | None:
    if task.holdout is None:
        return None
    target, share, seed, limit = task.holdout
    return {"target": target, "eval_holdout": share, "holdout_seed": seed, "train_limit": limit}


def filtered_train_dir(task: TrainTask) -> Path:
    """A train split without the target's held-out docs: ``<model_dir>_corpus/train``.

    The target's DocBin is rewritten (first ``train_limit`` docs, held-out ones removed);
    every other domain's DocBin is linked (copied where links fail).
    """
    assert task.holdout is not None
    target, share, seed, limit = task.holdout
    src = Path(task.corpus_dir) / "train"
    out = Path(f"{task.model_dir}_corpus") / "train"
    out.mkdir(parents=True, exist_ok=True)
    vocab = spacy.blank("da").vocab
    for path in sorted(src.glob("*.spacy")):
        dest = out / path.name
        if path.stem == target:
            docs = read_docbin(path, vocab)[: limit or None]
            al_ids, _ = split_heldout(docs, share, seed)
            tmp = dest.with_suffix(".tmp")
            DocBin(docs=[docs[i] for i in al_ids], store_user_data=True).to_disk(tmp)
            tmp.replace(dest)
        elif not dest.exists():
            try:
                dest.symlink_to(path.resolve())
            except OSError:
                shutil.copyfile(path, dest)
    return out


def _same_config(old: str, new: Path) -> bool:
    old_path = Path(old)
    if old_path.resolve() == Path(new).resolve():
        return True
    return old_path.exists() and old_path.read_bytes() == Path(new).read_bytes()


def ensure_trained(task: TrainTask) -> Path:
    """Return the cached pipeline of a task, training it first when it does not exist.

    Raises:
        AdaptnerError: the cached pipeline was trained with another config, other domains,
            another seed or other overrides (all named), or the corpus is missing.
    """
    meta_path = Path(task.model_dir) / "train_meta.json"
    if task.done():
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf8"))
            wanted = {
                "train_domains": task.train_domains,
                "seed": task.seed,
                "overrides": dict(task.overrides),
            }
            holdout_path = Path(task.model_dir) / "holdout.json"
            meta["holdout"] = (
                json.loads(holdout_path.read_text(encoding="utf8"))
                if holdout_path.exists()
                else None
            )
            wanted["holdout"] = _holdout_meta(task)
            diff = [k for k, v in wanted.items() if meta.get(k) != v]
            if not _same_config(meta.get("config", ""), task.train_config):
                diff.insert(0, "config")
            if diff:
                raise AdaptnerError(
                    f"{task.model_dir} ({task.name}) was trained with other settings "
                    f"({', '.join(f'{k}: {meta.get(k)!r}' for k in diff)}), not with "
                    f"{task.train_config} on {task.train_domains}, seed {task.seed}. "
                    "Delete it, or pass another --models-dir."
                )
        return task.model
    train_dir = Path(task.corpus_dir) / "train"
    available_domains(train_dir)  # a clear error when the corpus is missing
    if task.holdout is not None:
        train_dir = filtered_train_dir(task)
    train_pipeline(
        task.train_config,
        task.model_dir,
        train_path=train_dir,
        dev_path=Path(task.corpus_dir) / "dev",
        train_domains=task.train_domains,
        dev_domains=task.train_domains,
        seed=task.seed,
        overrides=dict(task.overrides),
        verbose=False,
    )
    if task.holdout is not None:
        write_json(Path(task.model_dir) / "holdout.json", _holdout_meta(task))
    return task.model
