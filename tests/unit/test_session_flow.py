"""Unit tests for session commands on a tiny hand-built pipeline: next, train, review, loop, CLI."""

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin, Span
from spacy.training import Example
from thinc.api import fix_random_seed

from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin
from adaptner.session import formats
from adaptner.session.loop import (
    export_session,
    import_answers,
    init_session,
    load_pipeline,
    next_batch,
    run_loop,
    session_status,
    train_round,
)
from adaptner.session.review import review_batch
from adaptner.session.trainer import UpdateSettings

ROOT = Path(__file__).resolve().parents[2]

#: (text, [(entity text, label)]): the pool's gold, used to answer tasks like an annotator.
GOLD = [
    (
        "Mette Frederiksen besøgte Aarhus i går.",
        [("Mette Frederiksen", "PERSON"), ("Aarhus", "GPE")],
    ),
    (
        "Novo Nordisk har hovedsæde i Bagsværd.",
        [("Novo Nordisk", "ORGANIZATION"), ("Bagsværd", "GPE")],
    ),
    (
        "Lars Løkke talte i Folketinget.",
        [("Lars Løkke", "PERSON"), ("Folketinget", "ORGANIZATION")],
    ),
    ("Københavns Kommune vedtog budgettet.", [("Københavns Kommune", "ORGANIZATION")]),
    ("Anders bor i Odense med sin familie.", [("Anders", "PERSON"), ("Odense", "GPE")]),
    (
        "Danske Bank åbner en filial i Aalborg.",
        [("Danske Bank", "ORGANIZATION"), ("Aalborg", "GPE")],
    ),
    (
        "Statsministeren mødte Joe Biden i Washington.",
        [("Joe Biden", "PERSON"), ("Washington", "GPE")],
    ),
    ("Mærsk flytter kontorer til Singapore.", [("Mærsk", "ORGANIZATION"), ("Singapore", "GPE")]),
    (
        "Peter arbejder hos Carlsberg i Valby.",
        [("Peter", "PERSON"), ("Carlsberg", "ORGANIZATION"), ("Valby", "GPE")],
    ),
    ("Det regnede hele dagen i Esbjerg.", [("Esbjerg", "GPE")]),
    (
        "Sofie flyttede fra Vejle til Kolding.",
        [("Sofie", "PERSON"), ("Vejle", "GPE"), ("Kolding", "GPE")],
    ),
    ("Lego har fabrikker i Billund.", [("Lego", "ORGANIZATION"), ("Billund", "GPE")]),
    (
        "Henrik ringede til Region Midtjylland.",
        [("Henrik", "PERSON"), ("Region Midtjylland", "ORGANIZATION")],
    ),
    ("Vestas byggede møller ved Ringkøbing.", [("Vestas", "ORGANIZATION"), ("Ringkøbing", "GPE")]),
    ("Karen læste avisen i Silkeborg.", [("Karen", "PERSON"), ("Silkeborg", "GPE")]),
    ("Der var ingen mennesker på stranden.", []),
]
TRAIN = [
    ("Jens bor i Roskilde .", [(0, 1, "PERSON"), (3, 4, "GPE")]),
    ("Hun arbejder for Arla i Viby .", [(3, 4, "ORGANIZATION"), (5, 6, "GPE")]),
    ("Ole og Maja rejste til Paris .", [(0, 1, "PERSON"), (2, 3, "PERSON"), (5, 6, "GPE")]),
]
HELDOUT = [
    ("Morten kører til Horsens .", [(0, 1, "PERSON"), (3, 4, "GPE")]),
    ("Netto åbner i Herning .", [(0, 1, "ORGANIZATION"), (3, 4, "GPE")]),
    ("Camilla arbejder hos Grundfos .", [(0, 1, "PERSON"), (3, 4, "ORGANIZATION")]),
]
TEXTS = [t for t, _ in GOLD]
SMALL = UpdateSettings(max_epochs=3, patience=1, batch_size=4, replay=4)


def gold_spans(text: str) -> list[dict]:
    spans = dict(GOLD)[text]
    out = []
    for word, label in spans:
        start = text.index(word)
        out.append({"start": start, "end": start + len(word), "label": label})
    return out


def make_docs(nlp, data):
    docs = []
    for text, ents in data:
        doc = nlp.make_doc(text)
        doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
        docs.append(doc)
    return docs


