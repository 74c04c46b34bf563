"""`adaptner tiny-bert`: build a tiny random local BERT for offline transformer tests."""

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("tiny-bert")(tiny_bert_cmd)


def tiny_bert_cmd(
    output: Path = typer.Option(
        Path("training/tiny_bert"),
        "--output",
        "-o",
        help="Model directory to write (Hugging Face layout); configs/test/bio_trf.cfg reads "
        "training/tiny_bert by default (--paths.transformer to change).",
    ),
    corpus: Path = typer.Option(
        Path("corpus/train"),
        "--corpus",
        "-c",
        help="Corpus split directory (<domain>.spacy files) or one .spacy file for the vocabulary.",
    ),
    domains: str = typer.Option(
        "all", "--domains", "-d", help="Domains whose texts train the vocabulary: all | news | ..."
    ),
    limit: int = typer.Option(
        2000, "--limit", "-n", min=0, help="Sample this many texts (0 = all of them)."
    ),
    vocab_size: int = typer.Option(2000, "--vocab-size", min=6, help="WordPiece vocabulary size."),
    hidden_size: int = typer.Option(32, "--hidden-size", min=1, help="Transformer width."),
    num_layers: int = typer.Option(2, "--layers", min=1, help="Number of transformer layers."),
    num_heads: int = typer.Option(2, "--heads", min=1, help="Attention heads per layer."),
    seed: int = typer.Option(0, "--seed", help="Seed for the text sample and the random weights."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace --output even if this command did not write it (the old contents stay "
        "until the new output is complete).",
    ),
) -> None:
    """Train a WordPiece vocabulary on corpus texts; save it with a random tiny BERT (offline)."""
    from ..tiny_bert import build_tiny_bert, corpus_texts

    texts = corpus_texts(corpus, domains=domains, limit=limit, seed=seed)
    path = build_tiny_bert(
        output,
        texts,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        seed=seed,
        force=force,
    )
    typer.echo(
        f"✔ tiny BERT ({num_layers} layers, width {hidden_size}, vocab ≤ {vocab_size}) from "
        f"{len(texts)} texts of {corpus} -> {path}"
    )
