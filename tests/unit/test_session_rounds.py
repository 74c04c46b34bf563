"""Unit tests for how rounds reach the batches: the one-command import --next, --background,
the guard against rounds that score below the source, the round lock, and what status says."""

import itertools
import json
import os
import threading
import time
from pathlib import Path

import pytest
from spacy.tokens import DocBin

from adaptner.errors import AdaptnerError
from adaptner.session import loop as loop_mod
from adaptner.session.loop import (
    answer_cycle,
    batch_format,
    import_answers,
    init_session,
    load_pipeline,
    next_batch,
    run_loop,
    session_status,
    train_round,
)
from adaptner.session.rounds import pick_model, training_pid
from adaptner.session.store import RoundInfo
from adaptner.session.worker import RoundWorker

from .test_session_flow import (
    HELDOUT,
    SMALL,
    TEXTS,
    answer_batch,
    make_docs,
    run_cli,
    simulated_annotator,
    tiny_pipeline,
)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny bio_ner pipeline, a text pool and a held-out DocBin (as in test_session_flow)."""
    out = tmp_path_factory.mktemp("rounds_assets")
    nlp = tiny_pipeline()
    nlp.to_disk(out / "source")
    (out / "pool.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf8")
    DocBin(docs=make_docs(nlp, HELDOUT)).to_disk(out / "heldout.spacy")
    return out / "source"


@pytest.fixture
def db(tmp_path, source):
    """A fresh session "demo" over the pool, with a held-out set (store in tmp_path)."""
    path = tmp_path / "adaptner.db"
    init_session(
        path, "demo", source=source, pool=source.parent / "pool.txt",
        heldout=source.parent / "heldout.spacy", strategy="random", domain="legal",
        session_dir=tmp_path / "sdir",
    )  # fmt: skip
    return path


def rounds_of(*scores):
    """RoundInfo for round 0 (the source), 1, ... with these held-out F1s (None: no set)."""
    return [
        RoundInfo(
            round=i,
            created_at=0.0,
            mode="source" if i == 0 else "warm",
            model_dir=f"m{i}",
            n_train=0,
            metrics={} if f is None else {"ents_f": f, "trainer": "top_layers"},
        )
        for i, f in enumerate(scores)
    ]


def scores_in_turn(monkeypatch, scores):
    """Rounds train for real; the next rounds' held-out F1s are then recorded as ``scores``."""
    from adaptner.session.trainer import update_pipeline as real

    left = iter(scores)

    def update(*args, **kwargs):
        return {**real(*args, **kwargs), "ents_f": next(left)}

    monkeypatch.setattr(loop_mod, "update_pipeline", update)


def score_rounds_as(monkeypatch, score):
    """Rounds train for real; their held-out F1 is then recorded as ``score``."""
    scores_in_turn(monkeypatch, itertools.repeat(score))


def spans_of(tasks):
    return [[(s["start"], s["end"], s["label"]) for s in t["spans"]] for t in tasks]


def predicted_spans(model_dir, tasks, labels):
    nlp = load_pipeline(model_dir)
    return [
        [(e.start_char, e.end_char, e.label_) for e in nlp(t["text"]).ents if e.label_ in labels]
        for t in tasks
    ]


# --- the guard ------------------------------------------------------------------------------
def test_pick_model():
    # no held-out set: always the newest round
    assert pick_model(rounds_of(None, None)).round.round == 1
    # not below the source: the newest, even when an earlier round was better
    choice = pick_model(rounds_of(0.4, 0.6, 0.4))
    assert (choice.round.round, choice.reason) == (2, None)
    # below the source: the best so far, said why
    choice = pick_model(rounds_of(0.4, 0.5, 0.3))
    assert (choice.round.round, choice.newest.round) == (1, 2)
    assert choice.reason == (
        "round 2 scored 30.0 held-out F1, below the source's 40.0; round 1 (50.0) is the best "
        "so far"
    )
    # at worst the source; of equal rounds the newest
    assert pick_model(rounds_of(0.4, 0.2, 0.1)).round.round == 0
    assert pick_model(rounds_of(0.4, 0.5, 0.5, 0.1)).round.round == 2


