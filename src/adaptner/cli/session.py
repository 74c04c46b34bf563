"""`adaptner session …`: annotation sessions (next batch, import answers, train, status)."""

import json
from pathlib import Path
from typing import Any

import typer

from ..errors import AdaptnerError
from ..util import parse_params
from .train import FORCE_OPTION

session_app = typer.Typer(
    name="session",
    help=(
        "Annotation sessions: the model picks sentences (`next`, as Prodigy, Label Studio or "
        "doccano tasks), people annotate them, the answers come back (`import` reads Prodigy "
        "JSONL, Label Studio JSON / JSON_MIN and doccano JSONL exports; answers for held-out "
        "texts are always refused), the model improves (`train`), and the next batch is "
        "ready. State lives in one SQLite file (--db)."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(session_app, name="session")


TRAINER_OPTION = typer.Option(
    "auto",
    "--trainer",
    help="auto: top_layers for a transformer pipeline (the encoder's top 4 layers and the "
    "head learn on cached outputs of the lower layers), else fine_tune (every component "
    "learns). cached_head: the fast option for a transformer (the encoder stays frozen, the "
    "head trains on cached encoder outputs: seconds per round on a CPU, lower F1). "
    "fine_tune on a transformer: the full model, minutes per round on a CPU.",
)
BACKGROUND_HELP = (
    "write the next batch first, from the newest finished model, and train the round after "
    "it, while the batch is annotated: answers -> next batch takes the import and the pool's "
    "scoring only; the next batch comes from the new round. Default: on when the rounds "
    "fine-tune a transformer (top_layers, fine_tune), off for a CNN and cached_head."
)
SOURCE_REPLAY_OPTION = typer.Option(
    None,
    "--source-replay",
    min=0.0,
    help="Source docs (from `session init --source-docs`) added per answer in the round's "
    "training set, warm and reset, a fresh seeded sample every round, so the model keeps "
    "what it knew on the source; 0 = off. Default 2 (a session without source docs "
    "replays none).",
)
SOURCE_REPLAY_MAX_OPTION = typer.Option(
    None, "--source-replay-max", min=0, help="At most this many source docs per round (0 = no cap)."
)
ANCHOR_OPTION = typer.Option(
    None,
    "--anchor-docs",
    min=0.0,
    help="Anchoring: a round that trained on n answers keeps n / (n + this) of its update and "
    "moves the rest of the way back to the model it started from (the source in reset "
    "mode), so a round on a few answers cannot pull the model far; 0 = keep the whole update. "
    "Default: 35 for top_layers rounds (measured), 0 for the others.",
)
DB_OPTION = typer.Option(
    Path("adaptner.db"),
    "--db",
    envvar="ADAPTNER_DB",
    help="The session store (SQLite); default adaptner.db in the current directory.",
)


def round_settings(mode: str, **changes: Any) -> Any:
    """The mode's default round settings with the options given (None = keep the default).

    Raises:
        AdaptnerError: an unknown mode.
    """
    from dataclasses import replace

    from ..session.trainer import DEFAULT_SETTINGS, MODES

    if mode not in MODES:
        raise AdaptnerError(f"Unknown --mode {mode!r}; choose one of {', '.join(MODES)}.")
    return replace(DEFAULT_SETTINGS[mode], **{k: v for k, v in changes.items() if v is not None})


@session_app.command("init")
def init_cmd(
    name: str = typer.Argument(..., help="Session name (letters, digits, '.', '_', '-')."),
    source: Path = typer.Option(
        ..., "--source", "-s", help="Source pipeline directory (with a bio_ner component)."
    ),
    pool: Path = typer.Option(
        ...,
        "--pool",
        "-p",
        help='Target pool: a DocBin (.spacy; gold dropped), JSONL of {"text"}, plain text '
        "one sentence per line, or a folder of plain-text documents (*.txt: split into "
        "sentences, each keeping '<document>:<character offset>' as its source).",
    ),
    heldout: Path | None = typer.Option(
        None,
        "--heldout",
        help="Gold DocBin to evaluate every round on (e.g. corpus/dev/legal.spacy).",
    ),
    strategy: str = typer.Option("margin", "--strategy", help="Query strategy (registered name)."),
    param: list[str] = typer.Option(
        [], "--param", help="Strategy parameter key=value (repeatable), e.g. aggregation=max."
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="Comma-separated label set (default: all the source model's labels)."
    ),
    domain: str | None = typer.Option(
        None, "--domain", help="Domain recorded for pool texts that carry none (JSONL/text pools)."
    ),
    limit: int = typer.Option(
        0, "--limit", min=0, help="Keep the first N pool sentences (0 = all)."
    ),
    seed: int = typer.Option(0, "--seed", help="The one seed for selection and training."),
    session_dir: Path | None = typer.Option(
        None, "--dir", help="Where rounds and batch copies go (default training/sessions/<name>)."
    ),
    source_docs: Path | None = typer.Option(
        None,
        "--source-docs",
        help="Gold DocBin of the source domain (e.g. corpus/train/news.spacy, what the source "
        "pipeline was trained on): every round replays a sample of it (--source-replay) so "
        "the model does not forget the source. Its labels must be the session's.",
    ),
    db: Path = DB_OPTION,
) -> None:
    """Create a session: source pipeline + target pool + strategy + label set."""
    from ..session.loop import init_session

    result = init_session(
        db,
        name,
        source=source,
        pool=pool,
        heldout=heldout,
        strategy=strategy,
        strategy_params=parse_params(param, "--param", "aggregation=max"),
        labels=[x.strip() for x in labels.split(",") if x.strip()] if labels else None,
        seed=seed,
        session_dir=session_dir,
        domain=domain,
        limit=limit,
        source_docs=source_docs,
    )
    s = result.session
    if not result.created:
        typer.echo(
            f"ℹ session {name!r} already exists in {db} ({result.pool_size} pool sentences, "
            f"strategy {s.strategy}); nothing changed."
        )
        return
    extra = []
    if result.duplicates:
        extra.append(f"{result.duplicates} duplicates dropped")
    if result.heldout_overlap:
        extra.append(f"{result.heldout_overlap} held-out sentences left out")
    if result.heldout_f is not None:
        extra.append(f"source held-out F1 {result.heldout_f:.3f}")
    if result.source_docs:
        held = f", {result.source_heldout} held-out ones never" if result.source_heldout else ""
        extra.append(f"{result.source_docs} source docs to replay{held}")
    note = f" ({'; '.join(extra)})" if extra else ""
    typer.echo(
        f"✔ session {name!r} in {db}: {result.pool_size} pool sentences, strategy "
        f"{s.strategy}, {len(s.labels)} labels{note}"
    )


@session_app.command("next")
def next_cmd(
    name: str = typer.Argument(..., help="Session name."),
    n: int = typer.Option(50, "-n", min=1, help="Number of sentences in the batch."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Batch file to write ({batch} is replaced by the batch id)."
    ),
    fmt: str = typer.Option(
        "prodigy", "--format", help="prodigy (JSONL) | labelstudio (JSON list) | doccano (JSONL)."
    ),
    reissue: bool = typer.Option(
        False, "--reissue", help="Also hand out sentences handed out before and not answered yet."
    ),
    trainer: str = typer.Option(
        "auto",
        "--trainer",
        help="The session's round trainer (as `train --trainer`), for how the pool is scored: "
        "auto | top_layers: a transformer's lower layers run once per sentence (cached under "
        "<session dir>/features/lower/) | cached_head: the whole encoder runs once per "
        "sentence (<session dir>/features/) | fine_tune: the full pipeline runs every time.",
    ),
    db: Path = DB_OPTION,
) -> None:
    """Score the remaining pool with the current model and write the top n as tasks.

    The current model is the newest round, unless its held-out F1 is below the source's:
    then the best round so far makes the batch (and `status` says so)."""
    from ..session.loop import next_batch

    result = next_batch(
        db, name, n=n, output=output, fmt=fmt, reissue=reissue, progress=True, trainer=trainer
    )
    echo_batch(result)


def echo_batch(result: Any) -> None:
    """The line saying which batch was written, and by which model."""
    typer.echo(
        f"✔ batch {result.batch_id} (round {result.round}, {result.trainer}): "
        f"{len(result.tasks)} tasks -> {result.path} ({result.remaining} left in the pool, "
        f"{result.seconds:.1f} s)"
    )
    if result.note:
        typer.secho(f"⚠ {result.note}: it made this batch", fg=typer.colors.YELLOW, err=True)


@session_app.command("import")
def import_cmd(
    name: str = typer.Argument(..., help="Session name."),
    answers: Path = typer.Argument(
        ...,
        help="Answers file: Prodigy JSONL (db-out, or a batch edited by hand), a Label Studio "
        "JSON or JSON_MIN export, or a doccano JSONL export; the format is detected.",
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        help="Force the answers format: prodigy | labelstudio (JSON export) | labelstudio-min "
        "(JSON_MIN export) | doccano (JSONL export). Default: detected from the content.",
    ),
    snap: bool = typer.Option(
        False,
        "--snap",
        help="Widen spans that start or end inside a token (e.g. half a word selected in "
        "Label Studio) to whole tokens, listing each snap, instead of refusing them.",
    ),
    allow_foreign: bool = typer.Option(
        False,
        "--allow-foreign",
        help="Also import answers for texts this session did not hand out (they are refused "
        "by default). Texts of the held-out set are refused always.",
    ),
    skip_invalid: bool = typer.Option(
        False,
        "--skip-invalid",
        help="Import the valid lines; write the bad or refused ones to a rejects file.",
    ),
    rejects: Path | None = typer.Option(
        None, "--rejects", help="Rejects file for --skip-invalid (default <answers>.rejects.jsonl)."
    ),
    next_n: int = typer.Option(
        0,
        "--next",
        min=0,
        help="Then, in the same process, train a round on the new accepted answers and write "
        "the next batch of this many sentences to --output (0 = import only).",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="With --next: the batch file to write ({batch} is replaced by the batch id).",
    ),
    batch_format: str | None = typer.Option(
        None,
        "--batch-format",
        help="With --next: prodigy | labelstudio | doccano (default: the tool the answers "
        "came from).",
    ),
    mode: str = typer.Option("warm", "--mode", help="With --next: warm | reset (as `train`)."),
    trainer: str = TRAINER_OPTION,
    background: bool | None = typer.Option(
        None, "--background/--no-background", help="With --next: " + BACKGROUND_HELP
    ),
    source_replay: float | None = SOURCE_REPLAY_OPTION,
    anchor_docs: float | None = ANCHOR_OPTION,
    db: Path = DB_OPTION,
) -> None:
    """Validate and store answers from Prodigy, Label Studio or doccano (all or nothing);
    with --next, also update the model and write the next batch, in one process.

    Answers are matched to the tasks handed out by the hashes the tool kept, else by exact
    text. Answers for texts the session did not hand out are refused (unless
    --allow-foreign), and answers for held-out texts are always refused, each named by
    file:line. Label Studio: the latest annotation per task counts; a skipped task is an
    ignore (JSON_MIN leaves skipped tasks out); an empty annotation is an accept with no
    entities. doccano: every line is an accept (export only the approved examples).

    With --next N -o FILE the command is import + train + next with the model loaded once:
    the round trains on the new accepted answers (none: the model stays), and the batch
    comes from it unless its held-out F1 is below the source's (then from the best round
    so far, said with a warning).
    """
    from ..session.answers import ANSWER_FORMATS
    from ..session.formats import FORMATS

    if fmt is not None and fmt not in ANSWER_FORMATS:
        raise AdaptnerError(f"Unknown --format {fmt!r}; choose one of {', '.join(ANSWER_FORMATS)}.")
    if (output is not None or batch_format is not None or background is not None) and not next_n:
        raise AdaptnerError(
            "--output, --batch-format and --[no-]background go with --next N (the size of the next "
            f"batch), e.g. `adaptner session import {name} {answers} --next 50 -o batch.jsonl`."
        )
    for option, value in (("--source-replay", source_replay), ("--anchor-docs", anchor_docs)):
        if value is not None and not next_n:
            raise AdaptnerError(
                f"{option} goes with --next N (only then does import train a round); or "
                f"train with `adaptner session train {name} {option} ...`."
            )
    if next_n and output is None:
        raise AdaptnerError("--next needs --output/-o: the file to write the next batch to.")
    if batch_format is not None and batch_format not in FORMATS:
        raise AdaptnerError(
            f"Unknown --batch-format {batch_format!r}; choose one of {', '.join(FORMATS)}."
        )
    options = {
        "snap": snap,
        "allow_foreign": allow_foreign,
        "skip_invalid": skip_invalid,
        "rejects": rejects,
    }
    if not next_n:
        from ..session.loop import import_answers

        echo_import(answers, import_answers(db, name, answers, fmt=fmt, **options))
        return
    from ..session.loop import answer_cycle, default_background, require_source_docs

    settings = round_settings(
        mode, trainer=trainer, source_replay=source_replay, anchor_docs=anchor_docs
    )
    require_source_docs(db, name, source_replay)
    if background is None:
        background = default_background(db, name, settings.trainer)

    def on_step(what: str, result: Any) -> None:
        if what == "import":
            echo_import(answers, result)
        elif what == "wait":
            typer.echo(f"ℹ waiting for the round that process {result} is training ...")
        elif what == "batch":
            echo_batch(result)
            if background:
                typer.echo(
                    "ℹ training the next round in the background (--no-background waits for it "
                    "before writing the batch); the next import uses it"
                )
        elif what == "train":
            echo_round(result)

    cycle = answer_cycle(
        db,
        name,
        answers,
        n=next_n,
        output=output,
        fmt=batch_format,
        mode=mode,
        settings=settings,
        background=background,
        progress=True,
        on_step=on_step,
        answers_fmt=fmt,
        **options,
    )
    t = cycle.timings
    typer.echo(
        f"ℹ answers -> next batch in {t['total']:.1f} s (import {t['import']:.1f} s, "
        f"train {t['train']:.1f} s, next {t['next']:.1f} s)"
    )


def echo_round(result: Any) -> None:
    """The line saying which round was trained (None: no new accepted answers)."""
    if result is None:
        typer.echo("ℹ no new accepted answers: the model stays as it is")
        return
    m = result.metrics
    f = m.get("ents_f")
    score = f", held-out F1 {f:.3f}" if f is not None else " (no held-out set)"
    source = f", {m['n_source_replay']} from the source" if m.get("n_source_replay") else ""
    alpha = m.get("anchor_alpha")
    kept = f", {100 * alpha:.0f} % of the update kept" if alpha is not None and alpha < 1 else ""
    typer.echo(
        f"✔ round {result.round} ({result.mode}, {m['trainer']}): {m['n_train']} docs "
        f"({m['n_new']} new{source}), {m['epochs']} epochs{kept}, {m['seconds']:.1f} s{score} "
        f"-> {result.model_dir}"
    )


def echo_import(answers: Path, r: Any) -> None:
    """The lines saying what an import stored."""
    for note in r.snaps:
        typer.echo(f"ℹ snapped: {note}")
    extra = []
    if r.unannotated:
        extra.append(f"{r.unannotated} task(s) without annotation skipped")
    if r.superseded:
        extra.append(f"{r.superseded} older annotation(s) of the same task dropped")
    if r.foreign:
        extra.append(f"{r.foreign} not handed out by this session")
    if r.snaps:
        extra.append(f"{len(r.snaps)} span(s) snapped")
    note = f"; {'; '.join(extra)}" if extra else ""
    typer.echo(
        f"✔ {answers} ({r.fmt}): {r.new} new, {r.replaced} replaced, {r.duplicate} duplicate, "
        f"{r.stale} stale ({r.accepted} accept, {r.rejected} reject, {r.ignored} ignore){note}"
    )
    if r.invalid:
        typer.secho(
            f"⚠ {r.invalid} invalid or refused line(s) skipped -> {r.rejects_path}",
            fg=typer.colors.YELLOW,
            err=True,
        )


@session_app.command("train")
def train_cmd(
    name: str = typer.Argument(..., help="Session name."),
    mode: str = typer.Option(
        "warm",
        "--mode",
        help="warm: continue from the current model on the new answers plus replayed earlier "
        "ones; reset: retrain from the source pipeline on every accepted answer.",
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Maximum epochs."),
    patience: int | None = typer.Option(
        None, "--patience", min=1, help="Epochs without held-out improvement before stopping."
    ),
    replay: int | None = typer.Option(
        None, "--replay", min=0, help="Warm mode: earlier answers replayed with the new ones."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Docs per update."),
    trainer: str = TRAINER_OPTION,
    source_replay: float | None = SOURCE_REPLAY_OPTION,
    source_replay_max: int | None = SOURCE_REPLAY_MAX_OPTION,
    anchor_docs: float | None = ANCHOR_OPTION,
    db: Path = DB_OPTION,
) -> None:
    """Train the next round on the accepted answers (plus replayed source docs); it becomes
    the current model. It then scores the pool (for the query strategies that need only the
    model's probabilities), so the next `next` hands out a batch without loading it."""
    from ..session.loop import keep_scored_pool, require_source_docs, train_round

    settings = round_settings(
        mode,
        max_epochs=epochs,
        patience=patience,
        replay=replay,
        batch_size=batch_size,
        trainer=trainer,
        source_replay=source_replay,
        source_replay_max=source_replay_max,
        anchor_docs=anchor_docs,
    )
    require_source_docs(db, name, source_replay)
    result = train_round(db, name, mode=mode, settings=settings, progress=True)
    echo_round(result)
    keep_scored_pool(db, name, result, settings.trainer)


@session_app.command("status")
def status_cmd(
    name: str | None = typer.Argument(None, help="Session name (omit to list the sessions)."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    db: Path = DB_OPTION,
) -> None:
    """Rounds, counts (handed out, answered, accepted, ...) and the F1 history."""
    # status.py and store.py do not import spaCy: the status is instant
    from ..session.status import session_status
    from ..session.store import SessionStore

    if name is None:
        store = SessionStore(db)
        try:
            names = store.session_names()
        finally:
            store.close()
        typer.echo(json.dumps(names) if as_json else "\n".join(names) or "(no sessions)")
        return
    st = session_status(db, name)
    if as_json:
        typer.echo(json.dumps(st, indent=2, ensure_ascii=False))
        return
    c = st["counts"]
    typer.echo(f"session {st['session']} · strategy {st['strategy']} · round {st['round']}")
    typer.echo(
        f"pool {c['pool']} · handed out {c['handed_out']} · waiting {c['outstanding']} · "
        f"answered {c['answered']} (accepted {c['accepted']}, rejected {c['rejected']}, "
        f"ignored {c['ignored']}; {c['replaced']} replaced by newer answers) · "
        f"remaining {c['remaining']}"
    )
    model = st["model"]
    typer.echo(f"next batch from round {model['round']} ({model['trainer']})")
    if model["note"]:
        typer.secho(f"⚠ {model['note']}", fg=typer.colors.YELLOW)
    if st["training"] is not None:
        typer.echo(f"a round is training now (process {st['training']})")
    typer.echo(
        f"{'round':>5}  {'mode':<6}  {'trainer':<11}  {'docs':>5}  {'new':>4}  {'source':>6}  "
        f"{'kept':>5}  {'F1':>6}  {'sec':>6}  model"
    )
    for r in st["rounds"]:
        f1 = f"{100 * r['ents_f']:.1f}" if r["ents_f"] is not None else "-"
        sec = f"{r['seconds']:.1f}" if r["seconds"] is not None else "-"
        new = r["n_new"] if r["n_new"] is not None else "-"
        src = r["n_source_replay"] if r["n_source_replay"] is not None else "-"
        kept = f"{100 * r['anchor_alpha']:.0f}%" if r.get("anchor_alpha") is not None else "-"
        typer.echo(
            f"{r['round']:>5}  {r['mode']:<6}  {r['trainer']:<11}  {r['n_train']:>5}  "
            f"{new:>4}  {src:>6}  {kept:>5}  {f1:>6}  {sec:>6}  "
            + ("saved" if r["model_saved"] else "removed (session prune)")
        )
    if st["batches"]:
        typer.echo(f"{'batch':>5}  {'n':>4}  made by")
    for b in st["batches"]:
        note = f" (newest was round {b['newest_round']}: {b['note']})" if b["note"] else ""
        typer.echo(f"{b['batch']:>5}  {b['n']:>4}  round {b['round']} ({b['trainer']}){note}")


@session_app.command("export")
def export_cmd(
    name: str = typer.Argument(..., help="Session name."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Directory for labeled.spacy and answers.jsonl."
    ),
    force: bool = FORCE_OPTION,
    db: Path = DB_OPTION,
) -> None:
    """Write the labeled set as a DocBin (train-ready) and as Prodigy JSONL."""
    from ..session.loop import export_session

    paths = export_session(db, name, output, force=force)
    typer.echo(f"✔ exported {name!r} -> {paths['spacy']} and {paths['jsonl']}")


@session_app.command("review")
def review_cmd(
    name: str = typer.Argument(..., help="Session name."),
    output: Path = typer.Option(..., "--output", "-o", help="HTML file to write."),
    batch: Path | None = typer.Option(
        None, "--batch", "-b", help="Prodigy-format batch file (default: the latest batch)."
    ),
    db: Path = DB_OPTION,
) -> None:
    """displaCy HTML of a batch: predicted entities and per-token uncertainty."""
    from ..session.review import review_batch
    from ..util import check_output_file

    check_output_file(output, "session review")
    path = review_batch(db, name, output, batch=batch)
    typer.echo(f"✔ review -> {path}")


@session_app.command("loop")
def loop_cmd(
    name: str = typer.Argument(..., help="Session name."),
    workdir: Path = typer.Option(
        ...,
        "--workdir",
        "-w",
        help="Batches go to <workdir>/batch-<id>.jsonl; answers are read from "
        "<workdir>/answers-<id>.jsonl.",
    ),
    n: int = typer.Option(50, "-n", min=1, help="Sentences per batch."),
    rounds: int = typer.Option(
        0, "--rounds", min=0, help="Stop after this many cycles (0 = until the pool is used up)."
    ),
    mode: str = typer.Option("warm", "--mode", help="warm | reset (see `session train`)."),
    poll: float = typer.Option(2.0, "--poll", min=0.05, help="Seconds between checks for answers."),
    settle: float = typer.Option(
        2.0, "--settle", min=0.0, help="An answers file must be unchanged this long before import."
    ),
    timeout: float = typer.Option(
        0.0, "--timeout", min=0.0, help="Give up waiting after this many seconds (0 = never)."
    ),
    trainer: str = TRAINER_OPTION,
    source_replay: float | None = SOURCE_REPLAY_OPTION,
    source_replay_max: int | None = SOURCE_REPLAY_MAX_OPTION,
    anchor_docs: float | None = ANCHOR_OPTION,
    background: bool | None = typer.Option(
        None,
        "--background/--no-background",
        help="Train rounds in a background thread: each batch is written as soon as its "
        "answers are imported, from the newest finished model, while the next round trains. "
        "Default: on when the rounds fine-tune a transformer (top_layers, fine_tune), off "
        "for a CNN and cached_head.",
    ),
    db: Path = DB_OPTION,
) -> None:
    """Chain next -> wait for the answers -> import -> train -> next, automatically."""
    from ..session.loop import default_background, require_source_docs, run_loop

    settings = round_settings(
        mode,
        trainer=trainer,
        source_replay=source_replay,
        source_replay_max=source_replay_max,
        anchor_docs=anchor_docs,
    )
    require_source_docs(db, name, source_replay)
    if background is None:
        background = default_background(db, name, settings.trainer)
    run_loop(
        db,
        name,
        n=n,
        workdir=workdir,
        rounds=rounds,
        mode=mode,
        settings=settings,
        poll=poll,
        settle=settle,
        timeout=timeout,
        echo=typer.echo,
        background=background,
    )


@session_app.command("serve")
def serve_cmd(
    name: str = typer.Argument(..., help="Session name."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on. Anything but 127.0.0.1/localhost/::1 needs --token.",
    ),
    port: int = typer.Option(9090, "--port", min=1, max=65535, help="Port to listen on."),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="ADAPTNER_SERVE_TOKEN",
        help="Require this token: 'Authorization: Bearer <token>', or Label Studio's basic "
        "auth with the token as password.",
    ),
    mode: str = typer.Option(
        "warm", "--mode", help="How each round updates the model: warm | reset (as `train`)."
    ),
    trainer: str = TRAINER_OPTION,
    min_new: int = typer.Option(
        1,
        "--min-new",
        min=1,
        help="Start a round once this many new accepted answers wait (Start training in "
        "Label Studio starts one on fewer). 1: the model follows every annotation within "
        "seconds; 10-50: steadier rounds that overfit a single sentence less.",
    ),
    max_body: int = typer.Option(
        8, "--max-body", min=1, help="Largest request body in MiB (larger ones get HTTP 413)."
    ),
    record: Path | None = typer.Option(
        None, "--record", help="Keep every request body in this directory (to debug or record)."
    ),
    snap: bool = typer.Option(
        False,
        "--snap",
        help="Widen an annotated span that starts or ends inside a word to whole tokens "
        "instead of refusing the annotation.",
    ),
    source_replay: float | None = SOURCE_REPLAY_OPTION,
    anchor_docs: float | None = ANCHOR_OPTION,
    prune: bool = typer.Option(
        False,
        "--prune",
        help="After every round, delete the saved models no later round can use (as "
        "`session prune`): an e5 round is about 0.5 GB, one per annotation fills a disk.",
    ),
    db: Path = DB_OPTION,
) -> None:
    """Run a Label Studio ML backend for the session: pre-annotations from the newest model,
    scores that sort tasks by the query strategy, and a model that learns from every
    submitted annotation (connect it in the project's Settings > Model; needs the serve
    extra of adaptner)."""
    settings = round_settings(
        mode, trainer=trainer, source_replay=source_replay, anchor_docs=anchor_docs
    )
    from ..session.loop import require_source_docs

    require_source_docs(db, name, source_replay)
    try:
        from ..session.server import serve
    except ImportError as e:
        raise AdaptnerError(
            f"`session serve` needs the web stack ({e.name} is missing): "
            "pip install 'adaptner[serve]'."
        ) from None
    serve(
        db,
        name,
        host=host,
        port=port,
        token=token,
        mode=mode,
        settings=settings,
        min_new=min_new,
        max_body=max_body * 1024 * 1024,
        record=record,
        snap=snap,
        echo=typer.echo,
        prune=prune,
    )


@session_app.command("prune")
def prune_cmd(
    name: str = typer.Argument(..., help="Session name."),
    db: Path = DB_OPTION,
) -> None:
    """Free disk: delete the saved models of the rounds no later round or batch can use.

    Kept: the source, the newest round (warm rounds continue from it) and the round that
    makes batches now (the best so far when the newest scored below the source). Every
    round's metrics and answers stay; `session status` shows which models are gone.
    """
    from ..session.loop import prune_models

    result = prune_models(db, name)
    kept = ", ".join(str(r) for r in result.kept)
    if not result.removed:
        typer.echo(f"ℹ nothing to remove: the saved models left are needed (rounds {kept})")
        return
    removed = ", ".join(str(r) for r in result.removed)
    typer.echo(
        f"✔ removed the saved models of round(s) {removed}: {result.freed_bytes / 1e9:.2f} GB "
        f"freed (kept rounds {kept})"
    )


@session_app.command("push")
def push_cmd(
    name: str = typer.Argument(..., help="Session name."),
    url: str = typer.Option(
        ..., "--label-studio", help="Label Studio's address, e.g. http://127.0.0.1:8080."
    ),
    project: int | None = typer.Option(
        None, "--project", min=1, help="The Label Studio project id (or --create)."
    ),
    create: str | None = typer.Option(
        None,
        "--create",
        help="Create a project with this title and the session's labelling config instead.",
    ),
    backend: str | None = typer.Option(
        None,
        "--backend",
        help="Connect the session's ML backend at this address (`session serve`, e.g. "
        "http://127.0.0.1:9090) to the project before pushing.",
    ),
    token: str = typer.Option(
        ...,
        "--token",
        envvar="LABEL_STUDIO_API_KEY",
        help="Your Label Studio API token (Account & Settings; legacy or personal access token).",
    ),
    n: int = typer.Option(
        0, "-n", min=0, help="Push the n most useful texts (0 = every text not handed out yet)."
    ),
    reissue: bool = typer.Option(
        False, "--reissue", help="Also push texts handed out before and not answered yet."
    ),
    db: Path = DB_OPTION,
) -> None:
    """Load the session's pool into a Label Studio project, pre-annotated by the current
    model (the project's labels must be the session's); optionally create the project and
    connect the backend first."""
    from ..session.labelstudio import LabelStudioClient, push_session

    result = push_session(
        db,
        name,
        LabelStudioClient(url, token),
        project,
        create=create,
        backend=backend,
        n=n,
        reissue=reissue,
    )
    typer.echo(
        f"✔ batch {result.batch_id} (round {result.round}): {result.n} tasks -> project "
        f"{result.project_id} at {url} ({result.remaining} left in the pool; a copy in "
        f"{result.path})"
    )
