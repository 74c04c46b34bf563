"""Build installable wheels of trained or adapted pipelines (``adaptner package``).

How the ``bio_ner`` code travels: the pipeline wheel *depends on the adaptner package*, and
``adaptner package`` builds adaptner itself as a second wheel into the same folder. A user
installs both offline with ``pip install --no-index --find-links packages/ <name>``.

Why not ``spacy package --code``: ``--code`` copies single files into the pipeline package,
but the component imports the rest of adaptner (extensions, labels, architectures, errors,
registries), so a bundled file would be a second, divergent copy of the package. Depending
on the real package keeps one source of truth, gives the registered names (factories,
architectures) through adaptner's entry points, and pins the code version the weights were
trained with (``adaptner>=X.Y.0,<X.Y+1.0`` in ``meta.json`` "requirements", which
``spacy package`` turns into the wheel's dependencies). A transformer pipeline depends on
``adaptner[trf]`` instead (spacy-transformers, transformers and torch, pinned; spaCy adds
spacy-transformers' range too), and spacy-transformers serializes the transformer's weights
and tokenizer into the package, so loading needs no model hub. A CNN pipeline's wheel pulls
no torch, and loading it imports none (see :mod:`adaptner.trf`).

Both wheels are built from a staging copy with ``python -m build --wheel --no-isolation``:
build isolation would download setuptools on every call, which fails offline, and building
adaptner in a copy leaves no ``build/`` or ``*.egg-info`` in the repository. The pipeline
package itself is laid out by spaCy's own ``spacy package`` code (``spacy.cli.package``).
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .about import __version__
from .errors import AdaptnerError
from .util import OUTPUT_MARKER, PathLike, atomic_path, check_output_folder, read_jsonl
from .util import load_pipeline as load_trained

#: Components that predict entities, in order of preference.
NER_FACTORIES: tuple[str, ...] = ("bio_ner", "ner")

#: Where the corpus came from (shown in meta.json "sources" and the README).
DANSK_SOURCE: dict[str, str] = {
    "name": "DANSK (Danish Annotations for NLP Specific TasKs)",
    "author": "Enevoldsen, Jessen & Baglini (2024)",
}

_NO_HISTORY = "none"


@dataclass
class PackageResult:
    """What :func:`package_pipeline` built."""

    name: str
    version: str
    wheel: Path
    adaptner_wheel: Path | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def wheels(self) -> list[Path]:
        """Every wheel built, the pipeline's first."""
        return [self.wheel] + ([self.adaptner_wheel] if self.adaptner_wheel else [])


# --- checks ---------------------------------------------------------------------------


def check_pipeline_dir(path: PathLike) -> dict[str, Any]:
    """Check that ``path`` holds a trained spaCy pipeline; return its meta.json.

    A pipeline directory has ``config.cfg`` and ``meta.json``. It counts as never trained
    when a trainable component has its ``cfg`` but no ``model`` weights, or when the meta
    records no evaluation (no "performance") and there is no ``train_meta.json`` beside it.

    Raises:
        AdaptnerError: not a directory, not a pipeline, unreadable meta, never trained.
    """
    path = Path(path)
    if not path.exists():
        raise AdaptnerError(f"Pipeline directory {path} does not exist.")
    missing = [name for name in ("config.cfg", "meta.json") if not (path / name).is_file()]
    if not path.is_dir() or missing:
        hint = ""
        if path.is_dir() and (path / "model-best" / "config.cfg").is_file():
            hint = f" Did you mean {path / 'model-best'}?"
        what = "it is a file" if path.is_file() else f"no {' / '.join(missing)}"
        raise AdaptnerError(
            f"{path} is not a spaCy pipeline directory ({what}). Point it at a trained "
            f"pipeline, e.g. training/<domain>/model-best.{hint}"
        )
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf8"))
    except (OSError, ValueError) as e:
        raise AdaptnerError(f"{path / 'meta.json'} is not valid JSON ({e}).") from e
    if not isinstance(meta, dict):
        raise AdaptnerError(f"{path / 'meta.json'} must hold a JSON object.")
    untrained = [
        sub.name
        for sub in sorted(path.iterdir())
        if sub.is_dir() and (sub / "cfg").is_file() and not (sub / "model").exists()
    ]
    if untrained:
        raise never_trained(path, f"no model weights for {', '.join(untrained)}")
    if not meta.get("performance") and not (path.parent / "train_meta.json").is_file():
        raise never_trained(path, "its meta.json records no evaluation")
    return meta


