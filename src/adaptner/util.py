"""Small shared helpers: atomic writes, seeding, domain selection."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import AdaptnerError
from .labels import DOMAINS

PathLike = str | Path


@contextlib.contextmanager
def atomic_path(path: PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds.

    Readers never see a half-written file or directory: on an exception the
    temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
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
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


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


def append_jsonl(path: PathLike, record: Any) -> None:
    """Append one JSON line and fsync, so a killed process leaves whole lines only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with path.open("a", encoding="utf8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


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
        raise AdaptnerError(
            f"Cannot load the pipeline in {path} ({type(e).__name__}: {e}). {remedy}"
        ) from e


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
