"""Cached lower layers: fine-tune the top layers of a transformer on stored outputs of the rest.

With the word embeddings and the bottom *k* layers frozen (and their dropout off), the output of
layer *k* for a span of word pieces never changes, so it is computed once and kept:

- :class:`LowerLayerCache` maps a span's word-piece ids (and token types) to the hidden states
  after layer *k* (float32, n_pieces x width). It belongs to one encoder: its ``digest`` hashes
  the frozen weights (embeddings + bottom *k* layers), so a changed encoder never gets stale
  rows. On disk it is a folder ``<cache_dir>/<digest>-k<k>/`` of shards, each written
  atomically; a damaged shard is refused with its file named.
- :func:`attach` patches a Hugging Face encoder (BERT, RoBERTa, XLM-R: ``embeddings`` +
  ``encoder.layer``) in place: the embeddings module answers with the cached layer-*k* states
  (computing and storing the rows it has not seen), the bottom *k* layers pass their input
  through, and only the top ``n - k`` layers run (and learn). Parameter names and the state
  dict are untouched, so the pipeline saves, loads and packages as the ordinary transformer
  pipeline, which in eval mode gives the same outputs as the cached path.

Used by ``adaptner.freeze_transformer.v2`` (``cache_layers = k`` in ``[initialize.after_init]``),
so ``adaptner train`` and the recipe sweep run only the top of the encoder.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy

from ..errors import AdaptnerError
from ..util import atomic_path

#: Attribute of a patched Hugging Face module holding its :class:`_Attachment`.
_STATE = "_adaptner_lower_cache"
#: Pending rows (word pieces) after which new rows are written to disk.
FLUSH_PIECES = 200_000


def _parts(module: Any) -> tuple[Any, list[Any]]:
    """The embeddings module and the list of layers of a Hugging Face encoder."""
    embeddings = getattr(module, "embeddings", None)
    encoder = getattr(module, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if embeddings is None or layers is None:
        raise AdaptnerError(
            f"Cached lower layers need an encoder with `embeddings` and `encoder.layer` "
            f"(BERT, RoBERTa, XLM-R); {type(module).__name__} has not."
        )
    return embeddings, list(layers)


def frozen_digest(module: Any, n_layers: int) -> str:
    """A content hash of the weights that produce layer ``n_layers``'s output."""
    embeddings, layers = _parts(module)
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{type(module).__name__}:{n_layers}".encode())
    for part in [embeddings, *layers[:n_layers]]:
        for key, tensor in sorted(part.state_dict().items()):
            h.update(key.encode("utf8"))
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def row_key(ids: numpy.ndarray, types: numpy.ndarray | None) -> bytes:
    """The cache key of one span: its word-piece ids (and token types, when given)."""
    h = hashlib.blake2b(numpy.ascontiguousarray(ids, dtype="int64").tobytes(), digest_size=16)
    if types is not None:
        h.update(b"\x00types")
        h.update(numpy.ascontiguousarray(types, dtype="int64").tobytes())
    return h.digest()


