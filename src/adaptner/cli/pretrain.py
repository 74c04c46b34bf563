"""`adaptner pretrain`: domain-adaptive pretraining of the CNN tok2vec on unlabeled text."""

import json
from pathlib import Path

import typer

from .train import CONFIG_HELP, training_config


def register(app: typer.Typer) -> None:
    app.command(
        "pretrain",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(pretrain_cmd)


def pretrain_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(
        ...,
        help=f"Training config with a CNN tok2vec and a filled pretraining section: {CONFIG_HELP}.",
        callback=training_config,
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Output directory; the weights are <output>/model-last.bin."
    ),
    domains: str = typer.Option(
        "all",
        "--domains",
        "-d",
        help="Corpus domains whose texts are used (labels ignored): all | news,legal | "
        "all-but:legal | none (pool only).",
    ),
    corpus: list[Path] = typer.Option(
        [Path("corpus/train")],
        "--corpus",
        "-c",
        help="Split directory with <domain>.spacy files (repeat for several). Adding corpus/dev "
        "makes dev scores transductive.",
    ),
    pool: list[Path] = typer.Option(
        [],
        "--pool",
        "-p",
        help='Target-pool file to add (.spacy, .jsonl with "text", or one sentence per line); '
        "repeat for several.",
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", "-e", help="Epochs, at least 1 (default: pretraining.max_epochs)."
    ),
    limit: int = typer.Option(
        0, "--limit", help="Use at most this many texts, after shuffling (0 = all)."
    ),
    seed: int = typer.Option(0, "--seed", help="The one seed for shuffles, init and dropout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace --output even if this command did not write it (the old contents stay "
        "until the new output is complete).",
    ),
) -> None:
    """Pretrain the tok2vec of CONFIG with spaCy's character objective on unlabeled Danish text.

    Extra `--section.key value` arguments override the config. Train with the same config
    and `--paths.init_tok2vec <output>/model-last.bin` to start from these weights.
    """
    from ..pretrain import META_NAME, run_pretraining
    from .train import parse_overrides

    weights = run_pretraining(
        config,
        output,
        corpus_dirs=corpus,
        domains=domains,
        pools=pool,
        epochs=epochs,
        limit=limit,
        seed=seed,
        overrides=parse_overrides(ctx.args),
        progress=not quiet,
        log=typer.echo,
        force=force,
    )
    meta = json.loads((output / META_NAME).read_text(encoding="utf8"))
    losses = list(meta["epoch_loss"].values())
    loss = f"; epoch loss {losses[0]:.0f} -> {losses[-1]:.0f}" if losses else ""
    typer.echo(
        f"✔ pretrained {meta['component']} on {meta['texts']} texts "
        f"({meta['words_per_epoch']} words) for {meta['epochs']} epoch(s) in "
        f"{meta['seconds']:.0f} s{loss} -> {weights}"
    )
    typer.echo(f"Train with: adaptner train {config} -o <dir> --paths.init_tok2vec {weights}")
