"""Model architectures: the paper's NER head (dropout + linear + softmax over token vectors).

``adaptner.BioTagger.v1`` is the paper's head. ``adaptner.BioTagger.v2`` adds an optional
maxout hidden layer between the token vectors and the linear output layer (``hidden_width =
0`` makes it identical to v1).
"""


from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Dropout, Linear, Maxout, Model, chain, glorot_uniform_init, with_array
from thinc.types import Floats2d


@registry.architectures("adaptner.BioTagger.v1")
def build_bio_tagger(
    tok2vec: Model[list[Doc], list[Floats2d]],
    nO: int | None = None,
    dropout: float = 0.1,
) -> Model[list[Doc], list[Floats2d]]:
    """Token vectors -> dropout -> linear: one row of tag logits per token.

    The softmax is applied by the ``bio_ner`` component, which needs the raw
    logits too (margins for training dynamics). ``nO`` (the number of BIO tags)
    is inferred at initialization when left unset.

    Args:
        tok2vec: The token-to-vector layer (CNN tok2vec, or a transformer listener).
        nO: Number of BIO tags; inferred from the labels if None.
        dropout: Dropout rate before the linear layer (the paper uses 0.1).
    """
    return build_bio_tagger_v2(tok2vec, nO=nO, dropout=dropout, hidden_width=0)


@registry.architectures("adaptner.BioTagger.v2")
def build_bio_tagger_v2(
    tok2vec: Model[list[Doc], list[Floats2d]],
    nO: int | None = None,
    dropout: float = 0.1,
    hidden_width: int = 0,
    maxout_pieces: int = 2,
) -> Model[list[Doc], list[Floats2d]]:
    """Token vectors -> [maxout hidden layer] -> dropout -> linear: tag logits per token.

    Args:
        tok2vec: The token-to-vector layer (CNN tok2vec, or a transformer listener).
        nO: Number of BIO tags; inferred from the labels if None.
        dropout: Dropout rate before the linear output layer.
        hidden_width: Width of a layer-normalized maxout layer before the output layer;
            0 leaves it out (the paper's head, as v1).
        maxout_pieces: Maxout pieces of the hidden layer.
    """
    if hidden_width < 0:
        raise ValueError(f"hidden_width must be >= 0, got {hidden_width}")
    t2v_width = tok2vec.get_dim("nO") if tok2vec.has_dim("nO") else None
    layers: list[Model] = []
    out_in = t2v_width
    if hidden_width:
        layers.append(
            Maxout(nO=hidden_width, nI=t2v_width, nP=maxout_pieces, normalize=True)
        )
        out_in = hidden_width
    output_layer = Linear(nO=nO, nI=out_in, init_W=glorot_uniform_init)
    head_dropout = Dropout(dropout)
    head = with_array(chain(*layers, head_dropout, output_layer))
    model = chain(tok2vec, head)
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("head_dropout", head_dropout)
    model.set_ref("output_layer", output_layer)
    # spaCy's update sets every dropout layer to training.dropout; the component puts the
    # head's own rate back from here, so `dropout` above is the head's rate in training.
    model.attrs["head_dropout_rate"] = dropout
    return model
