"""Unit tests for the session store: schema, migrations, imports, dedupe, crashes, concurrency."""

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import spacy

from adaptner.errors import AdaptnerError
from adaptner.session import formats
from adaptner.session import store as store_mod
from adaptner.session.loop import import_answers
from adaptner.session.store import SessionStore

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["GPE", "ORGANIZATION", "PERSON"]
POOL = [
    "Mette Frederiksen besøgte Aarhus i går.",
    "Novo Nordisk har hovedsæde i Bagsværd.",
    "Lars Løkke Rasmussen talte i Folketinget.",
    "Københavns Kommune vedtog budgettet.",
    "Anders bor i Odense med sin familie.",
    "Danske Bank åbner en filial i Aalborg.",
    "Statsministeren mødte Joe Biden i Washington.",
    "Mærsk flytter kontorer til Singapore.",
    "Peter arbejder hos Carlsberg i Valby.",
    "Det regnede hele dagen i Esbjerg.",
]


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("da")


def make_session(db: Path, nlp, name: str = "s") -> None:
    """A session created straight in the store (no pipeline needed for imports)."""
    store = SessionStore(db, create=True)
    with store.write() as conn:
        sid = store.create_session(
            conn,
            name=name,
            source=str(db.parent / "source"),
            pool_path=str(db.parent / "pool.txt"),
            heldout_path=None,
            strategy="random",
            strategy_params={},
            labels=LABELS,
            lang="da",
            seed=0,
            session_dir=str(db.parent / "sdir"),
            settings={},
        )
        rows = [
            (
                i,
                formats.input_hash({"text": t}),
                t,
                formats.doc_offsets(nlp.make_doc(t)),
                "legal",
                None,
            )
            for i, t in enumerate(POOL)
        ]
        store.add_pool(conn, sid, rows)
        store.add_batch(  # every pool text handed out, so answers for them are accepted
            conn,
            sid,
            round=0,
            path=str(db.parent / "batch.jsonl"),
            copy_path=str(db.parent / "batch.jsonl"),
            format="prodigy",
            strategy="random",
            handouts=[(h, h, i, None) for i, h, *_ in rows],
        )
        store.add_round(
            conn, sid, round=0, mode="source", model_dir=str(db.parent), n_train=0, metrics={}
        )
    store.close()


def answer(text: str, spans=(), answer="accept", **extra) -> dict:
    """An answer line with spans given as (word, label): offsets found in the text."""
    out = []
    for word, label in spans:
        start = text.index(word)
        out.append({"start": start, "end": start + len(word), "label": label})
    return {"text": text, "spans": out, "answer": answer, **extra}


def write_lines(path: Path, lines) -> Path:
    path.write_text(
        "".join(
            (x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines
        ),
        encoding="utf8",
    )
    return path


def snapshot(db: Path) -> dict:
    """Every row of every table (to assert that a failed command changed nothing)."""
    conn = sqlite3.connect(db)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}
    conn.close()
    return out


@pytest.fixture
def db(tmp_path, nlp) -> Path:
    path = tmp_path / "adaptner.db"
    make_session(path, nlp)
    return path


def counts(db: Path) -> dict:
    store = SessionStore(db)
    try:
        return store.counts(store.get_session("s").id)
    finally:
        store.close()


# --- schema -------------------------------------------------------------------------------
def test_new_store_is_wal_and_versioned(db):
    store = SessionStore(db)
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version() == len(store_mod.MIGRATIONS) == store_mod.SCHEMA_VERSION
    store.close()


def test_migrations_apply_once(db, monkeypatch):
    before = snapshot(db)
    extra = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, extra])
    for _ in range(2):  # the second open finds nothing to do
        store = SessionStore(db)
        assert store.schema_version() == len(store_mod.MIGRATIONS)
        store.close()
    after = snapshot(db)
    assert after["notes"] == []
    assert {k: v for k, v in after.items() if k not in ("notes", "schema_version")} == {
        k: v for k, v in before.items() if k != "schema_version"
    }
    assert len(after["schema_version"]) == len(before["schema_version"]) + 1


def test_newer_schema_is_refused(db):
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    conn.commit()
    conn.close()
    with pytest.raises(AdaptnerError, match="has schema version 99, but this adaptner knows"):
        SessionStore(db)


