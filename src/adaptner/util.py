"""Small shared helpers: atomic writes, seeding, domain selection."""

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import AdaptnerError
from .labels import DOMAINS

PathLike = str | Path


#: The file every directory-writing command leaves in its output, naming the command.
OUTPUT_MARKER = ".adaptner-output.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(path: PathLike, log: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the ``.NAME.*.tmp`` / ``.NAME.old-*`` siblings a killed run left beside ``path``.

    Temporaries carry the pid of the process that made them (``.NAME.<pid>-<random>.tmp``);
    those of a live process other than this one are left alone (a concurrent run).

    Args:
        path: The final output path (file or directory).
        log: Where to say what was removed (default: stderr).

    Returns:
        The removed paths.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    prefix = f".{path.name}."
    for p in path.parent.iterdir():
        name = p.name
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if rest.endswith(".tmp"):
            pid_part = rest.split("-", 1)[0]
        elif rest.startswith("old-"):
            pid_part = rest[len("old-") :]
        else:
            continue
        if pid_part.isdigit() and _pid_alive(int(pid_part)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    for p in removed:
        msg = f"ℹ removed {p}, left by an interrupted run"
        if log is not None:
            log(msg)
        else:
            print(msg, file=sys.stderr)
    return removed


#: Errors of the file system rather than of the program: errno -> (cause, remedy).
_FS_ERRORS = {
    errno.ENOSPC: ("No space left on device", "free space and rerun"),
    errno.EDQUOT: ("Disk quota exceeded", "free space and rerun"),
    errno.EACCES: ("Permission denied", "choose a location you may write to"),
    errno.EPERM: ("Operation not permitted", "choose a location you may write to"),
    errno.EROFS: ("Read-only file system", "choose a writable location"),
}


def _file_system_cause(e: BaseException) -> tuple[str, str] | None:
    """(cause, remedy) of a file-system error: an ``OSError`` or a sqlite3 one (the store)."""
    if isinstance(e, OSError):
        return _FS_ERRORS.get(e.errno)
    name = str(getattr(e, "sqlite_errorname", ""))
    if name == "SQLITE_FULL":
        return _FS_ERRORS[errno.ENOSPC]
    if name.startswith("SQLITE_READONLY") or name == "SQLITE_PERM":
        return (
            "Read-only database",
            "check the permissions of the file and its folder, or choose a writable location",
        )
    return None


def file_system_error(
    e: BaseException, path: PathLike | None = None, tmp: PathLike | None = None
) -> AdaptnerError | None:
    """One line for a disk-full, permission or read-only error, naming the path; else None.

    Args:
        e: The exception: an ``OSError`` (or a sqlite3 error) of those kinds; anything else
            gives None.
        path: The output being written; named when the error is about it or its temporary
            ``tmp`` (or names no file). An error about another file names that file.
        tmp: The temporary that becomes ``path``.
    """
    found = _file_system_cause(e)
    if found is None:
        return None
    cause, remedy = found
    names = (getattr(e, "filename", None), getattr(e, "filename2", None))  # a copy: both
    named = [str(f) for f in names if f is not None]
    ours = [str(p) for p in (path, tmp) if p is not None]
    if path is not None and (not named or any(f.startswith(p) for f in named for p in ours)):
        return AdaptnerError(f"{cause} writing {path}: {remedy}.")
    if getattr(e, "errno", None) in (errno.EACCES, errno.EPERM):  # maybe an input, too
        remedy = "check the permissions of the file and its folders"
    if not named:
        return AdaptnerError(f"{cause} ({e}): {remedy}.")
    return AdaptnerError(f"{cause}: {named[-1]}: {remedy}.")


def raise_file_system_error(e: BaseException) -> None:
    """In a broad ``except``: raise the one-line error for a disk-full, permission or
    read-only ``OSError`` (naming its file), so that it is not reported as a broken input."""
    error = file_system_error(e)
    if error is not None:
        raise error from e


@contextlib.contextmanager
def writing(path: PathLike, tmp: PathLike | None = None) -> Iterator[None]:
    """Turn a disk-full, permission or read-only error in the block into one AdaptnerError.

    The message names ``path`` (the output the user asked for), not its temporary ``tmp``.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised unless a file-system error
        error = file_system_error(e, path, tmp)
        if error is None:
            raise
        raise error from e


def _check_parents(path: Path) -> None:
    """An AdaptnerError when a folder above ``path`` is a file (``notes.txt/out``)."""
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists() and not parent.is_dir():
            raise AdaptnerError(f"Cannot write {path}: {parent} is a file, not a directory.")


def _make_parent(path: Path) -> list[Path]:
    """Create the parent folders of ``path``; an AdaptnerError naming the path on failure.

    Returns:
        The folders created, innermost first.
    """
    _check_parents(path)
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AdaptnerError(f"Cannot write {path}: {e.strerror or e} ({path.parent}).") from e
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders (innermost first) that a failed write created and left empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def atomic_path(path: PathLike, is_dir: bool = False, work: Path | None = None) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds.

    Readers never see a half-written file or directory: on an exception the
    temporary is removed and ``path`` is left as it was. A directory that is replaced is
    kept until the new one is in place. Commands that write a directory the user names
    use :func:`atomic_output`, which adds the checks of the output policy.

    ``work`` names the temporary directory instead (created if missing) and keeps it when
    the block fails, so that a resumable command can continue in it.

    Raises:
        AdaptnerError: the path cannot be written (a parent is a file, no permission).
    """
    path = Path(path)
    created = _make_parent(path)
    prefix = f".{path.name}.{os.getpid()}-"
    try:
        with writing(path):
            if work is not None:
                tmp = Path(work)
                tmp.mkdir(parents=True, exist_ok=True)
            elif is_dir:
                tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
            else:
                fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
                os.close(fd)
                tmp = Path(name)
    except BaseException as e:
        _remove_empty(created)
        if isinstance(e, OSError):
            raise AdaptnerError(f"Cannot write {path}: {e.strerror or e} ({path.parent}).") from e
        raise
    umask = os.umask(0)
    os.umask(umask)
    try:
        with writing(path, tmp):
            yield tmp
            os.chmod(tmp, (0o777 if is_dir else 0o666) & ~umask)
            if is_dir:
                old = None
                if path.exists():
                    old = path.with_name(f".{path.name}.old-{os.getpid()}")
                    if old.exists():
                        shutil.rmtree(old)
                    os.replace(path, old)
                os.replace(tmp, path)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    except BaseException:
        if work is not None:
            raise
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        _remove_empty(created)
        raise


def output_owner(path: PathLike, owned_files: Sequence[str] = ()) -> str | None:
    """The command that wrote directory ``path`` (from its marker), or None if unknown.

    A directory without a marker counts as written by ``"legacy"`` when it holds one of
    ``owned_files`` (what the command wrote before markers existed, e.g. train_meta.json).
    """
    path = Path(path)
    marker = path / OUTPUT_MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text(encoding="utf8")).get("command"))
        except (json.JSONDecodeError, AttributeError, OSError):
            return None
    if any((path / name).exists() for name in owned_files):
        return "legacy"
    return None