def test_batch_comes_from_the_source_when_the_new_round_scores_below_it(
    tmp_path, source, db, monkeypatch, capsys
):
    source_f = session_status(db, "demo")["rounds"][0]["ents_f"]
    assert source_f > 0
    b1 = next_batch(db, "demo", n=5, output=tmp_path / "b1.jsonl")
    score_rounds_as(monkeypatch, 0.0)
    cycle = answer_cycle(
        db, "demo", answer_batch(b1.path, tmp_path / "a1.jsonl"), n=5,
        output=tmp_path / "b2.jsonl", settings=SMALL,
    )  # fmt: skip
    assert cycle.trained.round == 1
    batch = cycle.batch
    assert (batch.round, batch.newest_round, batch.trainer) == (0, 1, "source")
    assert "round 1 scored 0.0 held-out F1, below the source's" in batch.note
    labels = {"PERSON", "GPE", "ORGANIZATION"}
    # the pre-annotations and the meta are the source's, not round 1's
    assert spans_of(batch.tasks) == predicted_spans(source, batch.tasks, labels)
    assert all(t["meta"]["round"] == 0 for t in batch.tasks)
    st = session_status(db, "demo")
    assert st["model"] == {"round": 0, "trainer": "source", "note": batch.note}
    assert [(b["round"], b["trainer"], b["newest_round"]) for b in st["batches"]] == [
        (0, "source", 0),
        (0, "source", 1),
    ]
    assert st["batches"][0]["note"] is None and st["batches"][1]["note"] == batch.note
    code, out, _ = run_cli(monkeypatch, capsys, "session", "status", "demo", "--db", db)
    assert code == 0 and "next batch from round 0 (source)" in out
    assert "⚠ round 1 scored 0.0 held-out F1" in out
    assert "round 0 (source) (newest was round 1: round 1 scored 0.0" in out
    # a round that scores at least as well as the source makes the batches again
    score_rounds_as(monkeypatch, source_f)
    again = answer_cycle(
        db, "demo", answer_batch(batch.path, tmp_path / "a2.jsonl"), n=3,
        output=tmp_path / "b3.jsonl", settings=SMALL,
    )  # fmt: skip
    assert (again.batch.round, again.batch.note, again.batch.trainer) == (2, None, "fine_tune")
    assert session_status(db, "demo")["model"]["note"] is None


def test_label_studio_backend_serves_the_best_round(tmp_path, db, monkeypatch):
    b1 = next_batch(db, "demo", n=5, output=tmp_path / "b1.jsonl")
    import_answers(db, "demo", answer_batch(b1.path, tmp_path / "a1.jsonl"))
    score_rounds_as(monkeypatch, 0.0)
    messages = []
    worker = RoundWorker(db, "demo", settings=SMALL, echo=messages.append).start()
    try:
        worker.request_update(force=True)
        assert worker.wait_idle(120)
        served = worker.served
        assert session_status(db, "demo")["round"] == 1
        assert served.round == 0 and "round 1 scored 0.0" in served.note
        assert any("demo-round-0 answers now (round 1 trained" in m for m in messages)
        # its pre-annotations are the source's
        text = next(iter(served.tasks.values()))["text"]
        (task, _), *_ = worker.predict([text])[1]
        assert task["meta"]["round"] == 0
    finally:
        worker.stop(30)