def tiny_pipeline(labels=None):
    """A tiny bio_ner pipeline trained on TRAIN (seconds); ``labels`` = its label scheme
    (default: the labels in TRAIN)."""
    fix_random_seed(0)
    nlp = spacy.blank("da")
    nlp.add_pipe(
        "bio_ner",
        config={
            "model": {
                "@architectures": "adaptner.BioTagger.v1",
                "nO": None,
                "dropout": 0.1,
                "tok2vec": {
                    "@architectures": "spacy.HashEmbedCNN.v2",
                    "pretrained_vectors": None,
                    "width": 32,
                    "depth": 2,
                    "embed_size": 500,
                    "window_size": 1,
                    "maxout_pieces": 3,
                    "subword_features": True,
                },
            }
        },
    )
    if labels is not None:
        nlp.config["initialize"]["components"]["bio_ner"] = {"labels": list(labels)}
    examples = [Example(nlp.make_doc(d.text), d) for d in make_docs(nlp, TRAIN)]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(15):
        nlp.update(examples, sgd=optimizer, drop=0.1)
    return nlp


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny bio_ner pipeline (seconds to build), a text pool and a held-out DocBin."""
    out = tmp_path_factory.mktemp("session_assets")
    nlp = tiny_pipeline()
    nlp.to_disk(out / "source")
    pool = out / "pool.txt"
    pool.write_text("\n".join(TEXTS + [HELDOUT[0][0], TEXTS[0]]) + "\n", encoding="utf8")
    DocBin(docs=make_docs(nlp, HELDOUT)).to_disk(out / "heldout.spacy")
    return out


@pytest.fixture
def session(tmp_path, assets):
    """A fresh session (store in tmp_path) over the pool, with a held-out set."""
    db = tmp_path / "adaptner.db"
    result = init_session(
        db,
        "demo",
        source=assets / "source",
        pool=assets / "pool.txt",
        heldout=assets / "heldout.spacy",
        strategy="random",
        domain="legal",
        session_dir=tmp_path / "sdir",
    )
    assert result.created
    return db


def snapshot(db: Path) -> dict:
    conn = sqlite3.connect(db)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}
    conn.close()
    return out


def answer_batch(batch_path: Path, out: Path, *, reject=(), ignore=(), keep_predictions=False):
    """Answer a Prodigy batch from the gold (or keep the model's spans), like an annotator."""
    lines = []
    for i, line in enumerate(batch_path.read_text(encoding="utf8").splitlines()):
        task = json.loads(line)
        if i in reject:
            task["answer"] = "reject"
        elif i in ignore:
            task["answer"] = "ignore"
        else:
            task["answer"] = "accept"
            if not keep_predictions:
                task["spans"] = gold_spans(task["text"])
        lines.append(json.dumps(task, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf8")
    return out


# --- init ---------------------------------------------------------------------------------
def test_init_pool_and_reinit(tmp_path, assets, session):
    status = session_status(session, "demo")
    assert status["counts"]["pool"] == len(TEXTS)  # held-out sentence and duplicate dropped
    assert status["labels"] == ["GPE", "ORGANIZATION", "PERSON"]
    assert status["rounds"][0]["mode"] == "source" and status["rounds"][0]["ents_f"] is not None
    before = snapshot(session)
    again = init_session(
        session,
        "demo",
        source=assets / "source",
        pool=assets / "pool.txt",
        heldout=assets / "heldout.spacy",
        strategy="random",
    )
    assert not again.created and again.pool_size == len(TEXTS)
    with pytest.raises(AdaptnerError, match="already exists .* with other settings .*strategy"):
        init_session(
            session,
            "demo",
            source=assets / "source",
            pool=assets / "pool.txt",
            heldout=assets / "heldout.spacy",
            strategy="margin",
        )
    assert snapshot(session) == before


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"strategy": "nope"}, "Unknown strategy 'nope'"),
        ({"labels": ["PERSON", "CITY"]}, r"Labels \['CITY'\] are not predicted by"),
        ({"source": "missing-model"}, "is not a spaCy pipeline directory"),
        ({"pool": "missing.txt"}, "Pool file .*missing.txt does not exist"),
    ],
)
def test_init_bad_inputs(tmp_path, assets, kwargs, message):
    args = {"source": assets / "source", "pool": assets / "pool.txt", "strategy": "random"}
    args.update({k: (tmp_path / v if k in ("source", "pool") else v) for k, v in kwargs.items()})
    with pytest.raises(AdaptnerError, match=message):
        init_session(tmp_path / "a.db", "demo", **args)
    if (tmp_path / "a.db").exists():
        conn = sqlite3.connect(tmp_path / "a.db")
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
        conn.close()


