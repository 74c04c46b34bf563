"""Background round updates: the next model trains while the newest finished one answers.

:class:`RoundWorker` keeps one *served* model: the session's current round (the newest finished
one, or the best so far when the newest scores below the source on the held-out set, see
:func:`~adaptner.session.rounds.pick_model`), its pre-annotations for every pool text not
answered yet, and each text's place in the session's query order. A round update
(:func:`~adaptner.session.loop.train_round`, the same one ``session train`` and ``session loop``
run) happens in a background thread on a second copy of the model; only when the new round is
trained and the pool is scored with it is the served model swapped, in one assignment, so a
reader never sees a half-updated one. The round is saved after that (a transformer's ~0.5 GB
take seconds); if the save fails, the last saved round is served again. The model the swap
retired becomes the next round's copy (its trained weights updated in memory) instead of a
reload from disk. Used by ``adaptner session serve`` and ``adaptner session loop
--background``.
"""

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy
from spacy.language import Language

from ..errors import AdaptnerError
from ..update.trainers import copy_trained_weights
from .loop import (
    PIPE_BATCH,
    TrainResult,
    _make_task,
    _strategy,
    keep_scored_pool,
    load_pipeline,
    model_version,
    open_store,
    prune_models,
    rank_docs,
    score_pool,
    train_round,
)
from .loop import usefulness as usefulness_of
from .rounds import ModelChoice, pick_model
from .store import RoundInfo, Session
from .trainer import DEFAULT_SETTINGS, MODES, UpdateSettings

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Served:
    """One finished round as the backend serves it (replaced whole, never changed).

    Attributes:
        round: The session round (0 = the source pipeline).
        version: Its name, ``<session>-round-<k>`` (Label Studio's ``model_version``).
        nlp: The round's pipeline (used only under :attr:`RoundWorker.lock`).
        tasks: input hash -> the pool text's task (pre-annotations, meta with rank and score),
            for every pool text not answered when the round finished.
        usefulness: input hash -> 1.0 for the most useful text by the session's strategy,
            falling evenly to 1/n for the least useful (what Label Studio sorts by).
        model_dir: Where the round's model is saved.
        ready_at: ``time.time()`` when it started answering.
        note: Why it is not the newest finished round (None when it is).
    """

    round: int
    version: str
    nlp: Language
    model_dir: str
    tasks: dict[int, dict[str, Any]]
    usefulness: dict[int, float]
    ready_at: float = field(default_factory=time.time)
    note: str | None = None


def _rounds(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)


