"""Distillation on target text: a teacher's soft targets on unlabelled text of the target.

The student of :mod:`adaptner.distil` learns from DANSK gold plus the teacher's probabilities;
the point of a teacher in domain adaptation is the target's own text, which has no gold. This
module labels such text: an AL pool (``.spacy``), a corpus split folder (``<domain>.spacy``
files, gold dropped), a plain-text file (one sentence per line), a JSONL file of
``{"text": ...}`` lines, or a folder of ``*.txt`` documents (the pool formats
:func:`adaptner.session.formats.read_pool` reads). Each source becomes
``target-<name>.spacy`` in the labelled directory, next to the labelled train split, so
``--paths.train DIR`` trains the student on gold + soft targets of both.

:func:`verify_teacher_dir` checks a labelled directory before a student trains on it: every
file that ``teacher.json`` lists is readable and every doc carries probabilities of the
recorded tags, one row per token, each a distribution.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy
from spacy.language import Language
from spacy.tokens import Doc

from .distil import TEACHER_META, TeacherReport, bio_component, read_teacher_meta, write_labelled
from .errors import AdaptnerError
from .readers import load_domain_docs, read_docbin

PathLike = str | Path
#: The prefix of a labelled target file in the output directory.
TARGET_PREFIX = "target-"


def target_name(path: PathLike) -> str:
    """The output file of a target source: ``target-<stem>.spacy``."""
    stem = Path(path).name.split(".")[0] or "text"
    return f"{TARGET_PREFIX}{stem}.spacy"


def read_target_docs(path: PathLike, nlp: Language) -> list[Doc]:
    """The unlabelled docs of a target source (any gold they carry is dropped later).

    Raises:
        AdaptnerError: a missing or empty source, a bad JSONL line (file:line), a corrupt
            DocBin (named).
    """
    from .session.formats import doc_from_offsets
    from .session.pool import read_pool

    path = Path(path)
    if path.is_dir() and any(path.glob("*.spacy")):
        return load_domain_docs(path, "all", nlp.vocab)
    docs = []
    for item in read_pool(path, nlp.make_doc, nlp.vocab):
        doc = doc_from_offsets(nlp.vocab, item.text, item.offsets)
        doc._.domain = item.domain
        doc._.source = item.source
        docs.append(doc)
    return docs


def check_same_teacher(output: Path, tags: Sequence[str]) -> None:
    """Refuse to add soft targets of another tag set to a labelled directory."""
    if not (output / TEACHER_META).exists():
        return
    meta = read_teacher_meta(output)
    if list(meta.get("tags") or []) != list(tags):
        raise AdaptnerError(
            f"{output / TEACHER_META} records a teacher with other tags "
            f"({len(meta.get('tags') or [])} tags) than this teacher ({len(tags)}): label into "
            "a new directory, or label the train split again with this teacher."
        )


def label_target(
    teacher: PathLike,
    sources: Sequence[PathLike],
    output: PathLike,
    *,
    batch_size: int = 32,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    nlp: Language | None = None,
) -> TeacherReport:
    """Label unlabelled target text with the teacher's BIO probabilities, one file a source.

    Raises:
        AdaptnerError: see :func:`read_target_docs`; two sources of one name; a directory
            labelled by a teacher of other tags.
    """
    from .evaluation import load_pipeline

    output = Path(output)
    names = [target_name(src) for src in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise AdaptnerError(f"Two target sources would both be written to {', '.join(twice)}.")
    if nlp is None:
        nlp = load_pipeline(teacher)
    name = bio_component(nlp, f"The pipeline in {teacher}")
    tags = list(nlp.get_pipe(name).tags)
    check_same_teacher(output, tags)
    report = TeacherReport(teacher=str(teacher), tags=tags, output=str(output))
    for src, out_name in zip(sources, names, strict=True):
        docs = read_target_docs(src, nlp)
        write_labelled(nlp, docs, output, out_name, report, source=str(src),
                       batch_size=batch_size, drop_gold=True, progress=progress, log=log)
    return report


def verify_teacher_dir(directory: PathLike, tags: Sequence[str] | None = None) -> dict[str, int]:
    """Check every file ``teacher.json`` lists; returns docs per file.

    Args:
        directory: A directory written by ``adaptner distil``.
        tags: The student's tags, when known: the teacher's must be the same, in order.

    Raises:
        AdaptnerError: naming the file (and doc) of a missing, corrupt or mismatched output.
    """
    directory = Path(directory)
    meta = read_teacher_meta(directory)
    meta_path = directory / TEACHER_META
    recorded = meta.get("tags")
    files = meta.get("files")
    if not isinstance(recorded, list) or not recorded or not isinstance(files, dict):
        raise AdaptnerError(f"{meta_path} has no list of tags and files: not a teacher record.")
    if tags is not None and list(tags) != recorded:
        raise AdaptnerError(
            f"{meta_path}: the teacher's tags differ from the student's ({len(recorded)} vs "
            f"{len(tags)} tags, or another order)."
        )
    import spacy

    vocab = spacy.blank("da").vocab
    counts = {}
    for name in files:
        path = directory / name
        docs = read_docbin(path, vocab)
        for i, doc in enumerate(docs):
            probs = doc._.teacher_probs
            where = f"{path}: doc {i} ({doc.text[:30]!r})"
            if probs is None:
                raise AdaptnerError(f"{where} has no teacher probabilities.")
            if list(doc._.teacher_tags or []) != recorded:
                raise AdaptnerError(f"{where}: its teacher tags differ from {meta_path}'s.")
            probs = numpy.asarray(probs)
            if probs.shape != (len(doc), len(recorded)):
                raise AdaptnerError(
                    f"{where}: teacher probabilities of shape {probs.shape}, expected "
                    f"({len(doc)} tokens, {len(recorded)} tags)."
                )
            sums = probs.sum(axis=1) if len(doc) else numpy.ones(0)
            if not numpy.isfinite(probs).all() or (numpy.abs(sums - 1.0) > 1e-3).any():
                raise AdaptnerError(f"{where}: teacher rows are not probability distributions.")
        counts[name] = len(docs)
    return counts
