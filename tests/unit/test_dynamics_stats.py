"""Unit tests for data-map statistics and outputs, on hand-made sequences of epochs."""

import json
from pathlib import Path

import numpy
import pyarrow.csv
import pyarrow.parquet
import pytest

from adaptner.dynamics.callback import DOCS_FILE, FORMAT_VERSION, MANIFEST
from adaptner.dynamics.datamap import (
    entities_text,
    hardest_markdown,
    plot_datamap,
    write_datamap,
)
from adaptner.dynamics.stats import (
    RunningStats,
    compute_datamap,
    load_dynamics,
    regions,
    sentence_statistics,
    token_statistics,
)
from adaptner.errors import AdaptnerError

NAN = numpy.nan
TAGS = ["O", "B-GPE", "I-GPE", "B-PERSON", "I-PERSON"]

# Three docs; gold tags per token.
DOCS = [
    {"words": ["Lars", "bor", "i", "Aarhus", "."], "gold": ["B-PERSON", "O", "O", "B-GPE", "O"]},
    {"words": ["Det", "regner", "."], "gold": ["O", "O", "O"]},
    {"words": ["Anna", "Hansen", "kom", "."], "gold": ["B-PERSON", "I-PERSON", "O", "O"]},
]
# Gold-tag probability per token (12 tokens) for three epochs.
EPOCH_PROBS = [
    [0.2, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.5, 0.3, 0.9, 0.9],
    [0.4, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.7, 0.6, 0.9, 0.9],
    [0.6, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
]


def write_recording(path: Path, probs=EPOCH_PROBS, docs=DOCS) -> Path:
    """A dynamics directory as the callback writes it, with chosen probabilities."""
    path.mkdir(parents=True, exist_ok=True)
    doc = numpy.concatenate([[i] * len(d["words"]) for i, d in enumerate(docs)]).astype("int32")
    token = numpy.concatenate([range(len(d["words"])) for d in docs]).astype("int32")
    gold = numpy.array([TAGS.index(t) for d in docs for t in d["gold"]], dtype="int16")
    snapshots = []
    for e, p in enumerate(probs):
        p = numpy.asarray(p, dtype="float32")
        correct = p > 0.5
        pred = numpy.where(correct, gold, numpy.where(gold == 0, 1, 0)).astype("int16")
        name = f"epoch_{e:03d}.npz"
        numpy.savez(
            path / name,
            doc=doc,
            token=token,
            gold=gold,
            gold_prob=p,
            margin=numpy.log(p) - numpy.log(1 - p),
            correct=correct,
            pred=pred,
        )
        snapshots.append({"file": name, "epoch": e, "step": 10 * (e + 1), "final": False})
    (path / MANIFEST).write_text(
        json.dumps(
            {
                "format": FORMAT_VERSION,
                "component": "bio_ner",
                "tags": TAGS,
                "n_docs": len(docs),
                "n_tokens": len(gold),
                "mode": "epochs",
                "every_n_steps": 0,
                "snapshots": snapshots,
            }
        )
    )
    with (path / DOCS_FILE).open("w") as f:
        for i, d in enumerate(docs):
            rec = {
                "doc": i,
                "domain": "news" if i < 2 else "legal",
                "source": "toy",
                "words": d["words"],
                "spaces": [True] * (len(d["words"]) - 1) + [False],
                "gold": d["gold"],
            }
            f.write(json.dumps(rec) + "\n")
    return path


# --- statistics on a hand-made sequence of epochs ---------------------------------------------


def test_token_statistics_known_values():
    probs = [
        numpy.array([0.2, 0.9, NAN]),
        numpy.array([0.4, 0.9, NAN]),
        numpy.array([0.6, 0.9, NAN]),
    ]
    correct = [
        numpy.array([False, True, False]),
        numpy.array([False, True, False]),
        numpy.array([True, True, False]),
    ]
    margin = [
        numpy.array([-1.0, 2.0, NAN]),
        numpy.array([-0.5, 2.0, NAN]),
        numpy.array([0.5, 4.0, NAN]),
    ]
    s = token_statistics(probs, correct, margin)
    numpy.testing.assert_allclose(s.confidence[:2], [0.4, 0.9])
    numpy.testing.assert_allclose(s.variability[:2], [numpy.sqrt(0.08 / 3), 0.0], atol=1e-12)
    numpy.testing.assert_allclose(s.correctness[:2], [1 / 3, 1.0])
    numpy.testing.assert_allclose(s.aum[:2], [-1 / 3, 8 / 3])
    assert numpy.isnan(s.confidence[2]) and numpy.isnan(s.correctness[2])
    assert s.n_epochs.tolist() == [3, 3, 0]


def test_running_stats_match_numpy_with_gaps():
    rng = numpy.random.default_rng(0)
    data = rng.random((7, 50))
    data[rng.random((7, 50)) < 0.2] = NAN
    rs = RunningStats(50)
    for row in data:
        rs.update(row)
    numpy.testing.assert_allclose(rs.mean, numpy.nanmean(data, axis=0))
    numpy.testing.assert_allclose(rs.std, numpy.nanstd(data, axis=0), atol=1e-12)
    numpy.testing.assert_array_equal(rs.count, (~numpy.isnan(data)).sum(axis=0))


def test_sentence_statistics_mean_over_tokens_then_epochs():
    # two sentences: tokens 0-1 and 2; epochs 1 and 2
    probs = [numpy.array([0.2, 0.6, 0.9]), numpy.array([0.6, 1.0, 0.9])]
    correct = [numpy.array([False, True, True]), numpy.array([True, True, True])]
    s = sentence_statistics(probs, correct, numpy.array([0, 0, 1]), 2)
    numpy.testing.assert_allclose(s.confidence, [0.6, 0.9])  # (0.4 + 0.8) / 2
    numpy.testing.assert_allclose(s.variability, [0.2, 0.0])
    numpy.testing.assert_allclose(s.correctness, [0.5, 1.0])  # all tokens right in epoch 2


def test_sentence_statistics_mask_drops_sentences():
    probs = [numpy.array([0.2, 0.6, 0.9])]
    s = sentence_statistics(
        probs, [numpy.ones(3, bool)], numpy.array([0, 0, 1]), 2, mask=numpy.array([1, 0, 0], bool)
    )
    numpy.testing.assert_allclose(s.confidence[0], 0.2)
    assert numpy.isnan(s.confidence[1]) and s.n_epochs.tolist() == [1, 0]


def test_token_statistics_needs_epochs():
    with pytest.raises(AdaptnerError, match="No epochs"):
        token_statistics([], [])


def test_regions():
    out = regions([0.9, 0.2, 0.5, 0.5, NAN], [0.05, 0.05, 0.3, 0.19, 0.1])
    assert out.tolist() == ["easy-to-learn", "hard-to-learn", "ambiguous", "easy-to-learn", ""]
    assert regions([0.6], [0.1], conf_threshold=0.7).tolist() == ["hard-to-learn"]


# --- a recorded directory --------------------------------------------------------------------


def test_compute_datamap_matches_hand_values(tmp_path):
    dm = compute_datamap(load_dynamics(write_recording(tmp_path / "dyn")), exclude_o=True)
    # entity tokens: 0 (Lars), 3 (Aarhus), 8, 9 (Anna Hansen)
    assert numpy.flatnonzero(dm.token_mask).tolist() == [0, 3, 8, 9]
    numpy.testing.assert_allclose(dm.tokens.confidence[[0, 3, 8, 9]], [0.4, 0.1, 0.7, 0.6])
    numpy.testing.assert_allclose(dm.tokens.correctness[[0, 3, 8, 9]], [1 / 3, 0, 2 / 3, 2 / 3])
    # sentence 0: mean of Lars and Aarhus per epoch = 0.15, 0.25, 0.35; sentence 1: no entities
    numpy.testing.assert_allclose(dm.sentences.confidence[[0, 2]], [0.25, 0.65])
    numpy.testing.assert_allclose(dm.sentences.variability[0], numpy.std([0.15, 0.25, 0.35]))
    assert numpy.isnan(dm.sentences.confidence[1])
    numpy.testing.assert_allclose(dm.sentences.correctness[[0, 2]], [0.0, 2 / 3])
    with_o = compute_datamap(load_dynamics(tmp_path / "dyn"), exclude_o=False)
    assert with_o.token_mask.all() and with_o.sentences.n_epochs.tolist() == [3, 3, 3]


def test_write_datamap_outputs(tmp_path):
    dm = compute_datamap(load_dynamics(write_recording(tmp_path / "dyn")), exclude_o=True)
    out = tmp_path / "out"
    summary = write_datamap(dm, out, fmt="parquet", top=5)
    for domain in ("legal", "news"):
        png = out / f"datamap_{domain}.png"
        assert png.stat().st_size > 5000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert summary["files"]["png"][domain] == str(png)
    tokens = pyarrow.parquet.read_table(out / "tokens.parquet").to_pydict()
    assert tokens["word"] == ["Lars", "Aarhus", "Anna", "Hansen"]
    assert tokens["gold"] == ["B-PERSON", "B-GPE", "B-PERSON", "I-PERSON"]
    assert tokens["region"][1] == "hard-to-learn"
    sentences = pyarrow.parquet.read_table(out / "sentences.parquet").to_pydict()
    assert sentences["doc"] == [0, 2]
    assert sentences["text"][0] == "Lars bor i Aarhus ."
    assert sentences["gold_entities"][0] == "PERSON: Lars; GPE: Aarhus"
    assert summary["domains"]["news"]["sentences"]["regions"]["hard-to-learn"] == 1
    md = (out / "hardest.md").read_text()
    assert md.index("## legal") < md.index("## news") < md.index("Lars bor i Aarhus")
    assert not list(out.glob(".*tmp"))  # atomic writes left no temporaries


def test_write_datamap_csv_and_unknown_domain(tmp_path):
    dm = compute_datamap(load_dynamics(write_recording(tmp_path / "dyn")), exclude_o=False)
    write_datamap(dm, tmp_path / "csv", fmt="csv", domains=["news"])
    table = pyarrow.csv.read_csv(tmp_path / "csv" / "sentences.csv").to_pydict()
    assert table["doc"] == [0, 1]
    with pytest.raises(AdaptnerError, match="Domain\\(s\\) web not in the recorded dynamics"):
        write_datamap(dm, tmp_path / "x", domains=["web"])


def test_hardest_sentence_first(tmp_path):
    dm = compute_datamap(load_dynamics(write_recording(tmp_path / "dyn")), exclude_o=True)
    md = hardest_markdown(dm, ["news", "legal"], top=1)
    assert "1. **confidence 0.250" in md and "gold: PERSON: Lars; GPE: Aarhus" in md


def test_plot_with_empty_panel(tmp_path):
    path = plot_datamap(
        [("empty", [], [], []), ("one", [0.5], [0.1], [1.0])], tmp_path / "p.png", title="t"
    )
    assert path.stat().st_size > 0


def test_entities_text_treats_missing_as_o():
    assert entities_text(["a", "b", "c"], ["B-X", None, "I-X"]) == "X: a; X: c"


def test_load_dynamics_errors(tmp_path):
    with pytest.raises(AdaptnerError, match="is not a dynamics directory"):
        load_dynamics(tmp_path)
    dyn = write_recording(tmp_path / "dyn")
    manifest = json.loads((dyn / MANIFEST).read_text())
    manifest["snapshots"] = []
    (dyn / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(AdaptnerError, match="lists no snapshots"):
        load_dynamics(dyn)


def test_mixed_recordings_are_refused(tmp_path):
    dyn = write_recording(tmp_path / "dyn")
    other = write_recording(
        tmp_path / "other", docs=DOCS[::-1], probs=[p[::-1] for p in EPOCH_PROBS]
    )
    (dyn / "epoch_002.npz").write_bytes((other / "epoch_002.npz").read_bytes())
    with pytest.raises(AdaptnerError, match="covers other tokens"):
        compute_datamap(load_dynamics(dyn))
