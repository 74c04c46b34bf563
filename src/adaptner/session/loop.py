"""Session operations: init, next, import, train, status, export, and the automatic loop."""

import contextlib
import hashlib
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.util import get_lang_class
from spacy.vocab import Vocab, create_vocab
from tqdm import tqdm

from ..components.bio_ner import find_bio_ner
from ..errors import AdaptnerError
from ..readers import read_docbin
from ..strategies import get_strategy, select
from ..strategies.base import QueryStrategy
from ..update.features import feature_dir, save_pipeline
from ..update.replay import sample_replay
from ..util import (
    atomic_path,
    claim_output_dir,
    dir_bytes,
    write_json,
    write_jsonl,
    write_text,
)
from ..util import load_pipeline as load_trained
from . import answers as answer_files
from . import formats
from . import pool as pool_files
from .rounds import needed_rounds, pick_model, round_lock, round_trainer, training_pid
from .status import session_status  # noqa: F401 - re-exported (its home is status.py)
from .store import RoundInfo, Session, SessionStore
from .trainer import (
    DEFAULT_SETTINGS,
    MODES,
    UpdateSettings,
    background_by_default,
    evaluate,
    finish_scoring,
    prepare_scoring,
    update_pipeline,
)

DEFAULT_DB = "adaptner.db"
#: Tokens listed in a task's meta as the model's most uncertain ones.
N_UNCERTAIN_TOKENS = 3
#: Docs per batch when the pipeline processes the pool.
PIPE_BATCH = 256
#: Stream of a round's random generator that draws the source replay sample.
_SOURCE_REPLAY = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Echo = Callable[[str], None]


# --- helpers -------------------------------------------------------------------------
def open_store(db: str | Path, *, create: bool = False) -> SessionStore:
    """Open the session store (see :class:`SessionStore`)."""
    return SessionStore(db, create=create)


def load_pipeline(path: str | Path) -> Language:
    """A trained pipeline with a ``bio_ner`` component (:func:`adaptner.util.load_pipeline`).

    Raises:
        AdaptnerError: not a pipeline directory, cannot be loaded, or no bio_ner component.
    """
    nlp = load_trained(path)
    find_bio_ner(nlp, why="A session needs its per-token probabilities.")
    return nlp


def pipeline_labels(nlp: Language) -> list[str]:
    """The entity labels of the pipeline's bio_ner component."""
    return list(find_bio_ner(nlp)[1].labels)


def _strategy(session: Session) -> QueryStrategy:
    try:
        return get_strategy(session.strategy, **session.strategy_params)
    except TypeError as e:
        raise AdaptnerError(
            f"Strategy {session.strategy!r} does not take the parameters "
            f"{session.strategy_params}: {e}"
        ) from None


def _tokenizer(lang: str) -> Callable[[str], Doc]:
    nlp = spacy.blank(lang)
    return nlp.make_doc


def _session_docs(nlp: Language, rows: Sequence[Any]) -> list[Doc]:
    docs = []
    for row in rows:
        doc = formats.doc_from_offsets(nlp.vocab, row["text"], json.loads(row["tokens"]))
        doc._.domain = row["domain"]
        doc._.source = row["source"]
        docs.append(doc)
    return docs


def _vocab(lang: str) -> Vocab:
    """The language's vocab without creating a ``Language`` (whose ``__init__`` imports every
    spaCy factory entry point: torch and transformers when spacy-transformers is installed)."""
    return create_vocab(lang, get_lang_class(lang).Defaults)


def _gold_doc(vocab: Vocab, answer: Any) -> Doc:
    doc = formats.doc_from_offsets(vocab, answer.text, answer.tokens)
    doc.ents = [doc.char_span(s, e, label=label) for s, e, label in answer.spans]
    doc._.domain = answer.domain
    doc._.source = answer.source
    return doc


# --- init ------------------------------------------------------------------------------
@dataclass
class InitResult:
    """What ``init`` did."""

    created: bool
    session: Session
    pool_size: int = 0
    duplicates: int = 0
    heldout_overlap: int = 0
    heldout_f: float | None = None
    source_docs: int = 0
    source_heldout: int = 0


# --- source docs (replayed with every round) ---------------------------------------------
def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_source_docs(path: Path, vocab: Vocab, labels: Sequence[str]) -> list[Doc]:
    """The labelled source docs given at ``session init --source-docs``: a readable DocBin with
    at least one doc, whose entity labels are all in the session's label set.

    Raises:
        AdaptnerError: a missing, unreadable or empty file, or entity labels outside the
            session's label set (the file and the labels named).
    """
    example = "e.g. corpus/train/news.spacy, the docs the source pipeline was trained on"
    if path.is_dir():
        raise AdaptnerError(f"--source-docs {path} is a directory; pass a DocBin ({example}).")
    if not path.exists():
        raise AdaptnerError(f"--source-docs {path} does not exist; pass a DocBin ({example}).")
    try:
        docs = read_docbin(path, vocab)
    except AdaptnerError as e:
        raise AdaptnerError(f"--source-docs: {e}") from None
    if not docs:
        raise AdaptnerError(f"--source-docs {path} holds no documents; pass a DocBin ({example}).")
    counts: dict[str, int] = {}
    for doc in docs:
        for ent in doc.ents:
            if ent.label_ not in labels:
                counts[ent.label_] = counts.get(ent.label_, 0) + 1
    if counts:
        found = ", ".join(f"{label} ({n} spans)" for label, n in sorted(counts.items()))
        raise AdaptnerError(
            f"--source-docs {path} has entity labels outside the session's label set "
            f"({', '.join(labels)}): {found}. Pass source docs annotated with the session's "
            "labels only, or leave out --labels to use every label of the source pipeline."
        )
    return docs


def session_source_docs(store: SessionStore, session: Session, vocab: Vocab) -> list[Doc]:
    """The session's source docs (none without ``--source-docs``), minus held-out texts.

    Raises:
        AdaptnerError: the file is gone or changed since ``init`` (named, with the remedy).
    """
    spec = session.settings.get("source_docs")
    if not spec:
        return []
    path = Path(spec["path"])
    remedy = "Restore it, or train with --source-replay 0."
    if not path.is_file():
        raise AdaptnerError(
            f"{path}, the source docs of session {session.name!r} (session init "
            f"--source-docs), is gone. {remedy}"
        )
    if file_sha256(path) != spec["sha256"]:
        raise AdaptnerError(
            f"{path}, the source docs of session {session.name!r}, changed since `session "
            f"init` recorded it (its SHA-256 differs). {remedy}"
        )
    held = store.heldout_hashes(session.id)
    return [d for d in read_docbin(path, vocab) if formats.text_key(d.text) not in held]


