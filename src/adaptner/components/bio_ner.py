"""The ``bio_ner`` component: BIO softmax tagging with per-token probabilities."""

from collections.abc import Callable, Iterable, Sequence
from itertools import islice

import numpy
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.util import registry
from spacy.vocab import Vocab
from thinc.api import Config, Model, set_dropout_rate
from thinc.types import Floats2d

# The scalar-mix architectures feeding bio_ner register with it (also without entry points).
from ..encoders import layer_mix  # noqa: F401
from ..errors import AdaptnerError
from ..extensions import install_extensions
from ..scoring import score_examples

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
    return score_examples(examples, **kwargs)


@registry.scorers("adaptner.bio_ner_scorer.v1")
def make_bio_ner_scorer() -> Callable:
    return bio_ner_score


@Language.factory(
    "bio_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "model": DEFAULT_MODEL,
        "decoder": "argmax",
        "distill_weight": 0.0,
        "temperature": 1.0,
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
    distill_weight: float,
    temperature: float,
    scorer: Callable | None,
) -> "BioNER":
    """Create a BIO softmax NER component.

    Args:
        model: Maps Docs to one row of tag logits per token.
        decoder: "argmax" (per-token argmax, invalid sequences repaired) or
            "viterbi" (the best sequence that is valid BIO).
        distill_weight: Training only: weight α of the soft-target term. Where a reference
            doc carries a teacher's probabilities (``doc._.teacher_probs``, written by
            ``adaptner distil``), a token's loss is (1 - α)·CE(gold) + α·T²·CE(teacher at T);
            a token with a teacher but no gold gets the soft term alone. 0 = gold only.
        temperature: Training only: the distillation temperature T (1 = the teacher's
            probabilities as they are; higher flattens teacher and student alike).
        scorer: The scoring function (defaults to spaCy's entity scorer).
    """
    return BioNER(
        nlp.vocab,
        model,
        name,
        decoder=decoder,
        distill_weight=distill_weight,
        temperature=temperature,
        scorer=scorer,
    )