class LowerLayerCache:
    """Hidden states after the bottom layers, per span of word pieces."""

    def __init__(self, digest: str, n_layers: int, directory: str | Path | None = None) -> None:
        self.digest = digest
        self.n_layers = n_layers
        self.directory = (
            Path(directory) / f"{digest}-k{n_layers}" if directory is not None else None
        )
        self._rows: dict[bytes, numpy.ndarray] = {}
        self._pending: list[bytes] = []
        self.hits = 0
        self.misses = 0
        if self.directory is not None and self.directory.is_dir():
            self.load()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: bytes) -> numpy.ndarray | None:
        return self._rows.get(key)

    def add(self, key: bytes, states: numpy.ndarray) -> None:
        self._rows[key] = numpy.ascontiguousarray(states, dtype="float32")
        self._pending.append(key)
        if self.directory is not None and self.pending_pieces() >= FLUSH_PIECES:
            self.flush()

    def pending_pieces(self) -> int:
        return sum(len(self._rows[k]) for k in self._pending)

    def shards(self) -> list[Path]:
        if self.directory is None or not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("shard-*.npz"))

    def flush(self) -> Path | None:
        """Write the rows added since the last flush as a new shard (atomically)."""
        if self.directory is None or not self._pending:
            return None
        keys = self._pending
        lengths = numpy.array([len(self._rows[k]) for k in keys], dtype="int64")
        data = numpy.concatenate([self._rows[k] for k in keys])
        existing = self.shards()
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        path = self.directory / f"shard-{number:05d}.npz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                numpy.savez(
                    f,
                    keys=numpy.frombuffer(b"".join(keys), dtype="uint8").reshape(-1, 16),
                    lengths=lengths,
                    data=data,
                )
        self._pending = []
        return path

    def load(self) -> int:
        """Read every shard of this cache's folder; returns the number of rows read.

        Raises:
            AdaptnerError: a shard is unreadable or damaged (the file is named).
        """
        read = 0
        for path in self.shards():
            try:
                with numpy.load(path, allow_pickle=False) as npz:
                    keys, lengths, data = npz["keys"], npz["lengths"], npz["data"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                raise AdaptnerError(
                    f"{path} is not a readable lower-layer cache shard ({e}). Delete it; "
                    "the rows are recomputed."
                ) from None
            if (
                keys.ndim != 2
                or len(keys) != len(lengths)
                or int(lengths.sum()) != len(data)
                or data.ndim != 2
            ):
                raise AdaptnerError(f"{path} is damaged (its sizes do not add up). Delete it.")
            offsets = numpy.concatenate([[0], numpy.cumsum(lengths)])
            for i, key in enumerate(keys):
                self._rows[key.tobytes()] = data[offsets[i] : offsets[i + 1]]
            read += len(keys)
        return read


class _Attachment:
    """What :func:`attach` changed on a module, to compute rows and to undo it."""

    def __init__(self, module: Any, n_layers: int, cache: LowerLayerCache) -> None:
        self.module = module
        self.n_layers = n_layers
        self.cache = cache
        self.embeddings, layers = _parts(module)
        self.bottom = layers[:n_layers]
        self.pad_id = getattr(module.config, "pad_token_id", None)

    def _length(self, ids: numpy.ndarray) -> int:
        """The span's length without the right padding."""
        if self.pad_id is None:
            return len(ids)
        real = numpy.nonzero(ids != self.pad_id)[0]
        return int(real[-1]) + 1 if len(real) else 0

    def _compute(self, ids: numpy.ndarray, types: numpy.ndarray | None) -> numpy.ndarray:
        """Rows of equal length, through the frozen part (eval mode, no gradient)."""
        import torch

        parts = [self.embeddings, *self.bottom]
        modes = [p.training for p in parts]
        for p in parts:
            p.train(False)
        try:
            with torch.no_grad():
                kwargs = {"input_ids": torch.from_numpy(ids)}
                if types is not None:
                    kwargs["token_type_ids"] = torch.from_numpy(types)
                hidden = type(self.embeddings).forward(self.embeddings, **kwargs)
                for layer in self.bottom:
                    hidden = type(layer).forward(layer, hidden)[0]
        finally:
            for p, mode in zip(parts, modes, strict=False):
                p.train(mode)
        return hidden.numpy()

    def states(self, input_ids: Any, token_type_ids: Any = None) -> Any:
        """The layer-k states of a padded batch (zeros on the padding)."""
        import torch

        ids = input_ids.detach().cpu().numpy().astype("int64", copy=False)
        types = (
            token_type_ids.detach().cpu().numpy().astype("int64", copy=False)
            if token_type_ids is not None
            else None
        )
        rows: list[numpy.ndarray | None] = []
        missing: dict[int, list[tuple[int, bytes]]] = {}
        for i in range(len(ids)):
            n = self._length(ids[i])
            key = row_key(ids[i, :n], types[i, :n] if types is not None else None)
            row = self.cache.get(key)
            if row is None:
                missing.setdefault(n, []).append((i, key))
                self.cache.misses += 1
            else:
                self.cache.hits += 1
            rows.append(row)
        for n, items in missing.items():
            batch_ids = numpy.stack([ids[i, :n] for i, _ in items])
            batch_types = (
                numpy.stack([types[i, :n] for i, _ in items]) if types is not None else None
            )
            computed = self._compute(batch_ids, batch_types)
            for (i, key), row in zip(items, computed, strict=False):
                self.cache.add(key, row)
                rows[i] = self.cache.get(key)
        width = next(r.shape[1] for r in rows if r is not None) if rows else 0
        out = numpy.zeros((ids.shape[0], ids.shape[1], width), dtype="float32")
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        device = input_ids.device
        return torch.from_numpy(out).to(device)


def attach(
    module: Any, n_layers: int, cache_dir: str | Path | None = None
) -> LowerLayerCache:
    """Freeze and cache the embeddings and bottom ``n_layers`` layers of a Hugging Face encoder.

    Args:
        module: The Hugging Face model (e.g. ``XLMRobertaModel``), patched in place.
        n_layers: How many bottom layers to freeze and cache (0 < n_layers < the layer count).
        cache_dir: Where the cache is kept on disk (None: in memory only).

    Returns:
        The cache (also reachable through :func:`attached_caches`).

    Raises:
        AdaptnerError: not a supported encoder, a bad ``n_layers``, a damaged cache shard.
    """
    embeddings, layers = _parts(module)
    if not 0 < n_layers < len(layers):
        raise AdaptnerError(
            f"cache_layers must be between 1 and {len(layers) - 1} for an encoder of "
            f"{len(layers)} layers, got {n_layers}."
        )
    if getattr(module, _STATE, None) is not None:
        detach(module)
    cache = LowerLayerCache(frozen_digest(module, n_layers), n_layers, cache_dir)
    state = _Attachment(module, n_layers, cache)
    for part in [embeddings, *layers[:n_layers]]:
        for param in part.parameters():
            param.requires_grad_(False)

    def cached_embeddings(input_ids=None, token_type_ids=None, position_ids=None,
                          inputs_embeds=None, past_key_values_length=0, **kwargs):
        if input_ids is None or inputs_embeds is not None or position_ids is not None or (
            past_key_values_length
        ):
            raise AdaptnerError(
                "An encoder with cached lower layers takes input_ids only (no inputs_embeds, "
                "position_ids or past key values)."
            )
        return state.states(input_ids, token_type_ids)

    def passthrough(hidden_states, *args, **kwargs):
        return (hidden_states,)

    embeddings.forward = cached_embeddings
    for layer in layers[:n_layers]:
        layer.forward = passthrough
    setattr(module, _STATE, state)
    return cache


def detach(module: Any) -> None:
    """Undo :func:`attach` (the frozen parameters stay frozen); writes pending rows first."""
    state = getattr(module, _STATE, None)
    if state is None:
        return
    state.cache.flush()
    for part in [state.embeddings, *state.bottom]:
        part.__dict__.pop("forward", None)
    delattr(module, _STATE)


def attached_cache(module: Any) -> LowerLayerCache | None:
    """The cache attached to a module, or None."""
    state = getattr(module, _STATE, None)
    return None if state is None else state.cache


def attached_caches(modules: list[Any]) -> Iterator[LowerLayerCache]:
    """The caches of the given modules that have one attached."""
    for module in modules:
        cache = attached_cache(module)
        if cache is not None:
            yield cache


def flush_pipeline_caches(nlp: Any) -> None:
    """Write the rows the pipeline's cached lower layers computed since the last flush."""
    from .training import transformer_modules

    for cache in attached_caches(transformer_modules(nlp)):
        cache.flush()