def test_bad_session_name(tmp_path, assets):
    with pytest.raises(AdaptnerError, match="Session name '../x' must start"):
        init_session(tmp_path / "a.db", "../x", source=assets / "source", pool=assets / "pool.txt")


# --- next / import / train ----------------------------------------------------------------
def test_next_writes_tasks_and_never_hands_out_twice(tmp_path, session):
    first = next_batch(session, "demo", n=5, output=tmp_path / "b1.jsonl")
    tasks = [json.loads(x) for x in (tmp_path / "b1.jsonl").read_text().splitlines()]
    assert len(tasks) == 5 and first.copy_path.exists()
    for task in tasks:
        assert set(task) >= {"text", "tokens", "spans", "meta", "_input_hash", "_task_hash"}
        assert task["_input_hash"] == formats.input_hash({"text": task["text"]})
        assert task["_task_hash"] == formats.task_hash(task)
        meta = task["meta"]
        assert meta["session"] == "demo" and meta["round"] == 0 and meta["strategy"] == "random"
        assert meta["domain"] == "legal" and isinstance(meta["score"], float)
        assert 1 <= len(meta["uncertain_tokens"]) <= 3
        for span in task["spans"]:
            assert task["tokens"][span["token_start"]]["start"] == span["start"]
            assert task["tokens"][span["token_end"]]["end"] == span["end"]
    second = next_batch(session, "demo", n=20, output=tmp_path / "b2.jsonl")
    assert len(second.tasks) == len(TEXTS) - 5  # only what is left
    hashes = {t["_input_hash"] for t in first.tasks} | {t["_input_hash"] for t in second.tasks}
    assert len(hashes) == len(TEXTS)
    before = snapshot(session)
    with pytest.raises(AdaptnerError, match="Nothing left .*wait for answers.*--reissue"):
        next_batch(session, "demo", n=5, output=tmp_path / "b3.jsonl")
    assert snapshot(session) == before
    again = next_batch(session, "demo", n=3, output=tmp_path / "b3.jsonl", reissue=True)
    assert {t["_input_hash"] for t in again.tasks} <= hashes


@pytest.mark.parametrize("fmt", ["labelstudio", "doccano"])
def test_next_other_formats(tmp_path, session, fmt):
    result = next_batch(session, "demo", n=4, output=tmp_path / "batch.out", fmt=fmt)
    raw = (tmp_path / "batch.out").read_text()
    if fmt == "labelstudio":
        data = json.loads(raw)
        assert [d["data"]["text"] for d in data] == [t["text"] for t in result.tasks]
        assert all(r["type"] == "labels" for d in data for r in d["predictions"][0]["result"])
    else:
        lines = [json.loads(x) for x in raw.splitlines()]
        assert [x["label"] for x in lines] == [
            [[s["start"], s["end"], s["label"]] for s in t["spans"]] for t in result.tasks
        ]
    # the session copy is always Prodigy JSONL
    assert (
        json.loads(result.copy_path.read_text().splitlines()[0])["text"] == result.tasks[0]["text"]
    )


def test_no_leaks_heldout_always_refused_foreign_only_when_allowed(tmp_path, session):
    b1 = next_batch(session, "demo", n=3, output=tmp_path / "b1.jsonl")
    answers = answer_batch(b1.path, tmp_path / "a.jsonl")
    heldout_text = HELDOUT[1][0]
    foreign_text = "Jens bor i Roskilde ."
    with answers.open("a", encoding="utf8") as f:
        for text in (heldout_text, "  " + HELDOUT[2][0].replace(" ", "  "), foreign_text):
            f.write(json.dumps({"text": text, "answer": "accept", "spans": []}) + "\n")
    before = snapshot(session)
    for allow in (False, True):
        with pytest.raises(AdaptnerError) as err:
            import_answers(session, "demo", answers, allow_foreign=allow)
        text = str(err.value)
        assert f"{answers}:4: this text is in the session's held-out set" in text
        assert f"{answers}:5: this text is in the session's held-out set" in text  # respaced
        assert (f"{answers}:6: this text was not handed out" in text) is not allow
        assert f"{answers}:1:" not in text and "nothing was imported" in text
        assert snapshot(session) == before
    result = import_answers(session, "demo", answers, allow_foreign=True, skip_invalid=True)
    assert (result.new, result.foreign, result.invalid) == (4, 1, 2)
    rejected = [json.loads(x) for x in result.rejects_path.read_text().splitlines()]
    assert [r["line"] for r in rejected] == [4, 5]
    c = session_status(session, "demo")["counts"]
    assert (c["answered"], c["outside_pool"]) == (4, 1)


