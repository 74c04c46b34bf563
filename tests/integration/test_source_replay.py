"""Source replay on real DANSK docs: what the round trainer receives in a simulation and in a
session ``train``, in the ratio asked, and the errors for a bad ``--source-docs``."""

import json
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin
from adaptner.session import loop as session_loop
from adaptner.session.loop import (
    import_answers,
    init_session,
    next_batch,
    session_status,
    train_round,
)
from adaptner.session.trainer import UpdateSettings
from adaptner.simulation import ALSettings, SimulationConfig
from adaptner.simulation.engine import Simulation
from adaptner.update.replay import replay_count

pytestmark = pytest.mark.integration

#: Paper protocol on the first 100 social media train docs: 20 held out, 8 per round, 2 rounds.
SETTINGS = ALSettings(
    protocol="paper",
    pool_fraction=0.5,
    query_fraction=0.1,
    budget=0.2,
    eval_holdout=0.2,
    epochs=1,
    train_limit=100,
    eval_limit=20,
)


@pytest.fixture(scope="module")
def news_train(corpus_dir) -> list[str]:
    """The texts of the docs the News source pipeline was trained on."""
    vocab = spacy.blank("da").vocab
    return [d.text for d in read_docbin(corpus_dir / "train" / "news.spacy", vocab)]


def social_media_run(model, corpus_dir, mode: str, **settings) -> SimulationConfig:
    """News -> social media, random, seed 0, with :data:`SETTINGS` changed by ``settings``."""
    return SimulationConfig(
        source="news",
        target="social_media",
        strategy="random",
        mode=mode,
        seed=0,
        settings=SETTINGS.replace(**settings),
        source_model=model,
        corpus_dir=corpus_dir,
    )


def split_call(docs, target_ids: set[int], source_ids: set[int]) -> tuple[list, list]:
    """A trainer call's docs: (target docs, source docs), by identity; nothing else allowed."""
    target = [d for d in docs if id(d) in target_ids]
    source = [d for d in docs if id(d) in source_ids]
    assert len(target) + len(source) == len(docs)
    return target, source


def record_calls(sim: Simulation) -> list[list]:
    """Make the simulation's round trainer record the docs of every call."""
    calls: list[list] = []
    inner = sim.trainer

    def spy(nlp, train_docs, dev_docs, *, settings, seed):
        calls.append(list(train_docs))
        return inner(nlp, train_docs, dev_docs, settings=settings, seed=seed)

    sim.trainer = spy
    return calls


@pytest.mark.parametrize(
    "mode,ratio,cap,expected",
    [
        ("reset", 0.0, 0, [0, 0]),
        ("reset", 0.5, 0, [4, 8]),  # 8 then 16 target docs
        ("warm", 2.0, 0, [16, 24]),  # 8, then 8 new + 4 earlier labels replayed
        ("reset", 2.0, 10, [10, 10]),  # the cap
    ],
)
def test_simulation_rounds_train_on_source_docs_in_the_ratio(
    tiny_news_model, corpus_dir, news_train, tmp_path, mode, ratio, cap, expected
):
    cfg = social_media_run(
        tiny_news_model, corpus_dir, mode, source_replay=ratio, source_replay_max=cap
    )
    sim = Simulation(cfg, tmp_path)
    calls = record_calls(sim)
    records = sim.run()
    assert [r["round"] for r in records] == [0, 1, 2] and len(calls) == 2
    target_ids = {id(d) for d in sim.data.target_train}
    source_ids = {id(d) for d in sim.replay_pool()}
    assert len(source_ids) == (0 if ratio == 0 else len(news_train))
    assert [r["train_docs"] for r in records[1:]] == ([8, 16] if mode == "reset" else [8, 12])
    assert [r["source_replay_docs"] for r in records[1:]] == expected
    samples = []
    for docs, rec in zip(calls, records[1:], strict=True):
        target, source = split_call(docs, target_ids, source_ids)
        assert len(target) == rec["train_docs"]
        assert len(source) == rec["source_replay_docs"]
        assert len(source) == replay_count(len(target), ratio, len(news_train), cap)
        assert {d.text for d in source} <= set(news_train)
        assert len({id(d) for d in source}) == len(source)  # no doc twice
        samples.append([d.text for d in source])
    if ratio == 0:
        return
    assert set(samples[0]) != set(samples[1])  # a fresh draw each round
    # the same run again draws the same samples (one seed)
    again = Simulation(cfg, tmp_path / "again")
    again_calls = record_calls(again)
    again.run()
    again_ids = ({id(d) for d in again.data.target_train}, {id(d) for d in again.replay_pool()})
    assert [[d.text for d in split_call(c, *again_ids)[1]] for c in again_calls] == samples


