"""The AL protocols on the tiny corpus: fresh candidate pools (paper) vs the fixed pool, the
first batch, the held-out evaluation set, pluggable round trainers, resume."""

import json

import numpy
import pytest
import spacy
from spacy.util import fix_random_seed

from adaptner.errors import AdaptnerError
from adaptner.readers import read_docbin
from adaptner.scoring import predict
from adaptner.simulation import ALSettings, plan_sizes, read_records, run_simulation
from adaptner.simulation.baselines import BaselineConfig, run_baseline
from adaptner.simulation.engine import Simulation, split_heldout
from adaptner.strategies import get_strategy
from adaptner.update.trainers import (
    get_round_trainer,
    make_fine_tune,
    trainers_registry,
)
from tests.unit.test_simulation_engine import (
    PAPER,
    SETTINGS,
    make_cfg,
    make_source_pipeline,
    strip_timing,
    write_tiny_corpus,
)

# new_ids and dev F1 per round of the fixed-pool runs below, written by the engine before the
# paper protocol existed (commit 4b2f4fc, same corpus, source pipeline built after
# fix_random_seed(0)): the fixed_pool option must reproduce them.
OLD_RUNS = {
    ("random", "reset"): (
        [[], [29, 2, 5, 16], [19, 27, 12, 30], [26, 15]],
        [0.0, 0.0, 0.0, 0.0],
    ),
    ("margin", "reset"): (
        [[], [29, 2, 5, 16], [9, 36, 27, 12], [30, 3]],
        [0.0, 0.0, 0.0, 0.0],
    ),
    ("margin", "warm"): (
        [[], [29, 2, 5, 16], [9, 36, 27, 12], [30, 6]],
        [0.0, 0.0, 0.0, 0.20408163265306126],
    ),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(corpus dir, source pipeline dir), as in test_simulation_engine."""
    root = tmp_path_factory.mktemp("protocol")
    corpus = write_tiny_corpus(root / "corpus")
    fix_random_seed(0)  # the initial weights: the same pipeline whatever ran before
    return corpus, make_source_pipeline(root / "source", corpus)


# --- sizes and settings ---------------------------------------------------------------------


def test_plan_sizes_per_protocol():
    paper = plan_sizes(32, PAPER)
    assert (paper.pool_size, paper.query_size, paper.budget, paper.rounds) == (8, 3, 16, 6)
    fixed = plan_sizes(32, PAPER.replace(protocol="fixed_pool"))
    assert (fixed.pool_size, fixed.budget, fixed.rounds) == (8, 8, 4)  # the pool caps it
    assert [paper.labeled_after(k) for k in range(6)] == [0, 3, 6, 9, 12, 16]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"protocol": "nope"}, "Unknown AL protocol 'nope'; choose from paper, fixed_pool"),
        ({"eval_holdout": 1.0}, r"eval_holdout must be in \[0, 1\), got 1.0"),
        ({"eval_holdout": -0.1}, r"eval_holdout must be in \[0, 1\)"),
    ],
)
def test_protocol_settings_validation(changes, message):
    with pytest.raises(AdaptnerError, match=message):
        ALSettings(**changes)


def test_unknown_trainer_is_named(tiny, tmp_path):
    with pytest.raises(AdaptnerError, match="Unknown AL trainer 'nope'. Known: .*fine_tune"):
        get_round_trainer("nope")
    with pytest.raises(AdaptnerError, match="Unknown AL trainer 'nope'"):
        run_simulation(make_cfg(tiny, settings=PAPER.replace(trainer="nope")), tmp_path)


# --- the held-out evaluation set ---------------------------------------------------------------


def test_split_heldout_depends_on_texts_only(tiny):
    corpus, _ = tiny
    docs = read_docbin(corpus / "train" / "legal.spacy", spacy.blank("da").vocab)
    al, held = split_heldout(docs, 0.2, 0)
    assert len(held) == 8 and len(al) == 32 and not set(al) & set(held)
    assert sorted(al + held) == list(range(40))
    shuffled = list(reversed(docs))
    _, held_rev = split_heldout(shuffled, 0.2, 0)
    assert {shuffled[i].text for i in held_rev} == {docs[i].text for i in held}
    assert split_heldout(docs, 0.2, 1)[1] != held  # the salt matters
    assert split_heldout(docs, 0.0, 0) == (list(range(40)), [])


def test_heldout_set_is_never_queried_nor_trained_and_the_same_everywhere(tiny, tmp_path):
    trained: list[str] = []

    @trainers_registry.register("spy_fine_tune_h12")
    def make_spy():
        inner = make_fine_tune()

        def spy(nlp, train_docs, dev_docs, *, settings, seed):
            trained.extend(d.text for d in train_docs)
            return inner(nlp, train_docs, dev_docs, settings=settings, seed=seed)

        return spy

    settings = PAPER.replace(trainer="spy_fine_tune_h12")
    runs = {
        (strategy, mode, seed): make_cfg(tiny, strategy=strategy, mode=mode, seed=seed,
                                         settings=settings)
        for strategy in ("random", "margin") for mode in ("reset", "warm") for seed in (3, 4)
    }  # fmt: skip
    held_texts = None
    digests = set()
    for cfg in runs.values():
        records = run_simulation(cfg, tmp_path)
        sim = Simulation(cfg, tmp_path / "unused")
        texts = {sim.data.target_train[i].text for i in sim.data.heldout_ids}
        held_texts = texts if held_texts is None else held_texts
        assert texts == held_texts and len(texts) == 8
        assert [d.text for d in sim.data.evals["heldout"]] == [
            sim.data.target_train[i].text for i in sim.data.heldout_ids
        ]
        for r in records:
            assert not set(r["new_ids"]) & set(sim.data.heldout_ids)
            assert not set(r["pool_ids"]) & set(sim.data.heldout_ids)
            assert r["eval_set"] == "merged" and list(r["evals"]) == ["merged", "heldout", "dev"]
            assert r["target_f1"] == r["evals"]["merged"]["ents_f"]
            assert r["evals"]["heldout"]["n_docs"] == 8 and r["evals"]["dev"]["n_docs"] == 12
            assert r["evals"]["merged"]["n_docs"] == 20
            assert r["heldout_size"] == 8 and r["target_size"] == 32
            digests.add(r["heldout_digest"])
    assert len(digests) == 1
    assert trained and not set(trained) & held_texts  # trained on, but never on held-out docs
    # the full-data reference trains on the 32 AL docs only, and is scored on both sets
    trained.clear()
    corpus, source = tiny
    base = run_baseline(
        BaselineConfig(source="news", target="legal", kind="target_full", seed=0,
                       settings=settings, source_model=source, train_config=source,
                       corpus_dir=corpus),
        tmp_path,
    )  # fmt: skip
    assert base["train_docs"] == 32 and len(trained) == 32
    assert not set(trained) & held_texts
    assert set(base["evals"]) == {"merged", "heldout", "dev"} and base["eval_set"] == "merged"


def test_nothing_selects_on_dev_while_dev_is_evaluated(tiny, tmp_path):
    calls: list[tuple[list[str], list[str] | None]] = []

    @trainers_registry.register("spy_stopping_h12")
    def make_spy():
        inner = make_fine_tune()

        def spy(nlp, train_docs, dev_docs, *, settings, seed):
            calls.append(
                (
                    [d.text for d in train_docs],
                    None if dev_docs is None else [d.text for d in dev_docs],
                )
            )
            return inner(nlp, train_docs, dev_docs, settings=settings, seed=seed)

        return spy

    # early stopping on dev is refused while dev (or merged) is an evaluation set
    for sets in (("heldout", "dev", "merged"), ("merged",), ("dev",)):
        with pytest.raises(AdaptnerError, match='with stop_on = "dev" would pick epochs on the'):
            ALSettings(patience=2, stop_on="dev", eval_sets=sets)
    # fixed epochs: the trainer gets no stopping docs at all (and only the round's labels:
    # source replay off; tests/integration/test_source_replay.py covers it with stopping)
    settings = PAPER.replace(trainer="spy_stopping_h12", source_replay=0.0)
    records = run_simulation(make_cfg(tiny, settings=settings), tmp_path / "fixed")
    assert calls and all(stop is None for _, stop in calls)
    assert all(r["stop_docs"] == 0 for r in records)
    # patience: the stopping docs are a slice of the round's own labels, never trained on
    calls.clear()
    cfg = make_cfg(tiny, settings=settings.replace(patience=2, epochs=4))
    records = run_simulation(cfg, tmp_path / "labelled")
    sim = Simulation(cfg, tmp_path / "unused")
    dev_texts = {d.text for d in sim.data.dev}
    held_texts = {d.text for d in sim.data.evals["heldout"]}
    assert [d.text for d in sim.data.evals["merged"]] == [
        *(d.text for d in sim.data.evals["heldout"]),
        *(d.text for d in sim.data.dev),
    ]
    labeled: list[str] = []
    for r, (train, stop) in zip(records[1:], calls, strict=True):
        labeled += [sim.data.target_train[i].text for i in r["new_ids"]]
        # 3, 6, 9 ... labels: floor(20 %) = 0, 1, 1, ... docs kept back for stopping
        n_stop = int(0.2 * len(labeled) + 1e-9)
        assert r["stop_docs"] == n_stop and r["train_docs"] == len(labeled)
        if n_stop == 0:
            assert stop is None and sorted(train) == sorted(labeled)
            continue
        assert len(stop) == n_stop and len(train) == len(labeled) - n_stop
        assert sorted(train + stop) == sorted(labeled)  # from the labels, split
        assert not set(stop) & (dev_texts | held_texts)
    assert any(r["stop_docs"] for r in records)
    # the references split their docs the same way
    calls.clear()
    corpus, source = tiny
    base = run_baseline(
        BaselineConfig(source="news", target="legal", kind="target_full", seed=0,
                       settings=cfg.settings, source_model=source, train_config=source,
                       corpus_dir=corpus),
        tmp_path / "labelled",
    )  # fmt: skip
    ((train, stop),) = calls
    assert base["stop_docs"] == len(stop) == 6 and len(train) == 26  # 20 % of 32
    assert not set(stop) & (dev_texts | held_texts)
    # with dev out of the evaluation sets, stop_on = "dev" gives the trainer the dev docs
    calls.clear()
    on_dev = settings.replace(patience=2, stop_on="dev", eval_sets=("heldout",))
    records = run_simulation(make_cfg(tiny, settings=on_dev), tmp_path / "dev")
    assert list(records[0]["evals"]) == ["heldout"]
    assert all(stop == [d.text for d in sim.data.dev] for _, stop in calls)


def test_no_holdout_scores_the_split_only(tiny, tmp_path):
    records = run_simulation(
        make_cfg(tiny, settings=PAPER.replace(eval_holdout=0.0, eval_sets=("dev",))), tmp_path
    )
    assert all(r["eval_set"] == "dev" and list(r["evals"]) == ["dev"] for r in records)
    assert records[-1]["target_size"] == 40 and records[-1]["labeled_count"] == 20


# --- the paper's protocol -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reset", "warm"])
def test_fresh_pool_each_round_from_unlabelled_docs(tiny, tmp_path, mode):
    cfg = make_cfg(tiny, mode=mode, settings=PAPER)
    records = run_simulation(cfg, tmp_path)
    sim = Simulation(cfg, tmp_path / "unused")
    assert sim.pool_ids is None
    al = set(sim.data.al_ids)
    assert [r["labeled_count"] for r in records] == [0, 3, 6, 9, 12, 16]
    assert records[-1]["last"] and records[-1]["labeled_fraction"] == 0.5
    labeled: list[int] = []
    pools = []
    for r in records[1:]:
        pool = r["pool_ids"]
        assert pool == sorted(pool) and len(pool) == len(set(pool)) == 8
        assert set(pool) <= al and not set(pool) & set(labeled)  # only unlabelled AL docs
        assert set(r["new_ids"]) <= set(pool)
        assert pool == sim.candidates(r["round"], labeled)  # reproducible from the seed
        pools.append(set(pool))
        labeled += r["new_ids"]
        assert r["pool_left"] == 32 - len(labeled)
    assert len(set(map(frozenset, pools))) == len(pools)  # a new draw every round
    # more docs were candidates than one pool holds, and more labelled than one pool
    assert len(set().union(*pools)) > 8 and len(labeled) == 16 > 8
    if mode == "reset":
        assert [r["train_docs"] for r in records[1:]] == [3, 6, 9, 12, 16]
    else:
        # new batch + round(half the earlier labels); Python rounds 4.5 to 4
        assert [r["train_docs"] for r in records[1:]] == [3, 5, 6, 7, 10]


def test_pool_draws_do_not_depend_on_the_strategy(tiny, tmp_path):
    a = run_simulation(make_cfg(tiny, strategy="random", settings=PAPER), tmp_path)
    b = run_simulation(make_cfg(tiny, strategy="margin", settings=PAPER), tmp_path)
    assert a[1]["pool_ids"] == b[1]["pool_ids"]  # same seed, round 1: same candidates
    c = run_simulation(make_cfg(tiny, strategy="margin", seed=4, settings=PAPER), tmp_path)
    assert c[1]["pool_ids"] != b[1]["pool_ids"]


@pytest.mark.parametrize("strategy", ["margin", "least_confidence"])
def test_first_batch_is_chosen_by_the_strategy_with_the_source_model(tiny, tmp_path, strategy):
    cfg = make_cfg(tiny, strategy=strategy, settings=PAPER)
    first = run_simulation(cfg, tmp_path)[1]
    sim = Simulation(cfg, tmp_path / "unused")  # the source pipeline, untouched
    pool = first["pool_ids"]
    docs = predict(sim.nlp, sim.docs(pool))
    scores = get_strategy(strategy).score(docs, nlp=sim.nlp, rng=numpy.random.default_rng(0))
    chosen = [pool.index(i) for i in first["new_ids"]]
    others = [j for j in range(len(pool)) if j not in chosen]
    # the batch holds the highest-scoring candidates (ties may go either way)
    assert min(scores[chosen]) >= max(scores[others])
    assert len(set(numpy.round(scores, 12))) > 1  # the scores do tell the candidates apart


def test_fixed_pool_first_batch_is_random(tiny, tmp_path):
    fixed = SETTINGS.replace(budget=0.25)
    a = run_simulation(make_cfg(tiny, strategy="random", settings=fixed), tmp_path)
    b = run_simulation(make_cfg(tiny, strategy="margin", settings=fixed), tmp_path)
    assert a[1]["new_ids"] == b[1]["new_ids"] and a[2]["new_ids"] != b[2]["new_ids"]


@pytest.mark.parametrize("strategy, mode", sorted(OLD_RUNS))
def test_fixed_pool_reproduces_the_earlier_engine(tiny, tmp_path, strategy, mode):
    # the earlier engine replayed no source docs
    settings = SETTINGS.replace(budget=0.25, source_replay=0.0)
    cfg = make_cfg(tiny, strategy=strategy, mode=mode, settings=settings)
    records = run_simulation(cfg, tmp_path)
    new_ids, f1 = OLD_RUNS[(strategy, mode)]
    assert [r["new_ids"] for r in records] == new_ids
    assert [r["target_f1"] for r in records] == pytest.approx(f1, abs=1e-9)
    sim = Simulation(cfg, tmp_path / "unused")
    assert sim.pool_ids is not None and len(sim.pool_ids) == 20
    for r in records[1:]:
        assert set(r["pool_ids"]) <= set(sim.pool_ids)  # always the same pool


@pytest.mark.parametrize("mode", ["reset", "warm"])
def test_paper_protocol_resumes(tiny, tmp_path, mode):
    cfg = make_cfg(tiny, mode=mode, settings=PAPER)
    full = run_simulation(cfg, tmp_path / "full")
    part = tmp_path / "part"
    part.mkdir()
    lines = (tmp_path / "full" / f"{cfg.run_id}.jsonl").read_text().splitlines(keepends=True)
    (part / f"{cfg.run_id}.jsonl").write_text("".join(lines[:3]) + lines[3][:60])
    resumed = run_simulation(cfg, part)
    assert strip_timing(resumed) == strip_timing(full)
    assert strip_timing(read_records(part / f"{cfg.run_id}.jsonl")[0]) == strip_timing(full)
    json.loads(lines[-1])  # the full run's last line is complete
