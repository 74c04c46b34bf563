"""Model architectures: the paper's NER head (dropout + linear + softmax over token vectors)."""


from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Dropout, Linear, Model, chain, glorot_uniform_init, with_array
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
    t2v_width = tok2vec.get_dim("nO") if tok2vec.has_dim("nO") else None
    output_layer = Linear(nO=nO, nI=t2v_width, init_W=glorot_uniform_init)
    head_dropout = Dropout(dropout)
    head = with_array(chain(head_dropout, output_layer))
    model = chain(tok2vec, head)
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("head_dropout", head_dropout)
    model.set_ref("output_layer", output_layer)
    # spaCy's update sets every dropout layer to training.dropout; the component puts the
    # head's own rate back from here, so `dropout` above is the head's rate in training.
    model.attrs["head_dropout_rate"] = dropout
    return model
