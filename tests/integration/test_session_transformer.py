"""Annotation sessions on a transformer pipeline (the tiny BERT ``tiny_trf`` of conftest, shaped
like the e5 pipeline) and real DANSK Legal sentences: ``top_layers`` by default, the one-command
round, background rounds, and the guard against rounds that score below the source."""

import json
import sys

import numpy
import pytest
import spacy
from spacy.tokens import DocBin

from adaptner.encoders.training import transformer_modules
from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin
from adaptner.session import loop as loop_mod
from adaptner.session.loop import answer_cycle, init_session, next_batch, session_status
from adaptner.update.trainers import resolve_trainer
from tests.conftest import block_network

pytestmark = pytest.mark.integration


@pytest.fixture
def offline(monkeypatch):
    block_network(monkeypatch)


@pytest.fixture
def trf_session(tiny_trf, corpus_dir, tmp_path, offline):
    """A margin session over 60 Legal train sentences, held out: 20 Legal dev sentences."""
    vocab = spacy.blank("da").vocab
    pool = read_docbin(corpus_dir / "train" / "legal.spacy", vocab)[:60]
    heldout = read_docbin(corpus_dir / "dev" / "legal.spacy", vocab)[:20]
    DocBin(store_user_data=True, docs=pool).to_disk(tmp_path / "pool.spacy")
    DocBin(store_user_data=True, docs=heldout).to_disk(tmp_path / "heldout.spacy")
    db = tmp_path / "s.db"
    init_session(
        db, "trf", source=tiny_trf["best"], pool=tmp_path / "pool.spacy",
        heldout=tmp_path / "heldout.spacy", strategy="margin", session_dir=tmp_path / "sdir",
    )  # fmt: skip
    gold = {
        d.text: [{"start": e.start_char, "end": e.end_char, "label": e.label_} for e in d.ents]
        for d in pool
    }
    return {"db": db, "gold": gold, "sdir": tmp_path / "sdir", "source": tiny_trf["best"]}