def check_output_folder(path: PathLike, command: str) -> None:
    """An AdaptnerError when ``path``, where ``command`` writes a directory, is a file or
    lies under a file."""
    path = Path(path)
    _check_parents(path)
    if path.exists() and not path.is_dir():
        raise AdaptnerError(
            f"Output {path} is a file, not a directory; `adaptner {command}` writes a "
            "directory. Choose another --output."
        )


def check_output_dir(
    path: PathLike, command: str, *, force: bool = False, owned_files: Sequence[str] = ()
) -> None:
    """The output policy: may ``command`` replace ``path``?

    Yes when ``path`` does not exist, is an empty directory, or was written by ``command``
    (its marker, or one of ``owned_files``); otherwise only with ``force``. A file is never
    replaced by a directory.

    Raises:
        AdaptnerError: naming the path, what is there and what to do.
    """
    path = Path(path)
    check_output_folder(path, command)
    if not path.is_dir() or force:
        return
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    owner = output_owner(path, owned_files)
    if owner in (command, "legacy"):
        return
    what = (
        f"was written by `adaptner {owner}`"
        if owner
        else f"was not written by `adaptner {command}` (no {OUTPUT_MARKER})"
    )
    shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
    raise AdaptnerError(
        f"Output {path} exists and {what}; refusing to replace its {len(entries)} entries "
        f"({shown}). Choose another --output, or pass --force to replace it."
    )