# --- one command: import + train + next -------------------------------------------------------
def test_import_next_trains_and_hands_out_in_one_process(tmp_path, db, monkeypatch, capsys):
    b1 = next_batch(db, "demo", n=4, output=tmp_path / "b1.jsonl")
    answers = answer_batch(b1.path, tmp_path / "a1.jsonl", reject=(3,))
    loads = []
    real_load = loop_mod.load_pipeline
    monkeypatch.setattr(loop_mod, "load_pipeline", lambda p: loads.append(p) or real_load(p))
    code, out, err = run_cli(
        monkeypatch, capsys, "session", "import", "demo", answers, "--next", 3,
        "-o", tmp_path / "b2.jsonl", "--db", db,
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"✔ {answers} (prodigy): 4 new")
    assert lines[1].startswith("✔ round 1 (warm, fine_tune): 3 docs (3 new)")
    assert lines[2].startswith(
        f"✔ batch 2 (round 1, fine_tune): 3 tasks -> {tmp_path / 'b2.jsonl'}"
    )
    assert lines[3].startswith("ℹ answers -> next batch in ")
    assert len(loads) == 1  # the source, once: trained in place, then scoring the pool
    tasks = [json.loads(x) for x in (tmp_path / "b2.jsonl").read_text().splitlines()]
    assert len(tasks) == 3 and all(t["meta"]["round"] == 1 for t in tasks)
    assert not {t["text"] for t in tasks} & {t["text"] for t in b1.tasks}
    st = session_status(db, "demo")
    assert st["round"] == 1 and st["counts"]["accepted"] == 3
    assert [(b["round"], b["trainer"]) for b in st["batches"]] == [(0, "source"), (1, "fine_tune")]
    # only rejects: no round, the batch comes from the model as it is
    answers = answer_batch(tmp_path / "b2.jsonl", tmp_path / "a2.jsonl", reject=(0, 1, 2))
    code, out, _ = run_cli(
        monkeypatch, capsys, "session", "import", "demo", answers, "--next", 2,
        "-o", tmp_path / "b3.jsonl", "--db", db,
    )  # fmt: skip
    assert code == 0 and "ℹ no new accepted answers: the model stays as it is" in out
    assert "✔ batch 3 (round 1, fine_tune): 2 tasks" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "b.jsonl"], "--output, --batch-format and --[no-]background go with --next N"),
        (["--background"], "--output, --batch-format and --[no-]background go with --next N"),
        (["--next", "3"], "--next needs --output/-o"),
        (["--next", "3", "-o", "b.jsonl", "--batch-format", "brat"], "Unknown --batch-format"),
        (["--next", "3", "-o", "b.jsonl", "--mode", "cold"], "Unknown --mode 'cold'"),
    ],
)
def test_import_next_bad_options(tmp_path, db, monkeypatch, capsys, args, message):
    b1 = next_batch(db, "demo", n=2, output=tmp_path / "b1.jsonl")
    answers = answer_batch(b1.path, tmp_path / "a1.jsonl")
    code, _, err = run_cli(
        monkeypatch, capsys, "session", "import", "demo", answers, *args, "--db", db
    )
    assert code == 1 and message in err
    assert session_status(db, "demo")["counts"]["answered"] == 0  # nothing imported


def test_batch_format_follows_the_answers_tool():
    assert batch_format("labelstudio-min") == batch_format("labelstudio") == "labelstudio"
    assert (batch_format("doccano"), batch_format("prodigy")) == ("doccano", "prodigy")


def test_background_writes_the_batch_before_the_round(tmp_path, db, monkeypatch):
    b1 = next_batch(db, "demo", n=4, output=tmp_path / "b1.jsonl")
    loads = []
    real_load = loop_mod.load_pipeline
    monkeypatch.setattr(loop_mod, "load_pipeline", lambda p: loads.append(p) or real_load(p))
    steps, models = [], {}
    cycle = answer_cycle(
        db, "demo", answer_batch(b1.path, tmp_path / "a1.jsonl"), n=4,
        output=tmp_path / "b2.jsonl", settings=SMALL, background=True, models=models,
        on_step=lambda what, result: steps.append((what, getattr(result, "round", None))),
    )  # fmt: skip
    # the batch comes from the newest finished model (the source), then round 1 trains
    assert steps == [("import", None), ("batch", 0), ("train", 1)]
    t = cycle.timings
    assert t["total"] == pytest.approx(t["import"] + t["next"], abs=0.05)
    assert list(models) == [1]  # the source, trained in place into round 1, stays loaded
    cycle = answer_cycle(
        db, "demo", answer_batch(cycle.batch.path, tmp_path / "a2.jsonl"), n=4,
        output=tmp_path / "b3.jsonl", settings=SMALL, background=True, models=models,
    )  # fmt: skip
    assert (cycle.batch.round, cycle.trained.round) == (1, 2)
    assert len(loads) == 1 and list(models) == [2]
    st = session_status(db, "demo")
    assert [(b["round"], b["trainer"]) for b in st["batches"]] == [
        (0, "source"),
        (0, "source"),
        (1, "fine_tune"),
    ]
    assert st["round"] == 2 and st["training"] is None


def test_loop_in_background(tmp_path, db):
    workdir = tmp_path / "work"
    messages = []
    with simulated_annotator(workdir):
        timings = run_loop(
            db, "demo", n=4, workdir=workdir, rounds=2, settings=SMALL, poll=0.05,
            settle=0.1, timeout=60, echo=messages.append, background=True,
        )  # fmt: skip
    assert len(timings) == 2 and all("train" not in t for t in timings)
    st = session_status(db, "demo")
    # both answered batches were trained on before the loop returned
    assert st["round"] == 2 and st["counts"]["answered"] == 8
    made = [(b["round"], b["newest_round"]) for b in st["batches"]]
    assert len(made) == 3 and made[0] == (0, 0)
    # every batch came from a finished round, never a newer one than existed
    assert all(r <= newest < i for i, (r, newest) in enumerate(made, start=1))
    assert any("answers now (round 2 trained" in m for m in messages)


