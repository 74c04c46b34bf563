"""The Ray backend of a grid: inputs through the object store, results written by the driver.

No shared disk is needed. The driver packs what a task reads (the corpus DocBins, the source
pipeline, a training config, a trained baseline pipeline) into tar bytes, ``ray.put``s each
once, and every node unpacks a copy into a cache folder keyed by the content's sha256. A task
streams its results back (one record per finished round, a baseline's JSON, a trained
pipeline as tar bytes) and the driver is the only writer of the output and models folders.

A task whose worker process or node dies is re-submitted by the driver, at most ``retries``
times, from the rounds saved so far; a round that arrives twice is written once.
"""

import dataclasses
import hashlib
import io
import json
import os
import queue
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import AdaptnerError
from ..util import append_jsonl, atomic_path, write_json, write_text
from .baselines import baseline_path
from .engine import check_records, read_records

#: Default re-submissions of a task after its worker process or node died.
DEFAULT_RETRIES = 3

#: Files of a corpus folder a task may read (``all.spacy`` is never read by a grid).
_CORPUS_GLOB = "*/*.spacy"


@dataclasses.dataclass(frozen=True)
class Shipped:
    """A file or folder in Ray's object store, as deterministic tar bytes.

    Attributes:
        digest: sha256 of the bytes; the node-local copy lives in ``<cache>/<digest>/``.
        ref: The ``ray.ObjectRef`` of the bytes.
        name: The file or folder name inside the copy.
    """

    digest: str
    ref: Any
    name: str


def pack(root: Path, members: Sequence[Path] | None = None, *, top: bool = True) -> bytes:
    """Tar ``root`` (a file, or a folder with all or only ``members`` of it), reproducibly.

    Times and owners are zeroed, so the same content gives the same bytes and digest.

    Args:
        root: A file or folder.
        members: Files under a folder ``root`` to include (default: all).
        top: Put the files under ``root``'s name in the tar (False: relative to ``root``).
    """
    root = Path(root)
    prefix = Path(root.name) if top else Path()
    if members is None:
        members = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in members:
            arcname = root.name if path == root else str(prefix / Path(path).relative_to(root))
            tar.add(path, arcname=arcname, recursive=False, filter=clean)
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> None:
    """Extract tar bytes from :func:`pack` into the folder ``dest`` (created)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")


def cache_dir() -> Path:
    """Where a node keeps its copies of shipped inputs ($ADAPTNER_RAY_CACHE or the temp dir)."""
    env = os.environ.get("ADAPTNER_RAY_CACHE")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"adaptner-ray-{os.getuid()}"


def materialize(item: Shipped) -> Path:
    """The node-local path of a shipped input, unpacked on first use (first writer wins)."""
    import ray

    folder = cache_dir() / item.digest
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{item.digest[:12]}.", dir=folder.parent))
        try:
            unpack(ray.get(item.ref), tmp)
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():  # not a lost race with another worker: a real error
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return folder / item.name


class Shipper:
    """Driver side: put each input into the object store once and name what a task needs."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Shipped] = {}

    def ship(self, path: Path, members: Sequence[Path] | None = None) -> Shipped:
        """Ship a file or folder (or some ``members`` of a folder) once per grid.

        Raises:
            AdaptnerError: ``path`` does not exist.
        """
        import ray

        path = Path(path).resolve()
        key = (str(path), ",".join(map(str, members or [])))
        if key not in self._items:
            if not path.exists():
                raise AdaptnerError(f"{path} does not exist: nothing to ship to the Ray workers.")
            data = pack(path, members)
            digest = hashlib.sha256(data).hexdigest()
            self._items[key] = Shipped(digest, ray.put(data), path.name)
        return self._items[key]

    def corpus(self, corpus_dir: Path) -> Shipped:
        """The DocBins of a corpus folder (every split, without ``all.spacy``)."""
        corpus_dir = Path(corpus_dir).resolve()
        members = sorted(p for p in corpus_dir.glob(_CORPUS_GLOB) if p.name != "all.spacy")
        return self.ship(corpus_dir, members)

    def inputs(self, kind: str, cfg: Any) -> dict[str, Shipped]:
        """Config field -> shipped input, for the fields a task of ``kind`` reads from disk."""
        out = {"corpus_dir": self.corpus(cfg.corpus_dir)}
        if kind == "train":
            out["train_config"] = self.ship(cfg.train_config)
            return out
        task = cfg.train_task() if kind == "baseline" else None
        if task is not None:  # target_only / joint: the trained pipeline, not the source
            models = Path(cfg.models_dir).resolve()
            model_dir = Path(task.model_dir).resolve()
            out["models_dir"] = self.ship(
                models, sorted(p for p in model_dir.rglob("*") if p.is_file())
            )
        else:
            out["source_model"] = self.ship(cfg.source_model)
        return out