def test_labelstudio_batch_round_trip(tmp_path, session):
    """A Label Studio batch, answered as Label Studio exports it, comes back in."""
    b = next_batch(session, "demo", n=4, output=tmp_path / "ls.json", fmt="labelstudio")
    tasks = json.loads(b.path.read_text())
    export = []
    for i, t in enumerate(tasks):
        result = [dict(r, origin="prediction") for r in t["predictions"][0]["result"]]
        annotation = {"id": i + 1, "result": result if i != 1 else [], "was_cancelled": i == 2}
        export.append({"id": i + 1, "data": t["data"], "annotations": [annotation]})
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export, ensure_ascii=False), encoding="utf8")
    r = import_answers(session, "demo", path)
    assert (r.fmt, r.new, r.accepted, r.ignored) == ("labelstudio", 4, 3, 1)
    store_answers = {a["text"]: a for a in map(json.loads, answer_lines(tmp_path, session))}
    first = store_answers[b.tasks[0]["text"]]
    assert first["spans"] == [
        {"start": s["start"], "end": s["end"], "label": s["label"]} for s in b.tasks[0]["spans"]
    ]
    assert first["_task_hash"] == b.tasks[0]["_task_hash"]
    assert store_answers[b.tasks[1]["text"]]["spans"] == []
    again = import_answers(session, "demo", path)
    assert again.duplicate == 4


def answer_lines(tmp_path, db):
    paths = export_session(db, "demo", tmp_path / "exported")
    return paths["jsonl"].read_text(encoding="utf8").splitlines()


def probs_of(model_dir, text):
    nlp = load_pipeline(model_dir)
    return nlp(text)._.ner_probs


def test_import_train_next_round_trip(tmp_path, assets, session):
    b1 = next_batch(session, "demo", n=6, output=tmp_path / "b1.jsonl")
    answers = answer_batch(b1.path, tmp_path / "a1.jsonl", reject=(1,), ignore=(2,))
    result = import_answers(session, "demo", answers)
    assert (result.new, result.accepted, result.rejected, result.ignored) == (6, 4, 1, 1)
    trained = train_round(session, "demo", mode="warm", settings=SMALL)
    assert trained.round == 1 and trained.model_dir.exists()
    assert trained.metrics["n_new"] == 4 and trained.metrics["n_train"] == 4
    assert 1 <= trained.metrics["epochs"] <= 3 and "ents_f" in trained.metrics
    before = probs_of(assets / "source", TEXTS[0])
    after = probs_of(trained.model_dir, TEXTS[0])
    assert not numpy.allclose(before, after)  # the model changed
    with pytest.raises(AdaptnerError, match="No new accepted answers since round 1"):
        train_round(session, "demo", mode="warm", settings=SMALL)
    b2 = next_batch(session, "demo", n=6, output=tmp_path / "b2.jsonl")
    assert b2.round == 1 and all(t["meta"]["round"] == 1 for t in b2.tasks)
    answered = {t["_input_hash"] for t in b1.tasks}
    assert answered.isdisjoint({t["_input_hash"] for t in b2.tasks})
    import_answers(session, "demo", answer_batch(b2.path, tmp_path / "a2.jsonl"))
    warm2 = train_round(session, "demo", mode="warm", settings=SMALL)
    assert (warm2.metrics["n_new"], warm2.metrics["n_replay"]) == (6, 4)
    reset = train_round(session, "demo", mode="reset", settings=SMALL)
    assert reset.round == 3 and reset.metrics["n_train"] == 10
    assert reset.metrics["from_model"] == str((assets / "source").resolve())
    status = session_status(session, "demo")
    assert [r["round"] for r in status["rounds"]] == [0, 1, 2, 3]
    assert [r["mode"] for r in status["rounds"]] == ["source", "warm", "warm", "reset"]
    c = status["counts"]
    assert (c["handed_out"], c["answered"], c["accepted"], c["rejected"], c["ignored"]) == (
        12,
        12,
        10,
        1,
        1,
    )
    assert c["outstanding"] == 0 and c["remaining"] == len(TEXTS) - 12
    for r in (1, 2, 3):
        assert (tmp_path / "sdir" / "rounds" / str(r) / "metrics.json").exists()