def require_source_docs(db: str | Path, name: str, ratio: float | None) -> None:
    """Refuse an explicit source replay ratio above 0 for a session without source docs.

    Raises:
        AdaptnerError: the session has no ``--source-docs`` (with the remedy).
    """
    if not ratio:
        return
    store = open_store(db)
    try:
        session = store.get_session(name)
    finally:
        store.close()
    if not session.settings.get("source_docs"):
        raise AdaptnerError(
            f"--source-replay {ratio:g}: session {name!r} has no source docs to replay. "
            "Create a session with `adaptner session init ... --source-docs <the source's "
            "gold DocBin, e.g. corpus/train/news.spacy>`, or leave out --source-replay."
        )


def init_session(
    db: str | Path,
    name: str,
    *,
    source: str | Path,
    pool: str | Path,
    heldout: str | Path | None = None,
    strategy: str = "margin",
    strategy_params: dict[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    seed: int = 0,
    session_dir: str | Path | None = None,
    domain: str | None = None,
    limit: int = 0,
    source_docs: str | Path | None = None,
) -> InitResult:
    """Create a named session: source pipeline + target pool + strategy + label set.

    ``source_docs`` is a gold DocBin of the source (e.g. the train docs of the source
    pipeline): every round replays a sample of it (``UpdateSettings.source_replay``) so the
    model keeps what it knew. Its path and SHA-256 are stored; its labels must be the
    session's.

    The pool (DocBin with gold entities dropped, JSONL of texts, or plain text one sentence
    per line) is stored in the database with each sentence's index, domain and input hash;
    duplicates and sentences of the held-out set are left out. Round 0 is the source
    pipeline, scored on the held-out set if one is given. Re-running with the same settings
    changes nothing and says so.

    Raises:
        AdaptnerError: a bad name, pipeline, pool, held-out file, strategy or label, or an
            existing session of that name with different settings.
    """
    if not _NAME_RE.match(name):
        raise AdaptnerError(
            f"Session name {name!r} must start with a letter or digit and use only letters, "
            "digits, '.', '_' and '-'."
        )
    # the store is created only once everything checked out: a failed init leaves no file
    store = open_store(db) if Path(db).exists() else None
    try:
        source = Path(source).resolve()
        pool = Path(pool).resolve()
        heldout_path = Path(heldout).resolve() if heldout else None
        source_docs_path = Path(source_docs).resolve() if source_docs else None
        params = dict(strategy_params or {})
        existing = store.find_session(name) if store is not None else None
        if store is not None and existing is not None:
            wanted = {
                "source": str(source),
                "pool": str(pool),
                "heldout": str(heldout_path) if heldout_path else None,
                "strategy": strategy,
                "strategy_params": params,
                "seed": seed,
                "source_docs": str(source_docs_path) if source_docs_path else None,
            }
            have = {
                "source": existing.source,
                "pool": existing.pool_path,
                "heldout": existing.heldout_path,
                "strategy": existing.strategy,
                "strategy_params": existing.strategy_params,
                "seed": existing.seed,
                "source_docs": (existing.settings.get("source_docs") or {}).get("path"),
            }
            if labels is not None:
                wanted["labels"], have["labels"] = list(labels), existing.labels
            diff = [k for k in wanted if wanted[k] != have[k]]
            if diff:
                details = "; ".join(f"{k}: stored {have[k]!r}, given {wanted[k]!r}" for k in diff)
                raise AdaptnerError(
                    f"Session {name!r} already exists in {store.path} with other settings "
                    f"({details}). Pick another name, or another --db."
                )
            return InitResult(
                created=False, session=existing, pool_size=store.pool_size(existing.id)
            )
        get_strategy(strategy, **params)  # fail early on an unknown strategy
        nlp = load_pipeline(source)
        known = pipeline_labels(nlp)
        if labels is None:
            labels = known
        labels = list(dict.fromkeys(labels))
        unknown = [label for label in labels if label not in known]
        if unknown or not labels:
            raise AdaptnerError(
                f"Labels {unknown or labels} are not predicted by {source} (it knows: "
                f"{', '.join(known)}). Choose --labels from those."
            )
        replay_docs = (
            read_source_docs(source_docs_path, nlp.vocab, labels) if source_docs_path else []
        )
        items = pool_files.read_pool(pool, nlp.make_doc, nlp.vocab, domain=domain)
        heldout_docs = read_docbin(heldout_path, nlp.vocab) if heldout_path else []
        heldout_hashes = {formats.text_key(d.text) for d in heldout_docs}
        rows = []
        seen: set[int] = set()
        duplicates = overlap = 0
        for item in items:
            h = formats.input_hash({"text": item.text})
            if formats.text_key(item.text) in heldout_hashes:
                overlap += 1
                continue
            if h in seen:
                duplicates += 1
                continue
            seen.add(h)
            rows.append((len(rows), h, item.text, item.offsets, item.domain, item.source))
            if limit and len(rows) >= limit:
                break
        if not rows:
            raise AdaptnerError(f"Pool {pool} has no sentences left after removing held-out ones.")
        settings: dict[str, Any] = {"domain": domain, "limit": limit}
        if source_docs_path is not None:
            settings["source_docs"] = {
                "path": str(source_docs_path),
                "sha256": file_sha256(source_docs_path),
                "n_docs": len(replay_docs),
            }
        metrics: dict[str, Any] = {}
        if heldout_docs:
            metrics = evaluate(nlp, heldout_docs)
        sdir = (
            Path(session_dir) if session_dir else Path(db).parent / "training" / "sessions" / name
        )
        sdir = sdir.resolve()
        if store is None:
            store = open_store(db, create=True)
        try:
            with store.write() as conn:
                sid = store.create_session(
                    conn,
                    name=name,
                    source=str(source),
                    pool_path=str(pool),
                    heldout_path=str(heldout_path) if heldout_path else None,
                    strategy=strategy,
                    strategy_params=params,
                    labels=labels,
                    lang=nlp.lang,
                    seed=seed,
                    session_dir=str(sdir),
                    settings=settings,
                )
                store.add_pool(conn, sid, rows)
                store.add_heldout(conn, sid, sorted(heldout_hashes))
                store.add_round(
                    conn,
                    sid,
                    round=0,
                    mode="source",
                    model_dir=str(source),
                    n_train=0,
                    metrics=metrics,
                )
        except sqlite3.IntegrityError:
            raise AdaptnerError(
                f"Session {name!r} was created by another command at the same time."
            ) from None
        sdir.mkdir(parents=True, exist_ok=True)
        return InitResult(
            created=True,
            session=store.get_session(name),
            pool_size=len(rows),
            duplicates=duplicates,
            heldout_overlap=overlap,
            heldout_f=metrics.get("ents_f"),
            source_docs=len(replay_docs),
            source_heldout=sum(formats.text_key(d.text) in heldout_hashes for d in replay_docs),
        )
    finally:
        if store is not None:
            store.close()


# --- next --------------------------------------------------------------------------------
@dataclass
class BatchResult:
    """A batch handed out by ``next``."""

    batch_id: int
    round: int
    path: Path
    copy_path: Path
    tasks: list[dict[str, Any]]
    remaining: int
    seconds: float
    #: The newest finished round (``round`` is the one whose model made the batch).
    newest_round: int | None = None
    #: ``round``'s trainer (``source`` for round 0).
    trainer: str | None = None
    #: Why the batch does not come from the newest round (None when it does).
    note: str | None = None
    #: The pipeline that made the batch (``round``'s model).
    nlp: Language | None = field(default=None, repr=False, compare=False)


def next_batch(
    db: str | Path,
    name: str,
    *,
    n: int,
    output: str | Path,
    fmt: str = "prodigy",
    reissue: bool = False,
    nlp: Language | None = None,
    progress: bool = False,
    trainer: str = "auto",
    models: dict[int, Language] | None = None,
) -> BatchResult:
    """Score the remaining pool with the current model and write the top ``n`` as tasks.

    The current model is the newest finished round, unless its held-out F1 is below the
    source's: then the best round so far (:func:`~adaptner.session.rounds.pick_model`), and
    the result's ``note`` says why. Tasks carry the model's entities as pre-annotations, a
    ``meta`` (session, round, strategy, score, domain, most uncertain tokens) and Prodigy
    hashes. Sentences already answered are never handed out again; sentences handed out and
    not answered only with ``reissue``. ``output`` may contain ``{batch}``, replaced by the
    batch id. A Prodigy copy of every batch is kept under ``<session dir>/batches/``.

    Args:
        nlp: The newest round's model, if the caller has it loaded (skips loading it).
        trainer: The session's round trainer (:data:`~adaptner.session.trainer.TRAINERS`):
            with ``top_layers`` (auto for transformer pipelines) the lower layers' outputs
            are cached, with ``cached_head`` the encoder's (``<session dir>/features/``), so
            each doc goes through them once.
        models: Models the caller has loaded, by round; the one used is taken from here, or
            loaded and added here.
    """
    if n <= 0:
        raise AdaptnerError(f"-n must be positive, got {n}.")
    if fmt not in formats.FORMATS:
        raise AdaptnerError(f"Unknown format {fmt!r}; choose one of {', '.join(formats.FORMATS)}.")
    if Path(str(output)).is_dir():
        raise AdaptnerError(f"Output {output} is a directory; pass a file such as batch.jsonl.")
    start = time.perf_counter()
    store = open_store(db)
    try:
        session = store.get_session(name)
        choice = pick_model(store.rounds(session.id))
        current = choice.round  # the model the batch comes from
        candidates = store.candidates(session.id, reissue=reissue)
        if not candidates:
            counts = store.counts(session.id)
            hint = (
                f" {counts['outstanding']} handed-out sentences still wait for answers: import "
                "them, or pass --reissue to hand them out again."
                if counts["outstanding"]
                else ""
            )
            raise AdaptnerError(
                f"Nothing left to hand out in session {name!r}: {counts['answered']} of "
                f"{counts['pool']} pool sentences are answered.{hint}"
            )
        strategy = _strategy(session)
        models = {} if models is None else models
        if nlp is not None:
            models.setdefault(choice.newest.round, nlp)
        nlp = models.get(current.round)
        scored = _scored_path(session, current)
        docs = None
        if not strategy.needs_pipeline:  # scored by this round's model already?
            docs = _load_scored(scored, candidates, nlp.vocab if nlp else _vocab(session.lang))
        if docs is None:
            if nlp is None:
                nlp = models[current.round] = load_pipeline(current.model_dir)
            docs = score_pool(nlp, candidates, trainer, session, progress=progress)
            if not strategy.needs_pipeline:
                _save_scored(scored, docs)
        n_batches = len(store.batches(session.id))
        rng = numpy.random.default_rng([session.seed, current.round, n_batches])
        chosen, scores = rank_docs(strategy, docs, min(n, len(docs)), nlp=nlp, rng=rng)
        labels = set(session.labels)
        tasks = []
        for rank, i in enumerate(chosen, start=1):
            score = None if scores is None else float(scores[i])
            tasks.append(_make_task(docs[i], session, current.round, rank, score, labels))
        with store.write() as conn:
            if not reissue:
                taken = [
                    t["_input_hash"]
                    for t in tasks
                    if conn.execute(
                        "SELECT 1 FROM handouts WHERE session_id = ? AND input_hash = ?",
                        (session.id, t["_input_hash"]),
                    ).fetchone()
                ]
                if taken:
                    raise AdaptnerError(
                        f"Another `next` handed out {len(taken)} of these sentences meanwhile; "
                        "run `next` again."
                    )
            batch_id = store.next_batch_id(conn)
            path = Path(str(output).replace("{batch}", f"{batch_id:04d}"))
            copy_path = Path(session.session_dir) / "batches" / f"batch-{batch_id:04d}.jsonl"
            version = model_version(session, current.round)
            write_text(path, formats.render_batch(tasks, fmt, version))
            write_text(copy_path, formats.render_batch(tasks, "prodigy", version))
            seconds = time.perf_counter() - start
            store.add_batch(
                conn,
                session.id,
                round=current.round,
                path=str(path.resolve()),
                copy_path=str(copy_path),
                format=fmt,
                strategy=session.strategy,
                handouts=[
                    (t["_input_hash"], t["_task_hash"], t["meta"]["rank"], t["meta"]["score"])
                    for t in tasks
                ],
                seconds=seconds,
                newest_round=choice.newest.round,
            )
        remaining = store.counts(session.id)["remaining"]
        return BatchResult(
            batch_id,
            current.round,
            path,
            copy_path,
            tasks,
            remaining,
            seconds,
            newest_round=choice.newest.round,
            trainer=round_trainer(current),
            note=choice.reason,
            nlp=nlp,
        )
    finally:
        store.close()


def score_pool(
    nlp: Language,
    rows: Sequence[Any],
    trainer: str,
    session: Session,
    *,
    progress: bool = False,
) -> list[Doc]:
    """Pool rows (``store.candidates``) as docs processed by ``nlp`` (entities and
    ``doc._.ner_probs``), through the session's cache for ``trainer``."""
    docs = _session_docs(nlp, rows)
    prepare_scoring(nlp, docs, trainer, feature_dir(session.session_dir))
    docs = list(
        tqdm(
            nlp.pipe(docs, batch_size=PIPE_BATCH),
            total=len(docs),
            desc="score pool",
            unit="doc",
            leave=False,
            disable=None if progress else True,  # None: only on a terminal
        )
    )
    finish_scoring(nlp)
    return docs


#: Where spacy-transformers keeps a doc's hidden states in ``doc.user_data``.
_TRF_DATA = ("._.", "trf_data", None, None)


def _scored_path(session: Session, info: RoundInfo) -> Path:
    """Where the pool scored by round ``info``'s model is kept (named by the round and the
    time it was saved, so a round number trained again never reads another model's docs)."""
    stamp = f"{info.created_at:.6f}".replace(".", "")
    return feature_dir(session.session_dir) / "scored" / f"round-{info.round}-{stamp}.spacy"


def _save_scored(path: Path, docs: Sequence[Doc]) -> None:
    """Keep the scored pool of one round (the one that makes batches now) for the next
    ``next``: a new process then hands out a batch without loading the model."""
    kept = DocBin(store_user_data=True)
    for doc in docs:  # without a transformer's hidden states (``doc._.trf_data``): no
        hidden = doc.user_data.pop(_TRF_DATA, None)  # strategy kept here reads them
        kept.add(doc)
        if hidden is not None:
            doc.user_data[_TRF_DATA] = hidden
    with atomic_path(path) as tmp:
        kept.to_disk(tmp)
    for old in path.parent.glob("round-*.spacy"):
        if old != path:
            old.unlink(missing_ok=True)


def _load_scored(path: Path, rows: Sequence[Any], vocab: Vocab) -> list[Doc] | None:
    """The docs of ``rows`` from a kept scored pool, in the order of ``rows``; None when there
    is none or it lacks one of them. An unreadable file is removed and scored again."""
    if not path.is_file():
        return None
    try:
        kept = {doc.text: doc for doc in DocBin().from_disk(path).get_docs(vocab)}
    except Exception:  # noqa: BLE001 - a cache: a damaged one is rebuilt, not reported
        path.unlink(missing_ok=True)
        return None
    docs = [kept.get(row["text"]) for row in rows]
    return None if any(d is None for d in docs) else docs  # type: ignore[return-value]


def keep_scored_pool(db: str | Path, name: str, trained: "TrainResult", trainer: str) -> None:
    """After a round trained in the background: when it is the model the next batch comes
    from and the strategy needs only the scored docs, score the pool with it now and keep
    the docs, so the next ``next`` (often a new process) writes its batch without loading
    the model. Costs this process the scoring; changes no batch."""
    store = open_store(db)
    try:
        session = store.get_session(name)
        choice = pick_model(store.rounds(session.id))
        if choice.round.round != trained.round or _strategy(session).needs_pipeline:
            return
        candidates = store.candidates(session.id, reissue=False)
        if candidates:
            docs = score_pool(trained.nlp, candidates, trainer, session)
            _save_scored(_scored_path(session, choice.round), docs)
    finally:
        store.close()


def model_version(session: Session, round_no: int) -> str:
    """The name of a round's model as Label Studio shows it (``<session>-round-<k>``)."""
    return f"{session.name}-round-{round_no}"


def rank_docs(
    strategy: QueryStrategy,
    docs: Sequence[Doc],
    k: int,
    *,
    nlp: Language,
    rng: numpy.random.Generator,
) -> tuple[list[int], numpy.ndarray | None]:
    """The ``k`` most useful docs by the strategy, most useful first, and the per-doc scores
    (None for a strategy that picks a set instead of scoring each doc)."""
    if type(strategy).query is QueryStrategy.query:
        scores = numpy.asarray(strategy.score(docs, nlp=nlp, rng=rng), dtype="float64")
        return select(scores, k, rng), scores
    return strategy.query(docs, k, nlp=nlp, rng=rng), None


def usefulness(rank: int, n: int) -> float:
    """A rank in the strategy's order (1 = most useful of ``n``) as a score in (0, 1] that
    sorts the same way, descending: what Label Studio shows as the prediction score."""
    return round(1.0 - (rank - 1) / n, 6)


def token_uncertainty(doc: Doc) -> numpy.ndarray:
    """1 - the top tag probability, per token (zeros if the doc has no probabilities)."""
    probs = doc._.ner_probs
    if probs is None or len(probs) != len(doc):
        return numpy.zeros(len(doc), dtype="float32")
    return 1.0 - numpy.asarray(probs).max(axis=1)


def _make_task(
    doc: Doc, session: Session, round_no: int, rank: int, score: float | None, labels: set[str]
) -> dict[str, Any]:
    offsets = formats.doc_offsets(doc)
    spans = [
        (ent.start_char, ent.end_char, ent.label_)
        for ent in doc.ents
        if ent.label_ in labels and not ent.text.isspace()
    ]
    unc = token_uncertainty(doc)
    order = [int(i) for i in numpy.argsort(-unc, kind="stable") if not doc[int(i)].is_space]
    uncertain = [
        {"token": doc[i].text, "id": i, "uncertainty": round(float(unc[i]), 4)}
        for i in order[:N_UNCERTAIN_TOKENS]
    ]
    confidence = float(1.0 - unc.mean()) if len(unc) else 1.0
    meta = {
        "session": session.name,
        "round": round_no,
        "strategy": session.strategy,
        "score": None if score is None or not numpy.isfinite(score) else round(score, 6),
        "rank": rank,
        "domain": doc._.domain,
        "source": doc._.source,
        "confidence": round(confidence, 4),
        "uncertain_tokens": uncertain,
    }
    return formats.make_task(doc.text, offsets, spans, meta)


# --- import ------------------------------------------------------------------------------
class AnswersRefused(AdaptnerError):
    """``import`` refused lines of an answers file, so nothing was imported.

    Attributes:
        errors: Why, one :class:`answer_files.LineError` per refused line.
    """

    def __init__(self, errors: list[answer_files.LineError], message: str) -> None:
        super().__init__(message)
        self.errors = errors


@dataclass
class ImportResult:
    """What ``import`` did."""

    lines: int
    new: int
    replaced: int
    duplicate: int
    stale: int
    invalid: int
    accepted: int
    rejected: int
    ignored: int
    fmt: str = "prodigy"
    unannotated: int = 0
    superseded: int = 0
    foreign: int = 0
    snaps: list[str] = field(default_factory=list)
    rejects_path: Path | None = None
    errors: list[answer_files.LineError] = field(default_factory=list)


def heldout_keys(store: SessionStore, session: Session) -> set[int]:
    """Text keys (:func:`formats.text_key`) of the session's held-out set.

    The keys recorded at ``init`` plus those of the held-out file as it is now (every round
    is evaluated on the file), so neither a moved nor an edited file lets a held-out text in.

    Raises:
        AdaptnerError: the session has a held-out file, it is gone, and no keys were recorded.
    """
    keys = store.heldout_hashes(session.id)
    if session.heldout_path:
        path = Path(session.heldout_path)
        if path.exists():
            vocab = spacy.blank(session.lang).vocab
            keys |= {formats.text_key(doc.text) for doc in read_docbin(path, vocab)}
        elif not keys:
            raise AdaptnerError(
                f"The held-out set of session {session.name!r} ({path}) is missing, so answers "
                "cannot be checked against it; restore the file before importing."
            )
    return keys


def import_answers(
    db: str | Path,
    name: str,
    path: str | Path,
    *,
    fmt: str | None = None,
    snap: bool = False,
    allow_foreign: bool = False,
    skip_invalid: bool = False,
    rejects: str | Path | None = None,
) -> ImportResult:
    """Validate an answers file and store its answers in one transaction.

    The file may be Prodigy JSONL, a Label Studio JSON or JSON_MIN export, or a doccano
    JSONL export (see :data:`adaptner.session.answers.ANSWER_FORMATS`; detected unless
    ``fmt`` is given).
    Answers for texts of the session's held-out set are always refused; answers for texts
    the session did not hand out are refused unless ``allow_foreign``. Any invalid or
    refused line makes the whole import fail (nothing is stored) with ``file:line: reason``
    for every bad line, unless ``skip_invalid``: then the valid lines are imported and the
    bad ones written to ``rejects`` (default ``<file>.rejects.jsonl``). An answer identical
    to the stored one is a duplicate (no change); a different answer for the same input
    replaces it, unless both carry a timestamp and the new one is older (stale).

    Args:
        snap: Widen spans that start or end inside a token to token boundaries (each snap is
            listed in the result) instead of refusing them.

    Raises:
        AdaptnerError: a missing file or one in no known format, invalid or refused lines
            (without ``skip_invalid``), or no answers at all.
    """
    path = Path(path)
    store = open_store(db)
    try:
        session = store.get_session(name)
        pool = store.pool_tokens(session.id)
        handed_out = store.handed_out(session.id)
        heldout = heldout_keys(store, session)
        tokenizer: list[Callable[[str], Doc]] = []

        def get_offsets(text: str, in_hash: int) -> formats.Offsets:
            if in_hash in pool and pool[in_hash][0] == text:
                return list(pool[in_hash][1])
            if not tokenizer:
                tokenizer.append(_tokenizer(session.lang))
            return formats.doc_offsets(tokenizer[0](text))

        read = answer_files.validate_answers(
            path,
            session.labels,
            get_offsets,
            fmt=fmt,
            snap=snap,
            handed_out_task_hash=handed_out.get,
        )
        answers, errors = [], list(read.errors)
        foreign = 0
        for a in read.answers:
            if formats.text_key(a.text) in heldout:
                errors.append(
                    answer_files.LineError(
                        a.line,
                        "this text is in the session's held-out set, which every round is "
                        "evaluated on; answers for held-out texts are never imported",
                        json.dumps(a.task, ensure_ascii=False),
                        a.where,
                    )
                )
            elif a.input_hash not in handed_out and not allow_foreign:
                errors.append(
                    answer_files.LineError(
                        a.line,
                        f"this text was not handed out by session {name!r} (it is in none of "
                        "its batches); pass --allow-foreign to import answers for other texts",
                        json.dumps(a.task, ensure_ascii=False),
                        a.where,
                    )
                )
            else:
                foreign += a.input_hash not in handed_out
                answers.append(a)
        errors.sort(key=lambda e: e.line)
        if errors and not skip_invalid:
            shown = "\n".join(f"  {e.message(path)}" for e in errors)
            raise AnswersRefused(
                errors,
                f"{path}: {len(errors)} invalid line(s); nothing was imported.\n{shown}\n"
                f"Fix these lines, or pass --skip-invalid to import the {len(answers)} valid "
                "one(s) and write the rest to a rejects file.",
            )
        if not answers:
            extra = (
                f" ({read.unannotated} task(s) have no annotation yet)" if read.unannotated else ""
            )
            raise AdaptnerError(f"{path} holds no valid answers{extra}; nothing was imported.")
        rejects_path = None
        if errors:
            rejects_path = (
                Path(rejects) if rejects else path.with_name(path.stem + ".rejects.jsonl")
            )
            write_jsonl(
                rejects_path,
                [
                    {
                        "file": str(path),
                        "line": e.line,
                        "task": e.where,
                        "error": e.reason,
                        "raw": e.raw,
                    }
                    for e in errors
                ],
            )
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        counts = {
            "lines": len(answers) + len(errors),
            "new": 0,
            "replaced": 0,
            "duplicate": 0,
            "stale": 0,
            "invalid": len(errors),
        }
        with store.write() as conn:
            import_id = store.start_import(conn, session.id, str(path.resolve()), sha)
            for answer in answers:
                current = store.current_answer(conn, session.id, answer.input_hash)
                if current is not None:
                    if current["answer_hash"] == answer.answer_hash:
                        counts["duplicate"] += 1
                        continue
                    older = (
                        answer.timestamp is not None
                        and current["timestamp"] is not None
                        and answer.timestamp < current["timestamp"]
                    )
                    if older:
                        counts["stale"] += 1
                        continue
                    store.supersede(conn, current["id"])
                    counts["replaced"] += 1
                else:
                    counts["new"] += 1
                store.insert_answer(conn, session.id, import_id, answer.record())
            store.finish_import(conn, import_id, counts)
        kinds = {k: sum(a.answer == k for a in answers) for k in formats.ANSWERS}
        return ImportResult(
            **counts_without_lines(counts),
            lines=counts["lines"],
            accepted=kinds["accept"],
            rejected=kinds["reject"],
            ignored=kinds["ignore"],
            fmt=read.fmt,
            unannotated=read.unannotated,
            superseded=read.superseded,
            foreign=foreign,
            snaps=[
                f"{path}:{a.line}: {a.where + ': ' if a.where else ''}{n}"
                for a in answers
                for n in a.snaps
            ],
            rejects_path=rejects_path,
            errors=errors,
        )
    finally:
        store.close()


def counts_without_lines(counts: dict[str, int]) -> dict[str, int]:
    """The import counts except ``lines`` (keyword arguments for :class:`ImportResult`)."""
    return {k: v for k, v in counts.items() if k != "lines"}


# --- train -------------------------------------------------------------------------------
class NoNewAnswers(AdaptnerError):
    """``train`` in warm mode found no accepted answers it has not trained on."""


@dataclass
class TrainResult:
    """A trained round."""

    round: int
    mode: str
    model_dir: Path
    metrics: dict[str, Any]
    nlp: Language


def train_round(
    db: str | Path,
    name: str,
    *,
    mode: str = "warm",
    settings: UpdateSettings | None = None,
    nlp: Language | None = None,
    progress: bool = False,
    nlp_round: int | None = None,
    on_fit: Callable[[TrainResult], None] | None = None,
) -> TrainResult:
    """Train the next round on the accepted answers and make it the current model.

    ``warm`` continues from the current model on the answers not trained on yet plus a
    seeded sample of earlier ones (``settings.replay``); ``reset`` retrains from the source
    pipeline on every accepted answer. In both, a session with source docs (``init
    --source-docs``) adds ``settings.source_replay`` of them per answer trained on (a sample
    seeded by the session seed and the round). Both early-stop on the held-out set if the
    session has one. This is the one round update of ``session train``, ``import --next``,
    ``loop`` and the Label Studio backend (:mod:`adaptner.session.worker`). The model is saved to
    ``<session dir>/rounds/<k>/model`` through a temporary directory that is renamed inside
    the store's write transaction, so a killed run never leaves a half-trained model current.

    One round trains at a time per session (:func:`~adaptner.session.rounds.round_lock`): a
    second one, from another process or thread, waits and then continues from the first.

    Args:
        nlp: The current model if the caller has it loaded (warm mode only).
        nlp_round: The round ``nlp`` belongs to; when it is not the current one any more
            (a round finished meanwhile), the current model is loaded instead.
        on_fit: Called with the round once its weights are final and scored, before it is
            saved (still under the round lock): the Label Studio backend serves it from
            memory while the ~0.5 GB of a transformer is written. If saving then fails the
            round does not exist, and the caller must stop serving it.

    Raises:
        AdaptnerError: an unknown mode, no (new) accepted answers, or another ``train``
            finished the same round first.
    """
    if mode not in MODES:
        raise AdaptnerError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
    settings = settings or DEFAULT_SETTINGS[mode]
    store = open_store(db)
    lock = contextlib.ExitStack()
    try:
        session = store.get_session(name)
        lock.enter_context(round_lock(session.session_dir, name))
        current = store.current_round(session.id)
        new_round = current.round + 1
        accepted = store.answers(session.id, answer="accept")
        fresh = [a for a in accepted if a.trained_round is None]
        if mode == "warm":
            if not fresh:
                raise NoNewAnswers(
                    f"No new accepted answers since round {current.round} of session "
                    f"{name!r}; import answers first (or use --mode reset)."
                )
            earlier = [a for a in accepted if a.trained_round is not None]
            rng = numpy.random.default_rng([session.seed, new_round])
            n_replay = min(settings.replay, len(earlier))
            picked = (
                sorted(rng.choice(len(earlier), size=n_replay, replace=False)) if n_replay else []
            )
            train_answers = fresh + [earlier[i] for i in picked]
            if nlp is None or nlp_round not in (None, current.round):
                nlp = load_pipeline(current.model_dir)
        else:
            if not accepted:
                raise AdaptnerError(
                    f"Session {name!r} has no accepted answers to train on; import answers first."
                )
            train_answers = accepted
            nlp = load_pipeline(session.source)
        heldout = read_docbin(session.heldout_path, nlp.vocab) if session.heldout_path else None
        docs = [_gold_doc(nlp.vocab, a) for a in train_answers]
        source_docs: list[Doc] = []
        if settings.source_replay:
            rng = numpy.random.default_rng([session.seed, new_round, _SOURCE_REPLAY])
            source_docs = sample_replay(
                session_source_docs(store, session, nlp.vocab),
                len(docs),
                settings.source_replay,
                rng,
                settings.source_replay_max,
            )
        metrics = update_pipeline(
            nlp,
            [*docs, *source_docs],
            heldout,
            settings,
            seed=session.seed + new_round,
            progress=progress,
            cache_dir=feature_dir(session.session_dir),
            n_target=len(docs),
        )
        metrics.update(
            {
                "mode": mode,
                "n_new": len(fresh),
                "n_replay": len(train_answers) - len(fresh) if mode == "warm" else 0,
                "n_source_replay": len(source_docs),
                "from_model": current.model_dir if mode == "warm" else session.source,
            }
        )
        round_dir = Path(session.session_dir) / "rounds" / str(new_round)
        result = TrainResult(new_round, mode, round_dir / "model", metrics, nlp)
        if on_fit is not None:
            on_fit(result)
        with store.write() as conn:
            latest = store.current_round(session.id, conn)
            if latest.round != current.round:
                raise AdaptnerError(
                    f"Another `train` finished round {latest.round} of session {name!r} "
                    "meanwhile; this round was discarded. Run `train` again if needed."
                )
            _remove_stale_temp_dirs(round_dir.parent)
            with atomic_path(round_dir, is_dir=True) as tmp:
                # a cached-head round left the encoder as loaded: link it, do not rewrite it
                frozen = metrics["trainer"] == "cached_head"
                save_pipeline(
                    nlp, tmp / "model", link_from=metrics["from_model"] if frozen else None
                )
                write_json(tmp / "metrics.json", metrics)
            store.add_round(
                conn,
                session.id,
                round=new_round,
                mode=mode,
                model_dir=str(round_dir / "model"),
                n_train=len(docs) + len(source_docs),
                metrics=metrics,
            )
            store.mark_trained(conn, [a.id for a in fresh], new_round)
        return result
    finally:
        lock.close()
        store.close()


@dataclass
class PruneResult:
    """What :func:`prune_models` removed."""

    removed: list[int]
    freed_bytes: int
    kept: list[int]


def prune_models(db: str | Path, name: str) -> PruneResult:
    """Delete the saved models of the rounds no later round or batch can use (every round but
    the source, the newest and the one that makes batches now: see
    :func:`~adaptner.session.rounds.needed_rounds`); their metrics and store records stay.
    An e5 round is about 0.5 GB, so a Label Studio session with a round per annotation
    fills a disk without it. Runs under the round lock, so never beside a round update.
    """
    store = open_store(db)
    try:
        session = store.get_session(name)
        rounds_dir = (Path(session.session_dir) / "rounds").resolve()
        with round_lock(session.session_dir, name):
            rounds = store.rounds(session.id)
            needed = needed_rounds(rounds)
            removed, freed = [], 0
            for info in rounds:
                model = Path(info.model_dir)
                if info.round in needed or not model.is_dir():
                    continue
                if model.resolve().parent.parent != rounds_dir:  # not a model this session saved
                    continue
                freed += dir_bytes(model)
                # renamed first, so a half-deleted folder never looks like a model (and the
                # next round's clean-up removes what a killed prune left)
                trash = rounds_dir / f".{info.round}-{model.name}.old-pruned"
                model.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(info.round)
        return PruneResult(removed, freed, sorted(needed))
    finally:
        store.close()


def _remove_stale_temp_dirs(rounds_dir: Path) -> None:
    """Delete temp dirs left by killed ``train`` runs.

    Called inside the store's write transaction: models are only saved while holding it,
    so no other process can be writing one of these directories right now.
    """
    if not rounds_dir.is_dir():
        return
    for path in rounds_dir.iterdir():
        if path.name.startswith(".") and (path.name.endswith(".tmp") or ".old-" in path.name):
            shutil.rmtree(path, ignore_errors=True)


# --- status and export ------------------------------------------------------------------
def export_session(
    db: str | Path, name: str, output_dir: str | Path, *, force: bool = False
) -> dict[str, Path]:
    """Write the labeled set: ``labeled.spacy`` (accepted answers, train-ready) and
    ``answers.jsonl`` (every current answer as a Prodigy task).

    A folder that ``session export`` did not write is refused unless ``force``."""
    output_dir = Path(output_dir)
    store = open_store(db)
    try:
        session = store.get_session(name)
        answers = store.answers(session.id)
    finally:
        store.close()
    if not answers:
        raise AdaptnerError(f"Session {name!r} has no answers to export yet.")
    vocab = _vocab(session.lang)
    docbin = DocBin(store_user_data=True)
    for a in answers:
        if a.answer == "accept":
            docbin.add(_gold_doc(vocab, a))
    claim_output_dir(output_dir, "session export", force=force, owned_files=("labeled.spacy",))
    spacy_path = output_dir / "labeled.spacy"
    jsonl_path = output_dir / "answers.jsonl"
    with atomic_path(spacy_path) as tmp:
        docbin.to_disk(tmp)
    write_jsonl(jsonl_path, [a.task for a in answers])
    return {"spacy": spacy_path, "jsonl": jsonl_path}


# --- one cycle: answers in -> model updated -> next batch out ------------------------------
@dataclass
class CycleResult:
    """What :func:`answer_cycle` did.

    Attributes:
        imported: The import.
        trained: The round trained, or None (no new accepted answers: the model is unchanged).
        batch: The next batch.
        timings: Seconds: ``import``, ``train``, ``next``, and ``total`` from the start of the
            import to the batch written (with ``background`` the training comes after it).
    """

    imported: ImportResult
    trained: TrainResult | None
    batch: BatchResult
    timings: dict[str, float]


def _untrained(db: str | Path, name: str) -> tuple[Session, int, int]:
    """The session, its number of accepted answers not trained on yet, and its newest round."""
    store = open_store(db)
    try:
        session = store.get_session(name)
        fresh = len(store.answers(session.id, answer="accept", trained=False))
        return session, fresh, store.current_round(session.id).round
    finally:
        store.close()


def batch_format(answers_fmt: str) -> str:
    """The batch format of the tool an answers format comes from (``labelstudio-min`` ->
    ``labelstudio``)."""
    tool = answers_fmt.split("-")[0]
    return tool if tool in formats.FORMATS else "prodigy"


#: Called by :func:`answer_cycle` after each step: ("import", ImportResult), ("wait", the pid
#: of another process training a round first), ("train", TrainResult or None when there were
#: no new accepted answers), ("batch", BatchResult).
OnStep = Callable[[str, Any], None]


def _train_loaded(
    db: str | Path,
    name: str,
    *,
    mode: str,
    settings: UpdateSettings,
    models: dict[int, Language],
    progress: bool,
    on_step: OnStep,
) -> TrainResult:
    """:func:`train_round` continuing from the newest round's model if ``models`` has it (warm
    mode trains it in place, so it is re-filed under the new round)."""
    session, _, newest = _untrained(db, name)
    pid = training_pid(session.session_dir)
    if pid is not None:
        on_step("wait", pid)
    trained = train_round(
        db,
        name,
        mode=mode,
        settings=settings,
        nlp=models.get(newest) if mode == "warm" else None,
        nlp_round=newest,
        progress=progress,
    )
    for r in [r for r, m in models.items() if m is trained.nlp]:
        del models[r]
    models[trained.round] = trained.nlp
    return trained


def default_background(db: str | Path, name: str, trainer: str) -> bool:
    """``--background`` when not given, for a session's rounds with ``trainer``
    (:func:`~adaptner.session.trainer.background_by_default` on its source pipeline)."""
    store = open_store(db)
    try:
        source = store.get_session(name).source
    finally:
        store.close()
    return background_by_default(source, trainer)


def answer_cycle(
    db: str | Path,
    name: str,
    answers: str | Path,
    *,
    n: int,
    output: str | Path,
    fmt: str | None = "prodigy",
    mode: str = "warm",
    settings: UpdateSettings | None = None,
    background: bool = False,
    reissue: bool = False,
    models: dict[int, Language] | None = None,
    progress: bool = False,
    on_step: OnStep | None = None,
    answers_fmt: str | None = None,
    **import_options: Any,
) -> CycleResult:
    """Import an answers file, update the model and write the next batch, in one process.

    The steps are :func:`import_answers`, :func:`train_round` and :func:`next_batch`; each
    model is loaded once (warm mode trains the loaded newest model, and the batch comes from
    it unless it scores below the source, see :func:`next_batch`). Without new accepted
    answers no round is trained. With ``background`` the batch is written first, from the
    newest finished model, and the round trains after it, while the batch is annotated: the
    next cycle's batch comes from that round.

    Args:
        fmt: The batch's format; None = the annotation tool the answers came from.
        models: Models the caller keeps loaded between cycles, by round (updated here).
        on_step: Called after each step (see :data:`OnStep`), e.g. to report the batch as
            soon as it is written.
        answers_fmt: The answers' format (``fmt`` of :func:`import_answers`; None: detected).
        import_options: More options of :func:`import_answers` (``snap``, ...).

    Raises:
        AdaptnerError: what the three steps raise; nothing is imported when the answers are
            refused.
    """
    if mode not in MODES:
        raise AdaptnerError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
    settings = settings or DEFAULT_SETTINGS[mode]
    models = {} if models is None else models
    step = on_step or (lambda what, result: None)
    t0 = time.perf_counter()
    imported = import_answers(db, name, answers, fmt=answers_fmt, **import_options)
    t1 = time.perf_counter()
    step("import", imported)
    _, fresh, _ = _untrained(db, name)

    def train() -> TrainResult | None:
        trained = None
        if fresh:
            try:
                trained = _train_loaded(
                    db,
                    name,
                    mode=mode,
                    settings=settings,
                    models=models,
                    progress=progress,
                    on_step=step,
                )
            except NoNewAnswers:  # another process trained on them meanwhile
                pass
        step("train", trained)
        return trained

    def hand_out() -> BatchResult:
        batch = next_batch(
            db,
            name,
            n=n,
            output=output,
            fmt=fmt or batch_format(imported.fmt),
            reissue=reissue,
            progress=progress,
            trainer=settings.trainer,
            models=models,
        )
        step("batch", batch)
        return batch

    if background:
        batch = hand_out()
        t2 = time.perf_counter()
        trained = train()
        if trained is not None:
            keep_scored_pool(db, name, trained, settings.trainer)
        t3 = time.perf_counter()
        timings = {"import": t1 - t0, "next": t2 - t1, "train": t3 - t2, "total": t2 - t0}
    else:
        trained = train()
        t2 = time.perf_counter()
        batch = hand_out()
        t3 = time.perf_counter()
        timings = {"import": t1 - t0, "train": t2 - t1, "next": t3 - t2, "total": t3 - t0}
    keep = {batch.round, batch.newest_round, trained.round if trained else None}
    for r in [r for r in models if r not in keep]:  # keep only what the next cycle may use
        del models[r]
    return CycleResult(imported, trained, batch, timings)


# --- the automatic loop ----------------------------------------------------------------
def wait_for_file(path: Path, *, poll: float, settle: float, timeout: float) -> None:
    """Wait until ``path`` exists and its size and mtime have not changed for ``settle`` s.

    Raises:
        AdaptnerError: ``timeout`` seconds passed (0 = wait forever).
    """
    start = time.monotonic()
    last: tuple[int, int] | None = None
    stable_since = 0.0
    while True:
        if path.exists():
            st = path.stat()
            sig = (st.st_size, st.st_mtime_ns)
            now = time.monotonic()
            if sig != last:
                last, stable_since = sig, now
            elif st.st_size > 0 and now - stable_since >= settle:
                return
        if timeout and time.monotonic() - start > timeout:
            raise AdaptnerError(
                f"Timed out after {timeout:.0f} s waiting for {path}. Run `adaptner session "
                "loop` again to continue where it stopped."
            )
        time.sleep(poll)


def run_loop(
    db: str | Path,
    name: str,
    *,
    n: int,
    workdir: str | Path,
    rounds: int = 0,
    mode: str = "warm",
    settings: UpdateSettings | None = None,
    poll: float = 2.0,
    settle: float = 2.0,
    timeout: float = 0.0,
    echo: Echo = print,
    progress: bool = False,
    background: bool = False,
) -> list[dict[str, float]]:
    """Chain next -> wait for the answers -> import -> train -> next, keeping the model loaded.

    Batches are written to ``<workdir>/batch-<id>.jsonl``; the loop waits for the
    annotators' Prodigy JSONL at ``<workdir>/answers-<id>.jsonl``. Stopping and restarting
    is safe: a batch whose answers were not imported yet is waited for again. Each cycle is
    :func:`answer_cycle`.

    Args:
        rounds: Stop after this many import-train-next cycles (0 = until the pool is used up).
        background: Rounds train in a background thread (:class:`~adaptner.session.worker.
            RoundWorker`) while the loop imports answers and writes batches from the newest
            finished model; the loop waits for a running round before it returns.

    Returns:
        One timing record per cycle (import, train, next and total seconds; ``total`` is from
        the answers' import to the next batch written; no ``train`` with ``background``).
    """
    settings = settings or DEFAULT_SETTINGS[mode]
    if mode not in MODES:
        raise AdaptnerError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store = open_store(db)
    try:
        session = store.get_session(name)
        ours = [b for b in store.batches(session.id) if Path(b["path"]).parent == workdir.resolve()]
        pending = None
        if ours:
            last = ours[-1]
            answers_path = workdir / f"answers-{last['id']:04d}.jsonl"
            imported = store.conn.execute(
                "SELECT 1 FROM imports WHERE session_id = ? AND file = ?",
                (session.id, str(answers_path.resolve())),
            ).fetchone()
            if not imported:
                pending = last["id"]
        untrained = store.answers(session.id, answer="accept", trained=False)
    finally:
        store.close()
    batch_path = workdir / "batch-{batch}.jsonl"
    models: dict[int, Language] = {}
    worker = None

    def hand_out() -> BatchResult:
        if worker is None:
            return next_batch(
                db, name, n=n, output=batch_path, trainer=settings.trainer, models=models
            )
        with worker.lock:  # the served model is used by one thread at a time
            served = worker.served
            return next_batch(
                db,
                name,
                n=n,
                output=batch_path,
                trainer=settings.trainer,
                models={served.round: served.nlp},
            )

    def report(what: str, result: Any, path: Path | None = None) -> None:
        if what == "import":
            echo(
                f"imported {path.name if path else 'answers'}: {result.new} new, "
                f"{result.replaced} replaced, {result.duplicate} duplicate "
                f"({result.accepted} accepted)"
            )
        elif what == "wait":
            echo(f"waiting for the round that process {result} is training ...")
        elif what == "train":
            if result is None:
                echo("no new accepted answers: model unchanged")
            else:
                f = result.metrics.get("ents_f")
                echo(
                    f"round {result.round} ({mode}) trained by {result.metrics['trainer']}"
                    + (f", held-out F1 {f:.3f}" if f is not None else "")
                )

    def said(batch: BatchResult, extra: str = "") -> str:
        made = f"round {batch.round}, {batch.trainer}"
        note = f"; {batch.note}" if batch.note else ""
        return (
            f"batch {batch.batch_id:04d}: {len(batch.tasks)} tasks -> {batch.path} "
            f"({made}{note}){extra}"
        )

    timings = []
    try:
        if background:
            from .worker import RoundWorker

            worker = RoundWorker(
                db, name, mode=mode, settings=settings, score_pool=False, echo=echo
            ).start()
            if untrained:
                worker.request_update(force=True)
        elif untrained and pending is None:
            trained = _train_loaded(
                db,
                name,
                mode=mode,
                settings=settings,
                models=models,
                progress=progress,
                on_step=report,
            )
            report("train", trained)
        if pending is None:
            batch = hand_out()
            pending = batch.batch_id
            echo(said(batch))
        cycle = 0
        while not rounds or cycle < rounds:
            answers_path = workdir / f"answers-{pending:04d}.jsonl"
            echo(f"waiting for {answers_path} ...")
            wait_for_file(answers_path, poll=poll, settle=settle, timeout=timeout)
            try:
                if worker is None:
                    result = answer_cycle(
                        db,
                        name,
                        answers_path,
                        n=n,
                        output=batch_path,
                        mode=mode,
                        settings=settings,
                        models=models,
                        progress=progress,
                        on_step=lambda what, r, p=answers_path: report(what, r, p),
                    )
                    batch, timing = result.batch, result.timings
                else:
                    t0 = time.perf_counter()
                    report("import", import_answers(db, name, answers_path), answers_path)
                    t1 = time.perf_counter()
                    worker.request_update(force=True)
                    batch = hand_out()
                    t2 = time.perf_counter()
                    timing = {"import": t1 - t0, "next": t2 - t1, "total": t2 - t0}
            except AdaptnerError as e:
                if "Nothing left to hand out" in str(e):
                    echo(str(e))
                    break
                raise
            pending = batch.batch_id
            timings.append(timing)
            echo(said(batch, f", {timing['total']:.1f} s after the answers arrived"))
            cycle += 1
    finally:
        if worker is not None:  # the answers imported are trained on before the loop ends
            if worker.pending():
                echo("waiting for the round update to finish (Ctrl-C stops it; nothing is lost)")
                worker.wait_idle(float("inf"))
            worker.stop()
    return timings
