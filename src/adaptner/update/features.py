"""Cached encoder features: AL rounds that retrain only the bio_ner head on frozen token vectors.

Retraining a 12-layer encoder every round, for every strategy and seed, does not fit a CPU.
With the encoder frozen (fine-tuned once, on the source), the token vectors the bio_ner head
sees never change, so they are computed once per doc and kept:

- :class:`FeatureCache` maps a doc (its words and spaces) to its token vectors (float32,
  n_tokens x width) and saves/loads them as one ``.npz``, written atomically;
- :func:`attach` swaps the bio_ner model's ``tok2vec`` for a lookup in the cache (a doc that is
  not cached yet is encoded on the spot, by the original encoder, and added) and disables the
  upstream component (the transformer). ``nlp.pipe``, ``nlp.update``, the strategies (including
  MC-dropout and k-center on token vectors) and the scorer then run on cached vectors: an
  update trains the head only, and scoring a pool costs a lookup and a matrix product;
- :func:`detach` puts the original model back (the head's weights are shared, so what the head
  learnt stays), so the pipeline saves and loads as the normal transformer pipeline.

The registered round trainer ``cached_head`` (``registry.al_trainers``) uses this; its
``prepare`` step is called by the simulation before the source weights are snapshot.
"""

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from thinc.api import Model, chain
from tqdm import tqdm

from ..errors import AdaptnerError
from ..strategies.common import encode_docs, find_bio_ner
from ..util import atomic_path

#: Attribute of ``nlp`` holding the attachment state (original model, disabled components).
_STATE = "_adaptner_feature_cache"
BATCH = 64


def doc_key(doc: Doc) -> str:
    """A key for a doc's tokenization: its words and whether each is followed by a space."""
    h = hashlib.blake2b(digest_size=16)
    for token in doc:
        h.update(token.text.encode("utf8"))
        h.update(b"\x01" if token.whitespace_ else b"\x00")
    return h.hexdigest()


class FeatureCache:
    """Token vectors per doc (keyed by :func:`doc_key`), float32 n_tokens x width."""

    def __init__(self) -> None:
        self._vectors: dict[str, numpy.ndarray] = {}
        self.width: int | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, doc: Doc) -> bool:
        return doc_key(doc) in self._vectors

    def get(self, doc: Doc) -> numpy.ndarray | None:
        """The doc's vectors, or None when it is not cached."""
        return self._vectors.get(doc_key(doc))

    def add(self, doc: Doc, vectors: numpy.ndarray) -> None:
        """Store a doc's vectors (one row per token).

        Raises:
            AdaptnerError: the rows do not match the tokens, or the width differs.
        """
        vectors = numpy.ascontiguousarray(vectors, dtype="float32")
        if vectors.ndim != 2 or vectors.shape[0] != len(doc):
            raise AdaptnerError(
                f"Token vectors of shape {vectors.shape} do not fit a doc of {len(doc)} tokens."
            )
        self._check_width(vectors.shape[1])
        self._vectors[doc_key(doc)] = vectors

    def _check_width(self, width: int) -> None:
        if self.width is None:
            self.width = width
        elif width != self.width:
            raise AdaptnerError(f"Token vectors of width {width} in a cache of width {self.width}.")

    def save(self, path: str | Path) -> None:
        """Write every cached doc to one ``.npz`` (atomically: temp file + rename)."""
        keys = sorted(self._vectors)
        lengths = numpy.array([len(self._vectors[k]) for k in keys], dtype="int64")
        width = self.width or 0
        data = (
            numpy.concatenate([self._vectors[k] for k in keys])
            if keys
            else numpy.zeros((0, width), "float32")
        )
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                numpy.savez(f, keys=numpy.array(keys, dtype="U32"), lengths=lengths, data=data)

    def load(self, path: str | Path) -> int:
        """Add the docs of a file written by :meth:`save`; returns how many were read.

        Raises:
            AdaptnerError: the file is not a feature cache (named).
        """
        try:
            with numpy.load(path, allow_pickle=False) as npz:
                keys, lengths, data = npz["keys"], npz["lengths"], npz["data"]
        except (OSError, ValueError, KeyError) as e:
            raise AdaptnerError(
                f"{path} is not a readable feature cache ({e}). Delete it; it is rebuilt."
            ) from None
        if len(keys) != len(lengths) or int(lengths.sum()) != len(data) or data.ndim != 2:
            raise AdaptnerError(f"{path} is damaged (sizes do not add up). Delete it.")
        if len(keys):
            self._check_width(int(data.shape[1]))
        offsets = numpy.concatenate([[0], numpy.cumsum(lengths)])
        for i, key in enumerate(keys):
            self._vectors[str(key)] = data[offsets[i] : offsets[i + 1]]
        return len(keys)