def test_source_docs_are_trained_on_never_used_for_early_stopping(
    tiny_news_model, corpus_dir, tmp_path
):
    """With patience, a slice of the round's labels picks the epoch; the source docs go with
    the rest (2 per target doc trained on) and never into that slice."""
    cfg = social_media_run(
        tiny_news_model, corpus_dir, "reset", source_replay=2.0, patience=2, epochs=2
    )
    sim = Simulation(cfg, tmp_path)
    calls: list[tuple[list, list | None]] = []
    inner = sim.trainer

    def spy(nlp, train_docs, dev_docs, *, settings, seed):
        calls.append((list(train_docs), None if dev_docs is None else list(dev_docs)))
        return inner(nlp, train_docs, dev_docs, settings=settings, seed=seed)

    sim.trainer = spy
    records = sim.run()
    ids = ({id(d) for d in sim.data.target_train}, {id(d) for d in sim.replay_pool()})
    # 8 labels: 1 kept for stopping, 7 trained on; 16: 3 and 13
    assert [r["stop_docs"] for r in records[1:]] == [1, 3]
    assert [r["source_replay_docs"] for r in records[1:]] == [14, 26]
    for (train, stop), rec in zip(calls, records[1:], strict=True):
        fit, source = split_call(train, *ids)
        stop_target, stop_source = split_call(stop, *ids)
        assert stop_source == [] and len(stop_target) == rec["stop_docs"]
        assert len(source) == 2 * len(fit) and len(fit) + len(stop) == rec["train_docs"]


# --- sessions -------------------------------------------------------------------------------
N_POOL, N_BATCH = 60, 10


@pytest.fixture(scope="module")
def session_files(tmp_path_factory, corpus_dir):
    """A social media pool (gold kept aside), a held-out slice, and the News train DocBin."""
    out = tmp_path_factory.mktemp("replay_session")
    vocab = spacy.blank("da").vocab
    pool = read_docbin(corpus_dir / "train" / "social_media.spacy", vocab)[:N_POOL]
    heldout = read_docbin(corpus_dir / "dev" / "social_media.spacy", vocab)[:20]
    DocBin(store_user_data=True, docs=pool).to_disk(out / "pool.spacy")
    DocBin(store_user_data=True, docs=heldout).to_disk(out / "heldout.spacy")
    gold = {
        d.text: [{"start": e.start_char, "end": e.end_char, "label": e.label_} for e in d.ents]
        for d in pool
    }
    return {"dir": out, "gold": gold, "source_docs": corpus_dir / "train" / "news.spacy"}


def make_session(db: Path, files, source_model, **kwargs):
    args = {
        "source": source_model,
        "pool": files["dir"] / "pool.spacy",
        "heldout": files["dir"] / "heldout.spacy",
        "strategy": "random",
        "session_dir": db.parent / "sdir",
        **kwargs,
    }
    return init_session(db, "sm", **args)


def answer_next_batch(db: Path, files, tmp_path: Path, k: int) -> list[str]:
    """Hand out a batch and answer it from the gold; returns its texts."""
    batch = next_batch(db, "sm", n=N_BATCH, output=tmp_path / f"batch{k}.jsonl")
    lines = []
    for task in batch.tasks:
        task = {**task, "answer": "accept", "spans": files["gold"][task["text"]]}
        lines.append(json.dumps(task, ensure_ascii=False))
    answers = tmp_path / f"answers{k}.jsonl"
    answers.write_text("\n".join(lines) + "\n", encoding="utf8")
    import_answers(db, "sm", answers)
    return [t["text"] for t in batch.tasks]


def spy_update(monkeypatch) -> list[list[str]]:
    """Record the texts of the docs every session round trains on."""
    calls: list[list[str]] = []
    inner = session_loop.update_pipeline

    def spy(nlp, train_docs, heldout, settings, **kwargs):
        calls.append([d.text for d in train_docs])
        return inner(nlp, train_docs, heldout, settings, **kwargs)

    monkeypatch.setattr(session_loop, "update_pipeline", spy)
    return calls


