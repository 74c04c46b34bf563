"""Unit tests for the training-dynamics callback: shapes, determinism, no effect on training."""

import json
import random
from importlib.metadata import entry_points
from itertools import product
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span
from spacy.util import load_config, registry

from adaptner.components.bio_ner import softmax, spans_to_bio
from adaptner.dynamics.callback import (
    DOCS_FILE,
    MANIFEST,
    DynamicsRecorder,
    RandomState,
    dynamics_overrides,
    find_bio_ner,
    make_record_dynamics,
    make_record_dynamics_end,
    margins,
)
from adaptner.errors import AdaptnerError
from adaptner.training import train_pipeline

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"

NAMES = ["Mette Frederiksen", "Lars", "Anna Hansen"]
CITIES = ["København", "Aarhus", "Odense", "Aalborg", "Esbjerg"]


def toy_docs(vocab) -> list[Doc]:
    """30 short Danish sentences (PERSON, GPE), 20 in news and 10 in legal."""
    docs = []
    for i, (name, city) in enumerate(product(NAMES, CITIES)):
        for variant in range(2):
            n = name.split()
            if variant == 0:
                words = [*n, "bor", "i", city, "."]
                ents = [(0, len(n), "PERSON"), (len(n) + 2, len(n) + 3, "GPE")]
            else:
                words = ["I", city, "møder", *n, "pressen", "."]
                ents = [(1, 2, "GPE"), (3, 3 + len(n), "PERSON")]
            spaces = [j + 1 < len(words) and words[j + 1] != "." for j in range(len(words))]
            doc = Doc(vocab, words=words, spaces=spaces)
            doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
            doc._.domain = "news" if (2 * i + variant) % 3 else "legal"
            doc._.source = "toy"
            docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def toy_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "train.spacy"
    db = DocBin(store_user_data=True)
    for doc in toy_docs(spacy.blank("da").vocab):
        db.add(doc)
    db.to_disk(path)
    return path


def train(
    corpus: Path,
    out: Path,
    *,
    seed: int = 0,
    record: bool = True,
    eval_frequency: int = 4,
    every_n_steps: int = 0,
) -> Path:
    """Train the tiny config for 3 epochs on the toy corpus; returns model-last."""
    overrides = {
        "training.max_epochs": 3,
        "training.max_steps": 0,
        "training.eval_frequency": eval_frequency,
    }
    if record:
        overrides.update(dynamics_overrides(out / "dyn", every_n_steps=every_n_steps))
    train_pipeline(
        TEST_CONFIG,
        out / "model",
        train_path=corpus,
        dev_path=corpus,
        seed=seed,
        overrides=overrides,
        verbose=False,
    )
    return out / "model" / "model-last"


def load_snapshots(dyn: Path) -> tuple[dict, list[dict]]:
    manifest = json.loads((dyn / MANIFEST).read_text())
    snaps = []
    for s in manifest["snapshots"]:
        with numpy.load(dyn / s["file"]) as z:
            snaps.append({k: z[k] for k in z.files})
    return manifest, snaps


