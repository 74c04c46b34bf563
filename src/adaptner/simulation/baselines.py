"""Reference points for the learning curves: source only, full target, source + target jointly."""

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spacy.tokens import Doc

from ..errors import AdaptnerError
from ..update.features import feature_dir
from ..update.trainers import get_round_trainer, prepare_trainer, resolve_trainer
from ..util import write_json
from .config import (
    ALSettings,
    SimulationConfig,
    derive_seed,
    fixed_params,
    model_suffix,
    source_slug,
)
from .engine import (
    RunData,
    evaluate_sets,
    load_pipeline,
    load_run_data,
    source_domains_for,
    stopping_split,
)
from .pipelines import TrainTask, ensure_trained

#: Baseline kinds:
#: - source_only: the source pipeline as it is (also round 0 of every run);
#: - target_full: the source pipeline trained on the whole target train set (without the
#:   held-out evaluation set) with the same round trainer as the AL rounds (the curve's
#:   "100 % labeled" end);
#: - target_finetune: the source pipeline with every component fine-tuned (round trainer
#:   ``fine_tune``, ``reference_epochs`` / ``reference_learn_rate``) on the same docs; the
#:   report measures "95 % / 99 % of the reference" against the stronger of the two;
#: - target_only: a pipeline trained from scratch on the target train set (training config);
#: - joint: trained from scratch on source + target train sets together (training config).
#: target_only and joint train on a copy of the corpus without the held-out docs.
BASELINES: tuple[str, ...] = (
    "source_only",
    "target_full",
    "target_finetune",
    "target_only",
    "joint",
)
#: The references "95 % of the reference" may use (the stronger one counts).
REFERENCES: tuple[str, ...] = ("target_full", "target_finetune")
#: The baselines that start from the source pipeline (the others train from scratch).
FROM_SOURCE: tuple[str, ...] = ("source_only", *REFERENCES)


#: Settings of the AL rounds that no baseline uses (the references keep their whole update).
ROUND_ONLY_SETTINGS: tuple[str, ...] = ("anchor_docs",)


def finetune_settings(settings: ALSettings) -> ALSettings:
    """The settings of the ``target_finetune`` reference: round trainer ``fine_tune`` with
    ``reference_epochs`` (0 = ``epochs``) and ``reference_learn_rate`` (None = ``learn_rate``)."""
    return dataclasses.replace(
        settings,
        trainer="fine_tune",
        epochs=settings.reference_epochs or settings.epochs,
        learn_rate=settings.reference_learn_rate or settings.learn_rate,
    )


def reference_docs(data: RunData, settings: ALSettings) -> list[Doc]:
    """What the references (``target_full``, ``target_finetune``) train on: every target train
    doc AL may label (the held-out docs excluded).

    The one place to add what the rounds add to their labels (e.g. a sample of source docs
    when the simulation config replays the source), so a reference sees the same mix.
    """
    return data.al_docs()


@dataclass
class BaselineConfig:
    """One baseline of one (source, target, seed).

    Attributes:
        source / target / seed / settings / source_model / corpus_dir / eval_split /
            source_index / source_model_label: as in
            :class:`~adaptner.simulation.config.SimulationConfig` (a grid sets
            ``source_index`` only for the kinds in :data:`FROM_SOURCE`).
        kind: One of :data:`BASELINES`.
        train_config: The training config for ``target_only`` and ``joint`` (e.g.
            configs/bio_cnn.cfg); model selection uses the dev split of the trained domains.
        models_dir: ``target_only`` / ``joint`` pipelines go to
            ``<models_dir>/baselines/<baseline_id>/``.
    """

    source: str
    target: str
    kind: str
    seed: int
    settings: ALSettings
    source_model: Path
    train_config: Path
    corpus_dir: Path = Path("corpus")
    eval_split: str = "dev"
    models_dir: Path = Path("training")
    source_index: int | None = None
    source_model_label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in BASELINES:
            raise AdaptnerError(
                f"Unknown baseline {self.kind!r}; choose from {', '.join(BASELINES)}."
            )
        self.source_model_label = self.source_model_label or str(self.source_model)

    @property
    def baseline_id(self) -> str:
        """``<source>_<target>_<kind>_s<seed>`` (the JSON file stem); with a
        ``source_index``, ``..._<kind>_m<source_index>_s<seed>``."""
        return (
            f"{source_slug(self.source)}_{self.target}_{self.kind}"
            f"{model_suffix(self.source_index)}_s{self.seed}"
        )

    def params(self) -> dict[str, Any]:
        """What determines the result (paths excluded)."""
        out = {
            "source": self.source,
            **({} if self.source_index is None else {"source_index": self.source_index}),
            "target": self.target,
            "kind": self.kind,
            "seed": self.seed,
            "eval_split": self.eval_split,
            **{k: v for k, v in self.settings.as_dict().items() if k not in ROUND_ONLY_SETTINGS},
        }
        if self.kind in ("target_only", "joint"):
            out["train_config"] = Path(self.train_config).name
        return out

    def train_task(self) -> TrainTask | None:
        """The from-scratch training of ``target_only`` / ``joint`` (None for the others).

        ``target_only`` does not depend on the source, so its pipeline is shared by every
        source of a grid; ``train_limit`` applies to it (the first N target train docs).
        """
        models = Path(self.models_dir) / "baselines"
        s = self.settings
        holdout = (self.target, s.eval_holdout, s.holdout_seed, s.train_limit)
        if self.kind == "target_only":
            return TrainTask(
                name=f"{self.target} target_only s{self.seed}",
                train_domains=self.target,
                train_config=Path(self.train_config),
                corpus_dir=Path(self.corpus_dir),
                model_dir=models / f"{self.target}_target_only_s{self.seed}",
                seed=self.seed,
                holdout=holdout,
            )
        if self.kind == "joint":
            sources = source_domains_for(self.source, Path(self.corpus_dir) / "train")
            return TrainTask(
                name=f"{self.source} + {self.target} joint s{self.seed}",
                train_domains=",".join(dict.fromkeys([*sources, self.target])),
                train_config=Path(self.train_config),
                corpus_dir=Path(self.corpus_dir),
                model_dir=models / self.baseline_id,
                seed=self.seed,
                holdout=holdout,
            )
        return None

    def as_run(self) -> SimulationConfig:
        """A run config with the same data settings (to reuse the run's data loading)."""
        return SimulationConfig(
            source=self.source,
            target=self.target,
            strategy="random",
            mode="reset",
            seed=self.seed,
            settings=self.settings,
            source_model=self.source_model,
            corpus_dir=self.corpus_dir,
            eval_split=self.eval_split,
            source_index=self.source_index,
            source_model_label=self.source_model_label,
        )


