"""`adaptner package`: build installable wheels of a trained or adapted pipeline."""

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("package")(package_cmd)


def package_cmd(
    model: Path = typer.Argument(
        ..., help="Trained pipeline directory, e.g. training/news/model-best."
    ),
    output: Path = typer.Option(
        Path("packages"), "--output", "-o", help="Folder for the wheels (only *.whl are written)."
    ),
    version: str = typer.Option("0.1.0", "--version", "-v", help="Package version."),
    source: str | None = typer.Option(
        None,
        "--source",
        help="Domain(s) the pipeline was first trained on (default: from --history or "
        "train_meta.json beside the model).",
    ),
    target: str | None = typer.Option(
        None, "--target", help="Domain(s) it was adapted to (default: same as the source)."
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        "-n",
        help="Override the name (default adaptner_<source>_<target>_<pipeline>, the pipeline "
        "being the training config's name, e.g. bio_cnn or bio_trf_e5).",
    ),
    history: Path | None = typer.Option(
        None,
        "--history",
        help="Adaptation history (JSON, or JSONL with one record per round): strategy, "
        "rounds, labels used.",
    ),
    scores: Path | None = typer.Option(
        None,
        "--scores",
        help="Evaluation JSON with per-domain F1 (as written by adaptner evaluate); "
        "skips scoring here.",
    ),
    eval_dir: Path = typer.Option(
        Path("corpus/dev"),
        "--eval",
        help="Split directory to score per-domain F1 on (its name is recorded as the split).",
    ),
    eval_domains: str = typer.Option(
        "all", "--eval-domains", help="Domains to score: all | news | news,legal | all-but:legal."
    ),
    eval_limit: int = typer.Option(
        0, "--eval-limit", min=0, help="Score at most this many docs per domain (0 = all)."
    ),
    no_eval: bool = typer.Option(
        False, "--no-eval", help="Record no per-domain F1 (when there is no --scores either)."
    ),
    description: str | None = typer.Option(
        None, "--description", help="Package description (default: generated)."
    ),
    adaptner_wheel: bool = typer.Option(
        True,
        "--adaptner-wheel/--no-adaptner-wheel",
        help="Also build adaptner's own wheel into the output folder (the pipeline needs it).",
    ),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="Transformer pipelines: quantize the linear layers to int8 at load (faster on a "
        "CPU; the name gets _int8 and the recorded F1 is the int8 pipeline's). See `adaptner "
        "encoder quantize` for layers kept in fp32.",
    ),
    calibrate: Path | None = typer.Option(
        None,
        "--calibrate",
        help="With --int8: calibrate activation smoothing on these docs (a .spacy file or a "
        "split folder such as corpus/train; 256 docs, seed 0), which keeps the fp32 F1 where "
        "plain int8 loses about a point (docs/e5.md).",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        "-f",
        help="Replace an existing wheel of the same name and version built from another model "
        "directory (one built from MODEL is replaced without it).",
    ),
) -> None:
    """Build <output>/da_adaptner_<source>_<target>_<pipeline>-<version>-py3-none-any.whl
    (+ adaptner's)."""
    from ..errors import AdaptnerError
    from ..packaging import package_pipeline

    if no_eval and scores is not None:
        raise AdaptnerError("--no-eval and --scores contradict each other: pass one of them.")
    result = package_pipeline(
        model,
        output,
        version=version,
        source=source,
        target=target,
        name=name,
        history=history,
        scores=scores,
        eval_dir=None if no_eval else eval_dir,
        eval_domains=eval_domains,
        eval_limit=eval_limit,
        description=description,
        adaptner_wheel=adaptner_wheel,
        force=force,
        progress=True,
        log=lambda msg: typer.echo(f"ℹ {msg}"),
        int8=int8,
        calibrate=calibrate,
    )
    for wheel in result.wheels:
        typer.echo(f"✔ {wheel} ({wheel.stat().st_size / 1e6:.1f} MB)")
    perf = result.meta.get("adaptner", {}).get("performance")
    if perf:
        cells = ", ".join(
            f"{d} {100 * r['ents_f']:.1f}" if r.get("ents_f") is not None else f"{d} –"
            for d, r in perf["domains"].items()
        )
        typer.echo(f"  F1 on {perf['split']}: {cells}")
    typer.echo("Install and use:")
    typer.echo(f"  pip install --no-index --find-links {output} {result.name}")
    typer.echo(
        f"  python -c \"import spacy; nlp = spacy.load('{result.name}'); "
        "print(nlp('Mette Frederiksen besøgte Aarhus.').ents)\""
    )