@pytest.fixture(scope="module")
def recorded(toy_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(toy_corpus, out)
    return out


def test_snapshots_have_the_right_shapes(recorded, toy_corpus):
    manifest, snaps = load_snapshots(recorded / "dyn")
    docs = toy_docs(spacy.blank("da").vocab)
    n_tokens = sum(len(d) for d in docs)
    assert [s["file"] for s in manifest["snapshots"]] == [
        "epoch_000.npz",
        "epoch_001.npz",
        "final.npz",
    ]
    assert [s["epoch"] for s in manifest["snapshots"]] == [0, 1, 2]
    steps = [s["step"] for s in manifest["snapshots"]]
    assert steps == sorted(steps) and len(set(steps)) == 3
    assert manifest["n_docs"] == len(docs) and manifest["n_tokens"] == n_tokens
    tags = manifest["tags"]
    assert tags[0] == "O" and len(tags) == 37  # 18 OntoNotes labels
    expected_gold = numpy.concatenate(
        [
            [
                tags.index(t)
                for t in spans_to_bio(len(d), [(e.start, e.end, e.label_) for e in d.ents])
            ]
            for d in docs
        ]
    )
    for snap in snaps:
        assert {k: v.shape for k, v in snap.items()} == {k: (n_tokens,) for k in snap}
        numpy.testing.assert_array_equal(snap["gold"], expected_gold)
        numpy.testing.assert_array_equal(
            snap["doc"], numpy.repeat(numpy.arange(len(docs)), [len(d) for d in docs])
        )
        numpy.testing.assert_array_equal(
            snap["token"], numpy.concatenate([numpy.arange(len(d)) for d in docs])
        )
        assert ((snap["gold_prob"] >= 0) & (snap["gold_prob"] <= 1)).all()
        numpy.testing.assert_array_equal(snap["correct"], snap["pred"] == snap["gold"])
        # the gold tag is the argmax exactly when its margin is positive
        numpy.testing.assert_array_equal(snap["margin"] > 0, snap["correct"])
    records = [json.loads(line) for line in (recorded / "dyn" / DOCS_FILE).read_text().splitlines()]
    assert [r["words"] for r in records] == [[t.text for t in d] for d in docs]
    assert [r["domain"] for r in records] == [d._.domain for d in docs]


def test_final_snapshot_is_the_final_model(recorded):
    """final.npz holds exactly what the saved model-last predicts for the training docs."""
    nlp = spacy.load(recorded / "model" / "model-last")
    _, bio = find_bio_ner(nlp)
    _, snaps = load_snapshots(recorded / "dyn")
    docs = toy_docs(nlp.vocab)
    fresh = [
        Doc(nlp.vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d])
        for d in docs
    ]
    probs = numpy.concatenate([d._.ner_probs for d in nlp.pipe(fresh)])
    final = snaps[-1]
    gold_prob = probs[numpy.arange(len(probs)), final["gold"]]
    numpy.testing.assert_allclose(final["gold_prob"], gold_prob, atol=1e-5)
    numpy.testing.assert_array_equal(final["pred"], probs.argmax(axis=1))
    # and the earlier epochs are different models
    assert not numpy.allclose(snaps[0]["gold_prob"], final["gold_prob"])


def test_recording_is_deterministic_for_a_seed(recorded, toy_corpus, tmp_path):
    train(toy_corpus, tmp_path)
    _, first = load_snapshots(recorded / "dyn")
    _, second = load_snapshots(tmp_path / "dyn")
    for a, b in zip(first, second, strict=True):
        for key in a:
            numpy.testing.assert_array_equal(a[key], b[key])


def test_recording_does_not_change_training(recorded, toy_corpus, tmp_path):
    plain = train(toy_corpus, tmp_path, record=False)
    with_cb = recorded / "model" / "model-last"
    for name in ("tok2vec", "bio_ner"):
        assert (plain / name / "model").read_bytes() == (with_cb / name / "model").read_bytes()


@pytest.mark.parametrize("eval_frequency", [1, 3])
def test_final_epoch_recorded_once_in_real_training(toy_corpus, tmp_path, eval_frequency):
    """Evaluation checkpoints are not mistaken for the end of training."""
    train(toy_corpus, tmp_path, eval_frequency=eval_frequency)
    manifest, _ = load_snapshots(tmp_path / "dyn")
    files = [s["file"] for s in manifest["snapshots"]]
    assert files == ["epoch_000.npz", "epoch_001.npz", "final.npz"]
    assert [s["final"] for s in manifest["snapshots"]] == [False, False, True]


class StubRecorder(DynamicsRecorder):
    """Records snapshot entries only (no model), to test when the hooks record."""

    def record(self, nlp, *, epoch, step, final=False):
        name = "final.npz" if final else f"epoch_{epoch:03d}.npz"
        self.snapshots.append({"file": name, "epoch": epoch, "step": step, "final": final})