@contextlib.contextmanager
def atomic_output(
    path: PathLike,
    command: str,
    *,
    force: bool = False,
    owned_files: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    work: Path | None = None,
) -> Iterator[Path]:
    """Write a command's output directory under the one output policy.

    Checks :func:`check_output_dir`, removes temporaries of killed runs (with a message),
    then yields a temporary directory that replaces ``path`` only when the block succeeds
    (the old output stays until then), with a marker file naming ``command``.

    Args:
        path: The output directory.
        command: The command writing it (``"train"``, ``"corpus"``), stored in the marker.
        force: Replace a directory that this command did not write.
        owned_files: Files that mark an output this command wrote before markers existed.
        log: Where messages go (default: stderr).
        work: A fixed working directory that survives a failure (see :func:`atomic_path`).

    Raises:
        AdaptnerError: the policy refuses, or the path cannot be written.
    """
    check_output_dir(path, command, force=force, owned_files=owned_files)
    clean_stale_temps(path, log)
    with atomic_path(path, is_dir=True, work=work) as tmp:
        yield tmp
        _write_marker(tmp / OUTPUT_MARKER, command)


def _write_marker(marker: Path, command: str) -> None:
    from .about import __version__

    marker.write_text(
        json.dumps({"command": command, "adaptner": __version__, "written": time.time()}) + "\n",
        encoding="utf8",
    )


def claim_output_dir(
    path: PathLike, command: str, *, force: bool = False, owned_files: Sequence[str] = ()
) -> Path:
    """The output policy for a command that adds files to its folder one at a time.

    Such a command (``datamap``, ``aum``, ``distil``, ``curves``) writes each file
    atomically and may add to its own earlier output (``distil`` labels domains in several
    runs), so the folder is not replaced as a whole: it is checked as by
    :func:`check_output_dir`, created, and marked as ``command``'s before anything is written.

    Raises:
        AdaptnerError: the policy refuses, or the folder cannot be created.
    """
    path = Path(path)
    check_output_dir(path, command, force=force, owned_files=owned_files)
    created = not path.exists()
    tmp = path / f".{OUTPUT_MARKER}.{os.getpid()}.tmp"
    try:
        with writing(path, tmp):
            path.mkdir(parents=True, exist_ok=True)
            _write_marker(tmp, command)
            os.replace(tmp, path / OUTPUT_MARKER)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def check_output_file(path: PathLike, command: str, beside: Sequence[PathLike] = ()) -> None:
    """The output policy for a command that writes a file (and the files ``beside`` it).

    Run before the work starts: a path that is a directory, or lies under a file, is
    refused with one line; an existing file is replaced (atomically) when written.

    Raises:
        AdaptnerError: naming the path and what to do.
    """
    for target in (Path(path), *map(Path, beside)):
        _check_parents(target)
        if target.is_dir():
            raise AdaptnerError(
                f"Output {target} is a directory; `adaptner {command}` writes a file there. "
                "Choose a file path for --output."
            )


@contextlib.contextmanager
def file_lock(path: PathLike, what: str, *, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created, holding the holder's pid) for the block.

    The lock is the operating system's (``flock``): it is released when the holder exits,
    even by ``kill -9``, so a stale lock file never blocks anyone.

    Args:
        path: The lock file.
        what: What the lock protects, for the error (``"simulation run X"``).
        wait: Wait for another holder to finish instead of failing.

    Raises:
        AdaptnerError: another process holds the lock (its pid named; not with ``wait``).
    """
    import fcntl

    path = Path(path)
    _make_parent(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("utf8", "replace").strip() or "?"
            raise AdaptnerError(
                f"{what} is being written by another process (pid {holder}; lock {path}). "
                "Wait for it to finish, or stop that process; two writers would corrupt it."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def lock_holder(path: PathLike) -> int | None:
    """The pid of the process holding :func:`file_lock` on ``path``, or None (not held)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: nobody ever held it
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 64, 0).decode("utf8", "replace").strip()
            return int(text) if text.isdigit() else -1
        return None
    finally:
        os.close(fd)


