"""Data-map statistics (confidence, variability, correctness, AUM) from training dynamics."""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import srsly

from ..errors import AdaptnerError
from .callback import DOCS_FILE, FORMAT_VERSION, MANIFEST

#: Data-map regions (Swayamdipta et al. 2020), in plotting order.
REGIONS: tuple[str, ...] = ("easy-to-learn", "ambiguous", "hard-to-learn")

#: Default region boundaries: variability >= VAR_THRESHOLD is ambiguous; below it,
#: confidence < CONF_THRESHOLD is hard-to-learn and the rest easy-to-learn.
CONF_THRESHOLD = 0.5
VAR_THRESHOLD = 0.2

#: Arrays every snapshot file holds.
SNAPSHOT_KEYS = ("doc", "token", "gold", "gold_prob", "margin", "correct", "pred")


@dataclass
class Dynamics:
    """A recorded dynamics directory: the manifest, token indices and lazily read snapshots.

    Attributes:
        path: The directory.
        manifest: ``dynamics.json``.
        tags: bio_ner's tags (column order of ``gold`` / ``pred``).
        doc: Doc index of every token (into :meth:`docs`).
        token: Token index within its doc.
        gold: Gold tag index (-1 = unknown) of every token.
    """

    path: Path
    manifest: dict[str, Any]
    tags: list[str]
    doc: numpy.ndarray
    token: numpy.ndarray
    gold: numpy.ndarray
    _docs: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def n_docs(self) -> int:
        """Number of recorded training docs."""
        return int(self.manifest["n_docs"])

    @property
    def n_snapshots(self) -> int:
        """Number of recorded epochs (or step snapshots)."""
        return len(self.manifest["snapshots"])

    def docs(self) -> list[dict[str, Any]]:
        """The recorded docs (``doc``, ``domain``, ``source``, ``words``, ``spaces``, ``gold``)."""
        if self._docs is None:
            path = self.path / DOCS_FILE
            if not path.exists():
                raise AdaptnerError(f"{path} is missing; the dynamics directory is incomplete.")
            self._docs = list(srsly.read_jsonl(path))
            if len(self._docs) != self.n_docs:
                raise AdaptnerError(
                    f"{path} has {len(self._docs)} docs but {self.path / MANIFEST} says "
                    f"{self.n_docs}. Record the dynamics again."
                )
        return self._docs

    def domains(self) -> numpy.ndarray:
        """The domain of every doc (str array; "unknown" where missing)."""
        return numpy.array([d.get("domain") or "unknown" for d in self.docs()], dtype=object)

    def snapshots(self) -> Iterator[dict[str, numpy.ndarray]]:
        """Each snapshot's arrays in recording order, one file in memory at a time."""
        for snap in self.manifest["snapshots"]:
            yield self.load_snapshot(snap["file"])

    def load_snapshot(self, name: str) -> dict[str, numpy.ndarray]:
        """One snapshot file, checked against the token indices.

        Raises:
            AdaptnerError: a missing, unreadable or misaligned file (named).
        """
        path = self.path / name
        if not path.exists():
            raise AdaptnerError(f"Snapshot {path} listed in {MANIFEST} does not exist.")
        try:
            with numpy.load(path) as z:
                arrays = {k: z[k] for k in SNAPSHOT_KEYS}
        except Exception as e:  # noqa: BLE001 - numpy raises many kinds on bad files
            raise AdaptnerError(
                f"Snapshot {path} is unreadable ({type(e).__name__}: {e}). Record it again."
            ) from e
        if not (
            numpy.array_equal(arrays["doc"], self.doc)
            and numpy.array_equal(arrays["token"], self.token)
            and numpy.array_equal(arrays["gold"], self.gold)
        ):
            raise AdaptnerError(
                f"Snapshot {path} covers other tokens than the first snapshot of {self.path}; "
                "the directory mixes two recordings. Record the dynamics again."
            )
        return arrays


