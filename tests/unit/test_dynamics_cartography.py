"""Unit tests for the ``cartography`` query strategy."""

import inspect
import json
from itertools import product
from pathlib import Path

import numpy
import pytest
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import fix_random_seed, load_config, load_model_from_config

from adaptner.dynamics.callback import DOCS_FILE, FORMAT_VERSION, MANIFEST
from adaptner.errors import AdaptnerError
from adaptner.strategies import get_strategy, strategies_registry, strategy_names
from adaptner.strategies.cartography import CartographyStrategy, gold_confidence, knn_hardness

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"

NAMES = ["Mette Frederiksen", "Lars", "Anna Hansen", "Peter"]
CITIES = ["København", "Aarhus", "Odense", "Aalborg", "Esbjerg"]


def make_doc(vocab, words, ents):
    spaces = [i + 1 < len(words) and words[i + 1] != "." for i in range(len(words))]
    doc = Doc(vocab, words=words, spaces=spaces)
    doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
    return doc


def person_city(vocab, name, city, swap=False):
    """'<name> bor i <city> .'; with ``swap`` the two labels are exchanged (a label error)."""
    n = name.split()
    p, g = ("GPE", "PERSON") if swap else ("PERSON", "GPE")
    return make_doc(
        vocab, [*n, "bor", "i", city, "."], [(0, len(n), p), (len(n) + 2, len(n) + 3, g)]
    )


def weather(vocab, city):
    return make_doc(
        vocab, ["Det", "regner", "i", city, "i", "dag", "."], [(3, 4, "GPE"), (4, 6, "DATE")]
    )


@pytest.fixture(scope="module")
def nlp():
    """The tiny config trained on clean toy docs until it tags them confidently."""
    fix_random_seed(0)
    nlp = load_model_from_config(load_config(TEST_CONFIG), auto_fill=True, validate=True)
    docs = [person_city(nlp.vocab, n, c) for n, c in product(NAMES, CITIES)]
    docs += [weather(nlp.vocab, c) for c in CITIES]
    examples = [Example(nlp.make_doc(d.text), d) for d in docs]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(40):
        nlp.update(examples, sgd=optimizer, drop=0.1)
    return nlp


class FixedHardness(CartographyStrategy):
    """Cartography with given hardness values (tests the score arithmetic)."""

    def __init__(self, hardness, **kw):
        super().__init__(get_strategy("margin"), **kw)
        self._h = numpy.asarray(hardness, dtype=float)

    def hardness(self, docs, nlp):
        return self._h


def test_registered_and_takes_labeled_docs():
    assert "cartography" in strategy_names()
    assert "labeled_docs" in inspect.signature(strategies_registry.get("cartography")).parameters
    s = get_strategy("cartography", aggregation="max", mode="downweight")
    assert s.reference == "labeled" and s.uncertainty.aggregation == "max"


def test_knn_hardness_by_hand():
    pool = numpy.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ref = numpy.array([[2.0, 0.1], [0.1, 3.0], [1.0, -0.1]])
    hard = numpy.array([True, False, True])
    numpy.testing.assert_allclose(knn_hardness(pool, ref, hard, 1, center=False), [1.0, 0.0, 1.0])
    numpy.testing.assert_allclose(knn_hardness(pool, ref, hard, 2, center=False), [1.0, 0.5, 0.5])
    numpy.testing.assert_allclose(knn_hardness(pool, ref, hard, 99), [2 / 3] * 3)
    assert knn_hardness(pool, ref[:0], hard[:0], 3).tolist() == [0.0, 0.0, 0.0]


def test_knn_hardness_centres_a_shared_direction():
    """With a large common offset every pool row is nearest to the same reference row unless
    the rows are centred first."""
    offset = numpy.array([0.0, 0.0, 10.0])
    pool = numpy.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) + offset
    ref = numpy.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 5.0]]) + offset
    hard = numpy.array([True, False, False])
    assert knn_hardness(pool, ref, hard, 1, center=False).tolist() == [0.0, 0.0]
    assert knn_hardness(pool, ref, hard, 1).tolist() == [1.0, 0.0]