def exit_with_parent(interval: float = 0.5) -> None:
    """Make this (worker) process exit as soon as the process that started it is gone.

    Used as the initializer of worker processes, so killing a driver (even with
    ``kill -9``) does not leave orphaned workers writing results.
    """
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def dir_bytes(path: PathLike) -> int:
    """The size of every file under a folder, in bytes."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def write_json(path: PathLike, data: Any) -> None:
    """Write JSON atomically (indented, UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf8")


def write_jsonl(path: PathLike, lines: Iterable[Any]) -> None:
    """Write JSONL atomically."""
    with atomic_path(path) as tmp:
        import srsly  # here, not at the top: the CLI imports util before it needs srsly

        srsly.write_jsonl(tmp, lines)


def write_text(path: PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf8")


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports each public name on first use.

    Args:
        package: The package's ``__name__``.
        exports: Public name -> the module that defines it, relative to ``package``
            (``".engine"``, ``"..scoring"``).
    """
    from importlib import import_module

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(import_module(exports[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def read_jsonl(
    path: PathLike, *, lines: Iterable[str] | None = None, objects: bool = True, hint: str = ""
) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of a JSON Lines file: the one reader.

    Args:
        path: The file (read as UTF-8, gunzipped when it ends in ``.gz``); named in errors.
        lines: The file's lines when the caller has read it already.
        objects: Every line must hold a JSON object.
        hint: A sentence appended to the error for a line that is not JSON.

    Raises:
        AdaptnerError: ``path:line: invalid JSON (...)`` or ``path:line: expected a JSON
            object per line``.
    """
    path = Path(path)
    if lines is None:
        import gzip

        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf8") as f:  # type: ignore[operator]
            yield from read_jsonl(path, lines=list(f), objects=objects, hint=hint)
        return
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise AdaptnerError(
                f"{path}:{lineno}: invalid JSON ({e.msg}).{' ' + hint if hint else ''}"
            ) from None
        if objects and not isinstance(value, dict):
            raise AdaptnerError(f"{path}:{lineno}: expected a JSON object per line.")
        yield lineno, value


def append_jsonl(path: PathLike, record: Any) -> None:
    """Append one JSON line and fsync, so a killed process leaves whole lines only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with path.open("a", encoding="utf8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def relative_to_cwd(path: PathLike) -> str:
    """`` (relative to /the/working/dir)`` for a relative path, else ``""``: where a
    project path such as ``corpus/train`` was looked for."""
    return "" if Path(path).is_absolute() else f" (relative to {Path.cwd()})"


def shipped_configs(folder: str = "") -> dict[str, Path]:
    """The configs that ship with adaptner (``configs/`` in the repository links to them), by
    name: ``bio_cnn``, ``test/bio_cnn``, or with ``folder="al"`` ``default``, ``e5``…"""
    from importlib.resources import files

    root = Path(str(files("adaptner") / "configs")) / folder
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.cfg"))}


def find_config(
    spec: PathLike, what: str, folder: str = "", exclude: tuple[str, ...] = ("al/",)
) -> Path:
    """A config: a path to a .cfg file, or the name of one that ships with adaptner.

    A path is read as given (relative to the working directory); a name (no ``.cfg``) is
    found from any working directory.

    Args:
        spec: A path or a shipped name (``bio_cnn``; ``default`` with ``folder="al"``).
        what: What it is, for the error (``"Config file"``, ``"AL config"``).
        folder: The shipped configs' subfolder (``"al"``).
        exclude: Prefixes of shipped names that are not of this kind (the AL configs, for
            training configs).

    Raises:
        AdaptnerError: neither a file nor a shipped name (the names listed).
    """
    path = Path(spec)
    if path.is_file():
        return path
    shipped = {n: p for n, p in shipped_configs(folder).items() if not n.startswith(exclude)}
    if path.suffix != ".cfg" and str(spec) in shipped:
        return shipped[str(spec)]
    raise AdaptnerError(
        f"{what} {spec} does not exist{relative_to_cwd(spec)}. Pass a .cfg path or the name of "
        f"one that ships with adaptner: {', '.join(shipped)}."
    )


def closest_hint(name: str, valid: Sequence[str], prefix: str = "", suffix: str = "") -> str:
    """`` (did you mean X?)`` for the valid name closest to ``name`` (difflib), else ``""``.

    Args:
        name: What the user wrote.
        valid: The valid names.
        prefix: Put before the suggestion (``"--training."``); ``"[]"`` wraps it in brackets.
        suffix: Put after the suggestion.
    """
    import difflib

    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    if not match:
        return ""
    shown = f"[{match[0]}]" if prefix == "[]" else f"{prefix}{match[0]}"
    return f" (did you mean {shown}{suffix}?)"


def parse_domains(spec: str | Sequence[str], available: Sequence[str] = DOMAINS) -> list[str]:
    """Resolve a domain selection to a list of slugs.

    Accepted forms: ``"all"``; one slug (``"news"``); a comma-separated list
    (``"news,legal"``); all but some (``"all-but:legal"`` or ``"all-but:legal,web"``).

    Raises:
        AdaptnerError: on an unknown domain name, naming the known ones.
    """
    if not isinstance(spec, str):
        spec = ",".join(spec)
    spec = spec.strip()
    known = list(available)
    if spec in ("all", "*", ""):
        return known
    if spec.startswith("all-but:"):
        excluded = _check_domains(spec[len("all-but:") :].split(","), known)
        return [d for d in known if d not in excluded]
    return _check_domains(spec.split(","), known)


def _check_domains(names: Iterable[str], known: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name not in known:
            raise AdaptnerError(
                f"Unknown domain {name!r}. Known domains: {', '.join(known)} "
                "(or 'all', or 'all-but:<domain>')."
            )
        if name not in out:
            out.append(name)
    if not out:
        raise AdaptnerError("Empty domain selection.")
    return out


def load_spacy(path: PathLike, remedy: str):
    """``spacy.load(path)``, turning any failure into an AdaptnerError naming the directory.

    Args:
        path: A pipeline directory (or an installed package name).
        remedy: What the user should do, appended to the message.
    """
    import spacy

    check_pipeline_trf(path)
    try:
        return spacy.load(path)
    except Exception as e:  # noqa: BLE001 - spaCy raises many kinds on a broken pipeline
        raise_file_system_error(e)
        raise AdaptnerError(
            f"Cannot load the pipeline in {path} ({type(e).__name__}: {e}). {remedy}"
        ) from e


def load_pipeline(path: PathLike, remedy: str = "Re-train it with `adaptner train`."):
    """Load a trained pipeline directory: the one loader of adaptner.

    Checks that ``path`` is a pipeline directory (``config.cfg`` and ``meta.json``; points at
    ``model-best`` when that is what was meant), installs the ``doc._`` extensions, checks the
    transformer extra when the pipeline needs it, and loads it through :func:`load_spacy`.
    Callers check the components they need on the returned pipeline.

    Raises:
        AdaptnerError: the directory is missing, is not a pipeline, or cannot be loaded.
    """
    from .extensions import install_extensions

    path = Path(path)
    example = "Pass a trained pipeline, e.g. training/news/model-best."
    if not path.is_dir():
        what = "it is a file" if path.is_file() else "it does not exist"
        raise AdaptnerError(f"{path} is not a spaCy pipeline directory ({what}). {example}")
    if not (path / "config.cfg").is_file() or not (path / "meta.json").is_file():
        hint = f" {example}"
        if (path / "model-best" / "config.cfg").is_file():
            hint = f" Did you mean {path / 'model-best'}?"
        raise AdaptnerError(
            f"{path} is not a spaCy pipeline directory (no config.cfg/meta.json).{hint}"
        )
    install_extensions()
    return load_spacy(path, remedy)


def check_pipeline_trf(path: PathLike) -> None:
    """If ``path`` is a pipeline directory that needs the transformer stack, check it is installed.

    Raises:
        AdaptnerError: the pipeline has a transformer component and the ``trf`` extra is
            missing (says how to install it).
    """
    config_path = Path(path) / "config.cfg"
    if not config_path.is_file():
        return  # an installed package name: pip installed what it depends on
    from confection import Config

    from .trf import check_trf_installed

    try:
        config = Config().from_disk(config_path, interpolate=False)
    except Exception:  # noqa: BLE001 - a broken config is reported by spacy.load
        return
    check_trf_installed(config, f"The pipeline in {path}")


def parse_params(items: Iterable[str], option: str, example: str) -> dict[str, Any]:
    """``["key=value", ...]`` option values to a dict; values are JSON when they parse.

    Args:
        items: The option's values.
        option: The option's name, for the error (e.g. ``--param``).
        example: A valid value, for the error (e.g. ``aggregation=max``).

    Raises:
        AdaptnerError: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise AdaptnerError(f"{option} {item!r} must look like key=value (e.g. {example}).")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
