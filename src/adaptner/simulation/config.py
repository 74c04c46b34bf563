"""Settings of an active-learning simulation: loop hyperparameters, one run, file names."""

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confection import Config

from ..errors import AdaptnerError
from ..update.anchor import check_anchor_docs
from ..update.replay import DEFAULT_SOURCE_REPLAY, check_ratio
from ..util import closest_hint, find_config

T = TypeVar("T")

#: Retraining modes: start again from the source pipeline on all labels, or continue.
MODES = ("reset", "warm")

#: AL protocols:
#: - paper: every round draws a fresh candidate pool (``pool_fraction`` of the target train set)
#:   from the unlabelled docs; the strategy picks from it from round 1 on (with the source
#:   pipeline); rounds go on to ``budget`` (krusand/CrossNER-Active-Learning, ActiveLearning.py);
#: - fixed_pool: one pool drawn once per seed; round 1 at random; stops when the pool is used up.
PROTOCOLS = ("paper", "fixed_pool")

#: Name of the evaluation set held out from the target train set.
HELDOUT = "heldout"
#: Name of the evaluation set made of the held-out docs and the target's dev split together.
MERGED = "merged"
#: Evaluation sets a simulation can score every round (``eval_sets``): the held-out share of
#: the target train set, the target's dev split, both together (the primary when present),
#: and the test split (when the corpus has one).
EVAL_SETS = (HELDOUT, "dev", MERGED, "test")
#: Where early stopping (``patience > 0``) picks its epoch: a slice of the round's own labels
#: (never an evaluation set), or the target's dev split (refused while dev is evaluated on).
STOP_ON = ("labelled", "dev")

#: Special source spec: every domain except the run's target.
ALL_BUT_TARGET = "all-but-target"

#: Settings added after runs were first recorded, with the value every run had before they
#: existed: a record, baseline or folder file without the key is read with this value.
LEGACY_SETTINGS: dict[str, Any] = {"source_replay": 0.0, "source_replay_max": 0, "anchor_docs": 0.0}


def with_legacy_settings(stored: dict[str, Any]) -> dict[str, Any]:
    """Stored parameters or settings with every key of :data:`LEGACY_SETTINGS` they lack."""
    return {**LEGACY_SETTINGS, **stored}


#: Settings a finished run or folder may be resumed with a larger value of: ``budget`` only
#: says when a run stops (its rounds up to the old budget are those a larger budget makes), so
#: a grid run to 30 % can later be continued to 100 %. Baselines do not depend on it.
GROWABLE_SETTINGS = ("budget",)


def fixed_params(params: dict[str, Any]) -> dict[str, Any]:
    """Stored or current parameters without :data:`GROWABLE_SETTINGS` (legacy keys filled in):
    what must match exactly for a file to be resumed."""
    return {k: v for k, v in with_legacy_settings(params).items() if k not in GROWABLE_SETTINGS}


def check_budget_growth(stored: Any, now: float, where: str) -> None:
    """Refuse to resume files written to a larger budget than ``now`` (shrinking would leave
    rounds beyond the budget in the results).

    Raises:
        AdaptnerError: ``stored`` exceeds ``now``.
    """
    if isinstance(stored, (int, float)) and stored > now + 1e-12:
        raise AdaptnerError(
            f"{where} was run to a budget of {stored:g}, more than the {now:g} asked for now. "
            f"Pass --budget {stored:g} (or more), or write to another --output folder."
        )


#: Record fields that measure time; they differ between identical runs.
TIMING_FIELDS = ("train_seconds", "score_seconds", "eval_seconds", "round_seconds")


