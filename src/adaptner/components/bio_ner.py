"""The ``bio_ner`` component: BIO softmax tagging with per-token probabilities."""

from collections.abc import Callable, Iterable, Sequence
from itertools import islice

import numpy
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.util import registry
from spacy.vocab import Vocab
from thinc.api import Config, Model, set_dropout_rate
from thinc.types import Floats2d

from ..extensions import install_extensions

DEFAULT_MODEL_CONFIG = """
[model]
@architectures = "adaptner.BioTagger.v1"
nO = null
dropout = 0.1

[model.tok2vec]
@architectures = "spacy.HashEmbedCNN.v2"
pretrained_vectors = null
width = 96
depth = 4
embed_size = 2000
window_size = 1
maxout_pieces = 3
subword_features = true
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]

DECODERS = ("argmax", "viterbi")


def bio_ner_score(examples: Iterable[Example], **kwargs) -> dict[str, object]:
    """Score entities with spaCy's span scorer (ents_p, ents_r, ents_f, ents_per_type)."""
    return get_ner_prf(examples, **kwargs)


@registry.scorers("adaptner.bio_ner_scorer.v1")
def make_bio_ner_scorer() -> Callable:
    return bio_ner_score


@Language.factory(
    "bio_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "model": DEFAULT_MODEL,
        "decoder": "argmax",
        "scorer": {"@scorers": "adaptner.bio_ner_scorer.v1"},
    },
    default_score_weights={
        "ents_f": 1.0,
        "ents_p": 0.0,
        "ents_r": 0.0,
        "ents_per_type": None,
    },
)
def make_bio_ner(
    nlp: Language,
    name: str,
    model: Model[list[Doc], list[Floats2d]],
    decoder: str,
    scorer: Callable | None,
) -> "BioNER":
    """Create a BIO softmax NER component.

    Args:
        model: Maps Docs to one row of tag logits per token.
        decoder: "argmax" (per-token argmax, invalid sequences repaired) or
            "viterbi" (the best sequence that is valid BIO).
        scorer: The scoring function (defaults to spaCy's entity scorer).
    """
    return BioNER(nlp.vocab, model, name, decoder=decoder, scorer=scorer)


def softmax(logits: numpy.ndarray) -> numpy.ndarray:
    """Row-wise softmax in float32; rows sum to 1."""
    logits = numpy.asarray(logits, dtype="float32")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = numpy.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def make_tags(labels: Sequence[str]) -> list[str]:
    """The tag set: "O", then B-/I- for every label in sorted order."""
    tags = ["O"]
    for label in sorted(labels):
        tags.extend([f"B-{label}", f"I-{label}"])
    return tags


def repair_bio(tags: Sequence[str]) -> list[str]:
    """Make a BIO sequence valid: an I-X that does not continue an X entity becomes B-X."""
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-"):
            label = tag[2:]
            if prev == "O" or prev[2:] != label:
                tag = f"B-{label}"
        out.append(tag)
        prev = tag
    return out


def bio_to_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Decode a BIO sequence to (start, end, label) token spans. Orphan I-X opens a new span."""
    spans: list[tuple[int, int, str]] = []
    start: int | None = None
    label: str | None = None
    for i, tag in enumerate(repair_bio(tags)):
        if tag.startswith("I-"):
            continue
        if start is not None:
            spans.append((start, i, label))  # type: ignore[arg-type]
            start, label = None, None
        if tag.startswith("B-"):
            start, label = i, tag[2:]
    if start is not None:
        spans.append((start, len(tags), label))  # type: ignore[arg-type]
    return spans


def spans_to_bio(n_tokens: int, spans: Iterable[tuple[int, int, str]]) -> list[str]:
    """Encode non-overlapping (start, end, label) token spans as BIO tags."""
    tags = ["O"] * n_tokens
    for start, end, label in spans:
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
    return tags


def viterbi_bio(probs: numpy.ndarray, tags: Sequence[str]) -> list[str]:
    """The most probable tag sequence under the constraint that it is valid BIO."""
    n, t = probs.shape
    if n == 0:
        return []
    allowed, start_ok = _transitions(tuple(tags))
    # The per-token argmax maximizes the unconstrained joint probability; when it is valid
    # BIO it is also the constrained optimum, so the dynamic programme is only run otherwise.
    greedy = probs.argmax(axis=1)
    if start_ok[greedy[0]] and allowed[greedy[:-1], greedy[1:]].all():
        return [tags[j] for j in greedy]
    logp = numpy.log(numpy.clip(probs, 1e-12, None)).astype("float64")
    neg = -1e18
    score = numpy.where(start_ok, logp[0], neg)
    back = numpy.zeros((n, t), dtype="int64")
    trans = numpy.where(allowed, 0.0, neg)
    for i in range(1, n):
        cand = score[:, None] + trans  # prev x next
        back[i] = cand.argmax(axis=0)
        score = cand.max(axis=0) + logp[i]
    best = [int(score.argmax())]
    for i in range(n - 1, 0, -1):
        best.append(int(back[i, best[-1]]))
    return [tags[j] for j in reversed(best)]


_TRANSITIONS: dict[tuple[str, ...], tuple[numpy.ndarray, numpy.ndarray]] = {}


def _transitions(tags: tuple[str, ...]) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Valid BIO transitions (prev x next) and valid first tags, computed once per tag set."""
    if tags not in _TRANSITIONS:
        mask = numpy.ones((len(tags), len(tags)), dtype=bool)
        for j, nxt in enumerate(tags):
            if nxt.startswith("I-"):
                for i, prev in enumerate(tags):
                    mask[i, j] = prev[2:] == nxt[2:] and prev != "O"
        start_ok = numpy.array([not tag.startswith("I-") for tag in tags])
        _TRANSITIONS[tags] = (mask, start_ok)
    return _TRANSITIONS[tags]


