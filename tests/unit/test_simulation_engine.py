"""Unit tests of the simulation engine and trainer on a tiny hand-built two-domain corpus.

The helpers at the top (``write_tiny_corpus``, ``make_source_pipeline``) are imported by the
other ``test_simulation_*`` files.
"""

import json
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

from adaptner.errors import AdaptnerError
from adaptner.simulation import (
    TIMING_FIELDS,
    ALSettings,
    SimulationConfig,
    plan_sizes,
    read_records,
    run_simulation,
    score_ner,
    update_pipeline,
)
from adaptner.simulation.engine import Simulation, eval_split_for, make_strategy
from adaptner.update.trainers import restore_weights, snapshot_weights

# --- a tiny corpus: "news" (people and places) and "legal" (laws and organisations) -----------

PEOPLE = ["Mette Frederiksen", "Lars", "Anna Hansen", "Peter", "Søren Kierkegaard", "Ida"]
PLACES = ["København", "Aarhus", "Odense", "Aalborg", "Esbjerg", "Roskilde"]
LAWS = ["Straffeloven", "Grundloven", "Persondataloven", "Færdselsloven"]
ORGS = ["Højesteret", "Folketinget", "Datatilsynet", "Landsretten"]


def make_doc(vocab, words: list[str], ents, domain: str) -> Doc:
    """A Doc from words (no space before final punctuation) with entity spans and a domain."""
    spaces = [i + 1 < len(words) and words[i + 1] not in ".,!?" for i in range(len(words))]
    doc = Doc(vocab, words=words, spaces=spaces)
    doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
    doc._.domain = domain
    doc._.source = f"{domain}_src"
    return doc