def test_export(tmp_path, session):
    with pytest.raises(AdaptnerError, match="Session 'demo' has no answers to export yet"):
        export_session(session, "demo", tmp_path / "x")
    b1 = next_batch(session, "demo", n=5, output=tmp_path / "b1.jsonl")
    import_answers(session, "demo", answer_batch(b1.path, tmp_path / "a1.jsonl", reject=(0,)))
    paths = export_session(session, "demo", tmp_path / "export")
    docs = read_docbin(paths["spacy"], spacy.blank("da").vocab)
    assert len(docs) == 4
    for doc in docs:
        assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == [
            (s["start"], s["end"], s["label"]) for s in gold_spans(doc.text)
        ]
        assert doc._.domain == "legal"
    lines = [json.loads(x) for x in paths["jsonl"].read_text().splitlines()]
    assert sorted(x["answer"] for x in lines) == ["accept"] * 4 + ["reject"]
    assert all("_input_hash" in x and "_task_hash" in x for x in lines)
    # the exported JSONL is valid input again: re-importing it changes nothing
    again = import_answers(session, "demo", paths["jsonl"])
    assert (again.new, again.replaced, again.duplicate) == (0, 0, 5)


def test_review_html(tmp_path, session):
    b1 = next_batch(session, "demo", n=4, output=tmp_path / "b1.jsonl")
    out = review_batch(session, "demo", tmp_path / "review.html")
    page = out.read_text(encoding="utf8")
    assert page.startswith("<!DOCTYPE html>")
    for task in b1.tasks:
        for token in task["tokens"]:
            assert token["text"] in page
    assert page.count('class="task"') == 4
    assert "uncertainty" in page and 'class="tok"' in page
    explicit = review_batch(session, "demo", tmp_path / "r2.html", batch=b1.path)
    assert explicit.read_text(encoding="utf8").count('class="task"') == 4
    with pytest.raises(AdaptnerError, match="Batch file .*nope.jsonl does not exist"):
        review_batch(session, "demo", tmp_path / "r3.html", batch=tmp_path / "nope.jsonl")