def answer(batch_path, out, gold):
    """Accept every task of a Prodigy batch with the gold entities."""
    lines = []
    for line in batch_path.read_text(encoding="utf8").splitlines():
        task = json.loads(line)
        task.update(answer="accept", spans=gold[task["text"]])
        lines.append(json.dumps(task, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf8")
    return out


def predicted(nlp, tasks):
    return [[(e.start_char, e.end_char, e.label_) for e in nlp(t["text"]).ents] for t in tasks]


def in_tasks(tasks):
    return [[(s["start"], s["end"], s["label"]) for s in t["spans"]] for t in tasks]


def test_auto_is_top_layers_for_a_transformer_and_fine_tune_for_a_cnn(tiny_trf, tiny_news_model):
    assert resolve_trainer(spacy.load(tiny_trf["best"]), "auto") == "top_layers"
    assert resolve_trainer(spacy.load(tiny_news_model), "auto") == "fine_tune"
    assert resolve_trainer(spacy.load(tiny_trf["best"]), "cached_head") == "cached_head"


def test_one_command_round_on_a_transformer(trf_session, monkeypatch, capsys):
    from adaptner.cli import main

    db, gold, sdir = trf_session["db"], trf_session["gold"], trf_session["sdir"]
    # 40 answers: two updates per epoch (the encoder takes a batch's gradient at the next one)
    b1 = next_batch(db, "trf", n=40, output=sdir.parent / "b1.jsonl")
    answers = answer(b1.path, sdir.parent / "a1.jsonl", gold)
    loads = []
    real_load = loop_mod.load_pipeline
    monkeypatch.setattr(loop_mod, "load_pipeline", lambda p: loads.append(p) or real_load(p))
    out_path = sdir.parent / "b2.jsonl"
    argv = ["adaptner", "session", "import", "trf", str(answers), "--next", "8", "--no-background"]
    monkeypatch.setattr(sys, "argv", [*argv, "-o", str(out_path), "--db", str(db)])
    try:
        main()
    except SystemExit as e:
        assert not e.code, capsys.readouterr()
    out = capsys.readouterr().out
    assert "✔ round 1 (warm, top_layers): 40 docs (40 new)" in out
    assert "✔ batch 2 (round 1, top_layers): 8 tasks" in out
    assert len(loads) == 1  # the source once: trained in place, then scoring the pool
    st = session_status(db, "trf")
    assert [(b["round"], b["trainer"], b["note"]) for b in st["batches"]] == [
        (0, "source", None),
        (1, "top_layers", None),
    ]
    assert [r["trainer"] for r in st["rounds"]] == ["source", "top_layers"]
    # anchored by default: 40 answers keep 40 / (40 + 35) of the update, said and kept
    assert "epochs, 53 % of the update kept" in out
    assert st["rounds"][1]["anchor_alpha"] == pytest.approx(40 / 75)
    # the lower layers' outputs are cached on disk for the next command
    assert list((sdir / "features" / "lower").glob("*-k1/shard-*.npz"))
    # only the top layer learnt; the saved round is a normal pipeline that made the batch
    model = spacy.load(st["rounds"][1]["model_dir"])
    (module,) = transformer_modules(model)
    (original,) = transformer_modules(spacy.load(trf_session["source"]))
    before, after = original.state_dict(), module.state_dict()
    bottom = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0."))]
    top = [k for k in before if k.startswith("encoder.layer.1.")]
    assert all(numpy.array_equal(before[k].numpy(), after[k].numpy()) for k in bottom)
    assert any(not numpy.array_equal(before[k].numpy(), after[k].numpy()) for k in top)
    tasks = [json.loads(x) for x in out_path.read_text(encoding="utf8").splitlines()]
    assert in_tasks(tasks) == predicted(model, tasks)
    assert not {t["text"] for t in tasks} & {t["text"] for t in b1.tasks}


def test_one_command_round_on_a_transformer_trains_in_the_background_by_default(
    trf_session, monkeypatch, capsys
):
    """Without --background or --no-background, a transformer's round trains after the batch
    is written (top_layers rounds take tens of seconds on a CPU): the batch comes from the
    newest finished model, and the round is there for the next import."""
    from adaptner.cli import main

    db, gold, sdir = trf_session["db"], trf_session["gold"], trf_session["sdir"]
    b1 = next_batch(db, "trf", n=6, output=sdir.parent / "b1.jsonl")
    answers = answer(b1.path, sdir.parent / "a1.jsonl", gold)
    argv = ["adaptner", "session", "import", "trf", str(answers), "--next", "6", "-o"]
    monkeypatch.setattr(sys, "argv", [*argv, str(sdir.parent / "b2.jsonl"), "--db", str(db)])
    try:
        main()
    except SystemExit as e:
        assert not e.code, capsys.readouterr()
    out = capsys.readouterr().out
    assert out.index("✔ batch 2 (round 0") < out.index("✔ round 1 (warm, top_layers)")
    assert "training the next round in the background (--no-background waits" in out
    assert [r["trainer"] for r in session_status(db, "trf")["rounds"]] == ["source", "top_layers"]


def test_background_round_on_a_transformer(trf_session):
    db, gold, sdir = trf_session["db"], trf_session["gold"], trf_session["sdir"]
    b1 = next_batch(db, "trf", n=6, output=sdir.parent / "b1.jsonl")
    steps = []
    first = answer_cycle(
        db, "trf", answer(b1.path, sdir.parent / "a1.jsonl", gold), n=6,
        output=sdir.parent / "b2.jsonl", background=True,
        on_step=lambda what, result: steps.append((what, getattr(result, "round", None))),
    )  # fmt: skip
    # the batch comes first, from the newest finished model; round 1 trains after it
    assert steps == [("import", None), ("batch", 0), ("train", 1)]
    assert first.trained.metrics["trainer"] == "top_layers"
    # top_layers rounds are anchored by default: 6 answers keep 6 / (6 + 35) of the update
    assert first.trained.metrics["anchor_alpha"] == pytest.approx(6 / 41)
    second = answer_cycle(
        db, "trf", answer(first.batch.path, sdir.parent / "a2.jsonl", gold), n=6,
        output=sdir.parent / "b3.jsonl", background=True,
    )  # fmt: skip
    assert (second.batch.round, second.trained.round) == (1, 2)
    # round 1 scored the pool once it had trained, and the next batch was read from that
    assert second.batch.nlp is None
    st = session_status(db, "trf")
    assert [(b["round"], b["trainer"]) for b in st["batches"]] == [
        (0, "source"),
        (0, "source"),
        (1, "top_layers"),
    ]
    model = spacy.load(st["rounds"][1]["model_dir"])
    assert in_tasks(second.batch.tasks) == predicted(model, second.batch.tasks)


def test_guard_on_a_transformer(trf_session):
    """The tiny BERT scores 0 on Legal, so the source's score is raised in the store: every
    round then scores below it, and the batches keep coming from the source."""
    import sqlite3

    db, gold, sdir = trf_session["db"], trf_session["gold"], trf_session["sdir"]
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE rounds SET metrics = json_set(metrics, '$.ents_f', 0.5)")
    conn.close()
    b1 = next_batch(db, "trf", n=6, output=sdir.parent / "b1.jsonl")
    cycle = answer_cycle(
        db, "trf", answer(b1.path, sdir.parent / "a1.jsonl", gold), n=6,
        output=sdir.parent / "b2.jsonl",
    )  # fmt: skip
    assert cycle.trained.round == 1 and cycle.trained.metrics["ents_f"] < 0.5
    assert (cycle.batch.round, cycle.batch.trainer) == (0, "source")
    assert "below the source's 50.0; round 0 (50.0) is the best so far" in cycle.batch.note
    tasks = cycle.batch.tasks
    assert in_tasks(tasks) == predicted(spacy.load(trf_session["source"]), tasks)
    st = session_status(db, "trf")
    assert st["model"]["round"] == 0 and st["batches"][-1]["note"] == cycle.batch.note


def test_backend_serves_a_round_before_saving_it_and_recycles_the_retired_model(
    trf_session, monkeypatch
):
    """The round worker answers from a round as soon as it is trained (the ~0.5 GB save of a
    transformer comes after), and the next round trains on the retired model, made a copy of
    the newest in memory instead of loaded from disk."""
    import time

    from adaptner.session.loop import import_answers, load_pipeline
    from adaptner.session.worker import RoundWorker
    from adaptner.train_loop import collect_weights, same_frozen_weights
    from adaptner.update.trainers import TopLayers

    db, gold, sdir = trf_session["db"], trf_session["gold"], trf_session["sdir"]
    b1 = next_batch(db, "trf", n=6, output=sdir.parent / "b1.jsonl")
    import_answers(db, "trf", answer(b1.path, sdir.parent / "a1.jsonl", gold))
    messages: list[str] = []
    worker = RoundWorker(db, "trf", mode="warm", echo=messages.append)
    source = worker.served
    seen = {}
    real_save = loop_mod.save_pipeline

    def save(nlp, path, **kwargs):
        seen["served"] = worker.served.round
        seen["tasks"] = len(worker.served.tasks)
        return real_save(nlp, path, **kwargs)

    monkeypatch.setattr(loop_mod, "save_pipeline", save)
    worker._update(time.time(), True)
    assert seen == {"served": 1, "tasks": 54}  # round 1 answered while it was being saved
    assert worker.served.round == 1 and "saved in" in messages[-1]
    assert worker._spare is source.nlp  # the retired source model, now a copy of round 1
    loaded = load_pipeline(worker.served.model_dir)
    TopLayers().prepare(loaded, ())  # frozen and cached as the session's rounds are
    assert same_frozen_weights(loaded, worker._spare)
    saved, spare = collect_weights(loaded), collect_weights(worker._spare)
    assert saved.keys() == spare.keys()
    assert all(numpy.array_equal(saved[k], spare[k]) for k in saved)
    # the next round trains on the recycled copy
    b2 = next_batch(db, "trf", n=6, output=sdir.parent / "b2.jsonl")
    import_answers(db, "trf", answer(b2.path, sdir.parent / "a2.jsonl", gold))
    worker._update(time.time(), True)
    assert worker.served.round == 2 and worker.served.nlp is source.nlp


def test_backend_stops_serving_a_round_whose_save_failed(trf_session, monkeypatch):
    import time

    from adaptner.session.loop import import_answers
    from adaptner.session.store import SessionStore
    from adaptner.session.worker import RoundWorker

    db, gold, sdir = trf_session["db"], trf_session["gold"], trf_session["sdir"]
    b1 = next_batch(db, "trf", n=6, output=sdir.parent / "b1.jsonl")
    import_answers(db, "trf", answer(b1.path, sdir.parent / "a1.jsonl", gold))
    worker = RoundWorker(db, "trf", mode="warm", echo=lambda m: None)
    source = worker.served
    seen = {}

    def full_disk(nlp, path, **kwargs):
        seen["served"] = worker.served.round
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loop_mod, "save_pipeline", full_disk)
    with pytest.raises(AdaptnerError, match=r"No space left on device writing .*rounds.1: free"):
        worker._update(time.time(), True)
    assert seen == {"served": 1}
    assert worker.served is source  # back to the last saved round
    store = SessionStore(db)
    try:
        session = store.get_session("trf")
        assert [r.round for r in store.rounds(session.id)] == [0]
        assert len(store.answers(session.id, answer="accept", trained=False)) == 6
    finally:
        store.close()
    rounds = sdir / "rounds"  # no half-written round left behind
    assert not rounds.exists() or not [p.name for p in rounds.iterdir() if "1" in p.name]


def test_copy_trained_weights_refuses_pipelines_with_other_frozen_weights(tiny_trf):
    import torch

    from adaptner.train_loop import collect_weights
    from adaptner.update.trainers import TopLayers, copy_trained_weights

    a, b = spacy.load(tiny_trf["best"]), spacy.load(tiny_trf["best"])
    for nlp in (a, b):
        TopLayers(train_layers=1).prepare(nlp, ())
    head = next(k for k in collect_weights(a) if k.startswith("w:m:bio_ner"))
    collect_weights(a)[head][...] += 1.0  # a trained weight differs: copied
    assert copy_trained_weights(a, b)
    assert numpy.array_equal(collect_weights(b)[head], collect_weights(a)[head])
    with torch.no_grad():  # a frozen weight differs: not a copy, nothing changed
        transformer_modules(b)[0].embeddings.word_embeddings.weight[0, 0] += 1.0
    collect_weights(a)[head][...] += 1.0
    before = collect_weights(b, copy=True)
    assert not copy_trained_weights(a, b)
    assert all(numpy.array_equal(before[k], v) for k, v in collect_weights(b).items())