def test_session_train_replays_source_docs_in_the_ratio(
    tiny_news_model, session_files, news_train, tmp_path, monkeypatch, capsys
):
    db = tmp_path / "adaptner.db"
    init = make_session(
        db, session_files, tiny_news_model, source_docs=session_files["source_docs"]
    )
    assert init.created and init.source_docs == len(news_train)
    news = set(news_train)
    calls = spy_update(monkeypatch)
    small = UpdateSettings(max_epochs=1, patience=1)

    first = answer_next_batch(db, session_files, tmp_path, 1)
    r1 = train_round(db, "sm", mode="warm", settings=small)  # the default ratio
    n1 = replay_count(N_BATCH, small.source_replay, len(news_train))
    assert calls[0][:N_BATCH] == first  # the answers, then the source docs
    assert len(calls[0]) == N_BATCH + n1 and set(calls[0][N_BATCH:]) <= news
    assert not set(calls[0][N_BATCH:]) & set(session_files["gold"])
    assert r1.metrics["n_source_replay"] == n1 > 0 and r1.metrics["n_train"] == N_BATCH + n1

    second = answer_next_batch(db, session_files, tmp_path, 2)
    reset = UpdateSettings(max_epochs=1, patience=1, source_replay=1.5)
    r2 = train_round(db, "sm", mode="reset", settings=reset)  # every answer: 20 -> 30 source
    assert sorted(calls[1][: 2 * N_BATCH]) == sorted(first + second)
    assert len(calls[1]) == 50 and set(calls[1][2 * N_BATCH :]) <= news
    assert r2.metrics["n_source_replay"] == 30
    assert calls[1][2 * N_BATCH :] != calls[0][N_BATCH:]  # a fresh sample per round

    answer_next_batch(db, session_files, tmp_path, 3)
    off = UpdateSettings(max_epochs=1, patience=1, source_replay=0.0)
    r3 = train_round(db, "sm", mode="warm", settings=off)
    assert r3.metrics["n_source_replay"] == 0 and not set(calls[2]) & news

    rounds = session_status(db, "sm")["rounds"]
    assert [r["n_source_replay"] for r in rounds] == [None, n1, 30, 0]

    # the CLI: `session train --source-replay`, and the column in `session status`
    answer_next_batch(db, session_files, tmp_path, 4)
    code, out = run_cli(
        monkeypatch, capsys, "session", "train", "sm", "--db", db, "--epochs", "1",
        "--source-replay", "0.5",
    )  # fmt: skip
    # warm: 10 new + the 30 earlier answers (up to 300) = 40 answers -> 20 source docs
    assert code == 0 and "(10 new, 20 from the source)" in out, out
    assert len(calls[3]) == 60 and set(calls[3][40:]) <= news
    code, out = run_cli(monkeypatch, capsys, "session", "status", "sm", "--db", db)
    lines = [line.split() for line in out.splitlines()]
    head = next(i for i, words in enumerate(lines) if words[:2] == ["round", "mode"])
    assert code == 0 and lines[head][5] == "source"
    rows = [words for words in lines[head + 1 :] if words[0].isdigit()][:5]
    assert [words[5] for words in rows] == ["-", str(n1), "30", "0", "20"]


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    from adaptner.cli import main

    monkeypatch.setattr(sys, "argv", ["adaptner", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_bad_source_docs_name_the_file(tiny_news_model, session_files, tmp_path):
    db = tmp_path / "adaptner.db"
    text = tmp_path / "notes.spacy"
    text.write_text("not a DocBin\n", encoding="utf8")
    empty = tmp_path / "empty.spacy"
    DocBin().to_disk(empty)
    news = session_files["source_docs"]
    cases = [
        ({"source_docs": tmp_path / "missing.spacy"}, r"--source-docs .*missing\.spacy does not"),
        ({"source_docs": tmp_path}, r"--source-docs .* is a directory"),
        ({"source_docs": text}, r"--source-docs: DocBin .*notes\.spacy is corrupt"),
        ({"source_docs": empty}, r"--source-docs .*empty\.spacy holds no documents"),
        (
            {"source_docs": news, "labels": ["PERSON", "GPE"]},
            r"--source-docs .*news\.spacy has entity labels outside the session's label set "
            r"\(PERSON, GPE\): .*ORGANIZATION \(\d+ spans\)",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(AdaptnerError, match=message):
            make_session(db, session_files, tiny_news_model, **kwargs)
        assert not db.exists()  # a failed init leaves no store


def test_source_docs_checked_at_train(
    tiny_news_model, session_files, tmp_path, monkeypatch, capsys
):
    db = tmp_path / "a" / "adaptner.db"
    make_session(db, session_files, tiny_news_model)  # no source docs
    answer_next_batch(db, session_files, tmp_path, 1)
    code, out = run_cli(
        monkeypatch, capsys, "session", "train", "sm", "--db", db, "--source-replay", "1"
    )
    assert code == 1 and "session 'sm' has no source docs to replay" in out
    assert "--source-docs" in out
    code, out = run_cli(
        monkeypatch, capsys, "session", "import", "sm", tmp_path / "answers1.jsonl", "--db", db,
        "--source-replay", "1",
    )  # fmt: skip
    assert code == 1 and "--source-replay goes with --next N" in out
    # without an explicit ratio a session without source docs trains on its answers only
    r = train_round(db, "sm", settings=UpdateSettings(max_epochs=1, patience=1))
    assert r.metrics["n_source_replay"] == 0

    copy = tmp_path / "news_copy.spacy"
    copy.write_bytes(session_files["source_docs"].read_bytes())
    other = tmp_path / "b" / "adaptner.db"
    make_session(other, session_files, tiny_news_model, source_docs=copy)
    answer_next_batch(other, session_files, tmp_path, 2)
    copy.write_bytes(copy.read_bytes()[:-1] + b"\x00")  # changed after init
    with pytest.raises(AdaptnerError, match=r"news_copy\.spacy, the source docs of .* changed"):
        train_round(other, "sm", settings=UpdateSettings(max_epochs=1, patience=1))
