"""`adaptner train`: train a pipeline on a selection of domains."""

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command(
        "train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(train_cmd)


def parse_overrides(args: list[str]) -> dict:
    """`--section.key value` pairs (as in `spacy train`) to a dict of overrides."""
    from spacy.cli._util import parse_config_overrides

    return parse_config_overrides(args)


def training_config(value: Path | None) -> Path | None:
    """The CONFIG argument: a .cfg path, or a shipped config's name found from anywhere."""
    from ..util import find_config

    return None if value is None else find_config(value, "Config file")


#: What the CONFIG arguments' help says about the values they take.
CONFIG_HELP = "a .cfg path or the name of one that ships with adaptner (bio_cnn, bio_trf_e5, ...)"

#: --force of the commands that write a directory under the output policy.
FORCE_OPTION = typer.Option(
    False, "--force", help="Replace --output even if this command did not write it."
)

TRAIN_OPTION = typer.Option(
    None, "--train", help="Train split directory (default corpus/train; same as --paths.train)."
)
DEV_OPTION = typer.Option(
    None, "--dev", help="Dev split directory (default corpus/dev; same as --paths.dev)."
)


def overrides_and_corpus(
    ctx: typer.Context, train: Path | None, dev: Path | None
) -> tuple[dict, Path, Path]:
    """The config overrides and the train / dev directories, by one rule (explicit wins)."""
    from ..training import corpus_options

    overrides = parse_overrides(ctx.args)
    paths = corpus_options(overrides, train=train, dev=dev)
    return overrides, paths["train"], paths["dev"]


def train_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(
        ..., help=f"Training config: {CONFIG_HELP}.", callback=training_config
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Output directory; model-best/ and model-last/ go inside."
    ),
    domains: str = typer.Option(
        "all", "--domains", "-d", help="Training domains: all | news | news,legal | all-but:legal."
    ),
    dev_domains: str | None = typer.Option(
        None, "--dev-domains", help="Domains for model selection (default: same as --domains)."
    ),
    train_path: Path | None = TRAIN_OPTION,
    dev_path: Path | None = DEV_OPTION,
    seed: int = typer.Option(0, "--seed", help="The one seed for init, batching and dropout."),
    init_from: Path | None = typer.Option(
        None, "--init-from", help="Start from this trained pipeline (e.g. the source model)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No training table."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace --output even if `adaptner train` did not write it (the old contents stay "
        "until the new model is complete); with an interrupted run there, start over.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the interrupted run of --output from its last checkpoint (weights, "
        "optimizer, schedule, random state, place in the data); starts a new run if there is "
        "none. Use the same config and options.",
    ),
    checkpoint_every: int = typer.Option(
        -1,
        "--checkpoint-every",
        help="Save a checkpoint every N steps, so a stopped run loses at most N (-1: at every "
        "evaluation; 0: no checkpoints and no --resume). Until it finishes, the run works in "
        "`.<output name>.run` beside --output.",
    ),
) -> None:
    """Train a pipeline. Extra `--section.key value` arguments override the config.

    bio_trf_e5: `--components.bio_ner.model.tok2vec.mix_layers 4`: the head mixes the last 4 layers.

    `--initialize.after_init.cache_layers 8` caches the encoder's bottom 8 layers.
    """
    from ..training import train_pipeline

    overrides, train_path, dev_path = overrides_and_corpus(ctx, train_path, dev_path)
    best = train_pipeline(
        config,
        output,
        train_path=train_path,
        dev_path=dev_path,
        train_domains=domains,
        dev_domains=dev_domains,
        seed=seed,
        init_from=init_from,
        overrides=overrides,
        verbose=not quiet,
        force=force,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
    typer.echo(f"✔ trained on {domains} (seed {seed}) -> {best}")
