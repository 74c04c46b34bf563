"""Reference points for the learning curves: source only, full target, source + target jointly."""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import AdaptnerError
from ..update.features import feature_dir
from ..update.trainers import get_round_trainer, prepare_trainer, resolve_trainer
from ..util import write_json
from .config import ALSettings, SimulationConfig, derive_seed, source_slug
from .engine import evaluate_sets, load_pipeline, load_run_data, source_domains_for
from .pipelines import TrainTask, ensure_trained

#: Baseline kinds:
#: - source_only: the source pipeline as it is (also round 0 of every run);
#: - target_full: the source pipeline fine-tuned on the whole target train set (without the
#:   held-out evaluation set) with the same round trainer as the AL rounds (the curve's
#:   "100 % labeled" end; the reference for "95 % / 99 % of full-target F1");
#: - target_only: a pipeline trained from scratch on the target train set (training config);
#: - joint: trained from scratch on source + target train sets together (training config).
#: target_only and joint train on a copy of the corpus without the held-out docs.
BASELINES: tuple[str, ...] = ("source_only", "target_full", "target_only", "joint")


@dataclass
class BaselineConfig:
    """One baseline of one (source, target, seed).

    Attributes:
        source / target / seed / settings / source_model / corpus_dir / eval_split: as in
            :class:`~adaptner.simulation.config.SimulationConfig`.
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

    def __post_init__(self) -> None:
        if self.kind not in BASELINES:
            raise AdaptnerError(
                f"Unknown baseline {self.kind!r}; choose from {', '.join(BASELINES)}."
            )

    @property
    def baseline_id(self) -> str:
        """``<source>_<target>_<kind>_s<seed>`` (the JSON file stem)."""
        return f"{source_slug(self.source)}_{self.target}_{self.kind}_s{self.seed}"

    def params(self) -> dict[str, Any]:
        """What determines the result (paths excluded)."""
        out = {
            "source": self.source,
            "target": self.target,
            "kind": self.kind,
            "seed": self.seed,
            "eval_split": self.eval_split,
            **asdict(self.settings),
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
            if old.get("params") != params:
                raise AdaptnerError(
                    f"{path} was written with different parameters; delete it or write to "
                    "another --output directory."
                )
            return old
    start = time.perf_counter()
    s = cfg.settings
    if cfg.kind in ("source_only", "target_full"):
        nlp = load_pipeline(cfg.source_model)
        data = load_run_data(cfg.as_run(), nlp.vocab)
        trainer = get_round_trainer(resolve_trainer(nlp, s.trainer))
        # source_only too: the cached trainer's pipeline predicts from cached outputs
        prepare_trainer(trainer, nlp, data.all_docs(), cache_dir=feature_dir(output_dir))
        if cfg.kind == "target_full":
            trainer(nlp, data.al_docs(), data.dev, settings=s, seed=derive_seed(cfg.seed, 0, 4))
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
        "eval_split": cfg.eval_split,
        "eval_set": data.primary,
        "train_domains": train_domains,
        "train_docs": len(data.al_ids) if cfg.kind == "target_full" else None,
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