# --- loop -----------------------------------------------------------------------------------
@contextmanager
def simulated_annotator(workdir: Path):
    """A thread that answers every ``batch-NNNN.jsonl`` appearing in ``workdir`` with the gold
    (``answers-NNNN.jsonl``, written under another name, then renamed), until the block ends."""
    stop = threading.Event()

    def annotate():
        done = set()
        while not stop.is_set():
            for batch in sorted(workdir.glob("batch-*.jsonl")):
                if batch.name in done:
                    continue
                answers = workdir / batch.name.replace("batch-", "answers-")
                tmp = workdir / ("tmp-" + answers.name)
                answer_batch(batch, tmp)
                tmp.rename(answers)
                done.add(batch.name)
            time.sleep(0.05)

    thread = threading.Thread(target=annotate, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_loop_chains_rounds(tmp_path, session):
    workdir = tmp_path / "work"
    messages = []
    with simulated_annotator(workdir):
        timings = run_loop(
            session,
            "demo",
            n=4,
            workdir=workdir,
            rounds=2,
            settings=SMALL,
            poll=0.05,
            settle=0.1,
            timeout=60,
            echo=messages.append,
        )
    assert len(timings) == 2 and all(t["total"] > 0 for t in timings)
    assert sorted(p.name for p in workdir.glob("batch-*.jsonl")) == [
        "batch-0001.jsonl",
        "batch-0002.jsonl",
        "batch-0003.jsonl",
    ]
    status = session_status(session, "demo")
    assert status["round"] == 2 and status["counts"]["answered"] == 8
    assert status["counts"]["outstanding"] == 4  # the last batch waits for its answers
    assert any("round 2 (warm) trained" in m for m in messages)


def test_loop_times_out_cleanly(tmp_path, session):
    with pytest.raises(AdaptnerError, match="Timed out after .* waiting for .*answers-0001.jsonl"):
        run_loop(
            session,
            "demo",
            n=2,
            workdir=tmp_path / "w",
            rounds=1,
            poll=0.05,
            timeout=0.3,
            echo=lambda m: None,
        )
    # restarting waits for the same batch instead of handing out a new one
    with pytest.raises(AdaptnerError, match="answers-0001.jsonl"):
        run_loop(
            session,
            "demo",
            n=2,
            workdir=tmp_path / "w",
            rounds=1,
            poll=0.05,
            timeout=0.3,
            echo=lambda m: None,
        )
    assert session_status(session, "demo")["counts"]["batches"] == 1


# --- CLI ------------------------------------------------------------------------------------
def run_cli(monkeypatch, capsys, *args):
    from adaptner.cli import main

    monkeypatch.setattr(sys, "argv", ["adaptner", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_commands(tmp_path, assets, monkeypatch, capsys):
    db = tmp_path / "cli.db"
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "session",
        "init",
        "cli",
        "--db",
        db,
        "-s",
        assets / "source",
        "-p",
        assets / "pool.txt",
        "--heldout",
        assets / "heldout.spacy",
        "--strategy",
        "random",
        "--dir",
        tmp_path / "sd",
    )
    assert code == 0 and "✔ session 'cli'" in out and f"{len(TEXTS)} pool sentences" in out
    assert "1 held-out sentences left out" in out
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "session",
        "init",
        "cli",
        "--db",
        db,
        "-s",
        assets / "source",
        "-p",
        assets / "pool.txt",
        "--heldout",
        assets / "heldout.spacy",
        "--strategy",
        "random",
    )
    assert code == 0 and "already exists" in out and "nothing changed" in out
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "session",
        "next",
        "cli",
        "--db",
        db,
        "-n",
        3,
        "-o",
        tmp_path / "b.jsonl",
    )
    assert code == 0 and "3 tasks" in out
    answers = answer_batch(tmp_path / "b.jsonl", tmp_path / "a.jsonl")
    code, out, _ = run_cli(monkeypatch, capsys, "session", "import", "cli", answers, "--db", db)
    assert code == 0 and "3 new" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"\n', encoding="utf8")
    before = snapshot(db)
    code, _, err = run_cli(monkeypatch, capsys, "session", "import", "cli", bad, "--db", db)
    assert code == 1 and f"✘ {bad}: 1 invalid line(s); nothing was imported" in err
    assert f"{bad}:1: invalid JSON" in err
    assert snapshot(db) == before
    code, out, _ = run_cli(monkeypatch, capsys, "session", "status", "cli", "--json", "--db", db)
    assert code == 0 and json.loads(out)["counts"]["answered"] == 3
    code, out, _ = run_cli(monkeypatch, capsys, "session", "status", "cli", "--db", db)
    assert code == 0 and "answered 3" in out and "round" in out
    code, _, err = run_cli(monkeypatch, capsys, "session", "status", "nope", "--db", db)
    assert code == 1 and "No session 'nope'" in err


# --- crashes --------------------------------------------------------------------------------
def killed_train(db: Path, patch: str) -> subprocess.CompletedProcess:
    code = f"""
        import os, signal
        import spacy.language
        from adaptner.session import store
        from adaptner.session.loop import train_round
        from adaptner.session.trainer import UpdateSettings
        {patch}
        train_round({str(db)!r}, "demo", settings=UpdateSettings(max_epochs=1, patience=1))
    """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


KILL_WHILE_SAVING = """
original = spacy.language.Language.to_disk
def save_then_die(self, path, **kwargs):
    original(self, path, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
spacy.language.Language.to_disk = save_then_die
"""
KILL_BEFORE_COMMIT = """
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
store.SessionStore.add_round = die
"""


@pytest.mark.parametrize("patch", [KILL_WHILE_SAVING, KILL_BEFORE_COMMIT], ids=["saving", "commit"])
def test_killed_train_leaves_session_as_before(tmp_path, session, patch):
    b1 = next_batch(session, "demo", n=4, output=tmp_path / "b1.jsonl")
    import_answers(session, "demo", answer_batch(b1.path, tmp_path / "a1.jsonl"))
    before = snapshot(session)
    proc = killed_train(session, textwrap.indent(patch, " " * 8).strip())
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert snapshot(session) == before
    status = session_status(session, "demo")
    assert status["round"] == 0
    current = status["rounds"][-1]["model_dir"]
    assert Path(current, "config.cfg").exists()  # the current model is the intact source
    # the next command works and produces round 1
    trained = train_round(session, "demo", settings=SMALL)
    assert trained.round == 1 and (trained.model_dir / "config.cfg").exists()
    # the killed run's temp dir was cleaned up; only the finished round is there
    assert sorted(p.name for p in (tmp_path / "sdir" / "rounds").iterdir()) == ["1"]