def never_trained(path: PathLike, reason: str) -> AdaptnerError:
    """The error for a pipeline that was created but never trained."""
    return AdaptnerError(
        f"{path} was never trained ({reason}): train it first with adaptner train."
    )


def load_pipeline(path: PathLike):
    """Load a checked pipeline and find its NER component.

    Returns:
        (nlp, name of the NER component)

    Raises:
        AdaptnerError: the pipeline fails to load, has no NER component, or no labels.
    """
    path = Path(path)
    nlp = load_trained(path, "Re-train it with adaptner train.")
    ner = [name for name in nlp.pipe_names if nlp.get_pipe_meta(name).factory in NER_FACTORIES]
    if not ner:
        raise AdaptnerError(
            f"{path} has no entity recognizer (components: {', '.join(nlp.pipe_names) or 'none'}"
            f"); adaptner packages pipelines with a {' or '.join(NER_FACTORIES)} component."
        )
    if not nlp.get_pipe(ner[0]).labels:
        raise never_trained(path, f"component {ner[0]!r} has no labels")
    return nlp, ner[0]


# --- names ----------------------------------------------------------------------------


def domain_part(spec: str) -> str:
    """A domain selection as part of a Python identifier: "all-but:legal" -> "all_but_legal"."""
    part = re.sub(r"[^0-9A-Za-z]+", "_", str(spec)).strip("_").lower()
    if not part:
        raise AdaptnerError(f"Domain {spec!r} gives an empty package name part.")
    return part


def package_name(source: str, target: str, pipeline: str) -> str:
    """The meta.json name ``adaptner_<source>_<target>_<pipeline>`` (spaCy prefixes the
    language); ``pipeline`` says which pipeline it is (see :func:`pipeline_part`), so two
    pipelines trained on the same domains get different packages."""
    return f"adaptner_{domain_part(source)}_{domain_part(target)}_{domain_part(pipeline)}"


def pipeline_part(model_dir: Path, nlp) -> str:
    """Which pipeline a model is, for its package name: the stem of the training config in
    ``train_meta.json`` beside it (``bio_cnn``, ``bio_trf_e5``), else ``trf`` or ``cnn``."""
    train_meta_path = model_dir.parent / "train_meta.json"
    try:
        config = json.loads(train_meta_path.read_text(encoding="utf8")).get("config")
    except (OSError, ValueError, AttributeError):
        config = None
    if config:
        return Path(str(config)).stem
    from .trf import config_needs_trf

    return "trf" if config_needs_trf(nlp.config) else "cnn"