@dataclass(frozen=True)
class ALSettings:
    """Hyperparameters of the simulated annotation loop, shared by every run of a grid.

    "Target train set" below means the target's train docs minus the held-out evaluation set
    (``eval_holdout``); label fractions are shares of it.

    Attributes:
        protocol: "paper" (a fresh candidate pool every round, the strategy picks from round 1
            on, up to ``budget``) or "fixed_pool" (one pool per seed, round 1 at random, stop
            when the pool is used up); see :data:`PROTOCOLS`.
        pool_fraction: Share of the target train set drawn at random as the candidate pool:
            every round from the unlabelled docs (paper), or once per seed (fixed_pool).
        query_fraction: Docs labeled per round, as a share of the target train set (0.05).
        budget: Stop when this share of the target train set is labeled (the largest label
            fraction of the curve; fixed_pool also stops when its pool is used up).
        eval_holdout: Share of the target's train docs held out as the evaluation set
            ("heldout"): never queried nor trained on, the same for every strategy and seed
            (chosen by a hash of the doc text and ``holdout_seed``). 0 = none.
        holdout_seed: Salt of that hash (independent of the run seed).
        eval_sets: The evaluation sets scored every round, all reported (see
            :data:`EVAL_SETS`); ``merged`` (held-out + dev docs) is the primary one when given,
            else the first. ``heldout`` and ``merged`` need ``eval_holdout > 0``.
        trainer: The registered per-round trainer (``registry.al_trainers``), e.g. "fine_tune";
            "auto" is ``top_layers`` for a transformer pipeline, else ``fine_tune`` (the same
            resolution as a session's ``--trainer auto``).
        epochs: Passes over the round's training docs (all of them when ``patience`` is 0).
        patience: Early stopping (0 = off: fixed epochs): stop after ``patience`` epochs
            without a better F1 on the stopping docs (``stop_on``) and keep the best epoch.
        stop_on: "labelled": the stopping docs are a random ``stop_share`` of the round's
            training docs, which that round then does not train on (a round too small to
            spare one doc trains its fixed epochs); "dev": the target's dev split, refused
            while dev is an evaluation set (``dev`` or ``merged``): nothing may select on it.
        stop_share: The share of a round's training docs kept for early stopping.
        batch_size: Docs per update.
        dropout: Dropout during retraining.
        learn_rate: Learning rate of the retraining optimizer (None = the pipeline config's).
        replay_fraction: ``warm`` mode: share of the earlier labels replayed with each new batch.
        source_replay: Source replay: labelled source docs (the source domains' train docs,
            never the target's) added to every round's training set, per target doc in it
            (0 = off), a fresh seeded sample each round, in both modes
            (:mod:`adaptner.update.replay`).
        source_replay_max: At most this many source docs per round (0 = no cap).
        anchor_docs: Anchoring (:mod:`adaptner.update.anchor`): a round keeps the share
            ``n / (n + anchor_docs)`` of its update (n = the target docs it trained on) and
            moves the rest of the way back to the weights it started from; 0 = keep all.
        train_limit: Use only the first N target train docs (0 = all; for quick tests).
        eval_limit: Evaluate on only the first N docs per evaluation set (0 = all).
        reference_epochs: Epochs of the ``target_finetune`` reference (every component
            fine-tuned on all target train docs); 0 = ``epochs``.
        reference_learn_rate: Its learning rate (None = ``learn_rate``).
    """

    protocol: str = "paper"
    pool_fraction: float = 0.2
    query_fraction: float = 0.05
    budget: float = 1.0
    eval_holdout: float = 0.2
    holdout_seed: int = 0
    eval_sets: tuple[str, ...] = (HELDOUT, "dev", MERGED)
    trainer: str = "fine_tune"
    epochs: int = 10
    patience: int = 0
    stop_on: str = "labelled"
    stop_share: float = 0.2
    batch_size: int = 16
    dropout: float = 0.1
    learn_rate: float | None = None
    replay_fraction: float = 0.5
    source_replay: float = DEFAULT_SOURCE_REPLAY
    source_replay_max: int = 0
    anchor_docs: float = 0.0
    train_limit: int = 0
    eval_limit: int = 0
    reference_epochs: int = 0
    reference_learn_rate: float | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise AdaptnerError(
                f"Unknown AL protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}."
            )
        if not 0.0 <= self.eval_holdout < 1.0:
            raise AdaptnerError(f"eval_holdout must be in [0, 1), got {self.eval_holdout}.")
        self._check_eval_sets()
        for name in ("pool_fraction", "query_fraction", "budget"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise AdaptnerError(f"{name} must be in (0, 1], got {value}.")
        if not 0.0 <= self.replay_fraction <= 1.0:
            raise AdaptnerError(f"replay_fraction must be in [0, 1], got {self.replay_fraction}.")
        check_ratio(self.source_replay, self.source_replay_max)
        check_anchor_docs(self.anchor_docs)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise AdaptnerError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("patience", "train_limit", "eval_limit", "reference_epochs"):
            if getattr(self, name) < 0:
                raise AdaptnerError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("learn_rate", "reference_learn_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise AdaptnerError(f"{name} must be positive, got {value}.")
        if self.stop_on not in STOP_ON:
            raise AdaptnerError(
                f"Unknown stop_on {self.stop_on!r}; choose from {', '.join(STOP_ON)}."
            )
        if not 0.0 < self.stop_share < 1.0:
            raise AdaptnerError(f"stop_share must be in (0, 1), got {self.stop_share}.")
        if self.patience and self.stop_on == "dev" and self.dev_evaluated:
            raise AdaptnerError(
                f'patience = {self.patience} with stop_on = "dev" would pick epochs on the '
                f"target's dev split, which the evaluation sets {list(self.eval_sets)} score: "
                'nothing may select on an evaluation set. Set stop_on = "labelled" (a slice '
                "of each round's labels), patience = 0 (fixed epochs), or leave dev and merged "
                "out of eval_sets."
            )

    def _check_eval_sets(self) -> None:
        sets = self.eval_sets
        if isinstance(sets, str):
            sets = (sets,)
        object.__setattr__(self, "eval_sets", tuple(sets))  # a config gives a list
        if not self.eval_sets:
            raise AdaptnerError(f"eval_sets is empty; choose from {', '.join(EVAL_SETS)}.")
        for name in self.eval_sets:
            if name not in EVAL_SETS:
                raise AdaptnerError(
                    f"Unknown evaluation set {name!r} in eval_sets; choose from "
                    f"{', '.join(EVAL_SETS)}."
                )
        if len(set(self.eval_sets)) != len(self.eval_sets):
            raise AdaptnerError(f"eval_sets names a set twice: {list(self.eval_sets)}.")
        needs_holdout = [n for n in self.eval_sets if n in (HELDOUT, MERGED)]
        if needs_holdout and self.eval_holdout == 0:
            raise AdaptnerError(
                f"eval_sets {list(self.eval_sets)} has {', '.join(needs_holdout)}, which needs "
                "held-out docs, but eval_holdout = 0. Set eval_holdout > 0 (e.g. 0.2) or "
                'eval_sets = ["dev"].'
            )

    @property
    def primary_eval(self) -> str:
        """The evaluation set ``target_f1`` reports: ``merged`` when scored, else the first."""
        return MERGED if MERGED in self.eval_sets else self.eval_sets[0]

    @property
    def dev_evaluated(self) -> bool:
        """Whether an evaluation set contains the target's dev docs (``dev`` or ``merged``)."""
        return "dev" in self.eval_sets or MERGED in self.eval_sets

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON values (``eval_sets`` as a list), as records store them."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def replace(self, **changes: Any) -> "ALSettings":
        """A copy with some fields changed; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_al_settings(path: str | Path | None, **overrides: Any) -> ALSettings:
    """Read the ``[simulation]`` section of an AL config (e.g. ``default``, or a .cfg path).

    Args:
        path: The .cfg file or the name of a shipped one (``default``, ``e5``; see
            :func:`adaptner.util.find_config`), or None for the built-in defaults.
        overrides: Field values that win over the file (``None`` = keep the file's).

    Raises:
        AdaptnerError: a missing file, a missing section, or an unknown key (named).
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = find_config(path, "AL config", folder="al", exclude=())
        try:
            cfg = Config().from_disk(path)
        except Exception as e:  # noqa: BLE001 - confection raises many kinds
            raise AdaptnerError(f"Cannot read AL config {path}: {e}") from e
        if "simulation" not in cfg:
            near = [n for n in cfg if closest_hint(n, ["simulation"])]
            found = f" (found [{near[0]}]; did you mean [simulation]?)" if near else ""
            raise AdaptnerError(f"AL config {path} has no [simulation] section{found}.")
        known = sorted(f.name for f in dataclasses.fields(ALSettings))
        unknown = [key for key in cfg["simulation"] if key not in known]
        if unknown:
            named = "; ".join(
                f"unknown key simulation.{k}{closest_hint(k, known)}" for k in unknown
            )
            raise AdaptnerError(f"AL config {path}: {named}. Known: {', '.join(known)}.")
        values.update(cfg["simulation"])
    try:
        settings = ALSettings(**values)
    except TypeError as e:
        raise AdaptnerError(f"Bad AL settings: {e}") from e
    except AdaptnerError as e:  # the file's own values: name the file
        if path is None:
            raise
        raise AdaptnerError(f"AL config {path}: {e}") from None
    return settings.replace(**overrides)


def resolve_source(source: str, target: str) -> str:
    """The source domain spec of a run: ``all-but-target`` becomes ``all-but:<target>``."""
    return f"all-but:{target}" if source == ALL_BUT_TARGET else source


def source_slug(source: str) -> str:
    """A file-name-safe name of a source spec: ``all-but:legal`` -> ``all-but-legal``."""
    return source.replace(":", "-").replace(",", "+")


def source_model_for(seed: int, models: Sequence[T]) -> tuple[int | None, T]:
    """The source model of a seed among a grid's ``models``: seed k uses model k mod n.

    Returns:
        (its index, or None when there is one model; the model).
    """
    if len(models) == 1:
        return None, models[0]
    index = seed % len(models)
    return index, models[index]


def model_suffix(source_index: int | None) -> str:
    """The run and baseline id part naming a source model: ``_m<index>``, or none."""
    return "" if source_index is None else f"_m{source_index}"


def derive_seed(*parts: int) -> int:
    """A 32-bit seed derived from several integers (run seed, round, purpose)."""
    import numpy

    return int(numpy.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@dataclass
class SimulationConfig:
    """One simulation run: a source pipeline adapted to a target by one strategy, one seed.

    Attributes:
        source: The source domains ("news", "all-but:legal"); used for the source
            evaluation (forgetting) and the ``vocab`` strategy's counts.
        target: The target domain slug.
        strategy: A registered query strategy name.
        mode: "reset" or "warm" (see :data:`MODES`).
        seed: The one seed of the run (pool draws, queries, retraining); the held-out
            evaluation set does not depend on it.
        settings: The loop hyperparameters.
        source_model: Path to the source pipeline directory.
        corpus_dir: Folder with ``train/``, ``dev/`` and the evaluation split's folder.
        eval_split: "dev" or "test": the split of the source evaluation (forgetting); "test"
            is also scored on the target when ``settings.eval_sets`` does not name it.
        strategy_params: Keyword arguments for the strategy factory.
        source_index: Which of a grid's several source models this run adapts (seed k uses
            model k mod n, :func:`source_model_for`); None when the grid has one. Part of
            the run id and the parameters only when set, so one-source runs keep theirs.
        source_model_label: How the records name the source model: its path as the grid was
            given it (default ``str(source_model)``). A Ray worker's local copy of the model
            keeps the label of the original.
    """

    source: str
    target: str
    strategy: str
    mode: str
    seed: int
    settings: ALSettings
    source_model: Path
    corpus_dir: Path = Path("corpus")
    eval_split: str = "dev"
    strategy_params: dict[str, Any] = field(default_factory=dict)
    source_index: int | None = None
    source_model_label: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AdaptnerError(f"Unknown retraining mode {self.mode!r}; choose from {MODES}.")
        self.source_model = Path(self.source_model)
        self.corpus_dir = Path(self.corpus_dir)
        self.source_model_label = self.source_model_label or str(self.source_model)

    @property
    def run_id(self) -> str:
        """``<source>_<target>_<strategy>_<mode>_s<seed>`` (also the JSONL file stem); with
        several source models ``..._<mode>_m<source_index>_s<seed>``."""
        return (
            f"{source_slug(self.source)}_{self.target}_{self.strategy}_{self.mode}"
            f"{model_suffix(self.source_index)}_s{self.seed}"
        )

    def params(self) -> dict[str, Any]:
        """Everything that determines the run's records (paths excluded: files may move)."""
        return {
            "source": self.source,
            **({} if self.source_index is None else {"source_index": self.source_index}),
            "target": self.target,
            "strategy": self.strategy,
            "mode": self.mode,
            "seed": self.seed,
            "eval_split": self.eval_split,
            "strategy_params": dict(sorted(self.strategy_params.items())),
            **self.settings.as_dict(),
        }

    def params_hash(self) -> str:
        """A short hash of :meth:`params`, stored in every record."""
        text = json.dumps(self.params(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode("utf8")).hexdigest()[:12]
