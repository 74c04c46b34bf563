"""`adaptner datamap` and `adaptner aum`: training dynamics, data maps and label-noise flags."""

from pathlib import Path

import typer

from .train import (
    CONFIG_HELP,
    DEV_OPTION,
    FORCE_OPTION,
    TRAIN_OPTION,
    overrides_and_corpus,
    training_config,
)

DEFAULT_CONFIG = Path("bio_cnn")


def register(app: typer.Typer) -> None:
    extra = {"allow_extra_args": True, "ignore_unknown_options": True}
    app.command("datamap", context_settings=extra)(datamap_cmd)
    app.command("aum", context_settings=extra)(aum_cmd)


def _check_positive(name: str, value: int) -> None:
    from ..errors import AdaptnerError

    if value < 1:
        raise AdaptnerError(f"{name} must be at least 1, got {value}.")


def datamap_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(
        DEFAULT_CONFIG,
        help=f"Training config with a bio_ner component: {CONFIG_HELP} (ignored with "
        "--dynamics).",
        callback=training_config,
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Output folder: tables, PNGs, hardest.md, summary.json."
    ),
    domains: str = typer.Option(
        "all", "--domains", "-d", help="Training domains: all | news | news,legal | all-but:legal."
    ),
    dynamics: Path | None = typer.Option(
        None,
        "--dynamics",
        help="Use this recorded dynamics folder instead of training (no config needed).",
    ),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs (max_steps is switched off)."),
    every_n_steps: int = typer.Option(
        0, "--every-n-steps", help="Record every N updates instead of at epoch ends (0 = epochs)."
    ),
    exclude_o: bool = typer.Option(
        True,
        "--exclude-o/--include-o",
        help="Leave out tokens whose gold tag is O (as the data-map report did).",
    ),
    fmt: str = typer.Option("parquet", "--format", help="Table format: parquet or csv."),
    top: int = typer.Option(10, "--top", help="Hardest sentences listed per domain."),
    conf_threshold: float = typer.Option(
        0.5, "--conf-threshold", help="Below this confidence (and low variability): hard-to-learn."
    ),
    var_threshold: float = typer.Option(
        0.2, "--var-threshold", help="At or above this variability: ambiguous."
    ),
    max_points: int = typer.Option(
        20000, "--max-points", help="Points per plot panel (a seeded sample beyond that)."
    ),
    train_path: Path | None = TRAIN_OPTION,
    dev_path: Path | None = DEV_OPTION,
    seed: int = typer.Option(0, "--seed", help="The one seed for training and plot sampling."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show spaCy's training table."),
    force: bool = FORCE_OPTION,
) -> None:
    """Train with the dynamics callback (or read a recording) and draw data maps per domain.

    Extra `--section.key value` arguments override the training config.
    """
    from ..dynamics.datamap import TABLE_FORMATS, record_training_dynamics, write_datamap
    from ..dynamics.stats import compute_datamap, load_dynamics
    from ..errors import AdaptnerError
    from ..util import claim_output_dir, parse_domains

    if fmt not in TABLE_FORMATS:
        raise AdaptnerError(f"--format must be one of {', '.join(TABLE_FORMATS)}, got {fmt!r}.")
    _check_positive("--epochs", epochs)
    _check_positive("--max-points", max_points)
    overrides, train_path, dev_path = overrides_and_corpus(ctx, train_path, dev_path)
    claim_output_dir(output, "datamap", force=force, owned_files=("summary.json",))
    if dynamics is None:
        typer.echo(f"Training on {domains} for {epochs} epochs, recording dynamics")
        dynamics = record_training_dynamics(
            config,
            output,
            domains=domains,
            epochs=epochs,
            train_path=train_path,
            dev_path=dev_path,
            every_n_steps=every_n_steps,
            seed=seed,
            overrides=overrides,
            verbose=verbose,
        )
    dyn = load_dynamics(dynamics)
    dm = compute_datamap(dyn, exclude_o=exclude_o)
    present = sorted(set(dyn.domains()))
    selected = parse_domains(domains, present)
    summary = write_datamap(
        dm,
        output,
        domains=selected,
        fmt=fmt,
        top=top,
        conf_threshold=conf_threshold,
        var_threshold=var_threshold,
        max_points=max_points,
        seed=seed,
    )
    for domain, entry in summary["domains"].items():
        r = entry["sentences"]["regions"]
        typer.echo(
            f"{domain}: {entry['sentences']['n']} sentences — "
            + ", ".join(f"{n} {name}" for name, n in r.items())
            + f" -> {summary['files']['png'][domain]}"
        )
    typer.echo(f"✔ data map of {dyn.n_snapshots} epochs -> {output} (hardest: hardest.md)")


