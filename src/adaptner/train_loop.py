"""spaCy's training loop with checkpoints, so a stopped or killed run continues where it was.

The steps are spaCy's own (``spacy.training.loop``: its batches, ``nlp.update`` over
``subdivide_batch``, ``finish_update``, ``step_schedules``, evaluation every
``eval_frequency`` steps with the optimizer's averages, ``model-best`` / ``model-last``,
patience and ``max_steps``), driven from a state that is saved every ``checkpoint_every``
steps into ``<run dir>/checkpoint`` (written to a temporary folder and renamed):

- the weights: every thinc parameter and every trainable PyTorch tensor (frozen ones, such as
  e5's word embeddings, are rebuilt by initialization);
- the optimizer: Adam's moments, the parameter averages, the per-parameter update counts and
  the number of schedule steps taken;
- the random state of Python, NumPy and PyTorch;
- the place in the data (the step; the batches are replayed from the seed up to it), the
  evaluation results so far and the losses since the last evaluation.

Models and shims are named by their place in each component's ``model.walk()`` rather than by
thinc's process-wide ids, so the state of one process fits the pipeline that another builds
from the same config. A resumed run ends with the same weights as one that was never stopped.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from timeit import default_timer as timer
from typing import IO, Any

import numpy
from spacy.language import Language
from spacy.schemas import ConfigSchemaTraining
from spacy.training.loop import (
    DIR_MODEL_BEST,
    DIR_MODEL_LAST,
    create_before_to_disk_callback,
    create_evaluation_callback,
    subdivide_batch,
    update_meta,
)
from spacy.util import registry, resolve_dot_names
from thinc.api import Model, constant, fix_random_seed

from .errors import AdaptnerError
from .util import atomic_path

CHECKPOINT = "checkpoint"
_STATE_FILE = "state.json"
_ARRAYS_FILE = "arrays.npz"


@dataclass
class LoopState:
    """Where a training run is: everything but the weights, the moments and the RNG."""

    step: int = 0  # steps done (the next batch's index)
    epoch: int = 0
    results: list[tuple[float, int]] = field(default_factory=list)
    losses: dict[str, float] = field(default_factory=dict)
    words: int = 0
    seconds: float = 0.0
    max_steps: int = 0
    config: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # Batches.position()


class Batches:
    """spaCy's ``create_train_batches`` (the same order for the same seed) that can say where it
    is and start there: the epoch, this epoch's order of the examples, the batches taken."""

    def __init__(
        self,
        nlp: Language,
        corpus: Callable,
        batcher: Callable,
        max_epochs: int,
        position: dict[str, Any] | None = None,
    ) -> None:
        if max_epochs < 0:
            raise AdaptnerError(
                "Checkpointed training reads the corpus into memory; training.max_epochs = "
                f"{max_epochs} (streaming) is not supported. Set it to 0 or more."
            )
        self.examples = list(corpus(nlp))
        if not self.examples:
            raise AdaptnerError("The training corpus is empty.")
        self.batcher, self.max_epochs = batcher, max_epochs
        position = position or {}
        self.epoch = int(position.get("epoch", 0))
        self.order: list[int] = list(position.get("order", range(len(self.examples))))
        self.done = int(position.get("done", 0))
        self.shuffled = bool(position.get("shuffled", False))
        if len(self.order) != len(self.examples):
            raise AdaptnerError(
                f"The checkpoint's data order has {len(self.order)} examples, the corpus "
                f"{len(self.examples)}: the training data changed. Pass --force to start over."
            )

    def position(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "order": self.order, "done": self.done,
                "shuffled": self.shuffled}  # fmt: skip

    def __iter__(self):
        while self.max_epochs < 1 or self.epoch != self.max_epochs:
            if not self.shuffled:
                random.shuffle(self.order)
                self.shuffled = True
            ordered = [self.examples[i] for i in self.order]
            for i, batch in enumerate(self.batcher(ordered)):
                if i < self.done:
                    continue
                self.done = i + 1
                yield self.epoch, batch
            self.epoch, self.done, self.shuffled = self.epoch + 1, 0, False