def news_doc(vocab, i: int) -> Doc:
    person = PEOPLE[i % len(PEOPLE)].split()
    place = PLACES[(i // len(PEOPLE)) % len(PLACES)]
    if i % 2:
        words = [*person, "besøgte", place, "i", "går", "."]
        ents = [(0, len(person), "PERSON"), (len(person) + 1, len(person) + 2, "GPE")]
    else:
        words = ["I", place, "mødte", *person, "pressen", "."]
        ents = [(1, 2, "GPE"), (3, 3 + len(person), "PERSON")]
    return make_doc(vocab, words, ents, "news")


def legal_doc(vocab, i: int) -> Doc:
    law, org = LAWS[i % len(LAWS)], ORGS[(i // len(LAWS)) % len(ORGS)]
    if i % 3 == 0:
        words = [org, "dømte", "efter", law, "§", str(i + 1), "."]
        ents = [(0, 1, "ORGANIZATION"), (3, 6, "LAW")]
    elif i % 3 == 1:
        words = ["Ifølge", law, "skal", org, "høres", "."]
        ents = [(1, 2, "LAW"), (3, 4, "ORGANIZATION")]
    else:
        words = ["Sagen", "blev", "afgjort", "i", org, "den", str(i % 28 + 1), ".", "maj", "."]
        ents = [(4, 5, "ORGANIZATION"), (5, 9, "DATE")]
    return make_doc(vocab, words, ents, "legal")


def write_docbin(path: Path, docs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs, store_user_data=True).to_disk(path)


def write_tiny_corpus(root: Path) -> Path:
    """corpus/{train,dev}/{news,legal}.spacy: 30/10 news, 40/12 legal docs."""
    vocab = spacy.blank("da").vocab
    write_docbin(root / "train" / "news.spacy", [news_doc(vocab, i) for i in range(30)])
    write_docbin(root / "dev" / "news.spacy", [news_doc(vocab, 30 + i) for i in range(10)])
    write_docbin(root / "train" / "legal.spacy", [legal_doc(vocab, i) for i in range(40)])
    write_docbin(root / "dev" / "legal.spacy", [legal_doc(vocab, 40 + i) for i in range(12)])
    return root


TINY_MODEL = {
    "@architectures": "adaptner.BioTagger.v1",
    "nO": None,
    "dropout": 0.1,
    "tok2vec": {
        "@architectures": "spacy.HashEmbedCNN.v2",
        "pretrained_vectors": None,
        "width": 32,
        "depth": 1,
        "embed_size": 500,
        "window_size": 1,
        "maxout_pieces": 2,
        "subword_features": True,
    },
}


def make_source_pipeline(path: Path, corpus: Path, epochs: int = 15) -> Path:
    """A small bio_ner pipeline trained on the tiny corpus's news train docs, saved to ``path``."""
    from adaptner.readers import read_docbin
    from adaptner.update.trainers import make_examples

    nlp = spacy.blank("da")
    nlp.add_pipe("bio_ner", config={"model": TINY_MODEL})
    news = read_docbin(corpus / "train" / "news.spacy", nlp.vocab)
    legal = read_docbin(corpus / "train" / "legal.spacy", nlp.vocab)
    # labels from both domains, weights from news only
    examples = make_examples(nlp, news + legal)
    nlp.initialize(lambda: examples)
    update_pipeline(nlp, news, epochs=epochs, seed=0, batch_size=8)
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(corpus dir, source pipeline dir)."""
    root = tmp_path_factory.mktemp("sim")
    corpus = write_tiny_corpus(root / "corpus")
    source = make_source_pipeline(root / "source", corpus)
    return corpus, source


# The earlier protocol (one fixed pool, random first batch, stop when the pool is used up),
# scored on dev only: the tests below this section check that it is unchanged.
SETTINGS = ALSettings(
    protocol="fixed_pool",
    eval_holdout=0.0,
    eval_sets=("dev",),
    pool_fraction=0.5,
    query_fraction=0.1,
    budget=1.0,
    epochs=2,
    batch_size=8,
)
# The paper's protocol with a held-out evaluation set: legal's 40 train docs = 8 held out +
# 32 for AL; a fresh pool of 8 each round, 3 docs per round (16 = 50 % after 5 rounds).
PAPER = ALSettings(pool_fraction=0.25, query_fraction=0.1, budget=0.5, epochs=2, batch_size=8)


def make_cfg(tiny, **changes) -> SimulationConfig:
    corpus, source = tiny
    fields = {
        "source": "news",
        "target": "legal",
        "strategy": "margin",
        "mode": "reset",
        "seed": 3,
        "settings": SETTINGS,
        "source_model": source,
        "corpus_dir": corpus,
    }
    fields.update(changes)
    return SimulationConfig(**fields)


def strip_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


# --- trainer ------------------------------------------------------------------------------------


def test_update_pipeline_overfits_two_sentences(tiny):
    corpus, source = tiny
    nlp = spacy.load(source)
    docs = [legal_doc(nlp.vocab, 0), legal_doc(nlp.vocab, 1)]
    before = score_ner(nlp, docs)["ents_f"]
    stats = update_pipeline(nlp, docs, epochs=40, seed=1, batch_size=2)
    after = score_ner(nlp, docs)
    assert stats.epochs == 40 and stats.steps == 40 and len(stats.losses) == 40
    assert stats.losses[-1] < stats.losses[0]
    assert after["ents_f"] == 1.0 and after["ents_f"] > before
    assert set(after["ents_per_type"]) == {"LAW", "ORGANIZATION"}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(numpy.array_equal(a[k], b[k]) for k in a)


def test_update_pipeline_is_deterministic(tiny):
    corpus, source = tiny
    nlp = spacy.load(source)
    start = snapshot_weights(nlp)
    docs = [legal_doc(nlp.vocab, i) for i in range(6)]
    update_pipeline(nlp, docs, epochs=2, seed=5, batch_size=4)
    first = snapshot_weights(nlp)
    restore_weights(nlp, start)
    update_pipeline(nlp, docs, epochs=2, seed=5, batch_size=4)
    assert same_weights(snapshot_weights(nlp), first)
    assert not same_weights(first, start)
    restore_weights(nlp, start)
    assert same_weights(snapshot_weights(nlp), start)
    update_pipeline(nlp, docs, epochs=2, seed=6, batch_size=4)
    assert not same_weights(snapshot_weights(nlp), first)


def test_update_pipeline_early_stopping_keeps_best(tiny):
    corpus, source = tiny
    nlp = spacy.load(source)
    train = [legal_doc(nlp.vocab, i) for i in range(6)]
    dev = [legal_doc(nlp.vocab, 100 + i) for i in range(6)]
    stats = update_pipeline(nlp, train, dev, epochs=30, patience=2, seed=0, batch_size=4)
    assert len(stats.dev_f1) == stats.epochs
    assert stats.epochs == 30 or stats.epochs - stats.best_epoch == 2
    assert score_ner(nlp, dev)["ents_f"] == pytest.approx(max(stats.dev_f1))


def test_update_pipeline_bad_input(tiny):
    nlp = spacy.load(tiny[1])
    with pytest.raises(AdaptnerError, match="epochs must be at least 1"):
        update_pipeline(nlp, [legal_doc(nlp.vocab, 0)], epochs=0)
    assert update_pipeline(nlp, [], epochs=3).steps == 0


def test_score_ner_counts_exact_spans():
    nlp = spacy.blank("da")
    gold = [legal_doc(nlp.vocab, 0)]

    @spacy.Language.component("copy_gold_h6")
    def copy_gold(doc):
        doc.ents = [Span(doc, e.start, e.end, label=e.label_) for e in gold[0].ents][:1]
        return doc

    nlp.add_pipe("copy_gold_h6")
    scores = score_ner(nlp, gold)
    # 1 of 2 gold entities predicted, no false positives
    assert scores["ents_p"] == 1.0 and scores["ents_r"] == 0.5
    assert scores["ents_f"] == pytest.approx(2 / 3)
    first = gold[0].ents[0].label_
    assert scores["ents_per_type"][first] == {"p": 1.0, "r": 1.0, "f": 1.0}
    assert score_ner(nlp, [])["ents_f"] == 0.0


# --- sizes and splits ---------------------------------------------------------------------------


def test_plan_sizes():
    s = plan_sizes(40, SETTINGS)
    assert (s.target_size, s.pool_size, s.query_size, s.budget, s.rounds) == (40, 20, 4, 20, 6)
    s = plan_sizes(40, SETTINGS.replace(budget=0.25, query_fraction=0.15))
    assert (s.pool_size, s.query_size, s.budget, s.rounds) == (20, 6, 10, 3)
    with pytest.raises(AdaptnerError, match="target train set is empty"):
        plan_sizes(0, SETTINGS)


def test_eval_split_for(tiny):
    corpus, _ = tiny
    assert eval_split_for(corpus, "legal") == "dev"
    with pytest.raises(AdaptnerError, match="No test split for legal"):
        eval_split_for(corpus, "legal", "test")


# --- one run --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reset", "warm"])
def test_run_records(tiny, tmp_path, mode):
    cfg = make_cfg(tiny, mode=mode)
    records = run_simulation(cfg, tmp_path)
    path = tmp_path / f"{cfg.run_id}.jsonl"
    assert path.name == f"news_legal_margin_{mode}_s3.jsonl"
    assert strip_timing(read_records(path)[0]) == strip_timing(records)
    assert [r["round"] for r in records] == list(range(6))
    assert [r["last"] for r in records] == [False] * 5 + [True]
    sim = Simulation(cfg, tmp_path)
    seen: list[int] = []
    for r in records:
        assert len(set(r["new_ids"])) == len(r["new_ids"])
        assert not set(r["new_ids"]) & set(seen)  # labeled sets grow without duplicates
        assert set(r["new_ids"]) <= set(sim.pool_ids)
        seen += r["new_ids"]
        assert r["labeled_count"] == len(seen)
        assert r["labeled_fraction"] == pytest.approx(len(seen) / 40)
        assert r["pool_left"] == 20 - len(seen)
        assert 0.0 <= r["target_f1"] <= 1.0 and 0.0 <= r["source_f1"] <= 1.0
        assert set(r["target_per_label"]) <= {"LAW", "ORGANIZATION", "DATE", "PERSON", "GPE"}
        for key in TIMING_FIELDS:
            assert r[key] >= 0.0
    assert sorted(seen) == sim.pool_ids
    assert records[0]["query_size"] == 0 and records[0]["train_docs"] == 0
    assert [r["query_size"] for r in records[1:]] == [4] * 5
    if mode == "reset":
        assert [r["train_docs"] for r in records[1:]] == [4, 8, 12, 16, 20]
    else:  # new batch + half the earlier labels
        assert [r["train_docs"] for r in records[1:]] == [4, 6, 8, 10, 12]


def test_run_is_reproducible_and_seed_dependent(tiny, tmp_path):
    a = run_simulation(make_cfg(tiny), tmp_path / "a")
    b = run_simulation(make_cfg(tiny), tmp_path / "b")
    c = run_simulation(make_cfg(tiny, seed=4), tmp_path / "c")
    assert strip_timing(a) == strip_timing(b)
    assert [r["new_ids"] for r in a] != [r["new_ids"] for r in c]


@pytest.mark.parametrize("mode", ["reset", "warm"])
def test_resume_after_interruption(tiny, tmp_path, mode):
    cfg = make_cfg(tiny, mode=mode)
    full = run_simulation(cfg, tmp_path / "full")
    part = tmp_path / "part"
    part.mkdir()
    lines = (tmp_path / "full" / f"{cfg.run_id}.jsonl").read_text().splitlines(keepends=True)
    # killed during round 3's append: rounds 0-2 complete, a torn line after them
    (part / f"{cfg.run_id}.jsonl").write_text("".join(lines[:3]) + lines[3][:40])
    resumed = run_simulation(cfg, part)
    assert strip_timing(resumed) == strip_timing(full)
    assert strip_timing(read_records(part / f"{cfg.run_id}.jsonl")[0]) == strip_timing(full)
    # a finished run is not run again
    again = run_simulation(cfg, part)
    assert again == resumed


def test_resume_rejects_other_parameters(tiny, tmp_path):
    cfg = make_cfg(tiny)
    run_simulation(make_cfg(tiny, settings=SETTINGS.replace(epochs=1)), tmp_path)
    with pytest.raises(AdaptnerError, match=r"line 1: written with different parameters \(epochs"):
        run_simulation(cfg, tmp_path)


def without_budget(records):
    """Records as a run to any budget writes them: the budget, its hash and where it stopped
    dropped."""
    drop = {"params", "params_hash", "last"}
    return [{k: v for k, v in r.items() if k not in drop} for r in strip_timing(records)]


@pytest.mark.parametrize("mode", ["reset", "warm"])
def test_finished_run_grows_to_a_larger_budget(tiny, tmp_path, mode):
    """A run finished at 20 % goes on to 50 % from its last round, with exactly the rounds a
    run to 50 % makes; running it again at 20 % afterwards is refused."""
    small = make_cfg(tiny, mode=mode, settings=PAPER.replace(budget=0.2))
    large = make_cfg(tiny, mode=mode, settings=PAPER)
    first = run_simulation(small, tmp_path / "grow")
    # legal: 32 AL docs, 3 labels per round: 6 = 20 % after round 2, 16 = 50 % after round 5
    assert [r["labeled_count"] for r in first] == [0, 3, 6] and first[-1]["last"]
    grown = run_simulation(large, tmp_path / "grow")
    direct = run_simulation(large, tmp_path / "direct")
    assert [r["labeled_count"] for r in grown] == [0, 3, 6, 9, 12, 16]
    assert without_budget(grown) == without_budget(direct)
    assert grown[:3] == first  # the saved rounds are kept as they are
    assert run_simulation(large, tmp_path / "grow") == grown  # finished: not run again
    with pytest.raises(AdaptnerError, match=r"line 4 was run to a budget of 0.5, more than the "
                       r"0.2 asked for now. Pass --budget 0.5"):  # fmt: skip
        run_simulation(small, tmp_path / "grow")


def test_run_stopped_off_the_query_steps_does_not_grow(tiny, tmp_path):
    # budget 25 % of 40 docs = 10 labels, 4 per round: round 3 labeled 2, a larger budget's 4
    run_simulation(make_cfg(tiny, settings=SETTINGS.replace(budget=0.25)), tmp_path)
    with pytest.raises(AdaptnerError, match=r"10 labeled docs after round 3, where the larger "
                       r"budget's round 3 labels 12 .* Delete the file"):  # fmt: skip
        run_simulation(make_cfg(tiny, settings=SETTINGS.replace(budget=0.5)), tmp_path)


def test_resume_rejects_another_source_model(tiny, tmp_path):
    """A run file written from one source model is not continued from another (e.g. several
    --source-model given in another order on resume)."""
    cfg = make_cfg(tiny)
    run_simulation(cfg, tmp_path)
    other = make_cfg(tiny, source_model_label="training/other-source/model-best")
    with pytest.raises(AdaptnerError, match=r"line 1: adapted source model .* in the order"):
        run_simulation(other, tmp_path)


def test_damaged_file_is_reported(tiny, tmp_path):
    cfg = make_cfg(tiny)
    path = tmp_path / f"{cfg.run_id}.jsonl"
    path.write_text('{"round": 0}\nnot json\n{"round": 2}\n')
    with pytest.raises(AdaptnerError, match="line 2: not valid JSON"):
        run_simulation(cfg, tmp_path)


def test_budget_stops_early_and_vocab_gets_source_docs(tiny, tmp_path):
    cfg = make_cfg(tiny, strategy="vocab", settings=SETTINGS.replace(budget=0.25))
    records = run_simulation(cfg, tmp_path)
    assert records[-1]["labeled_count"] == 10 and records[-1]["last"]
    assert [r["query_size"] for r in records] == [0, 4, 4, 2]


def test_make_strategy_passes_what_the_factory_takes(tiny):
    calls = []

    def source_docs():
        calls.append(1)
        return [news_doc(spacy.blank("da").vocab, 0)]

    make_strategy("margin", {}, source_docs=source_docs, labeled_docs=[])
    assert calls == []  # margin needs no source docs: they are never read
    strategy = make_strategy("vocab", {}, source_docs=source_docs, labeled_docs=[])
    assert calls == [1] and strategy.name == "vocab"
    with pytest.raises(AdaptnerError, match="Unknown strategy 'nope'"):
        make_strategy("nope", {}, source_docs=source_docs, labeled_docs=[])


def test_missing_inputs_are_named(tiny, tmp_path):
    with pytest.raises(AdaptnerError, match="is not a spaCy pipeline directory"):
        run_simulation(make_cfg(tiny, source_model=tmp_path / "nothing"), tmp_path)
    with pytest.raises(AdaptnerError, match=r"No target train set .*web\.spacy"):
        run_simulation(make_cfg(tiny, target="web"), tmp_path)
    with pytest.raises(AdaptnerError, match="Unknown retraining mode 'cold'"):
        make_cfg(tiny, mode="cold")


def test_records_are_json_lines(tiny, tmp_path):
    cfg = make_cfg(tiny, settings=SETTINGS.replace(budget=0.1))
    run_simulation(cfg, tmp_path)
    for line in (tmp_path / f"{cfg.run_id}.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["params"] == json.loads(json.dumps(cfg.params()))
        assert rec["params_hash"] == cfg.params_hash()
        assert numpy.isfinite(rec["target_f1"])
