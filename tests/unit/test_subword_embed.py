"""Subword segmentation and the subword-vector layer on a hand-built piece table (no e5)."""

import itertools
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.util import load_config

import adaptner.subword_embed as subword_embed
from adaptner.encoders.subwords import UNK_PENALTY, Segmenter, in_charset, mean_vectors
from tests.unit.test_configs import _flat

ROOT = Path(__file__).resolve().parents[2]
PIECES = ["▁", "▁kage", "▁ka", "ge", "g", "e", "k", "a", "▁k", "bager", "▁bag", "er", "b", "r",
          "ø", "▁Ø", "l"]
SCORES = [-2.0, -6.0, -5.0, -4.0, -7.0, -6.5, -8.0, -7.5, -5.5, -9.0, -6.0, -3.5, -8.5, -8.0,
          -7.0, -6.0, -6.6]


def brute_force(text: str, pieces: list[str], scores: list[float]) -> list[int | None]:
    """The best split by enumerating every cut of ``text``; unknown one-character parts at the
    lowest score - penalty where no one-character piece exists."""
    index = {p: i for i, p in enumerate(pieces)}
    unk = min(scores) - UNK_PENALTY
    best, best_ids = float("-inf"), None
    n = len(text)
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        ids, total = [], 0.0
        for a, b in itertools.pairwise(bounds):
            part = text[a:b]
            if part in index:
                ids.append(index[part])
                total += scores[index[part]]
            elif b - a == 1:
                ids.append(None)
                total += unk
            else:
                break
        else:
            if total > best:
                best, best_ids = total, ids
    return best_ids


@pytest.mark.parametrize("word", ["kagebager", "kage", "bagerkage", "Økage", "kølx", "ggg", "x"])
def test_viterbi_equals_brute_force(word):
    seg = Segmenter(PIECES, SCORES)
    assert seg.pieces(word) == brute_force("▁" + word, PIECES, SCORES)


def test_content_pieces_and_mean():
    seg = Segmenter(PIECES, SCORES)
    table = numpy.arange(len(PIECES) * 3, dtype="float32").reshape(-1, 3)
    # "x" is unknown: "▁" alone is left, and kept as the only piece
    assert seg.content("x") == [PIECES.index("▁")]
    ids = seg.content("kagebager")
    assert None not in ids and PIECES.index("▁") not in ids
    got = mean_vectors(["kagebager", "x"], seg, table)
    numpy.testing.assert_allclose(got[0], table[ids].mean(axis=0))
    assert mean_vectors(["   "], seg, table).tolist() == [[0.0, 0.0, 0.0]]


def test_normalization_is_per_character_with_overrides():
    seg = Segmenter(PIECES, SCORES, {"\u200b": " ", "\x7f": ""})
    assert seg.normalize("ﬁk") == "fik"  # NFKC
    assert seg.normalize("a\u030a") == "a\u030a"  # not composed to å, as e5's map
    assert seg.normalize("ka\x7fge") == "kage"
    # a zero-width space splits the word as whitespace does in e5's pre-tokenizer
    assert seg.pieces("kage\u200bkage") == seg.pieces("kage") * 2
    assert in_charset("ø") and in_charset("€") and not in_charset("ж")


def _layer_with(table: numpy.ndarray, nO: int = 4):
    model = subword_embed.build_subword_vectors(nO=nO, encoder=None, width=table.shape[1])
    model.attrs["pieces"], model.attrs["scores"] = list(PIECES), list(SCORES)
    model.set_dim("nP", len(PIECES))
    model.set_dim("nV", table.shape[1])
    model.set_param("E", table)
    model.initialize()
    return model


def test_layer_output_gradient_and_bytes_round_trip():
    rng = numpy.random.default_rng(0)
    table = rng.normal(size=(len(PIECES), 3)).astype("float32")
    model = _layer_with(table)
    nlp = spacy.blank("da")
    docs = [nlp.make_doc("kagebager bager"), nlp.make_doc("Økage")]
    out, backprop = model(docs, is_train=True)
    V = mean_vectors(["kagebager", "bager", "Økage"], Segmenter(PIECES, SCORES), table)
    W = model.get_param("W")
    numpy.testing.assert_allclose(out.dataXd, V @ W.T, rtol=1e-5)
    assert list(out.lengths) == [2, 1]
    d_out = rng.normal(size=out.dataXd.shape).astype("float32")
    backprop(type(out)(d_out, out.lengths))
    numpy.testing.assert_allclose(model.get_grad("W"), d_out.T @ V, rtol=1e-5)
    assert not model.has_grad("E")  # the table is fixed
    copy = subword_embed.build_subword_vectors(nO=4, encoder="/nowhere", width=3)
    copy.from_bytes(model.to_bytes())
    numpy.testing.assert_array_equal(copy(docs, is_train=False)[0].dataXd, out.dataXd)
    # an equal table (a pipeline loaded twice) shares the segmenter and its cache
    assert subword_embed.segmenter_of(copy) is subword_embed.segmenter_of(model)


def test_initialize_without_encoder_is_refused():
    model = subword_embed.build_subword_vectors(nO=4, encoder="/no/such/e5", width=3)
    with pytest.raises(Exception, match=r"need the e5 encoder directory.*/no/such/e5"):
        model.initialize()


def test_e5sub_config_differs_from_the_default_only_in_the_embedding():
    base = _flat(load_config(ROOT / "configs" / "bio_cnn.cfg", interpolate=False))
    derived = _flat(load_config(ROOT / "configs" / "bio_cnn_e5sub.cfg", interpolate=False))
    embed = "components.tok2vec.model.embed."
    changed = {k: v for k, v in derived.items() if base.get(k, object()) != v}
    assert changed == {
        "paths.encoder": "assets/e5-small",
        embed + "@architectures": "adaptner.SubwordHashEmbed.v1",
        embed + "subwords.@architectures": "adaptner.SubwordVectors.v1",
        embed + "subwords.nO": "${components.tok2vec.model.encode.width}",
        embed + "subwords.encoder": "${paths.encoder}",
        embed + "subwords.width": 96,
        embed + "subwords.dropout": None,
    }
    assert set(base) - set(derived) == {embed + "include_static_vectors"}
