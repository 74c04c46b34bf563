"""`adaptner distil`: label a corpus with a teacher's BIO probabilities (soft targets)."""

from pathlib import Path

import typer

from .train import FORCE_OPTION


def register(app: typer.Typer) -> None:
    app.command("distil")(distil_cmd)


def distil_cmd(
    teacher: Path = typer.Argument(
        ...,
        help="A trained bio_ner pipeline to learn from, e.g. the e5 pipeline "
        "training/bio_trf_e5/all/model-best.",
    ),
    data: Path = typer.Option(
        Path("corpus/train"),
        "--data",
        help="Split directory with <domain>.spacy files, or one .spacy file (gold optional: "
        "unlabelled docs get soft targets only).",
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Directory for <domain>.spacy with the teacher's probabilities and teacher.json; "
        "train on it with --paths.train DIR (configs/bio_cnn_distil.cfg).",
    ),
    domains: str = typer.Option(
        "all", "--domains", "-d", help="Domains of --data to label: all | news | news,legal."
    ),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="nlp.pipe batch size."),
    drop_gold: bool = typer.Option(
        False,
        "--drop-gold",
        help="Write the docs without their gold entities: an unlabelled pool (e.g. a target "
        "domain's texts) that the student learns from through the teacher alone.",
    ),
    target: list[Path] = typer.Option(
        [],
        "--target",
        "-t",
        help="Unlabelled target text to label too (repeatable): an AL pool .spacy, a corpus "
        "split folder, a plain-text file (one sentence per line), a JSONL file of "
        '{"text": ...} lines, or a folder of *.txt documents. Written as '
        "target-<name>.spacy (soft targets only).",
    ),
    force: bool = FORCE_OPTION,
) -> None:
    """Run a teacher over a corpus on its own tokens and store its BIO probabilities per doc.

    Each doc keeps its gold entities and gains doc._.teacher_probs (float32, tokens x tags, the
    teacher's bio_ner tag order) and doc._.teacher_tags. A CNN bio_ner with distill_weight > 0
    then learns from gold plus these soft targets. Each file is written atomically.
    """
    from ..distil import label_corpus
    from ..util import claim_output_dir

    claim_output_dir(output, "distil", force=force, owned_files=("teacher.json",))
    report = label_corpus(teacher, data, output, domains=domains, batch_size=batch_size,
                          drop_gold=drop_gold, progress=True, log=typer.echo)
    if target:
        from ..distil_target import label_target

        extra = label_target(teacher, target, output, batch_size=batch_size, log=typer.echo)
        report.docs, report.words = report.docs + extra.docs, report.words + extra.words
        report.seconds += extra.seconds
    from ..distil_target import verify_teacher_dir

    verify_teacher_dir(output)
    typer.echo(
        f"✔ {report.docs:,} docs, {report.words:,} words labelled by {teacher} in "
        f"{report.seconds:.0f} s ({report.words_per_second:.0f} words/s) -> {output}"
    )
