"""One pool-based active-learning run with the gold labels as the oracle, resumable per round."""

import dataclasses
import hashlib
import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
from spacy.language import Language
from spacy.tokens import Doc

from ..errors import AdaptnerError
from ..readers import available_domains, read_docbin
from ..scoring import ner_prf, predict, score_ner
from ..strategies import get_strategy, select, strategies_registry, strategy_names
from ..update.anchor import anchor_alpha, anchor_weights
from ..update.features import feature_dir
from ..update.replay import sample_replay
from ..update.trainers import (
    get_round_trainer,
    prepare_trainer,
    resolve_trainer,
    restore_weights,
    snapshot_weights,
)
from ..util import (
    append_jsonl,
    file_lock,
    parse_domains,
    write_json,
    write_text,
)
from ..util import load_pipeline as load_trained
from .config import (
    HELDOUT,
    MERGED,
    ALSettings,
    SimulationConfig,
    check_budget_growth,
    derive_seed,
    fixed_params,
    with_legacy_settings,
)

# Purposes of derived seeds (with the run seed and the round).
_POOL, _QUERY, _REPLAY, _TRAIN = 0, 1, 2, 3
_STOP = 5  # 4 = the target_full reference's training (baselines)
_SOURCE = 6  # the source replay sample


@dataclass(frozen=True)
class RunSizes:
    """How a run splits the target train set.

    Round k ends with ``floor(k * query_fraction * target_size)`` labeled docs (capped by the
    budget), so batch sizes differ by at most one instead of leaving a tiny last batch: 5 %
    of 1,690 legal docs labels 84, 169, 253, 338 — the paper's counts.

    Attributes:
        target_size: Docs in the target train set (after ``train_limit``, without the
            held-out evaluation set).
        pool_size: Docs per candidate pool (drawn every round, or once: the protocol).
        query_size: Nominal docs per round (``query_fraction * target_size``, rounded).
        budget: Docs labeled when the run stops.
        rounds: Rounds including round 0 (the source pipeline, nothing labeled).
        query_fraction: Share of the target train set labeled per round.
    """

    target_size: int
    pool_size: int
    query_size: int
    budget: int
    rounds: int
    query_fraction: float = 0.0

    def labeled_after(self, round_: int) -> int:
        """Docs labeled at the end of a round (0 for round 0)."""
        step = self.query_fraction * self.target_size
        return min(self.budget, max(round_, math.floor(round_ * step + 1e-9)))


def plan_sizes(target_size: int, settings: ALSettings) -> RunSizes:
    """Pool, query and budget sizes for a target train set of ``target_size`` docs.

    Raises:
        AdaptnerError: the target train set is empty.
    """
    if target_size < 1:
        raise AdaptnerError("The target train set is empty: nothing to simulate.")

    def share(fraction: float) -> int:  # floor, like the labeled counts per round
        return max(1, math.floor(fraction * target_size + 1e-9))

    pool = min(target_size, share(settings.pool_fraction))
    query = share(settings.query_fraction)
    budget = share(settings.budget)
    if settings.protocol == "fixed_pool":  # the pool is all a run can ever label
        budget = min(pool, budget)
    sizes = RunSizes(target_size, pool, query, budget, 0, settings.query_fraction)
    rounds = 1
    while sizes.labeled_after(rounds - 1) < budget:
        rounds += 1
    return dataclasses.replace(sizes, rounds=rounds)


def heldout_count(n_docs: int, share: float) -> int:
    """How many of ``n_docs`` target train docs the evaluation set holds out (floor)."""
    return math.floor(share * n_docs + 1e-9)


def al_train_size(n_docs: int, settings: ALSettings) -> int:
    """Docs of a target train set of ``n_docs`` that AL can label (limit, then hold-out)."""
    n = min(n_docs, settings.train_limit) if settings.train_limit else n_docs
    return n - heldout_count(n, settings.eval_holdout)