# --- the worker side --------------------------------------------------------------------


def remote_task(
    kind: str, cfg: Any, inputs: dict[str, Shipped], records: list[dict[str, Any]]
) -> Iterator[tuple[str, Any]]:
    """One grid task on a Ray worker, as a streaming generator.

    Yields ``("record", dict)`` per finished round, then ``("baseline", json_text)`` or
    ``("model", tar_bytes)`` for baselines and trainings, and last ``("done", result)``
    (the :func:`~adaptner.simulation.grid.execute_task` report).

    Args:
        kind: "train", "baseline" or "run".
        cfg: Its config; fields named in ``inputs`` are replaced by node-local copies.
        inputs: Config field -> shipped input.
        records: The run's rounds saved by the driver (a run resumes after them).
    """
    from .grid import execute_task

    scratch = Path(tempfile.mkdtemp(prefix="adaptner-task-"))
    try:
        local = {name: materialize(item) for name, item in inputs.items()}
        if kind == "train":
            local["model_dir"] = scratch / "model"
        cfg = dataclasses.replace(cfg, **local)
        if kind == "run" and records:
            write_text(
                scratch / f"{cfg.run_id}.jsonl",
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
            )
        out: queue.Queue = queue.Queue()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result.update(execute_task(kind, cfg, str(scratch), on_record=lambda r: out.put(r)))
            finally:
                out.put(None)

        worker = threading.Thread(target=work, name="adaptner-task", daemon=True)
        worker.start()
        while (record := out.get()) is not None:
            yield "record", record
        worker.join()
        if not result.get("error"):
            if kind == "baseline":
                yield "baseline", baseline_path(cfg, scratch).read_text(encoding="utf8")
            elif kind == "train":
                yield "model", pack(cfg.model_dir, top=False)
        yield "done", result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- the driver side --------------------------------------------------------------------


def connect(address: str | None) -> None:
    """Start a local Ray, or join the cluster at ``address`` (also read from $RAY_ADDRESS).

    Raises:
        AdaptnerError: Ray is not installed, or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise AdaptnerError(
            "--backend ray needs Ray: pip install 'adaptner[ray]' (or pip install ray), or use "
            "--backend local."
        ) from None
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or os.environ.get("RAY_ADDRESS") or "a new local Ray"
        raise AdaptnerError(
            f"Cannot start or join Ray at {where} ({type(e).__name__}: {e}). Check --ray-address "
            "(host:port of the head's GCS, e.g. 10.0.0.1:6379) and that `ray start --head` runs "
            "there with the same Ray and Python versions."
        ) from e


def _retryable() -> tuple[type[BaseException], ...]:
    """Ray errors that mean the worker process or node died (not the task's own failure)."""
    import ray.exceptions as rex

    names = (
        "WorkerCrashedError",
        "NodeDiedError",
        "LocalRayletDiedError",
        "ObjectLostError",
        "OwnerDiedError",
        "OutOfMemoryError",
    )
    return tuple(getattr(rex, n) for n in names if hasattr(rex, n))


def saved_rounds(cfg: Any, path: Path) -> list[dict[str, Any]]:
    """The rounds of a run saved in ``path`` (a torn last line is dropped from the file).

    Raises:
        AdaptnerError: the file belongs to another run or has a gap (see ``check_records``).
    """
    records, torn = read_records(path)
    check_records(records, cfg, path)
    if torn:
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records


def save_model(task: Any, data: bytes) -> None:
    """Unpack a pipeline trained on a worker into the task's ``model_dir`` (atomically).

    ``train_meta.json`` names the driver's training config, so later grids find it cached.
    """
    with atomic_path(task.model_dir, is_dir=True) as tmp:
        unpack(data, tmp)
        meta_path = tmp / "train_meta.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf8"))
            meta["config"] = str(task.train_config)
            write_json(meta_path, meta)