# --- one round update at a time ------------------------------------------------------------------
def test_a_second_round_waits_for_the_first(tmp_path, db, monkeypatch):
    b1 = next_batch(db, "demo", n=3, output=tmp_path / "b1.jsonl")
    b2 = next_batch(db, "demo", n=3, output=tmp_path / "b2.jsonl")
    import_answers(db, "demo", answer_batch(b1.path, tmp_path / "a1.jsonl"))
    real = loop_mod.update_pipeline
    release = threading.Event()

    def slow_update(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "update_pipeline", slow_update)
    first = {}
    thread = threading.Thread(
        target=lambda: first.update(r=train_round(db, "demo", settings=SMALL))
    )
    thread.start()
    sdir = tmp_path / "sdir"
    deadline = time.monotonic() + 30
    while training_pid(sdir) is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert training_pid(sdir) == os.getpid()
    assert session_status(db, "demo")["training"] == os.getpid()
    import_answers(db, "demo", answer_batch(b2.path, tmp_path / "a2.jsonl"))
    threading.Timer(0.5, release.set).start()
    second = train_round(db, "demo", settings=SMALL)  # waits, then continues round 1
    thread.join(30)
    assert (first["r"].round, second.round) == (1, 2)
    assert second.metrics["from_model"] == str(first["r"].model_dir)
    assert second.metrics["n_new"] == 3 and training_pid(sdir) is None


def test_unknown_trainer_is_named(db):
    from adaptner.session.trainer import resolve_trainer

    with pytest.raises(
        AdaptnerError, match="Unknown trainer 'fast'; choose one of auto, top_layers"
    ):
        resolve_trainer(load_pipeline(session_status(db, "demo")["source"]), "fast")


