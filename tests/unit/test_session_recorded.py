"""Answers exported by the real tools come back in (fixtures recorded from Label Studio 1.23.2
and doccano 1.8.4 by bench/annotation_tools_roundtrip.py --record tests/fixtures/session)."""

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from adaptner.errors import AdaptnerError
from adaptner.labels import get_labels
from adaptner.session.loop import import_answers
from adaptner.session.store import SessionStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "session"


def load_batch(tool: str) -> list[dict]:
    path = FIXTURES / tool / "batch.prodigy.jsonl"
    return [json.loads(x) for x in path.read_text(encoding="utf8").splitlines()]


def plan(tool: str) -> dict:
    return json.loads((FIXTURES / tool / "plan.json").read_text(encoding="utf8"))


def make_session(db: Path, handed_out: list[dict], pool: list[dict]) -> None:
    """A session whose pool is ``pool`` and which handed out ``handed_out`` (no model needed)."""
    store = SessionStore(db, create=True)
    with store.write() as conn:
        sid = store.create_session(
            conn,
            name="rt",
            source=str(db.parent / "source"),
            pool_path=str(db.parent / "pool.spacy"),
            heldout_path=None,
            strategy="random",
            strategy_params={},
            labels=get_labels(),
            lang="da",
            seed=0,
            session_dir=str(db.parent / "sdir"),
            settings={},
        )
        store.add_pool(
            conn,
            sid,
            [
                (
                    i,
                    t["_input_hash"],
                    t["text"],
                    [(x["start"], x["end"]) for x in t["tokens"]],
                    "legal",
                    None,
                )
                for i, t in enumerate(pool)
            ],
        )
        store.add_batch(
            conn,
            sid,
            round=0,
            path=str(db.parent / "batch.json"),
            copy_path=str(db.parent / "batch.jsonl"),
            format="labelstudio",
            strategy="random",
            handouts=[
                (t["_input_hash"], t["_task_hash"], i, None) for i, t in enumerate(handed_out)
            ],
        )
        store.add_round(
            conn, sid, round=0, mode="source", model_dir=str(db.parent), n_train=0, metrics={}
        )
    store.close()


def stored(db: Path) -> dict[int, dict]:
    store = SessionStore(db)
    try:
        return {a.input_hash: a for a in store.answers(store.get_session("rt").id)}
    finally:
        store.close()


def snapshot(db: Path) -> dict:
    conn = sqlite3.connect(db)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}
    conn.close()
    return out


@pytest.fixture
def ls_session(tmp_path) -> Path:
    batch = load_batch("labelstudio")
    db = tmp_path / "adaptner.db"
    make_session(db, batch, batch + load_batch("doccano"))
    return db


def spans_of(task: dict) -> list[tuple]:
    return [(s["start"], s["end"], s["label"]) for s in task["spans"]]


def check_plan(db: Path, tool: str, *, skipped: str | None) -> None:
    """What each recorded treatment became in the store."""
    batch = {t["_input_hash"]: t for t in load_batch(tool)}
    p = plan(tool)
    answers = stored(db)
    by = {k: answers.get(h) for k, h in p["plan"].items()}
    kept = batch[p["plan"]["kept"]]
    assert by["kept"].answer == "accept" and by["kept"].spans == spans_of(kept)
    edited = batch[p["plan"]["edited"]]
    assert by["edited"].answer == "accept" and by["edited"].spans != spans_of(edited)
    assert (by["empty"].answer, by["empty"].spans) == ("accept", [])
    s, e, label = p["cut_span"]
    cut_text = batch[p["plan"]["cut"]]["text"]
    (snapped,) = [x for x in by["cut"].spans if x[0] == s and x[2] == label]
    assert snapped[1] > e and not cut_text[snapped[1] - 1].isspace()  # widened to the word end
    if skipped is None:
        assert by["skipped"] is None  # not exported: still waiting
    else:
        assert (by["skipped"].answer, by["skipped"].spans) == (skipped, [])
    for h, a in answers.items():  # matched to the handed-out task by the hashes the tool kept
        assert a.task_hash == batch[h]["_task_hash"]