@dataclasses.dataclass
class _Attempt:
    kind: str
    cfg: Any
    name: str
    attempt: int = 0
    saved: int = 0  # rounds of the run on disk


def run_tasks(
    tasks: list[tuple[str, Any, int]],
    output_dir: Path,
    bar: tqdm,
    *,
    name_of: Callable[[str, Any], str],
    retries: int = DEFAULT_RETRIES,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run grid tasks on the connected Ray cluster; the driver writes every result.

    Args:
        tasks: (kind, config, units) as in ``GridPlan.remaining``.
        output_dir: The grid's results folder (on the driver).
        bar: Progress bar, advanced per round / baseline / trained pipeline.
        name_of: Task name for messages and Ray's task name (``ray::adaptner:<name>``).
        retries: Re-submissions after the worker process or node died.
        log: Where one-line messages go.

    Returns:
        One report per task (``{"task", "error"}``).
    """
    import ray

    remote = ray.remote(num_cpus=1, max_retries=0)(remote_task)
    shipper = Shipper()
    retryable = _retryable()
    results: list[dict[str, Any]] = []
    running: dict[Any, _Attempt] = {}

    def submit(a: _Attempt) -> None:
        records: list[dict[str, Any]] = []
        try:
            if a.kind == "run":
                records = saved_rounds(a.cfg, output_dir / f"{a.cfg.run_id}.jsonl")
                a.saved = len(records)  # a finished run is not among the tasks; one saved
                # as finished at a smaller budget goes on from its last round on the worker
            inputs = shipper.inputs(a.kind, a.cfg)
        except AdaptnerError as e:
            results.append({"task": a.name, "error": str(e)})
            return
        options = {"name": f"adaptner:{a.name}"}
        running[remote.options(**options).remote(a.kind, a.cfg, inputs, records)] = a

    def receive(a: _Attempt, tag: str, value: Any) -> bool:
        """Handle one streamed item; True when the task is finished."""
        if tag == "record":
            if value.get("round") == a.saved:  # a round already saved is not written again
                append_jsonl(output_dir / f"{a.cfg.run_id}.jsonl", value)
                a.saved += 1
                bar.update(1)
        elif tag == "baseline":
            write_text(baseline_path(a.cfg, output_dir), value)
        elif tag == "model":
            save_model(a.cfg, value)
        elif tag == "done":
            if a.kind != "run" and not value.get("error"):
                bar.update(1)
            results.append(value)
            return True
        return False

    for kind, cfg, _ in tasks:
        submit(_Attempt(kind, cfg, name_of(kind, cfg)))
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        for gen in ready:
            a = running.pop(gen)
            try:
                tag, value = ray.get(next(gen))
            except StopIteration:
                results.append({"task": a.name, "error": "the Ray task ended without a result"})
                continue
            except retryable as e:
                if a.attempt < retries:
                    a.attempt += 1
                    log(
                        f"⚠ {a.name}: its Ray worker died ({type(e).__name__}); re-running from "
                        f"round {a.saved} (retry {a.attempt} of {retries})"
                    )
                    submit(a)
                else:
                    results.append(
                        {
                            "task": a.name,
                            "error": f"its Ray worker died {retries + 1} times ({e})",
                        }
                    )
                continue
            except ray.exceptions.RayError as e:
                results.append({"task": a.name, "error": f"Ray: {type(e).__name__}: {e}"})
                continue
            if not receive(a, tag, value):
                running[gen] = a
    return results
