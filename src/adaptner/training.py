"""Train a pipeline from a config on a selection of domains, optionally from a source pipeline."""

import io
import sys
import time
from pathlib import Path
from typing import Any

from confection import Config
from spacy import util as spacy_util
from spacy.training.initialize import init_nlp
from spacy.training.loop import train as train_nlp

from .errors import AdaptnerError
from .extensions import install_extensions
from .trf import check_trf_installed
from .util import atomic_path, write_json

PathLike = str | Path


def load_training_config(
    config_path: PathLike,
    *,
    train_path: PathLike | None = None,
    dev_path: PathLike | None = None,
    train_domains: str | None = None,
    dev_domains: str | None = None,
    seed: int | None = None,
    init_from: PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Load a config and apply adaptner's options on top of the user's overrides.

    ``init_from`` sources every pipeline component from an existing pipeline (the
    source-domain model), so training continues from its weights instead of from scratch.

    Raises:
        AdaptnerError: a missing config file, a config error, or a missing pipeline.
    """
    config_path = Path(config_path)
    if not config_path.exists():
        raise AdaptnerError(f"Config file {config_path} does not exist.")
    opts: dict[str, Any] = dict(overrides or {})
    if train_path is not None:
        opts["paths.train"] = str(train_path)
    if dev_path is not None:
        opts["paths.dev"] = str(dev_path)
    if train_domains is not None:
        opts["corpora.train.domains"] = train_domains
    if dev_domains is not None:
        opts["corpora.dev.domains"] = dev_domains
    if seed is not None:
        opts["system.seed"] = seed
    try:
        config = spacy_util.load_config(config_path, overrides=opts, interpolate=False)
    except Exception as e:  # noqa: BLE001 - confection raises many kinds
        raise AdaptnerError(f"Cannot load config {config_path}: {e}") from e
    training = config.get("training", {})
    max_steps, eval_freq = training.get("max_steps"), training.get("eval_frequency")
    if isinstance(max_steps, int) and isinstance(eval_freq, int) and 0 < max_steps < eval_freq:
        # spaCy evaluates at step 0 and every eval_frequency steps: with fewer steps than
        # that, model-best would be the untrained step-0 model.
        training["eval_frequency"] = max_steps
    if init_from is not None:
        init_from = Path(init_from)
        if not (init_from / "config.cfg").exists():
            raise AdaptnerError(
                f"--init-from {init_from} is not a spaCy pipeline directory (no config.cfg)."
            )
        for name in config["nlp"]["pipeline"]:
            config["components"][name] = {"source": str(init_from.resolve())}
    return config


def check_corpus_paths(config: Config) -> None:
    """Fail early, with the path, when the corpus a config names does not exist."""
    paths = config.get("paths", {})
    for key in ("train", "dev"):
        value = paths.get(key)
        if value and not str(value).startswith("${") and not Path(value).exists():
            raise AdaptnerError(
                f"paths.{key} = {value} does not exist. Run `adaptner corpus` first, or "
                f"pass --paths.{key}."
            )


def train_pipeline(
    config_path: PathLike,
    output_dir: PathLike,
    *,
    train_path: PathLike | None = None,
    dev_path: PathLike | None = None,
    train_domains: str = "all",
    dev_domains: str | None = None,
    seed: int = 0,
    init_from: PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    verbose: bool = True,
) -> Path:
    """Train and save a pipeline; returns the directory of the best model.

    The output directory (with ``model-best``, ``model-last`` and ``train_meta.json``)
    is written to a temporary sibling and renamed when training finished, so a killed
    run never leaves a half-trained model in place.

    Args:
        config_path: The training config (e.g. configs/bio_cnn.cfg).
        output_dir: Where model-best/ and model-last/ go.
        train_path / dev_path: Corpus split directories (default: the config's paths).
        train_domains: "all", "news", "news,legal", "all-but:legal".
        dev_domains: Domains used for model selection; default: same as train_domains.
        seed: The one seed for weights init, batching and dropout.
        init_from: Start from this pipeline's weights (the source model).
        overrides: Further config overrides, e.g. {"training.max_steps": 500}.
        verbose: Print spaCy's training table.
    """
    install_extensions()
    config = load_training_config(
        config_path,
        train_path=train_path,
        dev_path=dev_path,
        train_domains=train_domains,
        dev_domains=dev_domains if dev_domains is not None else train_domains,
        seed=seed,
        init_from=init_from,
        overrides=overrides,
    )
    check_corpus_paths(config)
    check_trf_installed(config, f"Config {config_path}")
    output_dir = Path(output_dir)
    start = time.perf_counter()
    out = sys.stdout if verbose else io.StringIO()
    with atomic_path(output_dir, is_dir=True) as tmp:
        try:
            nlp = init_nlp(config, use_gpu=-1)
            train_nlp(nlp, tmp, use_gpu=-1, stdout=out, stderr=out if not verbose else sys.stderr)
        except AdaptnerError:
            raise
        except Exception as e:
            if type(e).__name__ == "ConfigValidationError":
                raise AdaptnerError(f"Config {config_path} is invalid:\n{e}") from e
            init_tok2vec = config.get("paths", {}).get("init_tok2vec")
            if init_tok2vec and "Cannot deserialize model" in str(e):
                raise AdaptnerError(
                    f"The pretrained weights {init_tok2vec} do not fit the tok2vec of "
                    f"{config_path}. Pretrain with the same config: `adaptner pretrain "
                    f"{config_path} -o <dir>`."
                ) from e
            if isinstance(e, OSError) or type(e).__module__.startswith("huggingface_hub"):
                name = config.get("paths", {}).get("transformer")
                raise AdaptnerError(
                    f"Cannot load the transformer {name!r} ({type(e).__name__}: {e}). "
                    "Without the hub, point --paths.transformer at a local model directory "
                    "(e.g. one made by `adaptner tiny-bert`)."
                ) from e
            raise
        seconds = time.perf_counter() - start
        write_json(
            tmp / "train_meta.json",
            {
                "config": str(config_path),
                "train_domains": train_domains,
                "dev_domains": dev_domains if dev_domains is not None else train_domains,
                "seed": seed,
                "init_from": str(init_from) if init_from else None,
                "overrides": {k: v for k, v in (overrides or {}).items()},
                "train_seconds": round(seconds, 2),
            },
        )
    return output_dir / "model-best"

