"""Train a pipeline from a config on a selection of domains, optionally from a source pipeline."""

import contextlib
import io
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confection import Config
from spacy import util as spacy_util
from spacy.training.initialize import init_nlp

from .encoders.lower_cache import flush_pipeline_caches
from .errors import AdaptnerError
from .extensions import install_extensions
from .train_loop import CHECKPOINT, check_resumable, read_checkpoint_state, train_loop
from .trf import check_trf_installed
from .util import (
    atomic_output,
    check_output_dir,
    closest_hint,
    file_lock,
    relative_to_cwd,
    write_json,
)

PathLike = str | Path

#: Top-level sections of a training config (spaCy's schema plus [paths] and [system]).
_FREE_SECTIONS = ("paths", "system", "components", "corpora")


def _schema_fields() -> dict[str, list[str]]:
    """Known keys of the sections spaCy validates, from spaCy's own schemas."""
    from spacy import schemas

    def names(model: Any) -> list[str]:
        fields = getattr(model, "model_fields", None) or getattr(model, "__fields__", {})
        return list(fields)

    return {
        "training": names(schemas.ConfigSchemaTraining),
        "nlp": names(schemas.ConfigSchemaNlp),
        "initialize": names(schemas.ConfigSchemaInit),
        "pretraining": names(schemas.ConfigSchemaPretrain),
    }


def config_names(text: str) -> dict[str, list[str]]:
    """Top-level sections of a config's text and the names right under each (keys, subsections).

    Read from the text itself, so that a misspelt section that confection cannot parse
    (``[training.batcher]`` without ``[training]``) can still be named.
    """
    names: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        header = re.fullmatch(r"\[([^\]]+)\]", line)
        if header:
            current = header.group(1).strip().split(".")
            keys = names.setdefault(current[0], [])
            if len(current) > 1 and current[1] not in keys:
                keys.append(current[1])
            continue
        key = re.match(r"([A-Za-z_@][\w@-]*)\s*=", line)
        if key and len(current) == 1 and key.group(1) not in names[current[0]]:
            names[current[0]].append(key.group(1))
    return names


def check_config_names(
    sections: dict[str, list[str]], where: str, overrides: dict[str, Any] | None = None
) -> None:
    """Name unknown or misspelt sections and keys of a training config in one line.

    Args:
        sections: Top-level section -> names right under it (see :func:`config_names`).
        where: The config file, for the message.
        overrides: ``{"section.key": value}`` the user gave; their names are checked too.

    Raises:
        AdaptnerError: every unknown name, each with the closest valid one.
    """
    fields = _schema_fields()
    known_sections = [*_FREE_SECTIONS, *fields]
    problems = []
    for name in sections:
        if name not in known_sections:
            problems.append(f"unknown section [{name}]{closest_hint(name, known_sections, '[]')}")
    for name, keys in fields.items():
        for key in sections.get(name, []):
            if key not in keys:
                problems.append(
                    f"unknown key {key!r} in [{name}]{closest_hint(key, keys, name + '.')}"
                )
    for dotted in overrides or {}:
        section, _, rest = dotted.partition(".")
        key = rest.split(".", 1)[0]
        if section not in sections:
            problems.append(
                f"override --{dotted}: no section [{section}]"
                f"{closest_hint(section, list(sections), '--', suffix='.' + rest)}"
            )
        elif section in fields and key and key not in fields[section]:
            problems.append(
                f"override --{dotted}: unknown key {key!r} in [{section}]"
                f"{closest_hint(key, fields[section], '--' + section + '.')}"
            )
        elif section not in fields and "." not in rest and rest not in sections[section]:
            problems.append(
                f"override --{dotted}: no key {rest!r} in [{section}]"
                f"{closest_hint(rest, sections[section], '--' + section + '.')}"
            )
    if problems:
        raise AdaptnerError(f"Config {where}: " + "; ".join(problems) + ".")


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
        raise AdaptnerError(
            f"Config file {config_path} does not exist{relative_to_cwd(config_path)}."
        )
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
        text = config_path.read_text(encoding="utf8")
    except (OSError, UnicodeDecodeError) as e:
        raise AdaptnerError(f"Cannot read config {config_path}: {e}") from e
    check_config_names(config_names(text), str(config_path), overrides)
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


