"""`adaptner evaluate` and `adaptner matrix`: per-domain scores and the cross-domain table."""

from pathlib import Path

import typer

from .train import CONFIG_HELP, DEV_OPTION, TRAIN_OPTION, overrides_and_corpus, training_config


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)
    app.command(
        "matrix",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(matrix_cmd)


def evaluate_cmd(
    model_dir: Path = typer.Argument(
        ..., help="A trained pipeline that sets doc.ents, e.g. training/news/model-best."
    ),
    data: Path = typer.Option(
        Path("corpus/dev"),
        "--data",
        help="Split directory with <domain>.spacy files (or one .spacy file) to score.",
    ),
    domains: str = typer.Option(
        "all", "--domains", "-d", help="Domains to score: all | news | news,legal | all-but:legal."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Write the report as JSON here (and Markdown beside it, .md). Default: print only.",
    ),
    batch_size: int = typer.Option(
        256, "--batch-size", "-b", min=1, help="nlp.pipe batch size (also for the speed figure)."
    ),
) -> None:
    """Span P/R/F per domain and label (spaCy's scorer, checked against seqeval), micro, macro,
    and speed."""
    from ..evaluation import check_report_output, evaluate_model, format_summary, write_report

    if output is not None:
        check_report_output(output)
    report = evaluate_model(model_dir, data, domains=domains, batch_size=batch_size, progress=True)
    format_summary(report, log=typer.echo)
    agreement = report["agreement"]
    if not agreement["ok"]:
        typer.secho(
            f"⚠ seqeval and spaCy's scorer differ by {agreement['max_abs_diff']:.2e}",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if output is not None:
        json_path, md_path = write_report(report, output)
        typer.echo(f"✔ scored on {report['split']} -> {json_path} and {md_path}")
    else:
        typer.echo(f"✔ scored on {report['split']}")


def matrix_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(
        ..., help=f"Training config: {CONFIG_HELP}.", callback=training_config
    ),
    domains: str = typer.Option(
        "news,conversation,legal,social_media,web,wiki_books",
        "--domains",
        "-d",
        help="Row and column domains (dannet/unknown are left out by default: too small).",
    ),
    joint: str | None = typer.Option(
        None,
        "--joint",
        help="Source domain: adds rows trained on SOURCE+target for every other domain.",
    ),
    train_path: Path | None = TRAIN_OPTION,
    dev_path: Path | None = DEV_OPTION,
    data: Path = typer.Option(
        Path("corpus/dev"), "--data", help="Split directory scored for the matrix cells."
    ),
    models_dir: Path = typer.Option(
        Path("training/matrix"), "--models-dir", help="Row models go to <models-dir>/<row>/."
    ),
    output: Path = typer.Option(
        Path("metrics/matrix.json"),
        "--output",
        "-o",
        help="Matrix JSON; the Markdown table (.md) and heatmap (.png) are written beside it.",
    ),
    seed: int = typer.Option(0, "--seed", help="The one seed for every training."),
    retrain: bool = typer.Option(
        False, "--retrain", help="Retrain rows whose model-best already exists."
    ),
    batch_size: int = typer.Option(
        256, "--batch-size", "-b", min=1, help="nlp.pipe batch size for scoring."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show spaCy's training tables."),
) -> None:
    """Train one model per domain and score each on every domain: the cross-domain F1 table.

    Extra `--section.key value` arguments override the config (e.g. --training.max_steps 20).
    """
    from tqdm import tqdm

    from ..matrix import run_matrix

    overrides, train_path, dev_path = overrides_and_corpus(ctx, train_path, dev_path)
    matrix = run_matrix(
        config,
        domains=domains,
        joint=joint,
        train_path=train_path,
        dev_path=dev_path,
        data=data,
        models_dir=models_dir,
        output=output,
        seed=seed,
        overrides=overrides,
        retrain=retrain,
        batch_size=batch_size,
        verbose=verbose,
        progress=True,
        log=tqdm.write,
    )
    typer.echo(
        f"✔ {len(matrix['rows'])} x {len(matrix['cols'])} matrix scored on {matrix['split']}"
    )
