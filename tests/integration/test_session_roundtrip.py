"""A full annotation-session round trip on a small DANSK slice (news source, legal pool)."""

import json
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin

from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin
from adaptner.session import formats
from adaptner.session.loop import (
    export_session,
    import_answers,
    init_session,
    load_pipeline,
    next_batch,
    session_status,
    train_round,
)
from adaptner.strategies import strategy_names
from adaptner.training import train_pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
N_POOL = 150
N_HELDOUT = 40
N_BATCH = 20


@pytest.fixture(scope="module")
def slices(tmp_path_factory, corpus_dir):
    """Tiny news source model, a legal pool slice (gold kept aside) and a legal held-out slice."""
    out = tmp_path_factory.mktemp("session_roundtrip")
    source = train_pipeline(
        ROOT / "configs" / "test" / "bio_cnn.cfg",
        out / "source",
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        seed=0,
        verbose=False,
    )
    vocab = spacy.blank("da").vocab
    pool = read_docbin(corpus_dir / "train" / "legal.spacy", vocab)[:N_POOL]
    heldout = read_docbin(corpus_dir / "dev" / "legal.spacy", vocab)[:N_HELDOUT]
    DocBin(store_user_data=True, docs=pool).to_disk(out / "pool.spacy")
    DocBin(store_user_data=True, docs=heldout).to_disk(out / "heldout.spacy")
    gold = {
        doc.text: [{"start": e.start_char, "end": e.end_char, "label": e.label_} for e in doc.ents]
        for doc in pool
    }
    return {"dir": out, "source": source, "gold": gold}


def annotate(batch: Path, out: Path, gold: dict, *, reject=(), ignore=(), as_is=()) -> Path:
    """Answer a batch like an annotator: gold entities, a few rejects/ignores/unchanged."""
    lines = []
    for i, raw in enumerate(batch.read_text(encoding="utf8").splitlines()):
        task = json.loads(raw)
        if i in reject:
            task["answer"] = "reject"
        elif i in ignore:
            task["answer"] = "ignore"
        else:
            task["answer"] = "accept"
            if i not in as_is:
                task["spans"] = gold[task["text"]]
        lines.append(json.dumps(task, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf8")
    return out


def test_session_round_trip(tmp_path, slices):
    gold = slices["gold"]
    db = tmp_path / "adaptner.db"
    strategy = "margin" if "margin" in strategy_names() else "random"
    init = init_session(
        db,
        "legal",
        source=slices["source"],
        pool=slices["dir"] / "pool.spacy",
        heldout=slices["dir"] / "heldout.spacy",
        strategy=strategy,
        session_dir=tmp_path / "sdir",
    )
    assert init.created and init.pool_size + init.duplicates + init.heldout_overlap == N_POOL
    assert init.heldout_f is not None

    # next: pre-annotated Prodigy tasks from the pool (gold stripped)
    b1 = next_batch(db, "legal", n=N_BATCH, output=tmp_path / "batch1.jsonl")
    assert len(b1.tasks) == N_BATCH
    for task in b1.tasks:
        assert task["meta"]["domain"] == "legal" and task["meta"]["strategy"] == strategy
        assert task["_input_hash"] == formats.input_hash({"text": task["text"]})
        assert task["text"] in gold

    # answers from the gold: edited spans, rejects, ignores, one accepted unchanged
    answers = annotate(
        b1.path, tmp_path / "answers1.jsonl", gold, reject=(3, 13), ignore=(7,), as_is=(0,)
    )
    edited = [
        json.loads(a)["spans"] != t["spans"]
        for a, t in zip(answers.read_text().splitlines(), b1.tasks, strict=True)
    ]
    assert any(edited)  # the annotator corrected some pre-annotations
    first = import_answers(db, "legal", answers)
    assert (first.new, first.accepted, first.rejected, first.ignored) == (N_BATCH, 17, 2, 1)
    again = import_answers(db, "legal", answers)
    assert (again.new, again.replaced, again.duplicate) == (0, 0, N_BATCH)

    # no leaks: a held-out (Legal dev) sentence is always refused; a pool sentence that was
    # not handed out is refused unless --allow-foreign
    held = read_docbin(slices["dir"] / "heldout.spacy", spacy.blank("da").vocab)[0]
    handed = {t["text"] for t in b1.tasks}
    other = next(text for text in gold if text not in handed)
    leak = tmp_path / "leak.jsonl"
    leak.write_text(
        json.dumps(
            {
                "text": held.text,
                "answer": "accept",
                "spans": [
                    {"start": e.start_char, "end": e.end_char, "label": e.label_} for e in held.ents
                ],
            },
            ensure_ascii=False,
        )
        + "\n"
        + json.dumps({"text": other, "answer": "accept", "spans": gold[other]}, ensure_ascii=False)
        + "\n",
        encoding="utf8",
    )
    before = session_status(db, "legal")["counts"]
    for allow in (False, True):
        with pytest.raises(AdaptnerError) as err:
            import_answers(db, "legal", leak, allow_foreign=allow)
        message = str(err.value)
        assert f"{leak}:1: this text is in the session's held-out set" in message
        assert (f"{leak}:2: this text was not handed out" in message) is not allow
    assert session_status(db, "legal")["counts"] == before

    # train (warm): a new round whose model differs from the source
    warm = train_round(db, "legal", mode="warm")
    assert warm.round == 1 and warm.metrics["n_new"] == 17
    probe = b1.tasks[0]["text"]
    before = load_pipeline(slices["source"])(probe)._.ner_probs
    after = load_pipeline(warm.model_dir)(probe)._.ner_probs
    assert not numpy.allclose(before, after)

    # next: scored by the new model, never an answered sentence
    b2 = next_batch(db, "legal", n=N_BATCH, output=tmp_path / "batch2.jsonl")
    assert all(t["meta"]["round"] == 1 for t in b2.tasks)
    answered = {t["_input_hash"] for t in b1.tasks}
    assert answered.isdisjoint(t["_input_hash"] for t in b2.tasks)

    # a newer answer for an input replaces the older one and is counted
    task = json.loads(answers.read_text().splitlines()[3])
    task["answer"] = "accept"
    task["spans"] = gold[task["text"]]
    fix = tmp_path / "fix.jsonl"
    fix.write_text(json.dumps(task, ensure_ascii=False) + "\n", encoding="utf8")
    assert import_answers(db, "legal", fix).replaced == 1

    # reset retrains from the source on every accepted answer
    reset = train_round(db, "legal", mode="reset")
    assert reset.round == 2 and reset.metrics["n_train"] == 18

    status = session_status(db, "legal")
    c = status["counts"]
    assert (c["handed_out"], c["outstanding"], c["answered"]) == (2 * N_BATCH, N_BATCH, N_BATCH)
    assert (c["accepted"], c["rejected"], c["ignored"], c["replaced"]) == (18, 1, 1, 1)
    assert c["remaining"] == init.pool_size - 2 * N_BATCH
    history = [r["ents_f"] for r in status["rounds"]]
    assert len(history) == 3 and all(isinstance(f, float) for f in history)

    exported = export_session(db, "legal", tmp_path / "export")
    docs = read_docbin(exported["spacy"], spacy.blank("da").vocab)
    assert len(docs) == 18
    for doc in docs:
        assert [
            {"start": e.start_char, "end": e.end_char, "label": e.label_} for e in doc.ents
        ] == gold[doc.text] or doc.text == b1.tasks[0]["text"]