#: The corpus options of the training commands, their config keys and defaults.
CORPUS_OPTIONS = {"train": ("paths.train", "corpus/train"), "dev": ("paths.dev", "corpus/dev")}


def corpus_options(
    overrides: dict[str, Any], **options: PathLike | None
) -> dict[str, Path]:
    """Where the CLI's ``--train`` / ``--dev`` options and ``--paths.train`` / ``--paths.dev``
    overrides meet: one value per corpus path, by one rule.

    An explicit value wins over the default (``corpus/train``, ``corpus/dev``, relative to
    the working directory, as in a spaCy project), whether it came as ``--train DIR`` or as
    ``--paths.train DIR``; both at once must agree.

    Args:
        overrides: The ``--section.key value`` overrides (left as they are).
        options: ``train=`` / ``dev=`` option values, None when not given.

    Raises:
        AdaptnerError: ``--train`` and ``--paths.train`` name different paths.
    """
    resolved = {}
    for name, value in options.items():
        key, default = CORPUS_OPTIONS[name]
        override = overrides.get(key)
        if value is not None and override is not None and Path(value) != Path(str(override)):
            raise AdaptnerError(
                f"--{name} {value} and --{key} {override} name different corpora: pass one."
            )
        chosen = value if value is not None else override if override is not None else default
        resolved[name] = Path(str(chosen))
    return resolved


def check_corpus_paths(config: Config) -> None:
    """Fail early, with the path, when the corpus a config names does not exist."""
    paths = config.get("paths", {})
    for key in ("train", "dev"):
        value = paths.get(key)
        if value and not str(value).startswith("${") and not Path(value).exists():
            raise AdaptnerError(
                f"paths.{key} = {value} does not exist{relative_to_cwd(value)}. Run `adaptner "
                f"corpus` there first, or pass --{key} DIR (the same as --paths.{key} DIR)."
            )


def _init_error(e: Exception, config: Config, config_path: PathLike) -> AdaptnerError | None:
    """The AdaptnerError for an exception while initializing the pipeline (before training).

    Only the errors each branch means get one; for anything else (a disk-full ``OSError``
    included, which :func:`adaptner.util.atomic_path` names) it is None: raise it as it is.
    """
    if type(e).__name__ == "ConfigValidationError":
        return AdaptnerError(f"Config {config_path} is invalid:\n{e}")
    paths = config.get("paths", {})
    init_tok2vec = paths.get("init_tok2vec")
    if init_tok2vec and "Cannot deserialize model" in str(e):
        return AdaptnerError(
            f"The pretrained weights {init_tok2vec} do not fit the tok2vec of "
            f"{config_path}. Pretrain with the same config: `adaptner pretrain "
            f"{config_path} -o <dir>`."
        )
    name = paths.get("transformer")
    # transformers says "Can't load ..." with an OSError that carries no errno; the hub client
    # raises its own types. An OSError with an errno (disk full, permission) is not about the hub.
    from_hub = type(e).__module__.startswith("huggingface_hub") or (
        isinstance(e, OSError) and e.errno is None
    )
    if name and from_hub:
        return AdaptnerError(
            f"Cannot load the transformer {name!r} ({type(e).__name__}: {e}). "
            "Without the hub, point --paths.transformer at a local model directory "
            "(e.g. one made by `adaptner tiny-bert`)."
        )
    return None


