"""`adaptner corpus` and `adaptner download`: DANSK to per-domain DocBins."""

from pathlib import Path

import typer

from ..labels import SPLITS


def register(app: typer.Typer) -> None:
    app.command("corpus")(corpus_cmd)
    app.command("download")(download_cmd)


def corpus_cmd(
    input_dir: Path = typer.Option(
        Path("../shared/data/dansk"),
        "--input",
        "-i",
        help="Folder with the DANSK release: <split>.parquet or <split>.jsonl (Doc.from_json "
        "layout with dagw_domain/dagw_source).",
    ),
    output_dir: Path = typer.Option(
        Path("corpus"), "--output", "-o", help="Writes <output>/<split>/<domain>.spacy + all.spacy."
    ),
    splits: list[str] = typer.Option(
        SPLITS,
        "--split",
        "-s",
        help="Splits to convert (repeat the option); missing ones are reported.",

    ),
    skip_invalid: bool = typer.Option(
        False,
        "--skip-invalid",
        help="Write bad rows to --rejects and continue instead of stopping.",
    ),
    rejects: Path | None = typer.Option(
        None,
        "--rejects",
        help="Where --skip-invalid writes bad rows (default <output>/rejects.jsonl).",
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Counts per split x domain x label (JSON, and Markdown beside it; default "
        "<output>/report.json).",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace split folders that `adaptner corpus` did not write, or that hold more "
        "documents than this input gives after rejects.",
    ),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Check known release files against their sha256."
    ),
    download_to: Path | None = typer.Option(
        None,
        "--download-to",
        help="If --input does not exist, download DANSK from the Hugging Face hub into this "
        "folder (sha256-verified) and use it. Without it, a missing --input is an error.",
    ),
) -> None:
    """Validate DANSK and write one DocBin per split x domain (rows with no domain -> unknown).

    Uses the local copy in --input when it exists (offline machines, CI); otherwise, with
    --download-to, fetches the release from the hub first.
    """
    from ..corpus import convert_corpus, download_dansk, find_split_file, verify_checksums

    rejects = rejects if rejects is not None else output_dir / "rejects.jsonl"
    report = report if report is not None else output_dir / "report.json"

    if download_to is not None and not input_dir.is_dir():
        if find_split_file(download_to, "train") is None:
            typer.echo(f"{input_dir} not found: downloading DANSK into {download_to}")
            download_dansk(download_to)
        input_dir = download_to
    if verify and input_dir.is_dir():
        for name, status in verify_checksums(input_dir).items():
            if status == "ok":
                typer.echo(f"✔ {input_dir / name}: sha256 matches the DANSK release")
    result = convert_corpus(
        input_dir,
        output_dir,
        splits=splits,
        skip_invalid=skip_invalid,
        rejects_path=rejects,
        report_path=report,
        progress=True,
        log=typer.echo,
        force=force,
    )
    for split, info in result["splits"].items():
        s = info["stats"]["all"]
        typer.echo(
            f"✔ {split}: {s['sentences']} sentences, {s['tokens']} tokens, {s['entities']} entities"
        )
    typer.echo(f"Report: {report} and {report.with_suffix('.md')}")


def download_cmd(
    output_dir: Path = typer.Option(
        Path("assets/dansk"), "--output", "-o", help="Folder for train/dev/test.parquet."
    ),
    repo: str = typer.Option("chcaa/dansk-ner", "--repo", help="Hugging Face dataset id."),
    local: Path | None = typer.Option(
        None,
        "--local",
        help="Use this local copy instead when it exists (offline machines, CI).",
    ),
) -> None:
    """Fetch DANSK from the Hugging Face hub (sha256-verified), or use a local copy."""
    from ..corpus import download_dansk, verify_checksums

    if local is not None and local.is_dir():
        verify_checksums(local)
        typer.echo(f"✔ using local DANSK at {local} (checksums verified)")
        return
    for path in download_dansk(output_dir, repo=repo):
        typer.echo(f"✔ {path}")