def test_background_by_default_follows_the_pipeline_and_trainer(tmp_path):
    """--background is on by default where rounds fine-tune a transformer, off for a CNN, for
    cached_head and for a pipeline whose config cannot be read."""
    from adaptner.session.trainer import background_by_default

    root = Path(__file__).resolve().parents[2] / "configs"
    for name in ("bio_cnn", "bio_trf_e5"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.cfg").write_text((root / f"{name}.cfg").read_text())
    trf, cnn = tmp_path / "bio_trf_e5", tmp_path / "bio_cnn"
    assert [background_by_default(trf, t) for t in ("auto", "top_layers", "fine_tune")] == [
        True, True, True,
    ]  # fmt: skip
    assert not background_by_default(trf, "cached_head")
    assert not any(background_by_default(cnn, t) for t in ("auto", "fine_tune"))
    assert not background_by_default(tmp_path / "missing", "auto")


# --- pruning saved round models ---------------------------------------------------------------
def test_needed_rounds():
    from adaptner.session.rounds import needed_rounds

    assert needed_rounds([]) == set()
    # the newest makes batches: the source and the newest
    assert needed_rounds(rounds_of(0.4, 0.5, 0.3, 0.6)) == {0, 3}
    # the newest is below the source: the best so far makes batches, the newest stays for warm
    assert needed_rounds(rounds_of(0.4, 0.5, 0.6, 0.3)) == {0, 2, 3}
    # no held-out set: the newest
    assert needed_rounds(rounds_of(None, None, None)) == {0, 2}


def test_prune_keeps_the_models_later_rounds_can_use(tmp_path, db, monkeypatch, capsys):
    source_f = session_status(db, "demo")["rounds"][0]["ents_f"]
    # round 1 best, round 2 below it, round 3 below the source (round 1 makes batches)
    scores_in_turn(monkeypatch, [source_f + 0.2, source_f + 0.1, 0.0])
    batch = next_batch(db, "demo", n=3, output=tmp_path / "b0.jsonl").path
    for k in range(1, 4):
        cycle = answer_cycle(
            db, "demo", answer_batch(batch, tmp_path / f"a{k}.jsonl"), n=3,
            output=tmp_path / f"b{k}.jsonl", settings=SMALL,
        )  # fmt: skip
        batch = cycle.batch.path
    st = session_status(db, "demo")
    dirs = {r["round"]: Path(r["model_dir"]) for r in st["rounds"]}
    assert all(r["model_saved"] for r in st["rounds"])
    code, out, _ = run_cli(monkeypatch, capsys, "session", "prune", "demo", "--db", db)
    assert code == 0 and "removed the saved models of round(s) 2: " in out
    assert "(kept rounds 0, 1, 3)" in out
    assert not dirs[2].exists() and (dirs[2].parent / "metrics.json").is_file()
    assert all(dirs[k].is_dir() for k in (0, 1, 3))
    assert not [p for p in dirs[2].parent.parent.iterdir() if p.name.startswith(".")]
    st = session_status(db, "demo")
    assert [r["model_saved"] for r in st["rounds"]] == [True, True, False, True]
    code, out, _ = run_cli(monkeypatch, capsys, "session", "status", "demo", "--db", db)
    assert "removed (session prune)" in out
    # nothing left to remove; the session goes on from round 3, batches from round 1
    code, out, _ = run_cli(monkeypatch, capsys, "session", "prune", "demo", "--db", db)
    assert code == 0 and "nothing to remove" in out
    scores_in_turn(monkeypatch, [source_f + 0.3])
    cycle = answer_cycle(
        db, "demo", answer_batch(batch, tmp_path / "a4.jsonl"), n=3,
        output=tmp_path / "b4.jsonl", settings=SMALL,
    )  # fmt: skip
    assert (cycle.trained.round, cycle.batch.round) == (4, 4)
    assert loop_mod.prune_models(db, "demo").removed == [1, 3]


def test_backend_prunes_after_every_round(tmp_path, db, monkeypatch):
    source_f = session_status(db, "demo")["rounds"][0]["ents_f"]
    scores_in_turn(monkeypatch, [source_f, source_f])
    messages: list[str] = []
    worker = RoundWorker(db, "demo", settings=SMALL, echo=messages.append, prune=True)
    batch = next_batch(db, "demo", n=3, output=tmp_path / "b0.jsonl").path
    for k in (1, 2):
        import_answers(db, "demo", answer_batch(batch, tmp_path / f"a{k}.jsonl"))
        worker._update(time.time(), True)
        batch = next_batch(db, "demo", n=3, output=tmp_path / f"b{k}.jsonl").path
    saved = [r["model_saved"] for r in session_status(db, "demo")["rounds"]]
    assert saved == [True, False, True]
    assert any(m.startswith("removed the saved models of round(s) 1 (") for m in messages)


# --- the kept scored pool ---------------------------------------------------------------------
def test_needs_pipeline():
    from adaptner.strategies import get_strategy
    from adaptner.strategies.bald import BaldStrategy
    from adaptner.strategies.cartography import CartographyStrategy
    from adaptner.strategies.vocab import VocabStrategy

    assert [get_strategy(s).needs_pipeline for s in ("random", "margin", "mnlp")] == [False] * 3
    assert all(c.needs_pipeline for c in (VocabStrategy, CartographyStrategy, BaldStrategy))


def two_sessions(tmp_path, source, strategy="margin"):
    """Two identical sessions (same pool, seed, held-out set) in one store."""
    path = tmp_path / "two.db"
    for name in ("a", "b"):
        init_session(
            path, name, source=source, pool=source.parent / "pool.txt",
            heldout=source.parent / "heldout.spacy", strategy=strategy, domain="legal",
            session_dir=tmp_path / name,
        )  # fmt: skip
    return path


def no_loading(monkeypatch):
    def refuse(path):
        raise AssertionError(f"loaded {path}")

    monkeypatch.setattr(loop_mod, "load_pipeline", refuse)


def task_view(tasks):
    return [(t["text"], t["spans"], t["meta"]["rank"], t["meta"]["score"]) for t in tasks]


def test_next_hands_out_from_the_kept_scored_pool_the_batch_it_would_score(
    tmp_path, source, monkeypatch
):
    path = two_sessions(tmp_path, source)
    for name in ("a", "b"):
        next_batch(path, name, n=3, output=tmp_path / f"{name}1.jsonl")
    scored = list((tmp_path / "a" / "features" / "scored").glob("round-0-*.spacy"))
    assert len(scored) == 1
    for f in (tmp_path / "b" / "features" / "scored").glob("*.spacy"):
        f.unlink()  # b scores its pool again, a reads what it kept
    live = next_batch(path, "b", n=3, output=tmp_path / "b2.jsonl")
    with monkeypatch.context() as m:
        no_loading(m)
        kept = next_batch(path, "a", n=3, output=tmp_path / "a2.jsonl")
    assert kept.nlp is None and live.nlp is not None
    assert task_view(kept.tasks) == task_view(live.tasks)
    # a damaged file is scored again, and replaced
    scored[0].write_bytes(b"not a DocBin")
    again = next_batch(path, "a", n=3, output=tmp_path / "a3.jsonl")
    assert again.nlp is not None and len(again.tasks) == 3
    assert DocBin().from_disk(scored[0]) is not None


def test_a_round_in_the_background_keeps_the_pool_it_scored(tmp_path, db, monkeypatch):
    b1 = next_batch(db, "demo", n=4, output=tmp_path / "b1.jsonl")
    score_rounds_as(monkeypatch, 1.0)  # round 1 makes the next batch
    first = answer_cycle(
        db, "demo", answer_batch(b1.path, tmp_path / "a1.jsonl"), n=4,
        output=tmp_path / "b2.jsonl", settings=SMALL, background=True,
    )  # fmt: skip
    assert first.trained.round == 1
    assert list((tmp_path / "sdir" / "features" / "scored").glob("round-1-*.spacy"))
    # a new process: the batch comes from round 1 without loading it; the round after loads it
    steps = []
    real = loop_mod.load_pipeline

    def load(path):
        steps.append("load")
        return real(path)

    monkeypatch.setattr(loop_mod, "load_pipeline", load)
    second = answer_cycle(
        db, "demo", answer_batch(first.batch.path, tmp_path / "a2.jsonl"), n=4,
        output=tmp_path / "b3.jsonl", settings=SMALL, background=True,
        on_step=lambda what, result: steps.append(what),
    )  # fmt: skip
    assert second.batch.round == 1 and second.trained.round == 2
    assert steps[:3] == ["import", "batch", "load"]
    assert spans_of(second.batch.tasks) == predicted_spans(
        session_status(db, "demo")["rounds"][1]["model_dir"], second.batch.tasks,
        {"PERSON", "GPE", "ORGANIZATION"},
    )  # fmt: skip


def test_session_train_keeps_the_pool_for_the_next_next(tmp_path, db, monkeypatch, capsys):
    b1 = next_batch(db, "demo", n=4, output=tmp_path / "b1.jsonl")
    import_answers(db, "demo", answer_batch(b1.path, tmp_path / "a1.jsonl"))
    score_rounds_as(monkeypatch, 1.0)
    code, _, _ = run_cli(
        monkeypatch, capsys, "session", "train", "demo", "--db", db, "--epochs", "2"
    )
    assert code == 0
    with monkeypatch.context() as m:
        no_loading(m)  # the batch comes from the pool round 1 scored when it had trained
        code, out, _ = run_cli(
            monkeypatch, capsys, "session", "next", "demo", "-n", "3",
            "-o", str(tmp_path / "b2.jsonl"), "--db", db,
        )  # fmt: skip
    assert code == 0 and "batch 2 (round 1" in out
    tasks = [json.loads(line) for line in (tmp_path / "b2.jsonl").read_text().splitlines()]
    assert spans_of(tasks) == predicted_spans(
        session_status(db, "demo")["rounds"][1]["model_dir"], tasks,
        {"PERSON", "GPE", "ORGANIZATION"},
    )  # fmt: skip


def test_loop_in_background_keeps_the_pool_its_rounds_scored(tmp_path, db, monkeypatch):
    score_rounds_as(monkeypatch, 1.0)  # every round makes the next batch
    workdir = tmp_path / "work"
    with simulated_annotator(workdir):
        run_loop(
            db, "demo", n=4, workdir=workdir, rounds=2, settings=SMALL, poll=0.05,
            settle=0.1, timeout=60, echo=lambda m: None, background=True,
        )  # fmt: skip
    assert session_status(db, "demo")["round"] == 2
    assert list((tmp_path / "sdir" / "features" / "scored").glob("round-2-*.spacy"))
    with monkeypatch.context() as m:
        no_loading(m)  # round 2's batch needs no model load
        batch = next_batch(db, "demo", n=3, output=tmp_path / "after.jsonl")
    assert batch.round == 2 and len(batch.tasks) == 3