def split_heldout(docs: Sequence[Doc], share: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split target train docs into the AL part and the held-out evaluation set.

    A doc is held out when the SHA-1 of ``"<seed>\0<text>"`` ranks among the lowest
    ``floor(share * len(docs))``: the split depends on the texts only, not on the run seed,
    the strategy or the order of the docs.

    Returns:
        (AL ids, held-out ids): sorted indices into ``docs``.
    """

    def key(i: int) -> tuple[str, int]:
        text = f"{seed}\0{docs[i].text}".encode()
        return hashlib.sha1(text).hexdigest(), i

    order = sorted(range(len(docs)), key=key)
    n = heldout_count(len(docs), share)
    return sorted(order[n:]), sorted(order[:n])


def ids_digest(ids: Sequence[int]) -> str:
    """A short hash of a set of doc ids (records name the held-out set by it)."""
    text = ",".join(str(i) for i in sorted(ids))
    return hashlib.sha1(text.encode("utf8")).hexdigest()[:12]


def eval_split_for(corpus_dir: str | Path, target: str, split: str = "auto") -> str:
    """The held-out split to evaluate a target on: ``test`` when present, else ``dev``.

    Raises:
        AdaptnerError: an explicit split has no DocBin for the target.
    """
    corpus_dir = Path(corpus_dir)
    if split == "auto":
        return "test" if (corpus_dir / "test" / f"{target}.spacy").exists() else "dev"
    if not (corpus_dir / split / f"{target}.spacy").exists():
        raise AdaptnerError(
            f"No {split} split for {target}: {corpus_dir / split / (target + '.spacy')} does not "
            "exist. Run `adaptner corpus` on a release with that split, or use --eval-split dev."
        )
    return split


def load_pipeline(path: str | Path) -> Language:
    """Load the source pipeline of a run (:func:`adaptner.util.load_pipeline`)."""
    return load_trained(path, "Train the source pipeline first (adaptner train).")


@dataclass
class RunData:
    """The gold Docs a run needs (all in the run pipeline's vocab).

    Attributes:
        target_train: The target's train docs (after ``train_limit``); ids index this list.
        al_ids: Ids AL may query and train on (the train docs minus the held-out set).
        heldout_ids: Ids of the held-out evaluation set (never queried nor trained on).
        evals: Target evaluation sets by name (``settings.eval_sets``, plus "test" when it
            is the run's evaluation split), the primary one first; "merged" is the "heldout"
            docs followed by the "dev" docs.
        dev: The target dev docs (early stopping with ``stop_on = "dev"`` only).
        source_eval: The source domains' evaluation split docs (forgetting).
        source_domains: The source domains (those with an evaluation DocBin).
        source_train_dir: The folder of their train DocBins.
    """

    target_train: list[Doc]
    al_ids: list[int]
    heldout_ids: list[int]
    evals: dict[str, list[Doc]]
    dev: list[Doc]
    source_eval: list[Doc]
    source_domains: list[str]
    source_train_dir: Path
    _source_train: dict[str, list[Doc]] | None = field(default=None, repr=False)

    @property
    def primary(self) -> str:
        """The evaluation set ``target_f1`` refers to."""
        return next(iter(self.evals))

    def al_docs(self) -> list[Doc]:
        """The target train docs AL may use (the full-data reference trains on these)."""
        return [self.target_train[i] for i in self.al_ids]

    def all_docs(self) -> list[Doc]:
        """Every doc a run predicts on: target train, evaluation sets and source evaluation."""
        out = list(self.target_train)
        for docs in self.evals.values():
            out.extend(docs)
        return out + list(self.source_eval)

    def source_train(self, vocab, exclude: Sequence[str] = ()) -> list[Doc]:
        """The source domains' train Docs, the ones the source pipeline learnt from (read once,
        on first use; for ``vocab`` and source replay), without the domains in ``exclude``."""
        if self._source_train is None:
            self._source_train = {}
            for domain in self.source_domains:
                path = self.source_train_dir / f"{domain}.spacy"
                self._source_train[domain] = read_docbin(path, vocab) if path.exists() else []
        return [
            doc
            for domain, docs in self._source_train.items()
            if domain not in exclude
            for doc in docs
        ]


def source_domains_for(source: str, split_dir: Path) -> list[str]:
    """The domains of a source spec that have a DocBin in ``split_dir``."""
    return parse_domains(source, available_domains(split_dir))


def load_run_data(cfg: SimulationConfig, vocab) -> RunData:
    """Read the target train set (split into AL part and held-out set), the target dev and
    evaluation sets, and the source evaluation sets of a run.

    Raises:
        AdaptnerError: a missing DocBin (named), or an unknown domain.
    """
    corpus = cfg.corpus_dir
    train_dir, eval_dir = corpus / "train", corpus / cfg.eval_split
    target_path = train_dir / f"{cfg.target}.spacy"
    if not target_path.exists():
        known = ", ".join(available_domains(train_dir)) if train_dir.is_dir() else "none"
        raise AdaptnerError(
            f"No target train set {target_path} (domains with data: {known}). "
            "Run `adaptner corpus` first, or check --target."
        )
    s = cfg.settings
    limit = s.train_limit or None
    eval_limit = s.eval_limit or None
    target_train = read_docbin(target_path, vocab)[:limit]
    al_ids, heldout_ids = split_heldout(target_train, s.eval_holdout, s.holdout_seed)
    names = [s.primary_eval, *s.eval_sets, *(["test"] if cfg.eval_split == "test" else [])]
    splits: dict[str, list[Doc]] = {}

    def split_docs(split: str) -> list[Doc]:
        if split not in splits:
            path = corpus / split / f"{cfg.target}.spacy"
            if not path.exists():
                raise AdaptnerError(
                    f"No {split} split for {cfg.target}: {path} does not exist. Run `adaptner "
                    f"corpus` on a release with that split, or leave {split} out of eval_sets."
                )
            splits[split] = read_docbin(path, vocab)[:eval_limit]
        return splits[split]

    heldout = [target_train[i] for i in heldout_ids][:eval_limit]
    evals: dict[str, list[Doc]] = {}
    for name in dict.fromkeys(names):
        if name == HELDOUT:
            evals[name] = heldout
        elif name == MERGED:
            evals[name] = [*heldout, *split_docs("dev")]
        else:
            evals[name] = split_docs(name)
    domains = source_domains_for(cfg.source, eval_dir)
    source_eval: list[Doc] = []
    for domain in domains:
        source_eval.extend(read_docbin(eval_dir / f"{domain}.spacy", vocab)[:eval_limit])
    return RunData(
        target_train, al_ids, heldout_ids, evals, split_docs("dev"), source_eval, domains, train_dir
    )


def stopping_split(
    docs: Sequence[Doc], dev: Sequence[Doc], settings: ALSettings, seed: int
) -> tuple[list[Doc], list[Doc] | None]:
    """The docs a round trains on and the docs its early stopping scores (None = fixed epochs).

    ``patience = 0``: all docs, no stopping docs. ``stop_on = "labelled"``: a random
    ``stop_share`` of the round's docs (seeded by ``seed``) is set aside for stopping and not
    trained on; a round too small to spare a doc and keep one trains its fixed epochs.
    ``stop_on = "dev"``: the dev docs (the settings refuse it while dev is evaluated on).
    """
    docs = list(docs)
    if not settings.patience:
        return docs, None
    if settings.stop_on == "dev":
        if settings.dev_evaluated:  # ALSettings refuses this; guard every caller anyway
            raise AdaptnerError(
                'Early stopping on dev while dev is an evaluation set: set stop_on = "labelled".'
            )
        return docs, list(dev)
    n_stop = math.floor(settings.stop_share * len(docs) + 1e-9)
    if n_stop < 1 or n_stop >= len(docs):
        return docs, None
    order = numpy.random.default_rng(seed).permutation(len(docs))
    stop = set(int(i) for i in order[:n_stop])
    return [d for i, d in enumerate(docs) if i not in stop], [docs[i] for i in sorted(stop)]


def factory_params(name: str) -> set[str]:
    """The parameter names of a registered strategy's factory.

    Raises:
        AdaptnerError: an unknown strategy name.
    """
    if name not in strategy_names():
        raise AdaptnerError(f"Unknown strategy {name!r}. Known: {', '.join(strategy_names())}.")
    return set(inspect.signature(strategies_registry.get(name)).parameters)


def make_strategy(
    name: str,
    params: dict[str, Any],
    *,
    source_docs: Callable[[], Sequence[Doc]],
    labeled_docs: Sequence[Doc],
):
    """Create a strategy, passing ``source_docs`` / ``labeled_docs`` when its factory takes them.

    Raises:
        AdaptnerError: an unknown strategy name.
    """
    kwargs = dict(params)
    accepted = factory_params(name)
    if "source_docs" in accepted and "source_docs" not in kwargs and "source_counts" not in kwargs:
        kwargs["source_docs"] = source_docs()
    if "labeled_docs" in accepted and "labeled_docs" not in kwargs:
        kwargs["labeled_docs"] = labeled_docs
    return get_strategy(name, **kwargs)


def read_records(path: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """The complete JSON lines of a results file, and whether a torn last line was dropped.

    Raises:
        AdaptnerError: a broken line that is not the last one (named by line number).
    """
    path = Path(path)
    if not path.exists():
        return [], False
    lines = path.read_text(encoding="utf8").splitlines()
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                return records, True  # a kill during the append: redo that round
            raise AdaptnerError(
                f"{path}, line {i}: not valid JSON. The file is damaged; delete it to re-run "
                "this simulation from the start."
            ) from None
    return records, False


#: Settings a simulation's command line can set directly, named in the remedy when a file's
#: value differs (``--anchor-docs 0``).
OPTION_KEYS = ("anchor_docs", "source_replay", "source_replay_max", "epochs", "learn_rate")


def check_records(records: Sequence[dict[str, Any]], cfg: SimulationConfig, path: Path) -> None:
    """Verify that existing records belong to this run and are consecutive rounds.

    Raises:
        AdaptnerError: different parameters (the differing keys named) or a gap in rounds.
    """
    params = fixed_params(json.loads(json.dumps(cfg.params())))
    for i, rec in enumerate(records, start=1):
        theirs = fixed_params(rec.get("params", {}))
        check_budget_growth(rec.get("params", {}).get("budget"), cfg.settings.budget,
                            f"{path}, line {i}")  # fmt: skip
        if theirs != params:
            diff = sorted(k for k in set(params) | set(theirs) if params.get(k) != theirs.get(k))
            detail = ", ".join(
                f"{k}: file {theirs.get(k)!r} vs now {params.get(k)!r}" for k in diff
            )
            options = " ".join(
                f"--{k.replace('_', '-')} {theirs[k]:g}"
                for k in diff
                if k in OPTION_KEYS and isinstance(theirs.get(k), int | float)
            )
            again = f"Pass the file's values ({options}) to continue it, write"
            if not options:
                again = "Write"
            raise AdaptnerError(
                f"{path}, line {i}: written with different parameters ({detail}). {again} to "
                "another --output directory, or delete the file."
            )
        recorded = rec.get("source_model")
        if recorded is not None and recorded != cfg.source_model_label:
            raise AdaptnerError(
                f"{path}, line {i}: adapted source model {recorded!r}, but this run's is "
                f"{cfg.source_model_label!r}. With several --source-model, seed k adapts model "
                "k mod n: give them in the order the run was started with, or write to another "
                "--output directory."
            )
        if rec.get("round") != i - 1:
            found = rec.get("round")
            what = (
                f"repeats round {found} (two processes wrote this run at once)"
                if isinstance(found, int) and found < i - 1
                else f"has round {found} where round {i - 1} belongs"
            )
            raise AdaptnerError(
                f"{path}, line {i} {what}. Delete line {i} and every line after it, then re-run "
                f"the same command: the run resumes at round {i - 1}."
            )


def run_finished(records: Sequence[dict[str, Any]], sizes: RunSizes, path: Path) -> bool:
    """Whether a run's saved rounds reach its budget (or used up the pool).

    A run saved as finished at a smaller budget is not finished at a larger one: it goes on
    from its last round, provided that round labeled what the larger budget's round labels (a
    budget off the 5 % steps cuts its last batch short; such a run must start again).

    Raises:
        AdaptnerError: the run stopped at a budget off the query steps and cannot grow.
    """
    if not records or not records[-1].get("last"):
        return False
    last = records[-1]
    if last.get("pool_left") == 0 or last["labeled_count"] >= sizes.budget:
        return True
    round_ = len(records) - 1
    if last["labeled_count"] != sizes.labeled_after(round_):
        raise AdaptnerError(
            f"{path}: the run stopped at its budget with {last['labeled_count']} labeled docs "
            f"after round {round_}, where the larger budget's round {round_} labels "
            f"{sizes.labeled_after(round_)} (the old budget was not a multiple of the query "
            "share). Delete the file to run it again from round 0."
        )
    return False


#: The file in a simulation folder that records the settings its runs were made with.
SETTINGS_FILE = "simulation.json"


def check_folder_settings(output_dir: str | Path, settings: ALSettings) -> Path:
    """Record a simulation folder's settings on first use; refuse different ones later.

    Runs of one folder are compared with each other (curves, AULC), so they must share the
    loop settings. A key missing from an older file counts as its default value.

    Returns:
        The settings file.

    Raises:
        AdaptnerError: the folder was simulated with other settings (the differing keys named).
    """
    path = Path(output_dir) / SETTINGS_FILE
    now = settings.as_dict()
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf8"))["settings"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise AdaptnerError(
                f"{path} is damaged ({e}); it records the settings of the runs in "
                f"{output_dir}. Restore it, or simulate into another --output folder."
            ) from None
        defaults = ALSettings().as_dict()
        stored = with_legacy_settings(stored)
        check_budget_growth(stored.get("budget"), settings.budget, f"{output_dir} ({path})")
        fixed = fixed_params(now)
        diff = sorted(k for k in fixed if stored.get(k, defaults.get(k)) != fixed[k])
        diff += sorted(k for k in stored if k not in now)
        if diff:
            detail = ", ".join(f"{k}: folder {stored.get(k)!r}, now {now.get(k)!r}" for k in diff)
            raise AdaptnerError(
                f"{output_dir} holds runs made with other settings ({detail}; see {path}). "
                "Re-run with the folder's settings, or write to another --output folder."
            )
        if stored.get("budget") == now["budget"]:
            return path
    write_json(path, {"settings": now})  # first use, or the runs grow to a larger budget
    return path


class Simulation:
    """One run: a source pipeline, a target train set, a strategy, a retraining mode, a seed.

    Round 0 evaluates the source pipeline. Every later round draws the round's candidate pool
    (:meth:`candidates`), queries a batch from it (with the strategy on the current
    pipeline's predictions; ``fixed_pool``: round 1 at random), labels it from gold, retrains
    with the registered round trainer (``settings.trainer``), evaluates on every target
    evaluation set and the source's, and appends one JSON line (fsync'd) to
    ``<output_dir>/<run_id>.jsonl``. The held-out evaluation set is never a candidate.
    """

    def __init__(self, cfg: SimulationConfig, output_dir: str | Path) -> None:
        self.cfg = cfg
        self.path = Path(output_dir) / f"{cfg.run_id}.jsonl"
        self.nlp = load_pipeline(cfg.source_model)
        self.data = load_run_data(cfg, self.nlp.vocab)
        self.trainer = get_round_trainer(resolve_trainer(self.nlp, cfg.settings.trainer))
        prepare_trainer(
            self.trainer,
            self.nlp,
            self.data.all_docs() + self.replay_pool(),
            cache_dir=feature_dir(output_dir),
        )
        self.source_weights = snapshot_weights(self.nlp)
        self.sizes = plan_sizes(len(self.data.al_ids), cfg.settings)
        self.pool_ids: list[int] | None = None  # the fixed pool (protocol fixed_pool)
        if cfg.settings.protocol == "fixed_pool":
            pool_rng = numpy.random.default_rng(derive_seed(cfg.seed, 0, _POOL))
            chosen = pool_rng.choice(self.sizes.target_size, self.sizes.pool_size, replace=False)
            self.pool_ids = sorted(self.data.al_ids[int(i)] for i in chosen)
        self._strategy = None
        self.stop_docs = 0  # early-stopping docs of the last retraining (0 = fixed epochs)
        self.anchor = 1.0  # the share of its update the last retraining kept (anchor_docs)

    # --- one round's pieces ---------------------------------------------------------
    def docs(self, ids: Sequence[int]) -> list[Doc]:
        """Gold target train Docs by id (index in the target DocBin)."""
        return [self.data.target_train[i] for i in ids]

    def replay_pool(self) -> list[Doc]:
        """The source docs a round may replay (none when ``source_replay`` is 0): the source
        domains' train docs, never the target's (they hold the held-out set and the pool)."""
        if not self.cfg.settings.source_replay:
            return []
        return self.data.source_train(self.nlp.vocab, exclude=[self.cfg.target])

    def candidates(self, round_: int, labeled: Sequence[int]) -> list[int]:
        """The round's candidate pool (sorted ids), never labelled or held-out docs.

        ``paper``: a fresh random draw of ``pool_size`` docs (all when fewer are left) from
        the unlabelled AL docs, seeded by (run seed, round). ``fixed_pool``: what is left of
        the run's one pool.
        """
        labeled_set = set(labeled)
        if self.pool_ids is not None:
            return [i for i in self.pool_ids if i not in labeled_set]
        unlabeled = [i for i in self.data.al_ids if i not in labeled_set]
        n = min(self.sizes.pool_size, len(unlabeled))
        rng = numpy.random.default_rng(derive_seed(self.cfg.seed, round_, _POOL))
        return sorted(unlabeled[int(j)] for j in rng.choice(len(unlabeled), n, replace=False))

    def query(self, round_: int, labeled: Sequence[int], pool: Sequence[int]) -> list[int]:
        """Ids of the next batch from the candidate pool: by the strategy (``fixed_pool``:
        round 1 at random)."""
        cfg = self.cfg
        pool = list(pool)
        n = min(self.sizes.labeled_after(round_) - len(labeled), len(pool))
        rng = numpy.random.default_rng(derive_seed(cfg.seed, round_, _QUERY))
        if n == len(pool):
            return pool
        if round_ == 1 and cfg.settings.protocol == "fixed_pool":
            chosen = select(rng.random(len(pool)), n, rng)
        else:
            strategy = self.strategy(labeled)
            pool_docs = predict(self.nlp, self.docs(pool))
            chosen = strategy.query(pool_docs, n, nlp=self.nlp, rng=rng)
        if len(set(chosen)) != n or not all(0 <= i < len(pool) for i in chosen):
            raise AdaptnerError(
                f"Strategy {cfg.strategy!r} returned invalid indices in round {round_} "
                f"(expected {n} distinct indices into a pool of {len(pool)})."
            )
        return [pool[i] for i in chosen]

    def strategy(self, labeled: Sequence[int]):
        """The run's strategy; made once, or every round when it takes ``labeled_docs``."""
        if self._strategy is None or "labeled_docs" in factory_params(self.cfg.strategy):
            self._strategy = make_strategy(
                self.cfg.strategy,
                self.cfg.strategy_params,
                source_docs=lambda: self.data.source_train(self.nlp.vocab),
                labeled_docs=self.docs(labeled),
            )
        return self._strategy

    def retrain(self, round_: int, labeled_before: Sequence[int], new: Sequence[int]):
        """Retrain after a round's batch on its target docs (reset: every label; warm: the
        new batch and a replay sample of earlier labels) plus ``source_replay`` source docs
        per target doc it trains on (docs kept for early stopping not counted; a sample
        seeded by the run seed and the round).

        Returns:
            (UpdateStats, number of target docs (stopping docs included), number of source
            docs).
        """
        cfg, s = self.cfg, self.cfg.settings
        if cfg.mode == "reset" or round_ == 1:
            restore_weights(self.nlp, self.source_weights)
            start = self.source_weights
            train_ids = [*labeled_before, *new]
        else:
            start = snapshot_weights(self.nlp) if s.anchor_docs else {}
            rng = numpy.random.default_rng(derive_seed(cfg.seed, round_, _REPLAY))
            m = round(s.replay_fraction * len(labeled_before))
            replay = sorted(rng.choice(len(labeled_before), m, replace=False)) if m else []
            train_ids = [*new, *(labeled_before[i] for i in replay)]
        fit, stop = stopping_split(
            self.docs(train_ids), self.data.dev, s, derive_seed(cfg.seed, round_, _STOP)
        )
        source_rng = numpy.random.default_rng(derive_seed(cfg.seed, round_, _SOURCE))
        source = sample_replay(
            self.replay_pool(), len(fit), s.source_replay, source_rng, s.source_replay_max
        )
        stats = self.trainer(
            self.nlp,
            [*fit, *source],
            stop,
            settings=s,
            seed=derive_seed(cfg.seed, round_, _TRAIN),
        )
        self.anchor = anchor_alpha(len(fit), s.anchor_docs)
        anchor_weights(self.nlp, start, self.anchor)
        self.stop_docs = len(stop) if stop is not None else 0
        return stats, len(train_ids), len(source)

    def evaluate(self) -> dict[str, Any]:
        """Scores of the current pipeline on every target evaluation set and the source's."""
        return evaluate_sets(self.nlp, self.data)

    def restore(self, records: Sequence[dict[str, Any]]) -> list[int]:
        """Rebuild the labeled set and the pipeline after the recorded rounds (deterministic)."""
        labeled: list[int] = []
        last = records[-1]["round"] if records else 0
        for rec in records[1:]:
            before, new = list(labeled), list(rec["new_ids"])
            labeled.extend(new)
            # reset: only the last round's model matters; warm: replay every round
            if self.cfg.mode == "warm" or rec["round"] == last:
                self.retrain(rec["round"], before, new)
        return labeled

    # --- the loop ------------------------------------------------------------------------
    def run(self, on_round: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Run (or resume) every round; returns all records of the run.

        The run's file is locked meanwhile: a second process on the same run fails at once.

        Args:
            on_round: Called with each newly written record.

        Raises:
            AdaptnerError: another process is writing the run, or its file does not fit.
        """
        with file_lock(self.path.with_name(f".{self.path.stem}.lock"), f"Run {self.path}"):
            return self._run(on_round)

    def _run(self, on_round: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
        records, torn = read_records(self.path)
        check_records(records, self.cfg, self.path)
        if torn:  # drop the torn line (same serialization as append_jsonl: exact floats)
            write_text(
                self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            )
        if run_finished(records, self.sizes, self.path):
            return list(records)
        labeled = self.restore(records)
        round_ = len(records)
        while True:
            start = time.perf_counter()
            new: list[int] = []
            score_s = train_s = 0.0
            stats, n_train, n_source = None, 0, 0
            self.stop_docs = 0
            self.anchor = 1.0
            pool: list[int] = []
            if round_ > 0:
                pool = self.candidates(round_, labeled)
                new = self.query(round_, labeled, pool)
                score_s = time.perf_counter() - start
                t = time.perf_counter()
                stats, n_train, n_source = self.retrain(round_, labeled, new)
                train_s = time.perf_counter() - t
                labeled = [*labeled, *new]
            t = time.perf_counter()
            scores = self.evaluate()
            eval_s = time.perf_counter() - t
            if self.pool_ids is not None:
                pool_left = self.sizes.pool_size - len(labeled)
            else:
                pool_left = self.sizes.target_size - len(labeled)
            record = {
                "run_id": self.cfg.run_id,
                "source": self.cfg.source,
                "target": self.cfg.target,
                "strategy": self.cfg.strategy,
                "mode": self.cfg.mode,
                "seed": self.cfg.seed,
                "source_model": self.cfg.source_model_label,
                "round": round_,
                "protocol": self.cfg.settings.protocol,
                "eval_split": self.cfg.eval_split,
                "eval_set": self.data.primary,
                "heldout_size": len(self.data.heldout_ids),
                "heldout_digest": ids_digest(self.data.heldout_ids),
                "pool_fraction": self.cfg.settings.pool_fraction,
                "target_size": self.sizes.target_size,
                "pool_size": self.sizes.pool_size,
                "pool_left": pool_left,
                "query_size": len(new),
                "labeled_count": len(labeled),
                "labeled_fraction": len(labeled) / self.sizes.target_size,
                "new_ids": new,
                "pool_ids": pool,
                **scores,
                "train_docs": n_train,  # target docs; the trainer also got the source's
                "stop_docs": self.stop_docs,
                "anchor_alpha": self.anchor if round_ > 0 else None,
                "source_replay_docs": n_source,
                "train_epochs": stats.epochs if stats else 0,
                "train_steps": stats.steps if stats else 0,
                "last": len(labeled) >= self.sizes.budget or pool_left == 0,
                "train_seconds": round(train_s, 3),
                "score_seconds": round(score_s, 3),
                "eval_seconds": round(eval_s, 3),
                "round_seconds": round(time.perf_counter() - start, 3),
                "params_hash": self.cfg.params_hash(),
                "params": self.cfg.params(),
            }
            append_jsonl(self.path, record)
            records.append(record)
            if on_round is not None:
                on_round(record)
            if record["last"]:
                return records
            round_ += 1


def evaluate_sets(nlp: Language, data: RunData) -> dict[str, Any]:
    """Span scores on every target evaluation set (``evals``) and on the source's; a doc in
    several sets (``merged``) is predicted once.

    ``target_f1`` / ``target_p`` / ``target_r`` / ``target_per_label`` repeat the primary set's
    scores (``eval_set`` names it).
    """
    # predict each doc once: "merged" shares its docs with "heldout" and "dev"
    unique = {id(d): d for docs in data.evals.values() for d in docs}
    preds = dict(zip(unique, predict(nlp, list(unique.values())), strict=True))
    evals = {
        name: {**ner_prf(docs, [preds[id(d)] for d in docs]), "n_docs": len(docs)}
        for name, docs in data.evals.items()
    }
    main = evals[data.primary]
    source = score_ner(nlp, data.source_eval) if data.source_eval else None
    return {
        "target_f1": main["ents_f"],
        "target_p": main["ents_p"],
        "target_r": main["ents_r"],
        "target_per_label": _f_per_type(main),
        "evals": evals,
        "source_f1": source["ents_f"] if source else None,
        "source_per_label": _f_per_type(source) if source else {},
    }


def _f_per_type(scores: dict[str, Any]) -> dict[str, float]:
    """F per entity type of a :func:`adaptner.scoring.ner_prf` result."""
    return {label: v["f"] for label, v in scores["ents_per_type"].items()}


def run_simulation(
    cfg: SimulationConfig,
    output_dir: str | Path,
    *,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run or resume one simulation; records go to ``<output_dir>/<run_id>.jsonl``.

    Args:
        cfg: The run.
        output_dir: Folder of the per-run JSONL files (e.g. metrics/al).
        on_round: Called with each newly written record (progress reporting).

    Returns:
        Every record of the run (resumed ones first).
    """
    return Simulation(cfg, output_dir).run(on_round)