def test_exclude_moves_hard_docs_last_keeping_their_order(nlp):
    pool = [weather(nlp.vocab, c) for c in CITIES] + [Doc(nlp.vocab, words=[])]
    base = get_strategy("margin").score(pool, nlp=nlp, rng=numpy.random.default_rng(0))
    h = [0.0, 0.9, 0.2, 0.6, 0.0, 0.0]
    s = FixedHardness(h).score(pool, nlp=nlp, rng=numpy.random.default_rng(0))
    hard, easy = [1, 3], [0, 2, 4]
    assert s[hard].max() < s[easy].min()
    numpy.testing.assert_allclose(s[easy], base[easy])
    assert numpy.argsort(s[hard]).tolist() == numpy.argsort(base[hard]).tolist()
    assert s[5] == -numpy.inf and numpy.isfinite(s[:5]).all()


def test_downweight(nlp):
    pool = [weather(nlp.vocab, c) for c in CITIES[:3]]
    base = get_strategy("margin").score(pool, nlp=nlp, rng=numpy.random.default_rng(0))
    s = FixedHardness([0.0, 0.5, 1.0], mode="downweight", weight=0.5).score(
        pool, nlp=nlp, rng=numpy.random.default_rng(0)
    )
    numpy.testing.assert_allclose(s, base * numpy.array([1.0, 0.75, 0.5]))


def test_labeled_reference_finds_the_label_error_and_its_neighbours(nlp):
    v = nlp.vocab
    labeled = [
        person_city(v, "Lars", "Aarhus"),
        person_city(v, "Peter", "Odense"),
        weather(v, "Aalborg"),
        person_city(v, "Anna Hansen", "Esbjerg", swap=True),
    ]
    conf = gold_confidence(labeled, nlp)
    assert conf[3] < 0.5 < conf[:3].min()
    strategy = get_strategy("cartography", labeled_docs=labeled, k=1)
    pool = [
        person_city(v, "Anna Hansen", "Esbjerg"),
        weather(v, "Aarhus"),
        person_city(v, "Lars", "Odense"),
    ]
    hardness = strategy.hardness(pool, nlp)
    assert hardness[0] == 1.0 and hardness[1] == 0.0
    scores = strategy.score(pool, nlp=nlp, rng=numpy.random.default_rng(0))
    assert scores[0] < scores[1:].min()
    assert all(d._.ner_probs is None for d in pool + labeled)


def test_no_labeled_docs_is_plain_uncertainty(nlp):
    pool = [weather(nlp.vocab, c) for c in CITIES]
    rng = numpy.random.default_rng(0)
    numpy.testing.assert_array_equal(
        get_strategy("cartography").score(pool, nlp=nlp, rng=rng),
        get_strategy("margin").score(pool, nlp=nlp, rng=rng),
    )