def model_digest(models: Iterable[Model]) -> str:
    """A content hash of models' weights (thinc parameters and wrapped PyTorch modules)."""
    h = hashlib.blake2b(digest_size=16)
    for model in models:
        for node in model.walk():
            h.update(node.name.encode("utf8"))
            for name in node.param_names:
                if node.has_param(name):
                    h.update(name.encode("utf8"))
                    param = numpy.ascontiguousarray(node.ops.to_numpy(node.get_param(name)))
                    h.update(param.tobytes())
            for shim in node.shims:
                module = getattr(shim, "_model", None)
                state = getattr(module, "state_dict", None)
                if state is None:
                    continue
                for key, tensor in sorted(state().items()):
                    h.update(key.encode("utf8"))
                    h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def upstream_names(nlp: Language, component: str) -> list[str]:
    """Enabled components that ``component`` listens to (e.g. ``transformer``, ``tok2vec``)."""
    return [
        name
        for name, proc in nlp.pipeline
        if component in (getattr(proc, "listener_map", None) or {})
    ]


def is_attached(nlp: Language) -> bool:
    """Whether :func:`attach` has put a feature cache into ``nlp``."""
    return getattr(nlp, _STATE, None) is not None


def attached_cache(nlp: Language) -> FeatureCache | None:
    """The cache :func:`attach` put into ``nlp`` (None when not attached)."""
    state = getattr(nlp, _STATE, None)
    return state["cache"] if state else None


def encode(nlp: Language, docs: Sequence[Doc], *, progress: bool = False) -> list[numpy.ndarray]:
    """Token vectors of the bio_ner model's ``tok2vec`` (predict mode) for ``docs``.

    Runs the upstream components (the transformer) on fresh copies of the docs first, as the
    pipeline would. On an attached pipeline the original encoder is used.
    """
    state = getattr(nlp, _STATE, None)
    name, bio = find_bio_ner(nlp)
    if state is None:
        tok2vec = bio.model.get_ref("tok2vec")
        upstream = [nlp.get_pipe(n) for n in upstream_names(nlp, name)]
    else:
        tok2vec = state["model"].get_ref("tok2vec")
        upstream = [nlp.get_pipe(n) for n in state["disabled"]]

    def run_upstream(fresh: list[Doc]) -> list[Doc]:
        for proc in upstream:
            fresh = list(proc.pipe(fresh, batch_size=BATCH))
        return fresh

    bar = tqdm(
        total=sum(1 for d in docs if len(d)),
        desc="encode",
        unit="doc",
        leave=False,
        disable=None if progress else True,
    )
    with bar:
        return encode_docs(docs, nlp.vocab, tok2vec, run_upstream, on_batch=bar.update)


def _cached_forward(model: Model, docs: list[Doc], is_train: bool):
    cache: FeatureCache = model.attrs["cache"]
    compute: Callable[[Sequence[Doc]], list[numpy.ndarray]] = model.attrs["compute"]
    missing: dict[str, Doc] = {}
    for doc in docs:
        if len(doc) and doc not in cache:
            missing.setdefault(doc_key(doc), doc)
    if missing:
        batch = list(missing.values())
        for doc, vectors in zip(batch, compute(batch), strict=True):
            cache.add(doc, vectors)
        cache.misses += len(batch)
    cache.hits += sum(1 for doc in docs if len(doc)) - len(missing)
    width = cache.width or 0
    out = []
    for doc in docs:
        v = cache.get(doc) if len(doc) else None
        out.append(model.ops.asarray2f(v if v is not None else numpy.zeros((0, width), "float32")))

    def backprop(d_vectors: list) -> list:
        return []  # the encoder is frozen: nothing flows back

    return out, backprop


def cached_tok2vec(cache: FeatureCache, compute: Callable, width: int | None) -> Model:
    """A tok2vec layer that looks token vectors up in ``cache`` (``compute`` fills misses)."""
    dims = {"nO": width} if width else {}
    return Model(
        "cached_tok2vec", _cached_forward, attrs={"cache": cache, "compute": compute}, dims=dims
    )


def feature_dir(folder: str | Path) -> Path:
    """Where a simulation output folder or a session folder keeps cached encoder outputs."""
    return Path(folder) / "features"


def feature_path(cache_dir: str | Path, digest: str) -> Path:
    """``<cache_dir>/<encoder digest>.npz``: every doc encoded by one encoder, in one file."""
    return Path(cache_dir) / f"{digest[:24]}.npz"