class BioNER(TrainablePipe):
    """Named-entity recognition as BIO tagging with a softmax over tags.

    Sets ``doc.ents`` and ``doc._.ner_probs`` (float32, n_tokens x n_tags, rows
    summing to 1, columns in the order of :attr:`tags`).
    """

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "bio_ner",
        *,
        decoder: str = "argmax",
        scorer: Callable | None = bio_ner_score,
    ) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"Unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
        install_extensions()
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self._rehearsal_model = None
        self.cfg: dict[str, object] = {"labels": [], "decoder": decoder}

    # --- labels -----------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        """The entity labels, sorted."""
        return tuple(self.cfg["labels"])  # type: ignore[arg-type]

    @property
    def tags(self) -> tuple[str, ...]:
        """The BIO tags in the column order of ``doc._.ner_probs``."""
        return tuple(make_tags(self.labels))

    @property
    def label_data(self) -> list[str]:
        return list(self.labels)

    def add_label(self, label: str) -> int:
        if not isinstance(label, str):
            raise ValueError(f"Entity labels must be strings, got {label!r}")
        if label in self.labels:
            return 0
        self._allow_extra_label()
        self.cfg["labels"] = sorted([*self.labels, label])
        self.vocab.strings.add(label)
        return 1

    # --- inference --------------------------------------------------------
    def predict(self, docs: Iterable[Doc]) -> list[numpy.ndarray]:
        """Tag probabilities for each doc (n_tokens x n_tags)."""
        docs = list(docs)
        n_tags = len(self.tags)
        if not any(len(doc) for doc in docs):
            return [numpy.zeros((len(doc), n_tags), dtype="float32") for doc in docs]
        logits = self.model.predict(docs)
        return [softmax(self.model.ops.to_numpy(x)) for x in logits]

    def decode(self, probs: numpy.ndarray) -> list[tuple[int, int, str]]:
        """Token spans (start, end, label) from one doc's probabilities."""
        tags = self.tags
        if len(probs) == 0:
            return []
        if self.cfg.get("decoder") == "viterbi":
            seq = viterbi_bio(probs, tags)
        else:
            seq = [tags[i] for i in probs.argmax(axis=1)]
        return bio_to_spans(seq)

    def set_annotations(self, docs: Iterable[Doc], probs: list[numpy.ndarray]) -> None:
        for doc, doc_probs in zip(docs, probs, strict=True):
            doc_probs = numpy.asarray(doc_probs, dtype="float32")
            doc._.ner_probs = doc_probs
            doc.ents = [Span(doc, s, e, label=label) for s, e, label in self.decode(doc_probs)]

    # --- training ---------------------------------------------------------
    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd=None,
        losses: dict[str, float] | None = None,
    ) -> dict[str, float]:
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "BioNER.update")
        if not any(len(eg.predicted) if eg.predicted else 0 for eg in examples):
            return losses
        set_dropout_rate(self.model, drop)
        if drop and self.model.has_ref("head_dropout"):
            rate = self.model.attrs.get("head_dropout_rate", drop)
            self.model.get_ref("head_dropout").attrs["dropout_rate"] = rate
        logits, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_logits = self.get_loss(examples, logits)
        backprop(d_logits)
        if sgd not in (None, False):
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def gold_tags(self, example: Example) -> list[str | None]:
        """BIO gold tags aligned to the predicted tokens; None = unknown (ignored in the loss)."""
        out: list[str | None] = []
        for tag in example.get_aligned_ner():
            if tag is None or tag == "-":
                out.append(None)
            elif tag[0] in "BU":
                out.append("B-" + tag[2:])
            elif tag[0] in "IL":
                out.append("I-" + tag[2:])
            else:
                out.append("O")
        return out

    def get_loss(self, examples: Iterable[Example], logits: list[Floats2d]) -> tuple[float, list]:
        """Summed cross-entropy of the gold tags; tokens with unknown gold are ignored."""
        validate_examples(examples, "BioNER.get_loss")
        tag_index = {tag: i for i, tag in enumerate(self.tags)}
        ops = self.model.ops
        loss = 0.0
        grads = []
        for eg, doc_logits in zip(examples, logits, strict=True):
            probs = softmax(ops.to_numpy(doc_logits))
            d = probs.copy()
            for i, tag in enumerate(self.gold_tags(eg)):
                if tag is None:
                    d[i] = 0.0
                    continue
                j = tag_index.get(tag)
                if j is None:
                    # A label the component does not know: treat as unknown, not as O.
                    d[i] = 0.0
                    continue
                d[i, j] -= 1.0
                loss -= float(numpy.log(max(probs[i, j], 1e-12)))
            grads.append(ops.asarray2f(d))
        return loss, grads

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Language | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Set the label scheme (given, or read from the examples) and initialize the model."""
        validate_get_examples(get_examples, "BioNER.initialize")
        if labels is not None:
            found = sorted(set(labels))
        else:
            found = sorted(
                {ent.label_ for eg in get_examples() for ent in eg.reference.ents}
            )
        for label in found:
            self.vocab.strings.add(label)
        self.cfg["labels"] = found
        sample = [eg.predicted for eg in islice(get_examples(), 10)]
        n_tags = len(self.tags)
        output_layer = self.model.get_ref("output_layer")
        if output_layer.has_dim("nO") is True and output_layer.get_dim("nO") != n_tags:
            raise ValueError(
                f"bio_ner's output layer has {output_layer.get_dim('nO')} tags but the label "
                f"scheme needs {n_tags}; set model.nO = null to infer it"
            )
        output_layer.set_dim("nO", n_tags)
        if sample:
            self.model.initialize(X=sample)
        else:
            self.model.initialize()