def write_dynamics(path: Path, docs, confidence, variability) -> Path:
    """A one-snapshot-per-epoch recording where doc i's entity tokens have the given stats."""
    path.mkdir(parents=True)
    tags = ["O", "B-DATE", "I-DATE", "B-GPE", "I-GPE", "B-PERSON", "I-PERSON"]
    gold = [[f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ != "O" else "O" for t in d] for d in docs]
    doc_idx = numpy.concatenate([[i] * len(d) for i, d in enumerate(docs)]).astype("int32")
    tok_idx = numpy.concatenate([numpy.arange(len(d)) for d in docs]).astype("int32")
    gold_idx = numpy.array([tags.index(t) for g in gold for t in g], dtype="int16")
    snaps = []
    for e, sign in enumerate([-1, 1]):
        p = numpy.array([confidence[i] + sign * variability[i] for i in doc_idx], dtype="float32")
        name = f"epoch_{e:03d}.npz"
        numpy.savez(
            path / name,
            doc=doc_idx,
            token=tok_idx,
            gold=gold_idx,
            gold_prob=p,
            margin=p,
            correct=p > 0.5,
            pred=gold_idx,
        )
        snaps.append({"file": name, "epoch": e, "step": e + 1, "final": False})
    (path / MANIFEST).write_text(
        json.dumps(
            {
                "format": FORMAT_VERSION,
                "component": "bio_ner",
                "tags": tags,
                "n_docs": len(docs),
                "n_tokens": len(gold_idx),
                "mode": "epochs",
                "every_n_steps": 0,
                "snapshots": snaps,
            }
        )
    )
    (path / DOCS_FILE).write_text(
        "".join(
            json.dumps(
                {
                    "doc": i,
                    "domain": "news",
                    "source": "toy",
                    "words": [t.text for t in d],
                    "spaces": [bool(t.whitespace_) for t in d],
                    "gold": gold[i],
                }
            )
            + "\n"
            for i, d in enumerate(docs)
        )
    )
    return path


def recorded_docs(vocab):
    """The docs of a toy dynamics recording: doc 1 is the one the tests make hard."""
    return [
        person_city(vocab, "Lars", "Aarhus"),
        weather(vocab, "Odense"),
        person_city(vocab, "Peter", "Esbjerg"),
    ]


def test_dynamics_reference(nlp, tmp_path):
    v = nlp.vocab
    recorded = recorded_docs(v)
    dyn = write_dynamics(tmp_path / "dyn", recorded, [0.9, 0.2, 0.3], [0.05, 0.05, 0.3])
    strategy = get_strategy("cartography", dynamics=str(dyn), k=1)
    assert strategy.reference == "dynamics"
    _, hard = strategy.reference_set(nlp)
    assert hard.tolist() == [False, True, False]  # doc 2 is ambiguous, not hard
    pool = [weather(v, "Odense"), person_city(v, "Lars", "Aarhus")]
    assert strategy.hardness(pool, nlp).tolist() == [1.0, 0.0]


def test_hard_quantile_marks_the_least_confident_recorded_docs(nlp, tmp_path):
    v = nlp.vocab
    recorded = recorded_docs(v)
    # no doc is in the hard-to-learn region (all confident), yet the quantile picks the lowest
    dyn = write_dynamics(tmp_path / "dyn", recorded, [0.9, 0.6, 0.8], [0.05, 0.05, 0.05])
    assert not get_strategy("cartography", dynamics=str(dyn), k=1).reference_set(nlp)[1].any()
    strategy = get_strategy("cartography", dynamics=str(dyn), k=1, hard_quantile=0.2)
    _, hard = strategy.reference_set(nlp)
    assert hard.tolist() == [False, True, False]
    pool = [weather(v, "Odense"), person_city(v, "Lars", "Aarhus")]
    assert strategy.hardness(pool, nlp).tolist() == [1.0, 0.0]


def test_bad_parameters():
    with pytest.raises(AdaptnerError, match="hard_quantile must be in"):
        get_strategy("cartography", hard_quantile=1.0)
    with pytest.raises(AdaptnerError, match="reference 'dynamics' needs dynamics="):
        get_strategy("cartography", reference="dynamics")
    with pytest.raises(AdaptnerError, match="unknown mode 'drop'"):
        get_strategy("cartography", mode="drop")
    with pytest.raises(AdaptnerError, match="ranks with an uncertainty strategy, not 'random'"):
        get_strategy("cartography", uncertainty="random")
    with pytest.raises(AdaptnerError, match="weight and max_hardness must be in"):
        get_strategy("cartography", weight=2.0)
    with pytest.raises(AdaptnerError, match="is not a dynamics directory"):
        get_strategy("cartography", dynamics="/nonexistent").reference_set(None)