def wheel_built_from(wheel: Path, full_name: str, version: str) -> str | None:
    """The model directory an existing pipeline wheel was built from (its meta.json), if known."""
    import zipfile

    try:
        with zipfile.ZipFile(wheel) as z:
            meta = json.loads(z.read(f"{full_name}/{full_name}-{version}/meta.json"))
        return meta["adaptner"]["built_from"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None


def check_name(name: str, lang: str) -> str:
    """Validate a package name; return the installed name (``<lang>_<name>``)."""
    full = name if name.startswith(f"{lang}_") else f"{lang}_{name}"
    if not full.isidentifier() or not full.isascii() or "__" in full:
        raise AdaptnerError(
            f"Package name {full!r} is not usable: use ASCII letters, digits and single "
            "underscores (it is imported as a Python module)."
        )
    return full


def check_version(version: str) -> str:
    """Validate a package version (PEP 440 style: 1.0.0, 0.2.1rc1)."""
    if not re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", version):
        raise AdaptnerError(
            f"Version {version!r} is not a valid package version; use e.g. 0.1.0 or 1.2.0rc1."
        )
    return version


def infer_domains(model_dir: Path, history: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """Source and target domains from the history, else from ``train_meta.json`` beside the model.

    A model trained with ``adaptner train`` on domains D without ``--init-from`` has
    source = target = D. With ``--init-from`` the target is D and the source is unknown.
    """
    source = target = None
    if history:
        source, target = history.get("source"), history.get("target")
    train_meta_path = model_dir.parent / "train_meta.json"
    if train_meta_path.is_file() and (source is None or target is None):
        try:
            train_meta = json.loads(train_meta_path.read_text(encoding="utf8"))
        except (OSError, ValueError):
            train_meta = {}
        domains = train_meta.get("train_domains")
        if domains:
            target = target or domains
            if not train_meta.get("init_from"):
                source = source or domains
    return source, target


# --- adaptation history and scores ------------------------------------------------------


def read_history(path: PathLike) -> dict[str, Any]:
    """Read an adaptation history: strategy, rounds, labels used (and optionally domains).

    Accepted layouts:

    - a JSON object ``{"strategy": "margin", "rounds": 10, "labels_used": 500,
      "source": "news", "target": "legal"}``; ``rounds`` may also be the list of per-round
      records, ``labels_used`` may be spelled ``labeled_count``/``n_labeled``;
    - JSONL with one record per round, as ``adaptner`` simulations write it
      (metrics/al/<run_id>.jsonl, round 0 = the source model): ``strategy``, ``source``,
      ``target``, ``mode`` and ``seed`` from the records, ``rounds`` = the highest ``round``
      (or the number of records), ``labels_used`` = the largest ``labeled_count``;
    - ``adaptner session status --json``: ``strategy``, ``rounds`` (its list of rounds),
      ``labels_used`` = ``counts.accepted``.

    A ``source``/``target`` that is not a domain selection (e.g. the path of the source
    pipeline, as a session records it) is left out.

    Raises:
        AdaptnerError: a missing or unreadable file, naming the file (and line for JSONL).
    """
    path = Path(path)
    if not path.is_file():
        raise AdaptnerError(f"History file {path} does not exist.")
    text = path.read_text(encoding="utf8")
    records: list[dict[str, Any]]
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        rounds = data.get("rounds")
        records = rounds if isinstance(rounds, list) else []
        out = _history_from_records(records, path) if records else {}
        out.update(
            {
                k: v
                for k, v in {
                    "strategy": data.get("strategy"),
                    "rounds": rounds if isinstance(rounds, int) else None,
                    "labels_used": _labels_used(data),
                    "source": _domain_spec(data.get("source")),
                    "target": _domain_spec(data.get("target")),
                    "seed": data.get("seed"),
                }.items()
                if v is not None
            }
        )
        return _finish_history(out, path)
    records = [record for _, record in read_jsonl(path, lines=text.splitlines())]
    if not records:
        raise AdaptnerError(
            f"History file {path} is empty: expected a JSON object or one JSON line per round."
        )
    return _finish_history(_history_from_records(records, path), path)


def _domain_spec(value: Any) -> str | None:
    """``value`` if it reads as a domain selection ("news", "news,web", "all-but:legal")."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_]+([,:\-][A-Za-z0-9_]+)*", value):
        return value
    return None


def _labels_used(record: dict[str, Any]) -> int | None:
    counts = record.get("counts")
    if isinstance(counts, dict) and isinstance(counts.get("accepted"), int):
        return counts["accepted"]
    for key in ("labels_used", "labeled_count", "n_labeled", "n_annotated", "annotated"):
        if isinstance(record.get(key), (int, float)):
            return int(record[key])
    return None


def _history_from_records(records: Sequence[Any], path: Path) -> dict[str, Any]:
    records = [r for r in records if isinstance(r, dict)]
    out: dict[str, Any] = {}
    strategies = {r["strategy"] for r in records if r.get("strategy")}
    if len(strategies) > 1:
        raise AdaptnerError(
            f"History file {path} mixes strategies ({', '.join(sorted(strategies))}); "
            "pass the history of the run that produced this pipeline."
        )
    if strategies:
        out["strategy"] = strategies.pop()
    rounds = [r["round"] for r in records if isinstance(r.get("round"), int)]
    out["rounds"] = max(rounds) if rounds else len(records)
    used = [u for u in (_labels_used(r) for r in records) if u is not None]
    if used:
        out["labels_used"] = max(used)
    for key in ("source", "target", "mode", "seed"):
        values = [r[key] for r in records if r.get(key) is not None]
        if key in ("source", "target"):
            values = [v for v in map(_domain_spec, values) if v]
        if values:
            out[key] = values[-1]
    return out


def _finish_history(history: dict[str, Any], path: Path) -> dict[str, Any]:
    if not any(k in history for k in ("strategy", "rounds", "labels_used")):
        raise AdaptnerError(f"History file {path} has none of 'strategy', 'rounds', 'labels_used'.")
    history.setdefault("strategy", "unknown")
    history.setdefault("rounds", 0)
    history.setdefault("labels_used", 0)
    history["file"] = str(path)
    return history


def read_scores(path: PathLike) -> dict[str, Any]:
    """Per-domain scores from an evaluation JSON, as ``{"split", "source", "domains", "all"}``.

    Accepted: the report of ``adaptner evaluate -o FILE`` ("split", "per_domain" with
    "ents_p"/"ents_r"/"ents_f"/"docs" per domain, "overall"); or ``{"split": "dev",
    "domains": {"news": {"ents_f": 0.8, ...}}}``; or a plain ``{"news": {"ents_f": ...}}``;
    a domain may also map to a number (its F1). An "all" domain entry is the overall score.

    Raises:
        AdaptnerError: a missing or unreadable file, or no per-domain F1 in it.
    """
    path = Path(path)
    if not path.is_file():
        raise AdaptnerError(f"Scores file {path} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf8"))
    except ValueError as e:
        raise AdaptnerError(f"Scores file {path} is not valid JSON ({e}).") from e
    if not isinstance(data, dict):
        raise AdaptnerError(f"Scores file {path} must hold a JSON object.")
    table = next(
        (data[k] for k in ("per_domain", "domains", "scores") if isinstance(data.get(k), dict)),
        data,
    )
    domains = {d: row for d, row in ((d, _score_row(v)) for d, v in table.items()) if row}
    overall = domains.pop("all", None) or _score_row(data.get("overall"))
    if not domains:
        raise AdaptnerError(
            f"Scores file {path} has no per-domain F1: expected the JSON of `adaptner evaluate "
            '-o FILE`, or {"split": "dev", "domains": {"news": {"ents_f": 0.8}, ...}}.'
        )
    return {
        "split": str(data.get("split") or "unknown"),
        "source": str(data.get("data") or path),
        "metric": "ents_f",
        "domains": domains,
        "all": overall,
    }


def _score_row(value: Any) -> dict[str, Any] | None:
    """One domain's scores in the package layout (ents_f/ents_p/ents_r/n_docs), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return {"ents_f": _round(value)}
    if not isinstance(value, dict):
        return None
    row: dict[str, Any] = {}
    for out_key, keys in (
        ("ents_f", ("ents_f",)),
        ("ents_p", ("ents_p",)),
        ("ents_r", ("ents_r",)),
        ("n_docs", ("n_docs", "docs")),
        ("n_ents", ("n_ents", "gold_ents")),
    ):
        for key in keys:
            if key in value and (value[key] is None or isinstance(value[key], (int, float))):
                row[out_key] = value[key] if out_key.startswith("n_") else _round(value[key])
                break
    if row.get("n_ents") == 0:
        row["ents_f"] = None  # F1 is undefined without gold entities
    return row if "ents_f" in row else None


def score_domains(
    nlp,
    eval_dir: PathLike,
    domains: str = "all",
    *,
    limit: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Entity P/R/F1 of ``nlp`` on each domain of a corpus split, and over all docs pooled.

    Scoring is :mod:`adaptner.evaluation` (the same numbers as ``adaptner evaluate``:
    :mod:`adaptner.scoring`, strict span match); the split is named from
    the docs (or the directory, e.g. corpus/dev -> "dev").

    Args:
        nlp: The loaded pipeline.
        eval_dir: A split directory holding ``<domain>.spacy`` files (e.g. corpus/dev).
        domains: "all", "news", "news,legal", "all-but:legal".
        limit: Score the first this many docs per domain (0 = all).
        batch_size: Batch size for prediction.
        progress: Show a progress bar.

    Raises:
        AdaptnerError: a missing or corrupt corpus, or an unknown domain.
    """
    from .evaluation import evaluate_docs, load_eval_docs, split_name

    by_domain = load_eval_docs(eval_dir, domains, nlp.vocab)
    if limit:
        by_domain = {d: docs[:limit] for d, docs in by_domain.items()}
    report = evaluate_docs(nlp, by_domain, batch_size=batch_size, progress=progress)
    gold = [doc for docs in by_domain.values() for doc in docs]
    return {
        "split": split_name(eval_dir, gold),
        "source": str(eval_dir),
        "metric": "ents_f",
        "domains": {d: _score_row(report["per_domain"][d]) for d in report["domains"]},
        "all": _score_row(report["overall"]),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


# --- meta and README ------------------------------------------------------------------


def build_meta(
    meta: dict[str, Any],
    nlp,
    *,
    name: str,
    version: str,
    source: str,
    target: str,
    history: dict[str, Any] | None,
    performance: dict[str, Any] | None,
    description: str | None = None,
    built_from: str | None = None,
) -> dict[str, Any]:
    """The package meta.json: spaCy's fields plus an "adaptner" block.

    The "adaptner" block holds the source and target domains, the adaptation history
    (``"none"`` when the pipeline was only trained, not adapted), the per-domain F1
    with the split it was scored on, and the model directory it was built from.
    """
    meta = dict(meta)
    meta["name"] = name
    meta["version"] = version
    meta["labels"] = {
        pipe_name: sorted(labels) for pipe_name, labels in nlp.pipe_labels.items() if labels
    }
    if not meta.get("description") or description:
        meta["description"] = description or default_description(
            nlp, source, target, history, performance
        )
    meta["requirements"] = [
        adaptner_requirement(nlp.config),
        *(r for r in meta.get("requirements", []) if not r.startswith("adaptner")),
    ]
    meta["sources"] = [DANSK_SOURCE]
    if performance and performance.get("all"):
        # spaCy's own "performance" field: the pooled scores on the split scored here.
        pooled = performance["all"]
        meta["performance"] = {k: pooled[k] for k in ("ents_f", "ents_p", "ents_r") if k in pooled}
    else:  # as recorded by training, without the losses
        meta["performance"] = {
            k: v for k, v in (meta.get("performance") or {}).items() if not k.endswith("_loss")
        }
    meta["adaptner"] = {
        "adaptner_version": __version__,
        "source": source,
        "target": target,
        "history": history or _NO_HISTORY,
        "performance": performance,
        "built_from": built_from,
    }
    return meta


def adaptner_requirement(config: Any) -> str:
    """The pipeline package's dependency on adaptner: ``adaptner[trf]`` when it needs torch.

    A pipeline whose config uses a function of the transformer stack (the ``transformer``
    factory, a ``spacy-transformers.*`` architecture, anything registered by
    spacy_transformers, transformers or torch) depends on ``adaptner[trf]``, which pins
    spacy-transformers, transformers and torch; a CNN pipeline depends on plain adaptner, so
    installing it pulls no torch and loading it imports none. The version range is adaptner's
    minor release (``>=X.Y.0,<X.Y+1.0``), the code the weights were trained with.
    """
    from .trf import TRF_EXTRA, config_needs_trf

    name = TRF_EXTRA if config_needs_trf(config) else "adaptner"
    return f"{name}>={_minor(__version__)}.0,<{_next_minor(__version__)}"


def default_description(
    nlp,
    source: str,
    target: str,
    history: dict[str, Any] | None,
    performance: dict[str, Any] | None,
) -> str:
    """A one-paragraph description of what the pipeline is and how it was made."""
    parts = [
        f"Danish named-entity recognition ({' + '.join(nlp.pipe_names)}; 18 OntoNotes "
        f"labels) trained on DANSK domain(s) '{source}'"
    ]
    if history:
        parts.append(
            f" and adapted to '{target}' by active learning ({history['strategy']}, "
            f"{history['rounds']} rounds, {history['labels_used']} labelled sentences)"
        )
    elif target != source:
        parts.append(f" and then on '{target}'")
    text = "".join(parts) + "."
    if performance and performance.get("domains"):
        text += f" Per-domain F1 on the {performance['split']} split is in meta.json and below."
    return text + " Built with adaptner."


def _minor_parts(version: str) -> tuple[int, int]:
    numbers = [int(n) for n in re.findall(r"\d+", version)[:2]] + [0, 0]
    return numbers[0], numbers[1]


def _minor(version: str) -> str:
    major, minor = _minor_parts(version)
    return f"{major}.{minor}"


def _next_minor(version: str) -> str:
    major, minor = _minor_parts(version)
    return f"{major}.{minor + 1}.0"


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.2f}"


def render_readme(meta: dict[str, Any]) -> str:
    """The package README: spaCy's generated overview plus the adaptation and F1 tables."""
    from spacy.cli.package import generate_readme

    block = meta.get("adaptner", {})
    perf = block.get("performance")
    full_name = f"{meta['lang']}_{meta['name']}"
    shown = {k: v for k, v in meta.items() if k != "url" or v}  # no empty author link
    overview = generate_readme(shown).rstrip()
    if perf and perf.get("all"):
        scope = f"### Accuracy ({perf['split']} split, the domains below pooled)"
    else:
        scope = "### Accuracy (as recorded by training, on its dev set)"
    overview = overview.replace("### Accuracy", scope, 1)
    lines = [overview, "", "### Adaptation", ""]
    history = block.get("history")
    rows = [("Source domain(s)", block.get("source")), ("Target domain(s)", block.get("target"))]
    if isinstance(history, dict):
        rows += [
            ("Query strategy", history.get("strategy")),
            ("Rounds", history.get("rounds")),
            ("Labels used (sentences)", history.get("labels_used")),
        ]
    else:
        rows.append(("Active learning", "none (trained, not adapted)"))
    rows.append(("adaptner", block.get("adaptner_version")))
    lines += ["| | |", "| --- | --- |"] + [f"| **{k}** | `{v}` |" for k, v in rows]
    lines.append("")
    if perf and perf.get("domains"):
        lines += [
            f"### Per-domain F1 (scored on the {perf['split']} split, `{perf['source']}`)",
            "",
            "Entity-level precision, recall and F1 (exact span match), in percent; "
            "– = no gold entities.",
            "",
            "| Domain | Role | Docs | P | R | F1 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        roles = _roles(block.get("source"), block.get("target"))
        entries = list(perf["domains"].items())
        if perf.get("all"):
            entries.append(("all", perf["all"]))
        for domain, row in entries:
            lines.append(
                f"| {domain} | {roles.get(domain, '')} | {row.get('n_docs', '')} | "
                f"{_fmt(row.get('ents_p'))} | {_fmt(row.get('ents_r'))} | "
                f"{_fmt(row.get('ents_f'))} |"
            )
    else:
        lines.append("No per-domain evaluation was recorded for this package.")
    lines += [
        "",
        "### Install and use",
        "",
        "```bash",
        f"pip install --no-index --find-links packages/ {full_name}",
        "```",
        "",
        "```python",
        "import spacy",
        "",
        f'nlp = spacy.load("{full_name}")',
        'doc = nlp("Mette Frederiksen besøgte Aarhus i mandags.")',
        "print([(ent.text, ent.label_) for ent in doc.ents])",
        "print(doc._.ner_probs.shape)  # tokens x BIO tags (bio_ner pipelines)",
        "```",
        "",
    ]
    return "\n".join(lines)


def _roles(source: str | None, target: str | None) -> dict[str, str]:
    from .util import parse_domains

    roles: dict[str, str] = {}
    for spec, role in ((source, "source"), (target, "target")):
        if not spec:
            continue
        try:
            selected = parse_domains(spec)
        except AdaptnerError:
            continue
        for domain in selected:
            roles[domain] = f"{roles[domain]}, {role}" if domain in roles else role
    return roles


# --- building -------------------------------------------------------------------------


def _build_wheel(project_dir: Path, out_dir: Path) -> Path:
    """``python -m build --wheel --no-isolation`` in ``project_dir``; return the wheel."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out_dir)]
    proc = subprocess.run([*cmd, str(project_dir)], capture_output=True, text=True, cwd=project_dir)
    wheels = sorted(out_dir.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise AdaptnerError(
            f"Building a wheel in {project_dir} failed (exit {proc.returncode}); needs the "
            f"'build', 'setuptools' and 'wheel' packages:\n{tail}"
        )
    return wheels[0]


def adaptner_source_dir() -> Path | None:
    """The source tree of the running adaptner (the repository root), if it has one."""
    import adaptner

    root = Path(adaptner.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "adaptner"' in pyproject.read_text(encoding="utf8"):
        return root
    return None


def build_adaptner_wheel(output_dir: PathLike, *, source_dir: PathLike | None = None) -> Path:
    """Build adaptner's own wheel into ``output_dir`` from a clean copy of the source tree.

    Raises:
        AdaptnerError: no source tree (adaptner was installed from a wheel), or a build error.
    """
    src = Path(source_dir) if source_dir else adaptner_source_dir()
    if src is None:
        raise AdaptnerError(
            "adaptner is not installed from its source tree, so its wheel cannot be built; "
            "pass --no-adaptner-wheel and install adaptner's wheel alongside the pipeline."
        )
    output_dir = Path(output_dir)
    with tempfile.TemporaryDirectory(prefix="adaptner-build-") as tmp:
        stage = Path(tmp) / "adaptner"
        stage.mkdir()
        shutil.copy2(src / "pyproject.toml", stage / "pyproject.toml")
        for extra in ("README.md", "LICENSE"):
            if (src / extra).is_file():
                shutil.copy2(src / extra, stage / extra)
        if not (stage / "README.md").exists():
            (stage / "README.md").write_text(
                "# adaptner\n\nAdapt a Danish spaCy NER pipeline to a new text domain.\n",
                encoding="utf8",
            )
        shutil.copytree(
            src / "src" / "adaptner",
            stage / "src" / "adaptner",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
        )
        wheel = _build_wheel(stage, Path(tmp) / "dist")
        return _place(wheel, output_dir, force=True)


def _place(wheel: Path, output_dir: Path, *, force: bool) -> Path:
    target = output_dir / wheel.name
    if target.exists() and not force:
        raise AdaptnerError(
            f"{target} already exists: pass --force to replace it, or bump --version."
        )
    with atomic_path(target) as tmp:
        shutil.copyfile(wheel, tmp)
    return target


def package_pipeline(
    model_dir: PathLike,
    output_dir: PathLike = "packages",
    *,
    version: str = "0.1.0",
    source: str | None = None,
    target: str | None = None,
    name: str | None = None,
    history: PathLike | None = None,
    scores: PathLike | None = None,
    eval_dir: PathLike | None = None,
    eval_domains: str = "all",
    eval_limit: int = 0,
    description: str | None = None,
    adaptner_wheel: bool = True,
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    int8: bool = False,
    calibrate: PathLike | None = None,
) -> PackageResult:
    """Package a trained pipeline as a wheel (and adaptner as a second wheel) in ``output_dir``.

    Args:
        model_dir: A trained pipeline directory (e.g. training/news/model-best).
        output_dir: Where the wheels go (``packages/``); only ``*.whl`` files are written.
        version: The package version.
        source / target: Domain selections the pipeline was trained on / adapted to; read
            from the history or ``train_meta.json`` when not given.
        name: Override the meta name (default ``adaptner_<source>_<target>_<pipeline>``).
        history: An adaptation history JSON/JSONL (strategy, rounds, labels used).
        scores: An evaluation JSON with per-domain F1 (instead of scoring here).
        eval_dir: Score per-domain F1 on this split directory (e.g. corpus/dev); None and no
            ``scores`` = record no per-domain F1.
        eval_domains: Domains of ``eval_dir`` to score.
        eval_limit: Score at most this many docs per domain (0 = all).
        description: Override the generated description.
        adaptner_wheel: Also build adaptner's wheel, so both install with ``--no-index``.
        force: Replace an existing pipeline wheel of the same name and version that was
            built from another model directory (one built from ``model_dir`` is replaced
            without it).
        progress: Show progress bars.
        log: Receives one line per step.
        int8: Ship a transformer pipeline with the ``int8_transformer`` component (dynamic
            int8 linear layers at load; :mod:`adaptner.encoders.quantize`): the name gets
            ``_int8`` and the recorded F1 is the int8 pipeline's.
        calibrate: With ``int8``, calibrate activation smoothing on these docs (a ``.spacy``
            file or split directory; ``adaptner encoder quantize --calibrate``), which keeps
            the fp32 F1 where plain int8 loses about a point.

    Raises:
        AdaptnerError: not a pipeline, never trained, unknown domains, bad inputs, build errors.
    """
    if calibrate is not None and not int8:
        raise AdaptnerError("--calibrate calibrates int8 quantization: add --int8.")
    with tempfile.TemporaryDirectory(prefix="adaptner-int8-") as tmp:
        if int8:
            from .encoders.quantize import quantize_pipeline

            staged = Path(tmp) / Path(model_dir).name
            log(f"adding int8 quantization to {model_dir}")
            quantize_pipeline(model_dir, staged, calibrate_on=calibrate)
            (staged / OUTPUT_MARKER).unlink(missing_ok=True)
            train_meta = Path(model_dir).parent / "train_meta.json"
            if train_meta.is_file():  # what the name and the domains are read from
                shutil.copy2(train_meta, Path(tmp))
        return _package(
            Path(model_dir), staged if int8 else Path(model_dir), output_dir, version=version,
            source=source, target=target, name=name, history=history, scores=scores,
            eval_dir=eval_dir, eval_domains=eval_domains, eval_limit=eval_limit,
            description=description, adaptner_wheel=adaptner_wheel, force=force,
            progress=progress, log=log, suffix="_int8" if int8 else "",
        )  # fmt: skip


def _package(
    built_from_dir: Path,
    model_dir: Path,
    output_dir: PathLike,
    *,
    version: str,
    source: str | None,
    target: str | None,
    name: str | None,
    history: PathLike | None,
    scores: PathLike | None,
    eval_dir: PathLike | None,
    eval_domains: str,
    eval_limit: int,
    description: str | None,
    adaptner_wheel: bool,
    force: bool,
    progress: bool,
    log: Callable[[str], None],
    suffix: str,
) -> PackageResult:
    """:func:`package_pipeline` of ``model_dir`` (a staged copy of ``built_from_dir``)."""
    from spacy.cli.package import package as spacy_package

    model_dir = Path(model_dir)
    output_dir = Path(output_dir)
    check_output_folder(output_dir, "package")
    meta = check_pipeline_dir(model_dir)
    version = check_version(version)
    hist = read_history(history) if history is not None else None
    perf = read_scores(scores) if scores is not None else None
    if perf is None and eval_dir is not None and not Path(eval_dir).exists():
        raise AdaptnerError(
            f"Evaluation split {eval_dir} does not exist: run adaptner corpus, or pass --eval "
            "<split directory>, --scores <adaptner evaluate JSON>, or --no-eval."
        )
    inferred_source, inferred_target = infer_domains(model_dir, hist)
    source = source or inferred_source
    target = target or inferred_target or source
    if not source or not target:
        raise AdaptnerError(
            f"Cannot tell which domains {model_dir} was trained on: pass --source (and "
            "--target for an adapted pipeline)."
        )
    nlp, _ = load_pipeline(model_dir)
    lang = nlp.lang
    name = name or package_name(source, target, pipeline_part(model_dir, nlp) + suffix)
    full_name = check_name(name, lang)
    meta_name = full_name[len(lang) + 1 :]
    wheel_path = output_dir / f"{full_name}-{version}-py3-none-any.whl"
    built_from = str(built_from_dir.resolve()) + suffix
    if wheel_path.exists() and not force:
        other = wheel_built_from(wheel_path, full_name, version)
        if other != built_from:
            raise AdaptnerError(
                f"{wheel_path} already exists, built from {other or 'another pipeline'}: "
                "pass --force to replace it, --name to name this one differently, or bump "
                "--version."
            )
    if perf is None and eval_dir is not None:
        log(f"scoring {full_name} per domain on {eval_dir} ({eval_domains})")
        perf = score_domains(nlp, eval_dir, eval_domains, limit=eval_limit, progress=progress)
    meta = build_meta(
        meta,
        nlp,
        name=meta_name,
        version=version,
        source=source,
        target=target,
        history=hist,
        performance=perf,
        description=description,
        built_from=built_from,
    )
    del nlp
    with tempfile.TemporaryDirectory(prefix="adaptner-package-") as tmp:
        stage = Path(tmp) / "pipeline"
        shutil.copytree(model_dir, stage, ignore=shutil.ignore_patterns("README.md"))
        (stage / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf8")
        build_dir = Path(tmp) / "build"
        build_dir.mkdir()
        try:
            spacy_package(
                stage,
                build_dir,
                create_sdist=False,
                create_wheel=False,
                require_parent=True,
                force=True,
                silent=True,
            )
        except SystemExit as e:
            raise AdaptnerError(f"spacy package failed for {model_dir} (exit {e.code}).") from e
        package_dir = build_dir / f"{full_name}-{version}"
        final_meta = json.loads((package_dir / "meta.json").read_text(encoding="utf8"))
        readme = render_readme(final_meta)
        (package_dir / "README.md").write_text(readme, encoding="utf8")
        (package_dir / full_name / f"{full_name}-{version}" / "README.md").write_text(
            readme, encoding="utf8"
        )
        log(f"building {full_name}-{version} (requires {', '.join(final_meta['requirements'])})")
        wheel = _build_wheel(package_dir, Path(tmp) / "dist")
        placed = _place(wheel, output_dir, force=True)
    extra = None
    if adaptner_wheel:
        log(f"building adaptner {__version__} wheel")
        extra = build_adaptner_wheel(output_dir)
    return PackageResult(
        name=full_name, version=version, wheel=placed, adaptner_wheel=extra, meta=final_meta
    )