def load_dynamics(path: str | Path) -> Dynamics:
    """Open a dynamics directory written by ``adaptner.record_dynamics.v1``.

    Raises:
        AdaptnerError: no directory, no manifest, an unknown format, or no snapshots.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise AdaptnerError(
            f"{path} is not a dynamics directory (no {MANIFEST}). Record one with "
            "`adaptner datamap` (which trains with the callback) or a config whose "
            "[training.before_update] is adaptner.record_dynamics.v1."
        )
    try:
        manifest = srsly.read_json(manifest_path)
    except ValueError as e:
        raise AdaptnerError(f"{manifest_path} is not valid JSON ({e}).") from e
    if manifest.get("format") != FORMAT_VERSION:
        raise AdaptnerError(
            f"{manifest_path} has format {manifest.get('format')!r}; this adaptner reads "
            f"format {FORMAT_VERSION}. Record the dynamics again."
        )
    if not manifest.get("snapshots"):
        raise AdaptnerError(
            f"{manifest_path} lists no snapshots: training stopped before the first epoch "
            "ended. Train for at least one epoch."
        )
    first = manifest["snapshots"][0]["file"]
    try:
        with numpy.load(path / first) as z:
            doc, token, gold = z["doc"], z["token"], z["gold"]
    except FileNotFoundError:
        raise AdaptnerError(
            f"Snapshot {path / first} listed in {MANIFEST} does not exist."
        ) from None
    except Exception as e:  # noqa: BLE001
        raise AdaptnerError(f"Snapshot {path / first} is unreadable ({e}).") from e
    return Dynamics(path, manifest, list(manifest["tags"]), doc, token, gold)


class RunningStats:
    """Mean and population standard deviation of a vector over a stream of updates (Welford).

    NaN entries are skipped per position, so each position has its own count.
    """

    def __init__(self, n: int) -> None:
        self.count = numpy.zeros(n, dtype="int64")
        self._mean = numpy.zeros(n, dtype="float64")
        self._m2 = numpy.zeros(n, dtype="float64")

    def update(self, values: numpy.ndarray) -> None:
        """Add one observation per position (NaN = no observation)."""
        values = numpy.asarray(values, dtype="float64")
        ok = ~numpy.isnan(values)
        self.count[ok] += 1
        delta = numpy.where(ok, values - self._mean, 0.0)
        safe = numpy.maximum(self.count, 1)
        self._mean += delta / safe
        self._m2 += delta * numpy.where(ok, values - self._mean, 0.0)

    @property
    def mean(self) -> numpy.ndarray:
        """Mean per position (NaN where nothing was observed)."""
        return numpy.where(self.count > 0, self._mean, numpy.nan)

    @property
    def std(self) -> numpy.ndarray:
        """Population standard deviation per position (NaN where nothing was observed)."""
        var = self._m2 / numpy.maximum(self.count, 1)
        return numpy.where(self.count > 0, numpy.sqrt(numpy.maximum(var, 0.0)), numpy.nan)


@dataclass
class MapStats:
    """Data-map statistics of a set of items (tokens or sentences), one entry per item.

    Attributes:
        confidence: Mean probability of the gold tag over epochs.
        variability: Its standard deviation over epochs (population std, as in the report).
        correctness: Fraction of epochs in which the item was predicted correctly.
        aum: Area under the margin: mean over epochs of gold logit minus largest other logit
            (tokens only; NaN for sentences).
        n_epochs: Number of epochs that measured the item.
    """

    confidence: numpy.ndarray
    variability: numpy.ndarray
    correctness: numpy.ndarray
    aum: numpy.ndarray
    n_epochs: numpy.ndarray

    def __len__(self) -> int:
        return len(self.confidence)

    def subset(self, mask: numpy.ndarray) -> "MapStats":
        """The items where ``mask`` is True (a boolean or index array)."""
        return MapStats(
            self.confidence[mask],
            self.variability[mask],
            self.correctness[mask],
            self.aum[mask],
            self.n_epochs[mask],
        )


def token_statistics(
    gold_prob: Iterable[numpy.ndarray],
    correct: Iterable[numpy.ndarray],
    margin: Iterable[numpy.ndarray] | None = None,
) -> MapStats:
    """Per-token statistics from a sequence of epochs (each an array over the same tokens).

    Args:
        gold_prob: Per epoch, the gold tag's probability per token (NaN = unknown gold).
        correct: Per epoch, whether the argmax equals the gold tag.
        margin: Per epoch, gold logit minus the largest other logit (for AUM); optional.

    Raises:
        AdaptnerError: no epochs, or epochs of different lengths.
    """
    margins_iter = iter(margin) if margin is not None else None
    prob_stats = margin_stats = None
    n_correct: numpy.ndarray | None = None
    for i, (p, c) in enumerate(zip(gold_prob, correct, strict=True)):
        p = numpy.asarray(p, dtype="float64")
        if prob_stats is None:
            prob_stats, margin_stats = RunningStats(len(p)), RunningStats(len(p))
            n_correct = numpy.zeros(len(p), dtype="int64")
        if len(p) != len(prob_stats.count):
            raise AdaptnerError(
                f"Epoch {i} has {len(p)} tokens; the first had {len(prob_stats.count)}."
            )
        prob_stats.update(p)
        n_correct += numpy.asarray(c, dtype=bool) & ~numpy.isnan(p)
        if margins_iter is not None:
            margin_stats.update(next(margins_iter))
    if prob_stats is None or n_correct is None or margin_stats is None:
        raise AdaptnerError("No epochs to compute statistics from.")
    n = prob_stats.count
    correctness = numpy.where(n > 0, n_correct / numpy.maximum(n, 1), numpy.nan)
    aum = margin_stats.mean if margins_iter is not None else numpy.full(len(n), numpy.nan)
    return MapStats(prob_stats.mean, prob_stats.std, correctness, aum, n.copy())


def sentence_statistics(
    gold_prob: Iterable[numpy.ndarray],
    correct: Iterable[numpy.ndarray],
    doc_index: numpy.ndarray,
    n_docs: int,
    mask: numpy.ndarray | None = None,
) -> MapStats:
    """Per-sentence statistics: per epoch, a sentence's gold probability is the mean over its
    (selected) tokens and it is correct when all of them are; then mean / std / fraction over
    epochs, as for tokens.

    Args:
        gold_prob: Per epoch, gold probability per token.
        correct: Per epoch, correctness per token.
        doc_index: The sentence of every token.
        n_docs: Number of sentences.
        mask: Tokens to use (e.g. gold tag not O); default all with known gold.

    Returns:
        Stats with one entry per sentence; sentences without selected tokens are NaN.
    """
    doc_index = numpy.asarray(doc_index, dtype="int64")
    stats = RunningStats(n_docs)
    n_correct = numpy.zeros(n_docs, dtype="int64")
    seen = False
    for p, c in zip(gold_prob, correct, strict=True):
        p = numpy.asarray(p, dtype="float64")
        use = ~numpy.isnan(p) if mask is None else (numpy.asarray(mask, bool) & ~numpy.isnan(p))
        idx = doc_index[use]
        counts = numpy.bincount(idx, minlength=n_docs)
        sums = numpy.bincount(idx, weights=p[use], minlength=n_docs)
        wrong = numpy.bincount(idx, weights=~numpy.asarray(c, bool)[use], minlength=n_docs)
        has = counts > 0
        stats.update(numpy.where(has, sums / numpy.maximum(counts, 1), numpy.nan))
        n_correct += has & (wrong == 0)
        seen = True
    if not seen:
        raise AdaptnerError("No epochs to compute statistics from.")
    n = stats.count
    correctness = numpy.where(n > 0, n_correct / numpy.maximum(n, 1), numpy.nan)
    return MapStats(stats.mean, stats.std, correctness, numpy.full(n_docs, numpy.nan), n.copy())


def token_mask(dyn: Dynamics, exclude_o: bool) -> numpy.ndarray:
    """Tokens with a known gold tag, and (with ``exclude_o``) a gold tag other than O."""
    mask = dyn.gold >= 0
    if exclude_o and "O" in dyn.tags:
        mask &= dyn.gold != dyn.tags.index("O")
    return mask


@dataclass
class DataMap:
    """Token and sentence statistics of a dynamics directory.

    Attributes:
        dynamics: The source recording.
        tokens: Statistics of every recorded token (use ``token_mask`` to select).
        sentences: Statistics of every doc (NaN for docs without selected tokens).
        token_mask: The tokens that count (known gold; not O with ``exclude_o``).
        last_pred: The final snapshot's predicted tag per token.
        exclude_o: Whether gold-O tokens were left out.
    """

    dynamics: Dynamics
    tokens: MapStats
    sentences: MapStats
    token_mask: numpy.ndarray
    last_pred: numpy.ndarray
    exclude_o: bool


def compute_datamap(dyn: Dynamics, *, exclude_o: bool = True) -> DataMap:
    """Token and sentence statistics in one streamed pass over the snapshots.

    Only one snapshot is in memory at a time (plus running sums per token and per doc).
    """
    mask = token_mask(dyn, exclude_o)
    n = len(dyn.gold)
    tok_prob, tok_margin = RunningStats(n), RunningStats(n)
    tok_correct = numpy.zeros(n, dtype="int64")
    sent_prob = RunningStats(dyn.n_docs)
    sent_correct = numpy.zeros(dyn.n_docs, dtype="int64")
    doc_index = dyn.doc.astype("int64")
    last_pred = numpy.zeros(n, dtype="int16")
    for snap in dyn.snapshots():
        p = snap["gold_prob"].astype("float64")
        tok_prob.update(p)
        tok_margin.update(snap["margin"])
        tok_correct += snap["correct"] & ~numpy.isnan(p)
        s = sentence_statistics([p], [snap["correct"]], doc_index, dyn.n_docs, mask)
        sent_prob.update(s.confidence)
        sent_correct += s.correctness == 1.0
        last_pred = snap["pred"]
    nt, ns = tok_prob.count, sent_prob.count
    tokens = MapStats(
        tok_prob.mean,
        tok_prob.std,
        numpy.where(nt > 0, tok_correct / numpy.maximum(nt, 1), numpy.nan),
        tok_margin.mean,
        nt.copy(),
    )
    sentences = MapStats(
        sent_prob.mean,
        sent_prob.std,
        numpy.where(ns > 0, sent_correct / numpy.maximum(ns, 1), numpy.nan),
        numpy.full(dyn.n_docs, numpy.nan),
        ns.copy(),
    )
    return DataMap(dyn, tokens, sentences, mask, last_pred, exclude_o)


def regions(
    confidence: Sequence[float] | numpy.ndarray,
    variability: Sequence[float] | numpy.ndarray,
    *,
    conf_threshold: float = CONF_THRESHOLD,
    var_threshold: float = VAR_THRESHOLD,
) -> numpy.ndarray:
    """The data-map region of every item: ambiguous (variability >= ``var_threshold``),
    else hard-to-learn (confidence < ``conf_threshold``), else easy-to-learn; "" for NaN.
    """
    conf = numpy.asarray(confidence, dtype="float64")
    var = numpy.asarray(variability, dtype="float64")
    out = numpy.where(
        var >= var_threshold,
        "ambiguous",
        numpy.where(conf < conf_threshold, "hard-to-learn", "easy-to-learn"),
    ).astype(object)
    out[numpy.isnan(conf) | numpy.isnan(var)] = ""
    return out