def aum_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(
        DEFAULT_CONFIG,
        help=f"Training config with a bio_ner component: {CONFIG_HELP}.",
        callback=training_config,
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Output folder (flags.jsonl, aum_summary.md, runs/...)."
    ),
    domains: str = typer.Option(
        ..., "--domains", "-d", help="Domains to check: news | news,legal | all | all-but:web."
    ),
    epochs: int = typer.Option(10, "--epochs", help="Epochs per training run."),
    percentile: float = typer.Option(
        99.0, "--percentile", help="Percentile of the fake tokens' AUM used as the threshold."
    ),
    fake_count: int | None = typer.Option(
        None, "--fake-count", help="Fake-class tokens per run (default: N / (number of tags + 1))."
    ),
    noise: list[float] = typer.Option(
        [],
        "--noise",
        help="Run the synthetic-noise experiment at these percentages of flipped entity spans "
        "(repeat: --noise 10 --noise 20) instead of flagging the data as it is.",
    ),
    limit: int = typer.Option(0, "--limit", help="Use only the first N training docs (0 = all)."),
    top: int = typer.Option(10, "--top", help="Lowest-AUM examples listed per domain."),
    train_path: Path | None = TRAIN_OPTION,
    dev_path: Path | None = DEV_OPTION,
    seed: int = typer.Option(0, "--seed", help="The one seed (fake subsets, noise, training)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show spaCy's training tables."),
    force: bool = FORCE_OPTION,
) -> None:
    """Flag likely label errors with AUM and a fake-class threshold, as Prodigy tasks.

    With --noise, flip that share of entity spans first and report the flags' precision and
    recall and the dev F1 of training on clean, noisy, sieved and flipped data.
    Extra `--section.key value` arguments override the training config.
    """
    import spacy
    from tqdm import tqdm

    from ..dynamics.aum import TrainSpec, measure_aum, write_flags
    from ..dynamics.noise import noise_experiment, noise_markdown
    from ..errors import AdaptnerError
    from ..readers import load_domain_docs
    from ..util import claim_output_dir, write_json, write_text

    _check_positive("--epochs", epochs)
    overrides, train_path, dev_path = overrides_and_corpus(ctx, train_path, dev_path)
    if limit < 0:
        raise AdaptnerError(f"--limit must be >= 0, got {limit}.")
    rates = [r / 100.0 for r in noise]
    for r, pct in zip(rates, noise, strict=True):
        if not 0.0 < r <= 1.0:
            raise AdaptnerError(f"--noise must be a percentage in (0, 100], got {pct}.")
    nlp = spacy.blank("da")
    docs = load_domain_docs(train_path, domains, nlp.vocab)
    if limit:
        docs = docs[:limit]
    if not docs:
        raise AdaptnerError(f"No training docs for {domains!r} in {train_path}.")
    claim_output_dir(output, "aum", force=force, owned_files=("aum.json", "noise.json"))
    spec = TrainSpec(
        config=config,
        dev_path=dev_path,
        dev_domains=domains,
        epochs=epochs,
        seed=seed,
        overrides=overrides,
        verbose=verbose,
    )
    n_trainings = 1 + 5 * len(rates) if rates else 2
    with tqdm(total=n_trainings, unit="training", desc="AUM") as bar:
        state = {"started": False}

        def progress(msg: str) -> None:
            if state["started"]:
                bar.update(1)
            state["started"] = True
            bar.set_description(msg)

        if rates:
            dev_docs = load_domain_docs(dev_path, domains, nlp.vocab)
            report = noise_experiment(
                docs,
                dev_docs,
                spec,
                output / "runs",
                rates=rates,
                percentile=percentile,
                fake_count=fake_count,
                progress=progress,
            )
        else:
            result = measure_aum(
                docs,
                spec,
                output / "runs",
                percentile=percentile,
                fake_count=fake_count,
                progress=progress,
            )
        bar.update(1)
    if rates:
        report["domains"] = domains
        write_json(output / "noise.json", report)
        write_text(output / "noise.md", noise_markdown(report, domains))
        typer.echo(noise_markdown(report, domains))
        typer.echo(f"✔ noise experiment -> {output / 'noise.json'}, {output / 'noise.md'}")
        return
    summary = write_flags(docs, result, output, top=top)
    typer.echo(
        f"threshold {summary['threshold']:.3f} ({percentile:g}th percentile of "
        f"{sum(summary['fake_tokens'])} fake tokens); {summary['flagged_spans']} of "
        f"{summary['gold_spans']} gold spans and {summary['flagged_o_runs']} O runs flagged "
        f"in {summary['flagged_docs']} docs"
    )
    typer.echo(
        f"✔ Prodigy tasks -> {output / 'flags.jsonl'}; summary -> {output / 'aum_summary.md'}"
    )