def _named_nodes(nlp: Language) -> tuple[dict[int, tuple[str, Model]], dict[int, tuple[str, Any]]]:
    """Stable names for the models and shims of a pipeline, by place rather than by id."""
    models: dict[int, tuple[str, Model]] = {}
    shims: dict[int, tuple[str, Any]] = {}
    for name, proc in nlp.pipeline:  # a disabled component neither trains nor is saved here
        model = getattr(proc, "model", None)
        if not isinstance(model, Model):
            continue
        for i, node in enumerate(model.walk()):
            models.setdefault(node.id, (f"{name}/{i}", node))
            for j, shim in enumerate(node.shims):
                shims.setdefault(shim.id, (f"{name}/{i}/{j}", shim))
    return models, shims


def _torch_module(shim: Any) -> Any:
    module = getattr(shim, "_model", None)
    return module if hasattr(module, "named_parameters") else None


def _optimizer_keys(nlp: Language) -> dict[str, tuple[int, str]]:
    """Stable name -> the optimizer's key ``(model or shim id, parameter name)`` of every
    parameter of the pipeline (``m:<place>:<name>`` for thinc, ``s:<place>:<name>`` for torch)."""
    models, shims = _named_nodes(nlp)
    keys: dict[str, tuple[int, str]] = {}
    for name, node in models.values():
        for param in node.param_names:
            keys[f"m:{name}:{param}"] = (node.id, param)
    for name, shim in shims.values():
        module = _torch_module(shim)
        if module is not None:
            for param, _ in module.named_parameters():
                keys[f"s:{name}:{param}"] = (shim.id, param)
    return keys


def _rng_state() -> tuple[dict[str, Any], dict[str, numpy.ndarray]]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = numpy.random.get_state()
    meta = {
        "python": [version, None, gauss],
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
    }
    arrays = {"rng:python": numpy.array(internal, dtype="int64"), "rng:numpy": keys}
    torch = sys.modules.get("torch")
    if torch is not None:
        arrays["rng:torch"] = torch.get_rng_state().numpy()
    return meta, arrays