def find_bio_ner(
    nlp: Language,
    name: str | None = None,
    *,
    why: str = (
        "Query strategies need the per-token probabilities and the model of bio_ner; "
        "spaCy's `ner` component provides neither."
    ),
) -> tuple[str, "BioNER"]:
    """The (name, component) of the pipeline's first bio_ner (or of the one called ``name``).

    Raises:
        AdaptnerError: no such component; the message says what needed it (``why``).
    """
    for pipe_name, proc in nlp.pipeline:
        if (name is None or pipe_name == name) and isinstance(proc, BioNER):
            return pipe_name, proc
    called = f" called {name!r}" if name else ""
    raise AdaptnerError(
        f"The pipeline has no bio_ner component{called} "
        f"(components: {', '.join(nlp.pipe_names) or 'none'}). {why} "
        "Train with configs/bio_cnn.cfg."
    )


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
        distill_weight: float = 0.0,
        temperature: float = 1.0,
        scorer: Callable | None = bio_ner_score,
    ) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"Unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
        if not 0.0 <= distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight}")
        if not temperature > 0.0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        install_extensions()
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        # Training-only settings (not in cfg: a loaded pipeline takes them from its config).
        self.distill_weight = float(distill_weight)
        self.temperature = float(temperature)
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
        """Summed cross-entropy of the gold tags; tokens with unknown gold are ignored.

        With ``distill_weight`` α > 0, tokens whose reference doc has teacher probabilities
        (aligned one-to-one) also learn from them: (1 - α)·CE(gold) + α·T²·CE(teacher), or
        α·T²·CE(teacher) alone where the gold tag is unknown. With α = 0, or for docs without
        teacher probabilities, the loss and gradient are exactly the gold-only ones.
        """
        validate_examples(examples, "BioNER.get_loss")
        tag_index = {tag: i for i, tag in enumerate(self.tags)}
        ops = self.model.ops
        loss = 0.0
        grads = []
        for eg, doc_logits in zip(examples, logits, strict=True):
            doc_logits = ops.to_numpy(doc_logits)
            probs = softmax(doc_logits)
            d = probs.copy()
            gold_ce = numpy.zeros(len(d), dtype="float64")
            has_gold = numpy.zeros(len(d), dtype=bool)
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
                ce = -float(numpy.log(max(probs[i, j], 1e-12)))
                loss += ce
                gold_ce[i] = ce
                has_gold[i] = True
            if self.distill_weight > 0.0:
                targets = self.teacher_targets(eg)
                if targets is not None:
                    soft_loss, d = self._add_soft_term(doc_logits, d, gold_ce, has_gold, *targets)
                    loss += soft_loss
            grads.append(ops.asarray2f(d))
        return loss, grads

    def teacher_targets(self, example: Example) -> tuple[numpy.ndarray, numpy.ndarray] | None:
        """The teacher's probabilities on the predicted tokens, and which tokens have them.

        Read from ``example.reference._.teacher_probs`` (columns in ``_.teacher_tags`` order);
        a predicted token gets its reference token's row when the two align one-to-one.

        Returns:
            (probs n_pred x n_tags, mask n_pred), or None when the doc has no teacher.

        Raises:
            AdaptnerError: the teacher's tags differ from this component's (another label
                set or order), or the array does not match the reference doc.
        """
        ref = example.reference
        teacher = ref._.teacher_probs
        if teacher is None:
            return None
        tags = ref._.teacher_tags
        if tags is None or tuple(tags) != self.tags:
            theirs = "none stored" if tags is None else f"{len(tags)} tags {list(tags)[:5]}…"
            raise AdaptnerError(
                f"Teacher probabilities on doc {ref.text[:40]!r} have tag columns ({theirs}) "
                f"that differ from {self.name}'s {len(self.tags)} tags {list(self.tags)[:5]}…; "
                "label the corpus again with a teacher of the same label scheme "
                "(`adaptner distil`)."
            )
        teacher = numpy.asarray(teacher, dtype="float32")
        if teacher.shape != (len(ref), len(self.tags)):
            raise AdaptnerError(
                f"Teacher probabilities on doc {ref.text[:40]!r} have shape {teacher.shape}, "
                f"expected ({len(ref)}, {len(self.tags)}) (tokens x tags)."
            )
        x2y, y2x = example.alignment.x2y, example.alignment.y2x
        lengths = numpy.asarray(x2y.lengths)
        n = len(lengths)
        if n == len(ref) and (lengths == 1).all() and (numpy.asarray(y2x.lengths) == 1).all():
            return teacher, numpy.ones(n, dtype=bool)  # same tokenization
        data = numpy.asarray(x2y.data).ravel()
        starts = numpy.concatenate([[0], numpy.cumsum(lengths)[:-1]]).astype("int64")
        single = lengths == 1
        ref_index = numpy.zeros(n, dtype="int64")
        ref_index[single] = data[starts[single]]
        mask = single & (numpy.asarray(y2x.lengths)[ref_index] == 1)
        out = numpy.zeros((n, len(self.tags)), dtype="float32")
        out[mask] = teacher[ref_index[mask]]
        return out, mask

    def _add_soft_term(
        self,
        logits: numpy.ndarray,
        d_gold: numpy.ndarray,
        gold_ce: numpy.ndarray,
        has_gold: numpy.ndarray,
        teacher: numpy.ndarray,
        mask: numpy.ndarray,
    ) -> tuple[float, numpy.ndarray]:
        """Mix the soft-target term into one doc's gold gradient; returns (loss change, grad)."""
        alpha, temp = self.distill_weight, self.temperature
        # Soft targets at temperature T: q ∝ p_teacher^(1/T); student p_T = softmax(z / T).
        # d/dz of T²·CE(q, softmax(z/T)) is T·(p_T − q).
        log_teacher = numpy.log(numpy.clip(teacher, 1e-12, None)) / temp
        q = softmax(log_teacher)
        z = numpy.asarray(logits, dtype="float32") / temp
        p_t = softmax(z)
        log_p_t = z - z.max(axis=1, keepdims=True)
        log_p_t = log_p_t - numpy.log(numpy.exp(log_p_t).sum(axis=1, keepdims=True))
        soft_ce = -(q * log_p_t).sum(axis=1).astype("float64")
        both = mask & has_gold
        d = d_gold.copy()
        d[both] *= 1.0 - alpha
        d[mask] += alpha * temp * (p_t[mask] - q[mask])
        change = -alpha * float(gold_ce[both].sum()) + alpha * temp**2 * float(soft_ce[mask].sum())
        return change, d

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
            found = sorted({ent.label_ for eg in get_examples() for ent in eg.reference.ents})
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
        if self.distill_weight > 0.0:
            self._check_teacher(get_examples)
        if sample:
            self.model.initialize(X=sample)
        else:
            self.model.initialize()

    def _check_teacher(self, get_examples: Callable[[], Iterable[Example]]) -> None:
        """With distillation on, the training docs must carry a teacher of the same tag order."""
        for eg in get_examples():
            if eg.reference._.teacher_probs is not None:
                self.teacher_targets(eg)  # raises on a tag-order or shape mismatch
                return
        raise AdaptnerError(
            f"{self.name}.distill_weight = {self.distill_weight} but no training doc has teacher "
            "probabilities (doc._.teacher_probs). Label the training corpus with `adaptner "
            "distil TEACHER -o DIR` and train on it (--train DIR), or set distill_weight = 0."
        )