class _Renamed(io.TextIOBase):
    """A text stream that writes ``old`` path names as ``new`` ones."""

    def __init__(self, stream: Any, old: Path, new: Path) -> None:
        self.stream, self.old, self.new = stream, str(old), str(new)

    def write(self, text: str) -> int:
        self.stream.write(text.replace(self.old, self.new))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


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
    force: bool = False,
    log: Callable[[str], None] | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> Path:
    """Train and save a pipeline; returns the directory of the best model.

    The output directory (with ``model-best``, ``model-last`` and ``train_meta.json``)
    is written to a temporary sibling and renamed when training finished, so a killed
    run never leaves a half-trained model in place (its temporary is removed by the next
    run). An existing directory that ``train`` did not write is refused unless ``force``
    (see :func:`adaptner.util.atomic_output`).

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
        force: Replace an existing output directory that ``train`` did not write.
        log: Where messages about the output go (default: stderr).
        checkpoint_every: Save a checkpoint every N steps (0: none; -1: at every evaluation,
            the config's ``eval_frequency``). The run then works in
            ``.<output name>.run`` beside the output, which a stopped or killed run leaves
            behind for ``resume``.
        resume: Continue the interrupted run of this output from its last checkpoint (a
            new run starts when there is none).

    Raises:
        AdaptnerError: a config, corpus or output problem (named).
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
    if checkpoint_every < 0:  # at every evaluation
        checkpoint_every = int(config["training"].get("eval_frequency") or 0)
    if resume and not checkpoint_every:
        raise AdaptnerError("--resume needs checkpoints: --checkpoint-every must not be 0.")
    work = run_dir(output_dir) if checkpoint_every else None
    with contextlib.ExitStack() as stack:
        resumed_at = 0
        if work is not None:
            check_output_dir(output_dir, "train", force=force, owned_files=("train_meta.json",))
            lock = work.with_name(work.name + ".lock")
            stack.enter_context(file_lock(lock, f"training {output_dir}"))
            stack.callback(lock.unlink, missing_ok=True)  # before the lock is released
            resumed_at = _prepare_run_dir(work, output_dir, resume=resume, force=force, log=log)
        tmp = stack.enter_context(
            atomic_output(
                output_dir, "train", force=force, owned_files=("train_meta.json",), log=log,
                work=work,
            )
        )  # fmt: skip
        # the loop names the directory it writes (the temporary): show the final one instead
        out = _Renamed(sys.stdout, tmp, output_dir) if verbose else io.StringIO()
        try:
            nlp = init_nlp(config, use_gpu=-1)
        except AdaptnerError:
            raise
        except Exception as e:
            error = _init_error(e, config, config_path)
            if error is None:
                raise
            raise error from e
        try:
            if resumed_at:
                check_resumable(tmp / CHECKPOINT, nlp.config.to_str())
            final = train_loop(
                nlp, tmp, checkpoint_every=checkpoint_every, resume=bool(resumed_at),
                stdout=out, stderr=out if not verbose else sys.stderr,
                on_checkpoint=flush_pipeline_caches,
            )  # fmt: skip
            flush_pipeline_caches(nlp)
        except Exception as e:
            if type(e).__name__ == "ConfigValidationError":
                raise AdaptnerError(f"Config {config_path} is invalid:\n{e}") from e
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
                "resumed_at_step": resumed_at or None,
                "steps": final.step,
                "loop_seconds": round(final.seconds, 2),
                "evaluations": [{"step": step, "score": score} for score, step in final.results],
            },
        )
    return output_dir / "model-best"


def run_dir(output_dir: Path) -> Path:
    """Where a checkpointed run of ``output_dir`` works until it is finished."""
    return output_dir.with_name(f".{output_dir.name}.run")


def _prepare_run_dir(
    work: Path, output_dir: Path, *, resume: bool, force: bool, log: Callable[[str], None] | None
) -> int:
    """Decide what to do with an earlier run's working directory; returns the step resumed at.

    Raises:
        AdaptnerError: an interrupted run is there and neither --resume nor --force was given.
    """
    say = log or (lambda m: print(m, file=sys.stderr))
    ckpt = work / CHECKPOINT
    if not work.exists():
        if resume:
            say(f"ℹ nothing to resume for {output_dir}: starting a new run")
        return 0
    if not ckpt.exists():
        shutil.rmtree(work)
        say(f"ℹ removed {work}, left by a run that stopped before its first checkpoint")
        return 0
    state = read_checkpoint_state(ckpt)
    if resume:
        say(f"ℹ resuming {output_dir} at step {state.step} (of {state.max_steps or 'no limit'})")
        return state.step
    if force:
        shutil.rmtree(work)
        say(f"ℹ removed the interrupted run {work} (step {state.step}): --force starts over")
        return 0
    raise AdaptnerError(
        f"An interrupted run of {output_dir} is in {work} (checkpoint at step {state.step} of "
        f"{state.max_steps or 'no limit'}). Rerun with --resume to continue it, or with --force "
        "to start over."
    )