def _set_rng_state(meta: dict[str, Any], arrays: Any) -> None:
    version, _, gauss = meta["python"]
    random.setstate((version, tuple(int(x) for x in arrays["rng:python"]), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    numpy.random.set_state((kind, arrays["rng:numpy"], pos, has_gauss, cached))
    torch = sys.modules.get("torch")
    if torch is not None and "rng:torch" in arrays:
        torch.set_rng_state(torch.from_numpy(numpy.array(arrays["rng:torch"], dtype="uint8")))


def collect_weights(nlp: Language, *, copy: bool = False) -> dict[str, numpy.ndarray]:
    """Every thinc parameter and every trainable PyTorch tensor of the pipeline, by stable name.

    Frozen PyTorch tensors (``requires_grad`` off) are left out: training never changes them.
    With ``copy`` the arrays are copies (an in-memory snapshot that later updates leave alone).
    """
    models, shims = _named_nodes(nlp)
    arrays: dict[str, numpy.ndarray] = {}
    for name, node in models.values():
        for param in node.param_names:
            if node.has_param(param):
                value = node.ops.to_numpy(node.get_param(param))
                arrays[f"w:m:{name}:{param}"] = value.copy() if copy else value
    for name, shim in shims.values():
        module = _torch_module(shim)
        if module is None:
            continue
        for param, tensor in module.named_parameters():
            if tensor.requires_grad:
                value = tensor.detach().cpu().numpy()
                arrays[f"w:s:{name}:{param}"] = value.copy() if copy else value
    return arrays


def same_frozen_weights(a: Language, b: Language) -> bool:
    """Whether two pipelines differ at most in what :func:`collect_weights` holds: the same
    weights by name and shape, and every frozen PyTorch tensor equal (e.g. two rounds of one
    session, whose trainers never change the frozen lower layers)."""
    import torch

    weights_a, weights_b = collect_weights(a), collect_weights(b)
    if weights_a.keys() != weights_b.keys() or any(
        weights_a[k].shape != weights_b[k].shape for k in weights_a
    ):
        return False
    shims_b = {name: shim for name, shim in _named_nodes(b)[1].values()}
    for name, shim in _named_nodes(a)[1].values():
        module_a = _torch_module(shim)
        module_b = _torch_module(shims_b[name]) if name in shims_b else None
        if module_a is None:
            continue
        if module_b is None:
            return False
        frozen_b = {p: t for p, t in module_b.named_parameters() if not t.requires_grad}
        for param, tensor in module_a.named_parameters():
            if tensor.requires_grad:
                continue
            other = frozen_b.get(param)
            if other is None or other.shape != tensor.shape or not torch.equal(tensor, other):
                return False
    return True


def apply_weights(nlp: Language, arrays: dict[str, Any], where: str = "the snapshot") -> None:
    """Put weights from :func:`collect_weights` back, in place (modules and patches stay).

    Raises:
        AdaptnerError: a weight has no place in this pipeline (``where`` named).
    """
    models, shims = _named_nodes(nlp)
    by_name = {name: node for name, node in models.values()}
    shim_by_name = {name: shim for name, shim in shims.values()}
    missing = []
    for key, value in arrays.items():
        if not key.startswith("w:"):
            continue
        _, kind, name, param = key.split(":", 3)
        if kind == "m" and name in by_name and by_name[name].has_param(param):
            node = by_name[name]
            node.set_param(param, node.ops.asarray(numpy.array(value, copy=True)))
        elif kind == "s" and name in shim_by_name:
            import torch

            tensors = dict(_torch_module(shim_by_name[name]).named_parameters())
            if param not in tensors:
                missing.append(key)
                continue
            with torch.no_grad():
                tensors[param].data.copy_(torch.from_numpy(numpy.asarray(value)))
        else:
            missing.append(key)
    if missing:
        raise AdaptnerError(
            f"{where} does not fit this pipeline ({len(missing)} weights have no place, e.g. "
            f"{missing[0]}). Was the config changed? Pass --force to start over."
        )


def save_checkpoint(path: Path, nlp: Language, optimizer: Any, state: LoopState) -> None:
    """Write the run's state to ``path`` (a folder, replaced atomically)."""
    arrays = collect_weights(nlp)
    stable = {key: name for name, key in _optimizer_keys(nlp).items()}
    counts: dict[str, list[int]] = {}
    for table, values in (("mom1", optimizer.mom1), ("mom2", optimizer.mom2),
                          ("avg", optimizer.averages or {})):  # fmt: skip
        for key, value in values.items():
            if key in stable:
                arrays[f"{table}:{stable[key]}"] = numpy.asarray(value)
    for key, n in optimizer.nr_update.items():
        if key in stable:
            counts[stable[key]] = [int(n), int(optimizer.last_seen.get(key, 0))]
    rng_meta, rng_arrays = _rng_state()
    arrays.update(rng_arrays)
    with atomic_path(path, is_dir=True) as tmp:
        with open(tmp / _ARRAYS_FILE, "wb") as f:
            numpy.savez(f, **arrays)
        (tmp / _STATE_FILE).write_text(
            json.dumps({"loop": asdict(state), "counts": counts, "rng": rng_meta}) + "\n",
            encoding="utf8",
        )


def read_checkpoint_state(path: Path) -> LoopState:
    """The loop state of a checkpoint folder (for messages and checks).

    Raises:
        AdaptnerError: the checkpoint is unreadable (named).
    """
    try:
        data = json.loads((path / _STATE_FILE).read_text(encoding="utf8"))
        loop = data["loop"]
        loop["results"] = [tuple(r) for r in loop["results"]]
        return LoopState(**loop)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AdaptnerError(
            f"The checkpoint {path} is unreadable ({type(e).__name__}: {e}). Delete it and "
            "train again (or pass --force)."
        ) from None


def load_checkpoint(path: Path, nlp: Language, optimizer: Any) -> LoopState:
    """Put a checkpoint's weights, optimizer state and RNG state into a fresh pipeline.

    Raises:
        AdaptnerError: the checkpoint is unreadable or does not fit the pipeline (named).
    """
    state = read_checkpoint_state(path)
    try:
        data = json.loads((path / _STATE_FILE).read_text(encoding="utf8"))
        npz = numpy.load(path / _ARRAYS_FILE, allow_pickle=False)
        arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise AdaptnerError(
            f"The checkpoint {path} is unreadable ({type(e).__name__}: {e}). Delete it and "
            "train again (or pass --force)."
        ) from None
    apply_weights(nlp, arrays, f"The checkpoint {path}")
    stable_to_key = _optimizer_keys(nlp)
    for table, target in (("mom1", optimizer.mom1), ("mom2", optimizer.mom2),
                          ("avg", optimizer.averages)):  # fmt: skip
        prefix = f"{table}:"
        for key, value in arrays.items():
            if key.startswith(prefix) and target is not None:
                target[stable_to_key[key[len(prefix) :]]] = value
    for stable, (n, last) in data["counts"].items():
        key = stable_to_key[stable]
        optimizer.nr_update[key] = n
        optimizer.last_seen[key] = last
    for _ in range(state.step):
        optimizer.step_schedules()
    _set_rng_state(data["rng"], arrays)
    return state


def train_loop(
    nlp: Language,
    output_path: Path,
    *,
    checkpoint_every: int = 0,
    resume: bool = False,
    stdout: IO = sys.stdout,
    stderr: IO = sys.stderr,
    on_checkpoint: Callable[[Language], None] | None = None,
) -> LoopState:
    """Train an initialized pipeline into ``output_path`` (spaCy's loop, resumable).

    Args:
        nlp: The initialized pipeline with its full config.
        output_path: Where ``model-best``, ``model-last`` and ``checkpoint`` go.
        checkpoint_every: Save a checkpoint every N steps (0: never).
        resume: Continue from ``output_path/checkpoint`` when there is one.
        stdout / stderr: spaCy's training table and progress bar.
        on_checkpoint: Called with the pipeline before each checkpoint (e.g. to write
            caches to disk).

    Returns:
        The final state (its ``results`` are the evaluations: (score, step) pairs).
    """
    config = nlp.config.interpolate()
    seed = config["training"]["seed"]
    if seed is not None:
        fix_random_seed(seed)
    T = registry.resolve(config["training"], schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    optimizer = T["optimizer"]
    before_to_disk = create_before_to_disk_callback(T["before_to_disk"])
    frozen, annotating = T["frozen_components"], T["annotating_components"]
    evaluate = create_evaluation_callback(nlp, dev_corpus, T["score_weights"])
    dropouts = constant(T["dropout"]) if isinstance(T["dropout"], float) else T["dropout"]
    eval_frequency, patience, max_steps = T["eval_frequency"], T["patience"], T["max_steps"]
    ckpt = output_path / CHECKPOINT
    state = LoopState(max_steps=max_steps, config=nlp.config.to_str())
    if resume and (ckpt / _STATE_FILE).exists():
        state = load_checkpoint(ckpt, nlp, optimizer)
        for _ in range(state.step):
            next(dropouts)
    else:
        for sub in (DIR_MODEL_BEST, DIR_MODEL_LAST, CHECKPOINT):
            shutil.rmtree(output_path / sub, ignore_errors=True)
    batches = Batches(nlp, train_corpus, T["batcher"], T["max_epochs"], state.data)

    def save_model(is_best: bool) -> None:
        with nlp.use_params(optimizer.averages):
            before_to_disk(nlp).to_disk(output_path / DIR_MODEL_LAST)
        if is_best:
            shutil.rmtree(output_path / DIR_MODEL_BEST, ignore_errors=True)
            shutil.copytree(output_path / DIR_MODEL_LAST, output_path / DIR_MODEL_BEST)

    stdout.write(f"ℹ Pipeline: {nlp.pipe_names}\n")
    if state.step:
        stdout.write(f"ℹ Resuming at step {state.step} (epoch {state.epoch}) from {ckpt}\n")
    else:
        stdout.write(f"ℹ Initial learn rate: {optimizer.learn_rate}\n")
    with nlp.select_pipes(disable=frozen):
        log_step, finalize_logger = T["logger"](nlp, stdout, stderr)
    start = timer() - state.seconds
    try:
        for epoch, batch in batches:
            step = state.step
            if T["before_update"]:
                T["before_update"](nlp, {"step": step, "epoch": epoch})
            dropout = next(dropouts)
            for subbatch in subdivide_batch(batch, T["accumulate_gradient"]):
                nlp.update(subbatch, drop=dropout, losses=state.losses, sgd=False,
                           exclude=frozen, annotates=annotating)  # fmt: skip
            for name, proc in nlp.pipeline:
                if (
                    name not in frozen
                    and getattr(proc, "is_trainable", False)
                    and proc.model not in (True, False, None)
                ):
                    proc.finish_update(optimizer)
            optimizer.step_schedules()
            is_best = None
            score, other = None, None
            if not step % eval_frequency:
                if optimizer.averages:
                    with nlp.use_params(optimizer.averages):
                        score, other = evaluate()
                else:
                    score, other = evaluate()
                state.results.append((score, step))
                is_best = score == max(state.results)[0]
            state.words += sum(len(eg) for eg in batch)
            info = {
                "epoch": epoch, "step": step, "score": score, "other_scores": other,
                "losses": state.losses, "checkpoints": state.results,
                "seconds": int(timer() - start), "words": state.words,
            }  # fmt: skip
            if is_best is not None:
                with nlp.select_pipes(disable=frozen):
                    update_meta(T, nlp, info)
                save_model(is_best)
                info["output_path"] = str(output_path / DIR_MODEL_LAST)
            log_step(info if is_best is not None else None)
            if is_best is not None:
                state.losses = {}
            state.step, state.epoch = step + 1, epoch
            best_score, neg_best_step = max((s, -st) for s, st in state.results)
            if patience and (step + neg_best_step) >= patience:
                break
            if max_steps and step >= max_steps:
                break
            if checkpoint_every and state.step % checkpoint_every == 0:
                if on_checkpoint is not None:
                    on_checkpoint(nlp)
                state.seconds = timer() - start
                state.data = batches.position()
                save_checkpoint(ckpt, nlp, optimizer, state)
    finally:
        finalize_logger()
    save_model(False)
    shutil.rmtree(ckpt, ignore_errors=True)
    stdout.write(f"✔ Saved pipeline to output directory {output_path / DIR_MODEL_LAST}\n")
    state.seconds = timer() - start
    return state


def check_resumable(ckpt: Path, config_text: str) -> LoopState:
    """The checkpoint's state, if it was made with the same config.

    Raises:
        AdaptnerError: the config differs (the differing keys named) or it is unreadable.
    """
    state = read_checkpoint_state(ckpt)
    if state.config != config_text:
        from confection import Config
        from spacy.util import dict_to_dot

        old = dict_to_dot(Config().from_str(state.config, interpolate=False))
        new = dict_to_dot(Config().from_str(config_text, interpolate=False))
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:5])
        raise AdaptnerError(
            f"Cannot resume {ckpt.parent}: its checkpoint was made with another config "
            f"({shown}{', …' if len(keys) > 5 else ''}). Rerun with the same config and "
            "options, or pass --force to start over."
        )
    return state