def attach(
    nlp: Language,
    docs: Sequence[Doc] = (),
    *,
    cache_dir: str | Path | None = None,
    cache: FeatureCache | None = None,
    progress: bool = False,
) -> FeatureCache:
    """Freeze the encoder of ``nlp`` and serve the bio_ner head cached token vectors.

    ``docs`` are encoded up front; with ``cache_dir``, what an earlier run encoded with the
    same encoder weights is read from ``<cache_dir>/<digest>.npz`` and the file is rewritten
    (atomically) when docs were added. Docs seen later are encoded on first use. Idempotent:
    an attached pipeline only encodes the docs it lacks.

    Args:
        cache: Reuse this cache (e.g. after :func:`detach`) instead of a new one.

    Raises:
        AdaptnerError: the pipeline has no bio_ner built as chain(tok2vec, head), or the
            cache file is damaged.
    """
    state = getattr(nlp, _STATE, None)
    if state is None:
        name, bio = find_bio_ner(nlp)
        disabled = upstream_names(nlp, name)
        tok2vec = bio.model.get_ref("tok2vec")
        state = {
            "model": bio.model,
            "disabled": disabled,
            "cache": cache if cache is not None else FeatureCache(),
            "digest": model_digest([*(nlp.get_pipe(n).model for n in disabled), tok2vec]),
            "loaded": set(),
        }
        _swap_in(nlp, state)
    cache = state["cache"]
    path = feature_path(cache_dir, state["digest"]) if cache_dir is not None else None
    if path is not None and path.exists() and path not in state["loaded"]:
        cache.load(path)
        state["loaded"].add(path)
    added = _fill(nlp, cache, docs, progress)
    if path is not None and added:
        if path.exists():  # another process may have added docs meanwhile: keep them too
            cache.load(path)
        cache.save(path)
        state["loaded"].add(path)
    return cache


def _swap_in(nlp: Language, state: dict[str, Any]) -> None:
    """Give bio_ner the cached tok2vec (the head layers shared with ``state["model"]``) and
    disable the upstream components; ``state`` becomes the pipeline's attachment state."""
    from ..strategies.bald import head_layers  # the head after the tok2vec ref

    _, bio = find_bio_ner(nlp)
    original = state["model"]
    tok2vec = original.get_ref("tok2vec")
    width = tok2vec.get_dim("nO") if tok2vec.has_dim("nO") else None
    layer = cached_tok2vec(state["cache"], lambda batch: encode(nlp, batch), width)
    model = chain(layer, *head_layers(original))
    for ref in original.ref_names:
        if ref != "tok2vec":
            model.set_ref(ref, original.get_ref(ref))
    model.set_ref("tok2vec", layer)
    model.attrs.update(original.attrs)
    bio.model = model
    for n in state["disabled"]:
        nlp.disable_pipe(n)
    setattr(nlp, _STATE, state)


def _fill(nlp: Language, cache: FeatureCache, docs: Sequence[Doc], progress: bool) -> int:
    todo: dict[str, Doc] = {}
    for doc in docs:
        if len(doc) and doc not in cache:
            todo.setdefault(doc_key(doc), doc)
    batch = list(todo.values())
    if not batch:
        return 0
    for doc, vectors in zip(batch, encode(nlp, batch, progress=progress), strict=True):
        cache.add(doc, vectors)
    return len(batch)


def detach(nlp: Language) -> None:
    """Undo :func:`attach`: the original bio_ner model (with the head's current weights, which
    are shared) and the upstream components come back; the pipeline saves as before."""
    state = getattr(nlp, _STATE, None)
    if state is None:
        return
    _, bio = find_bio_ner(nlp)
    bio.model = state["model"]
    for n in state["disabled"]:
        nlp.enable_pipe(n)
    setattr(nlp, _STATE, None)


@contextlib.contextmanager
def detached(nlp: Language) -> Iterator[Language]:
    """Within the block the pipeline is its normal self (e.g. to save it); attached again
    afterwards with the same cache."""
    state = getattr(nlp, _STATE, None)
    if state is None:
        yield nlp
        return
    detach(nlp)
    try:
        yield nlp
    finally:
        _swap_in(nlp, state)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def save_pipeline(nlp: Language, path: str | Path, *, link_from: str | Path | None = None) -> None:
    """Save ``nlp`` as a normal pipeline (detached for the save).

    With ``link_from`` (the pipeline directory the attached ``nlp`` was loaded from) the frozen
    encoder components are hard-linked from there instead of written again: a transformer
    session round then saves the head's few kilobytes instead of ~470 MB of encoder weights.
    Only valid while the encoder is the one loaded from ``link_from``, which holds for a
    pipeline attached since it was loaded (the cached trainer never changes the encoder).
    """
    path = Path(path)
    state = getattr(nlp, _STATE, None)
    with detached(nlp):
        linkable = (
            state is not None
            and link_from is not None
            and all((Path(link_from) / n).is_dir() for n in state["disabled"])
        )
        if not linkable:
            nlp.to_disk(path)
            return
        nlp.to_disk(path, exclude=state["disabled"])
        for n in state["disabled"]:
            shutil.copytree(Path(link_from) / n, path / n, copy_function=_link_or_copy)


def cache_info(nlp: Language) -> dict[str, Any]:
    """Size, hits and misses of an attached pipeline's cache (empty dict when not attached)."""
    state = getattr(nlp, _STATE, None)
    if state is None:
        return {}
    cache: FeatureCache = state["cache"]
    return {
        "docs": len(cache),
        "hits": cache.hits,
        "misses": cache.misses,
        "digest": state["digest"],
    }