def baseline_path(cfg: BaselineConfig, output_dir: str | Path) -> Path:
    """``<output_dir>/baselines/<baseline_id>.json``."""
    return Path(output_dir) / "baselines" / f"{cfg.baseline_id}.json"


def run_baseline(cfg: BaselineConfig, output_dir: str | Path) -> dict[str, Any]:
    """Compute (or read back) one baseline's target and source scores.

    The result is written atomically to :func:`baseline_path`; an existing file with the
    same parameters is returned as it is (resume).

    Raises:
        AdaptnerError: an existing result with other parameters, or a missing corpus/model.
    """
    path = baseline_path(cfg, output_dir)
    params = json.loads(json.dumps(cfg.params()))
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf8"))
        except json.JSONDecodeError:
            old = None
        if old is not None:
            if fixed_params(old.get("params") or {}) != fixed_params(params):
                raise AdaptnerError(
                    f"{path} was written with different parameters; delete it or write to "
                    "another --output directory."
                )
            return old
    start = time.perf_counter()
    s = cfg.settings
    if cfg.kind == "target_finetune" and finetune_settings(s) == s:
        # the round trainer already fine-tunes everything with these settings: one result
        same = dataclasses.replace(cfg, kind="target_full")
        result = {**run_baseline(same, output_dir), "same_as": "target_full"}
        result.update(baseline_id=cfg.baseline_id, kind=cfg.kind, params=params)
        write_json(path, result)
        return result
    stop_docs = n_docs = 0
    if cfg.kind in ("source_only", "target_full", "target_finetune"):
        if cfg.kind == "target_finetune":
            s = finetune_settings(s)
        nlp = load_pipeline(cfg.source_model)
        data = load_run_data(cfg.as_run(), nlp.vocab)
        trainer = get_round_trainer(resolve_trainer(nlp, s.trainer))
        # source_only too: the cached trainer's pipeline predicts from cached outputs
        prepare_trainer(trainer, nlp, data.all_docs(), cache_dir=feature_dir(output_dir))
        if cfg.kind != "source_only":
            docs = reference_docs(data, s)
            n_docs = len(docs)
            fit, stop = stopping_split(docs, data.dev, s, derive_seed(cfg.seed, 0, 5))
            trainer(nlp, fit, stop, settings=s, seed=derive_seed(cfg.seed, 0, 4))
            stop_docs = len(stop) if stop is not None else 0
        train_domains = None
    else:
        task = cfg.train_task()
        assert task is not None
        train_domains = task.train_domains
        best = ensure_trained(task)
        nlp = load_pipeline(best)
        data = load_run_data(cfg.as_run(), nlp.vocab)
    scores = evaluate_sets(nlp, data)
    result = {
        "baseline_id": cfg.baseline_id,
        "source": cfg.source,
        "target": cfg.target,
        "kind": cfg.kind,
        "seed": cfg.seed,
        "source_model": cfg.source_model_label if cfg.kind in FROM_SOURCE else None,
        "eval_split": cfg.eval_split,
        "eval_set": data.primary,
        "train_domains": train_domains,
        "train_docs": n_docs if cfg.kind in REFERENCES else None,
        "stop_docs": stop_docs,
        "trainer": s.trainer if cfg.kind in REFERENCES else None,
        "target_f1": scores["target_f1"],
        "target_per_label": scores["target_per_label"],
        "evals": scores["evals"],
        "source_f1": scores["source_f1"],
        "source_per_label": scores["source_per_label"],
        "seconds": round(time.perf_counter() - start, 3),
        "params": params,
    }
    write_json(path, result)
    return result