def test_labelstudio_json_export(ls_session):
    path = FIXTURES / "labelstudio" / "export.json"
    before = snapshot(ls_session)
    with pytest.raises(AdaptnerError) as err:
        import_answers(ls_session, "rt", path)
    s, e, label = plan("labelstudio")["cut_span"]
    message = str(err.value)
    assert "1 invalid line(s); nothing was imported" in message
    assert f"{path}:1: task " in message and f"({s}-{e} {label!r}) ends inside a token" in message
    assert snapshot(ls_session) == before
    r = import_answers(ls_session, "rt", path, snap=True)
    assert (r.fmt, r.new, r.accepted, r.rejected, r.ignored) == ("labelstudio", 6, 5, 0, 1)
    assert len(r.snaps) == 1 and f"({s}-{e} {label!r})" in r.snaps[0]
    check_plan(ls_session, "labelstudio", skipped="ignore")
    # the task annotated twice: the later annotation counts
    export = json.loads(path.read_text(encoding="utf8"))
    (task,) = [t for t in export if len(t["annotations"]) == 2]
    first, later = sorted(task["annotations"], key=lambda a: a["updated_at"])
    values = [r["value"] for r in later["result"]]
    twice = stored(ls_session)[task["data"]["_input_hash"]]
    assert twice.spans == sorted((v["start"], v["end"], v["labels"][0]) for v in values)
    assert len(first["result"]) < len(later["result"])


def test_labelstudio_json_min_export(ls_session):
    path = FIXTURES / "labelstudio" / "export-min.json"
    with pytest.raises(AdaptnerError, match=r"export-min.json:\d+: task \d+ \(id \d+\): span"):
        import_answers(ls_session, "rt", path)
    r = import_answers(ls_session, "rt", path, snap=True)
    assert (r.fmt, r.new, r.accepted, r.ignored, r.superseded) == ("labelstudio-min", 5, 5, 0, 1)
    check_plan(ls_session, "labelstudio", skipped=None)
    # the same annotations through the full export change nothing but add the skipped task
    again = import_answers(ls_session, "rt", FIXTURES / "labelstudio" / "export.json", snap=True)
    assert (again.new, again.duplicate, again.replaced) == (1, 5, 0)


def test_doccano_export(tmp_path):
    batch = load_batch("doccano")
    db = tmp_path / "adaptner.db"
    make_session(db, batch, batch)
    path = FIXTURES / "doccano" / "export-approved.jsonl"
    s, e, label = plan("doccano")["cut_span"]
    with pytest.raises(AdaptnerError, match=rf"export-approved.jsonl:\d+: span 1 \({s}-{e} "):
        import_answers(db, "rt", path)
    r = import_answers(db, "rt", path, snap=True)
    assert (r.fmt, r.new, r.accepted) == ("doccano", 5, 5) and len(r.snaps) == 1
    check_plan(db, "doccano", skipped=None)
    kept = stored(db)[plan("doccano")["plan"]["kept"]]
    assert kept.task["meta"]["session"] == "rt"  # the metadata we sent came back


def test_answers_for_another_batch_are_refused(tmp_path):
    batch = load_batch("labelstudio")
    db = tmp_path / "adaptner.db"
    make_session(db, batch, batch + load_batch("doccano"))  # doccano's batch not handed out
    path = tmp_path / "export.jsonl"
    shutil.copy(FIXTURES / "doccano" / "export-approved.jsonl", path)
    with pytest.raises(AdaptnerError) as err:
        import_answers(db, "rt", path, snap=True)
    assert str(err.value).count("this text was not handed out by session 'rt'") == 5
    assert import_answers(db, "rt", path, snap=True, allow_foreign=True).foreign == 5


def test_cli_import_of_a_label_studio_export(ls_session, monkeypatch, capsys):
    from adaptner.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["adaptner", "session", "import", *map(str, args)])
        try:
            main()
        except SystemExit as e:
            return e.code or 0, capsys.readouterr()
        return 0, capsys.readouterr()

    path = FIXTURES / "labelstudio" / "export.json"
    code, out = run("rt", path, "--db", ls_session)
    assert code == 1 and f"✘ {path}: 1 invalid line(s); nothing was imported" in out.err
    assert "(or pass --snap)" in out.err
    code, out = run("rt", path, "--db", ls_session, "--snap", "--format", "labelstudio")
    assert code == 0, out.err
    assert out.out.count("ℹ snapped: ") == 1
    assert f"✔ {path} (labelstudio): 6 new, 0 replaced, 0 duplicate, 0 stale" in out.out
    assert "(5 accept, 0 reject, 1 ignore); 1 span(s) snapped" in out.out
    code, out = run("rt", path, "--db", ls_session, "--format", "csv")
    assert code == 1 and "Unknown --format 'csv'" in out.err