class RoundWorker:
    """Serve a session's newest model; train the next round in the background on request.

    Args:
        db: The session store.
        name: The session.
        mode: ``warm`` or ``reset`` (as ``session train --mode``).
        settings: The round's update settings (default: the mode's defaults).
        min_new: Train a round only once this many accepted answers wait (a forced
            :meth:`request_update` trains on fewer): rounds on one or two sentences come
            fastest but can overfit them.
        echo: Progress lines (rounds started, finished, failed).
        score_pool: Score the pool with every served model (the tasks and query order that
            :meth:`predict` answers from); off when only :attr:`served` ``.nlp`` is used.
        prune: After every round, delete the saved models no later round can use
            (:func:`~adaptner.session.loop.prune_models`).
    """

    def __init__(
        self,
        db: str | Path,
        name: str,
        *,
        mode: str = "warm",
        settings: UpdateSettings | None = None,
        min_new: int = 1,
        echo: Echo = print,
        score_pool: bool = True,
        prune: bool = False,
    ) -> None:
        if mode not in MODES:
            raise AdaptnerError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
        self.db = Path(db)
        self.name = name
        self.mode = mode
        self.settings = settings or DEFAULT_SETTINGS[mode]
        self.min_new = max(1, min_new)
        self.echo = echo
        self.score_pool = score_pool
        self.prune = prune
        self._forced = False
        store = open_store(self.db)
        try:
            self.session: Session = store.get_session(name)
            choice = pick_model(store.rounds(self.session.id))
        finally:
            store.close()
        #: Serialises every use of the served pipeline (spaCy pipelines are not thread-safe).
        self.lock = threading.Lock()
        self._newest = choice.newest  # the newest finished round this worker knows of
        #: The newest round trained (served or kept back), known before it is saved.
        self.trained_round = choice.newest.round
        nlp = load_pipeline(choice.round.model_dir)
        self._served = self._prepare(nlp, choice.round.round, choice.round.model_dir, choice)
        self._spare: Language | None = None  # a copy of the newest round to train on
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._requested_at: float | None = None
        self.training = False
        self.last_error: str | None = None
        #: One record per finished update: round, requested/ready times and seconds.
        self.history: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, name="adaptner-rounds", daemon=True)

    # --- the served model -----------------------------------------------------------
    @property
    def served(self) -> Served:
        """The newest finished round (read once per request: it may be swapped any time)."""
        return self._served

    def predict(self, texts: Sequence[str]) -> tuple[Served, list[tuple[dict, float | None]]]:
        """Tasks (pre-annotations + meta) and usefulness for texts, from the served round.

        Pool texts not answered yet come from the round's scored pool; any other text is
        run through the model now and has no usefulness (None).
        """
        from .formats import input_hash

        served = self._served
        out: list[tuple[dict, float | None] | None] = []
        missing: list[int] = []
        for i, text in enumerate(texts):
            h = input_hash({"text": text})
            task = served.tasks.get(h)
            if task is not None and task["text"] == text:
                out.append((task, served.usefulness[h]))
            else:
                out.append(None)
                missing.append(i)
        if missing:
            labels = set(self.session.labels)
            with self.lock:
                docs = list(served.nlp.pipe([texts[i] for i in missing], batch_size=PIPE_BATCH))
            for i, doc in zip(missing, docs, strict=True):
                out[i] = (_make_task(doc, self.session, served.round, None, None, labels), None)
        return served, out  # type: ignore[return-value]

    def _prepare(
        self, nlp: Language, round_no: int, model_dir: str, choice: ModelChoice | None = None
    ) -> Served:
        """Score the pool texts not answered yet with ``nlp``: tasks and query order."""
        session = self.session
        rows = []
        if self.score_pool:
            store = open_store(self.db)
            try:
                rows = store.candidates(session.id, reissue=True)
            finally:
                store.close()
        tasks: dict[int, dict[str, Any]] = {}
        usefulness: dict[int, float] = {}
        if rows:
            docs = score_pool(nlp, rows, self.settings.trainer, session)
            rng = numpy.random.default_rng([session.seed, round_no])
            order, scores = rank_docs(_strategy(session), docs, len(docs), nlp=nlp, rng=rng)
            labels = set(session.labels)
            for rank, i in enumerate(order, start=1):
                score = None if scores is None else float(scores[i])
                task = _make_task(docs[i], session, round_no, rank, score, labels)
                tasks[task["_input_hash"]] = task
                usefulness[task["_input_hash"]] = usefulness_of(rank, len(order))
        return Served(
            round_no,
            model_version(session, round_no),
            nlp,
            str(model_dir),
            tasks,
            usefulness,
            note=choice.reason if choice is not None else None,
        )

    # --- background updates ----------------------------------------------------------
    def start(self) -> "RoundWorker":
        """Start the background thread (idle until :meth:`request_update`)."""
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop after the update it is running, and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def request_update(self, force: bool = False) -> None:
        """Train the next round as soon as the thread is free (requests made meanwhile merge);
        ``force``: even with fewer than ``min_new`` new accepted answers."""
        if self._requested_at is None:
            self._requested_at = time.time()
        self._forced = self._forced or force
        self._wake.set()

    def pending(self) -> bool:
        """Whether an update is requested or running."""
        return self.training or self._wake.is_set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no update is requested or running; False on timeout."""
        end = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > end:
                return False
            time.sleep(0.05)
        return True

    def _run(self) -> None:
        if self.mode == "warm":  # the first round then trains without loading the model
            try:
                self._spare = load_pipeline(self._newest.model_dir)
            except Exception:  # loaded again when the round starts
                self._spare = None
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                break
            self.training = True
            self._wake.clear()
            requested, self._requested_at = self._requested_at, None
            forced, self._forced = self._forced, False
            try:
                self._update(requested or time.time(), forced)
            except Exception as e:  # the thread must outlive a failed round
                self.last_error = f"{type(e).__name__}: {e}".splitlines()[0]
                self.echo(f"round update failed: {self.last_error}")
            finally:
                self.training = False

    def _update(self, requested: float, forced: bool = False) -> None:
        session = self.session
        store = open_store(self.db)
        try:
            fresh = store.answers(session.id, answer="accept", trained=False)
            rounds = store.rounds(session.id)
        finally:
            store.close()
        current = rounds[-1]
        served = self._served
        if not fresh and current.round == self._newest.round:
            self.echo("no new accepted answers: the model stays at " + served.version)
            return
        if current.round != self._newest.round:  # a round trained elsewhere (`session train`)
            self._spare = None
            self._newest = current
            self.trained_round = current.round
            self._serve(pick_model(rounds), requested)
            if not fresh:
                return
        if len(fresh) < self.min_new and not forced:
            self.echo(
                f"{len(fresh)} new accepted answer(s); a round starts at {self.min_new} "
                "(or on Start training)"
            )
            return
        start = time.time()
        self.echo(f"training round {current.round + 1} on {len(fresh)} new accepted answer(s)")
        nlp = None
        if self.mode == "warm":
            nlp = self._spare or load_pipeline(current.model_dir)
        self._spare = None  # trained in place below: no longer a copy of the newest round
        previous = self._served
        times: dict[str, float] = {}

        def serve_fitted(fitted: TrainResult) -> None:
            # The round answers from memory as soon as it is trained and the pool scored;
            # train_round saves it afterwards (a transformer's ~0.5 GB take seconds).
            times["fitted"] = time.time()
            store = open_store(self.db)
            try:
                rounds = store.rounds(session.id)
            finally:
                store.close()
            pending = RoundInfo(
                round=fitted.round,
                created_at=time.time(),
                mode=fitted.mode,
                model_dir=str(fitted.model_dir),
                n_train=int(fitted.metrics["n_train"]),
                metrics=fitted.metrics,
            )
            self._serve(pick_model([*rounds, pending]), requested, fitted)
            self.trained_round = fitted.round
            times["served"] = time.time()

        try:
            result = train_round(
                self.db,
                self.name,
                mode=self.mode,
                settings=self.settings,
                nlp=nlp,
                nlp_round=current.round,
                on_fit=serve_fitted,
            )
        except Exception:
            if self._served is not previous:  # served before saving, and the save failed
                self._served = previous
            self.trained_round = self._newest.round
            raise
        saved = time.time()
        store = open_store(self.db)
        try:
            rounds = store.rounds(session.id)
        finally:
            store.close()
        self._newest = next(r for r in rounds if r.round == result.round)
        served = self._serve(pick_model(rounds), requested, result)
        f = result.metrics.get("ents_f")
        self.echo(
            f"{served.version} answers now (round {result.round} trained in "
            f"{times['fitted'] - start:.1f} s, pool scored in "
            f"{times['served'] - times['fitted']:.1f} s, saved in "
            f"{saved - times['served']:.1f} s"
            + (f", held-out F1 {f:.3f}" if f is not None else "")
            + (f"; {served.note}" if served.note else "")
            + ")"
        )
        if not self.score_pool:  # `session loop`: its next batch reads the pool scored here
            with self.lock:
                keep_scored_pool(self.db, self.name, result, self.settings.trainer)
        if self.prune:
            pruned = prune_models(self.db, self.name)
            if pruned.removed:
                self.echo(
                    f"removed the saved models of round(s) {_rounds(pruned.removed)} "
                    f"({pruned.freed_bytes / 1e9:.2f} GB)"
                )
        if self.mode == "warm":  # the next round trains on a copy, not on the served model
            if served.nlp is not result.nlp:
                self._spare = result.nlp
            elif previous.nlp is not result.nlp and self._recycle(previous.nlp, result.nlp):
                self._spare = previous.nlp
            else:
                self._spare = load_pipeline(result.model_dir)

    def _recycle(self, retired: Language, newest: Language) -> bool:
        """Make ``retired`` (a model no longer served) a copy of ``newest`` in place, instead of
        loading the newest round from disk (seconds for a transformer): possible when they
        differ only in the weights training changes. False when they differ otherwise."""
        with self.lock:  # a request may still be using the retired model
            return copy_trained_weights(newest, retired)

    def _serve(self, choice: ModelChoice, requested: float, trained: Any = None) -> Served:
        """Serve the round ``choice`` picks (``trained``: the round just trained, loaded);
        swapped only when it is not the served round already."""
        served = self._served
        if choice.round.round == served.round:
            if choice.reason != served.note:
                self._served = served = replace(served, note=choice.reason)
            return served
        if trained is not None and choice.round.round == trained.round:
            nlp = trained.nlp
        else:
            nlp = load_pipeline(choice.round.model_dir)
        self._swap(
            self._prepare(nlp, choice.round.round, choice.round.model_dir, choice), requested
        )
        return self._served

    def _swap(self, served: Served, requested: float) -> None:
        self._served = served
        self.last_error = None
        self.history.append(
            {
                "round": served.round,
                "version": served.version,
                "requested_at": requested,
                "ready_at": served.ready_at,
                "seconds": round(served.ready_at - requested, 3),
            }
        )