def test_bad_store_files(tmp_path):
    with pytest.raises(AdaptnerError, match="No session store at .*nope.db.*session init"):
        SessionStore(tmp_path / "nope.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AdaptnerError, match="is not a session store or is corrupt"):
        SessionStore(garbage)


def test_unknown_session_lists_known(db):
    store = SessionStore(db)
    with pytest.raises(AdaptnerError, match=r"No session 'x' in .* \(sessions: s\)"):
        store.get_session("x")
    store.close()


# --- imports ------------------------------------------------------------------------------
def test_import_twice_changes_nothing(db, tmp_path):
    path = write_lines(
        tmp_path / "a.jsonl",
        [
            answer(POOL[0], [("Mette Frederiksen", "PERSON"), ("Aarhus", "GPE")]),
            answer(POOL[1], [("Novo Nordisk", "ORGANIZATION")]),
            answer(POOL[2], answer="reject"),
            answer(POOL[3], answer="ignore"),
        ],
    )
    first = import_answers(db, "s", path)
    assert (first.new, first.duplicate, first.accepted, first.rejected) == (4, 0, 2, 1)
    before = snapshot(db)
    second = import_answers(db, "s", path)
    assert (second.new, second.replaced, second.duplicate) == (0, 0, 4)
    after = snapshot(db)
    assert after["answers"] == before["answers"]
    c = counts(db)
    assert (c["answered"], c["accepted"], c["rejected"], c["ignored"]) == (4, 2, 1, 1)
    assert c["outstanding"] == len(POOL) - 4 and c["replaced"] == 0  # all were handed out


def test_newer_answer_replaces_older(db, tmp_path):
    old = write_lines(tmp_path / "old.jsonl", [answer(POOL[0], [("Aarhus", "GPE")])])
    new = write_lines(
        tmp_path / "new.jsonl",
        [answer(POOL[0], [("Mette Frederiksen", "PERSON"), ("Aarhus", "GPE")])],
    )
    import_answers(db, "s", old)
    result = import_answers(db, "s", new)
    assert (result.new, result.replaced) == (0, 1)
    c = counts(db)
    assert (c["answered"], c["replaced"]) == (1, 1)
    store = SessionStore(db)
    (current,) = store.answers(store.get_session("s").id)
    store.close()
    assert [s[2] for s in current.spans] == ["PERSON", "GPE"]


def test_older_timestamp_is_stale(db, tmp_path):
    late = answer(POOL[0], [("Aarhus", "GPE")], _timestamp=200)
    early = answer(POOL[0], [], answer="reject", _timestamp=100)
    import_answers(db, "s", write_lines(tmp_path / "late.jsonl", [late]))
    result = import_answers(db, "s", write_lines(tmp_path / "early.jsonl", [early]))
    assert (result.stale, result.replaced, result.new) == (1, 0, 0)
    assert counts(db)["accepted"] == 1


BAD_LINES = [
    ('{"text": "broken"', "invalid JSON"),
    ({"text": POOL[0], "answer": "accept"}, "missing required key 'spans'"),
    ({"answer": "accept", "spans": []}, "missing required key 'text'"),
    (answer(POOL[0], [("Mette", "PERSON")], answer="yes"), "answer 'yes' is not one of"),
    (
        {
            "text": POOL[0],
            "answer": "accept",
            "spans": [{"start": 0, "end": 500, "label": "PERSON"}],
        },
        "outside the text",
    ),
    (
        {"text": POOL[0], "answer": "accept", "spans": [{"start": 0, "end": 3, "label": "PERSON"}]},
        "ends inside a token ('Mette' at 0-5); spans must start and end on token boundaries",
    ),
    (answer(POOL[0], [("Aarhus", "CITY")]), "label 'CITY' is not in the session's label set"),
    (
        {
            "text": POOL[0],
            "answer": "accept",
            "spans": [
                {"start": 0, "end": 17, "label": "PERSON"},
                {"start": 6, "end": 17, "label": "PERSON"},
            ],
        },
        "spans overlap",
    ),
]


@pytest.mark.parametrize("bad,message", BAD_LINES)
def test_bad_line_imports_nothing(db, tmp_path, bad, message):
    path = write_lines(tmp_path / "answers.jsonl", [answer(POOL[1], [("Bagsværd", "GPE")]), bad])
    before = snapshot(db)
    with pytest.raises(AdaptnerError) as err:
        import_answers(db, "s", path)
    text = str(err.value)
    assert "1 invalid line(s); nothing was imported" in text
    assert f"{path}:2: " in text and message in text
    assert "--skip-invalid" in text
    assert snapshot(db) == before


def test_every_bad_line_is_reported(db, tmp_path):
    path = write_lines(
        tmp_path / "answers.jsonl",
        ["nope", answer(POOL[1]), {"text": POOL[2]}, answer(POOL[3], answer="skip")],
    )
    with pytest.raises(AdaptnerError) as err:
        import_answers(db, "s", path)
    text = str(err.value)
    assert "3 invalid line(s)" in text
    for line in (1, 3, 4):
        assert f"{path}:{line}: " in text
    assert f"{path}:2: " not in text


def test_skip_invalid_imports_valid_and_writes_rejects(db, tmp_path):
    path = write_lines(
        tmp_path / "answers.jsonl",
        [answer(POOL[1], [("Bagsværd", "GPE")]), "nope", answer(POOL[2], answer="ignore")],
    )
    result = import_answers(db, "s", path, skip_invalid=True)
    assert (result.new, result.invalid) == (2, 1)
    assert result.rejects_path == tmp_path / "answers.rejects.jsonl"
    (reject,) = [json.loads(x) for x in result.rejects_path.read_text().splitlines()]
    assert reject["line"] == 2 and "invalid JSON" in reject["error"] and reject["raw"] == "nope"
    assert counts(db)["answered"] == 2


def test_empty_and_missing_answers_files(db, tmp_path):
    before = snapshot(db)
    with pytest.raises(AdaptnerError, match="holds no valid answers; nothing was imported"):
        import_answers(db, "s", write_lines(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(AdaptnerError, match="Answers file .*missing.jsonl does not exist"):
        import_answers(db, "s", tmp_path / "missing.jsonl")
    assert snapshot(db) == before


def test_answer_outside_pool_is_refused_unless_allowed(db, tmp_path):
    text = "Jens bor i Roskilde."
    path = write_lines(tmp_path / "a.jsonl", [answer(POOL[0]), answer(text, [("Roskilde", "GPE")])])
    before = snapshot(db)
    with pytest.raises(AdaptnerError) as err:
        import_answers(db, "s", path)
    assert f"{path}:2: this text was not handed out by session 's'" in str(err.value)
    assert "--allow-foreign" in str(err.value) and f"{path}:1:" not in str(err.value)
    assert snapshot(db) == before
    result = import_answers(db, "s", path, allow_foreign=True)
    assert (result.new, result.foreign) == (2, 1)
    c = counts(db)
    assert (c["answered"], c["outside_pool"], c["outstanding"]) == (2, 1, len(POOL) - 1)


def test_pool_text_not_handed_out_is_refused(db, tmp_path):
    store = SessionStore(db)
    with store.write() as conn:
        h = formats.input_hash({"text": POOL[9]})
        conn.execute("DELETE FROM handouts WHERE input_hash = ?", (h,))
    store.close()
    path = write_lines(tmp_path / "a.jsonl", [answer(POOL[9], [("Esbjerg", "GPE")])])
    with pytest.raises(AdaptnerError, match=r"a.jsonl:1: this text was not handed out"):
        import_answers(db, "s", path)
    assert import_answers(db, "s", path, allow_foreign=True).new == 1


# --- crashes and concurrency ----------------------------------------------------------------
def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_killed_import_leaves_store_unchanged(db, tmp_path):
    lines = [answer(t, answer="reject") for t in POOL[:6]]
    path = write_lines(tmp_path / "answers.jsonl", lines)
    before = snapshot(db)
    proc = run_python(
        f"""
        import os, signal
        from adaptner.session import store
        from adaptner.session.loop import import_answers
        original = store.SessionStore.insert_answer
        calls = []
        def insert_then_die(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, *args, **kwargs)
        store.SessionStore.insert_answer = insert_then_die
        import_answers({str(db)!r}, "s", {str(path)!r})
        """
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert snapshot(db) == before
    result = import_answers(db, "s", path)  # the next command works
    assert result.new == 6


def test_concurrent_imports_lose_and_duplicate_nothing(db, tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [answer(t, answer="accept") for t in POOL[:6]])
    b = write_lines(tmp_path / "b.jsonl", [answer(t, answer="reject") for t in POOL[3:9]])
    go = tmp_path / "go"
    script = """
        import json, os, sys, time
        from adaptner.session.loop import import_answers
        go, db, path = sys.argv[1:4]
        while not os.path.exists(go):
            time.sleep(0.01)
        r = import_answers(db, "s", path)
        print(json.dumps([r.new, r.replaced, r.duplicate]))
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(go), str(db), str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in (a, b, a)
    ]
    time.sleep(3)  # let all three import their modules and wait on the barrier
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT input_hash, current FROM answers").fetchall()
    conn.close()
    current = [h for h, cur in rows if cur]
    assert len(current) == len(set(current)) == 9  # one current answer per input
    new = sum(o[0] for o in outs)
    replaced = sum(o[1] for o in outs)
    duplicate = sum(o[2] for o in outs)
    assert new == 9
    assert new + replaced == len(rows)  # every stored row was counted once
    assert new + replaced + duplicate == 18  # every line of the three files was handled
    c = counts(db)
    assert c["answered"] == 9 and c["replaced"] == replaced