class StubNLP:
    def __init__(self, eval_frequency):
        training = {} if eval_frequency is None else {"eval_frequency": eval_frequency}
        self.config = {"training": training}


def simulate_spacy_loop(recorder, nlp, steps_per_epoch, eval_frequency):
    """spaCy's order: before_update per step; a save after evaluation steps; a final save."""
    end = make_record_dynamics_end()
    step = 0
    for epoch, n in enumerate(steps_per_epoch):
        for _ in range(n):
            recorder(nlp, {"step": step, "epoch": epoch})
            if step % eval_frequency == 0:
                assert end(nlp) is nlp
            step += 1
    end(nlp)


@pytest.mark.parametrize("steps_per_epoch", [[3, 3, 3], [2, 5, 1], [4]])
@pytest.mark.parametrize("eval_frequency", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("config_has_it", [True, False])
def test_hook_sequence(steps_per_epoch, eval_frequency, config_has_it):
    recorder = StubRecorder("unused")
    nlp = StubNLP(eval_frequency if config_has_it else None)
    simulate_spacy_loop(recorder, nlp, steps_per_epoch, eval_frequency)
    ends = numpy.cumsum(steps_per_epoch).tolist()
    assert [s["step"] for s in recorder.snapshots] == ends
    assert [s["final"] for s in recorder.snapshots] == [False] * (len(ends) - 1) + [True]
    assert [s["epoch"] for s in recorder.snapshots] == list(range(len(ends)))


def test_every_n_steps(toy_corpus, tmp_path):
    train(toy_corpus, tmp_path, every_n_steps=2)
    manifest, _ = load_snapshots(tmp_path / "dyn")
    assert manifest["mode"] == "steps"
    snaps = manifest["snapshots"]
    assert [s["step"] for s in snaps[:-1]] == list(range(2, 2 * len(snaps) - 1, 2))
    assert [s["file"] for s in snaps[:-1]] == [f"step_{s['step']:06d}.npz" for s in snaps[:-1]]
    assert snaps[-1]["final"] and snaps[-1]["step"] > snaps[-2]["step"]


def test_margins_by_hand():
    logits = numpy.array([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
    gold = numpy.array([0, 2, -1])
    out = margins(logits, gold)
    numpy.testing.assert_allclose(out[:2], [1.0, -2.0])
    assert numpy.isnan(out[2])
    # margins live on logits; probabilities keep the order
    assert (softmax(logits)[0].argmax(), softmax(logits)[1].argmax()) == (0, 1)


def test_random_state_is_restored():
    random.seed(1)
    numpy.random.seed(1)
    expected = (random.random(), numpy.random.random())
    random.seed(1)
    numpy.random.seed(1)
    with RandomState():
        random.random()
        numpy.random.random(10)
    assert (random.random(), numpy.random.random()) == expected


def test_pipeline_without_bio_ner_is_a_clear_error():
    with pytest.raises(AdaptnerError, match="no bio_ner .*Recording training dynamics needs"):
        find_bio_ner(spacy.blank("da"))


def test_registered_callbacks_resolve_from_config_overrides(tmp_path):
    config = load_config(
        TEST_CONFIG, overrides=dynamics_overrides(tmp_path, every_n_steps=3), interpolate=True
    )
    resolved = registry.resolve(
        {"a": config["training"]["before_update"], "b": config["training"]["before_to_disk"]}
    )
    assert isinstance(resolved["a"], DynamicsRecorder)
    assert resolved["a"].output_dir == tmp_path and resolved["a"].every_n_steps == 3
    assert callable(resolved["b"])


def test_entry_points_point_at_the_callbacks():
    group = {ep.name: ep for ep in entry_points(group="spacy_callbacks")}
    assert group["adaptner.record_dynamics.v1"].load() is make_record_dynamics, (
        "reinstall the package: pip install -e ."
    )
    assert group["adaptner.record_dynamics_end.v1"].load() is make_record_dynamics_end
