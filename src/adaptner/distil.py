"""Teacher labelling for distillation: a pipeline's BIO probabilities stored with each doc."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from tqdm import tqdm

from .errors import AdaptnerError
from .extensions import install_extensions
from .readers import available_domains, read_docbin
from .scoring import fresh_doc
from .util import atomic_path, parse_domains, write_json

PathLike = str | Path

#: The side file that says which teacher labelled a directory, and how.
TEACHER_META = "teacher.json"


@dataclass
class TeacherReport:
    """What one labelling run did."""

    teacher: str
    tags: list[str]
    output: str
    files: dict[str, int] = field(default_factory=dict)  # output file -> docs
    docs: int = 0
    words: int = 0
    seconds: float = 0.0

    @property
    def words_per_second(self) -> float:
        return self.words / self.seconds if self.seconds > 0 else 0.0


def bio_component(nlp: Language, where: str = "the teacher") -> str:
    """The name of the pipeline's ``bio_ner`` component (the one whose probabilities count)."""
    from .components.bio_ner import BioNER

    names = [name for name, pipe in nlp.pipeline if isinstance(pipe, BioNER)]
    if not names:
        raise AdaptnerError(
            f"{where} has no bio_ner component (components: {', '.join(nlp.pipe_names)}); "
            "a teacher must set doc._.ner_probs (train it with a bio_ner config)."
        )
    return names[0]


def label_docs(
    nlp: Language,
    docs: Sequence[Doc],
    *,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "teacher",
    drop_gold: bool = False,
) -> Iterator[Doc]:
    """Set ``doc._.teacher_probs`` / ``teacher_tags`` on each doc from the teacher's predictions.

    The teacher runs on the docs' own tokens (words and spaces), so row i of the probabilities
    belongs to token i. The docs keep their gold annotation (or none: unlabelled text works
    too); with ``drop_gold`` they are yielded as unannotated copies (the same tokens and user
    data, no entities), i.e. as unlabelled text. Docs are yielded in order as they are done.
    """
    install_extensions()
    name = bio_component(nlp)
    tags = list(nlp.get_pipe(name).tags)
    copies = (fresh_doc(doc, nlp.vocab) for doc in docs)
    stream = nlp.pipe(copies, batch_size=batch_size)
    if progress:
        words = sum(len(doc) for doc in docs)
        bar = tqdm(total=words, desc=desc, unit="word", leave=False, mininterval=2.0)
    for doc, pred in zip(docs, stream, strict=True):
        if drop_gold:
            plain = fresh_doc(doc, doc.vocab)
            plain.user_data.update(doc.user_data)
            doc = plain
        probs = pred._.ner_probs
        if probs is None:
            probs = numpy.zeros((len(doc), len(tags)), dtype="float32")
        doc._.teacher_probs = numpy.ascontiguousarray(probs, dtype="float32")
        doc._.teacher_tags = tags
        if progress:
            bar.update(len(doc))
        yield doc
    if progress:
        bar.close()


def _input_files(data: Path, domains: str) -> list[tuple[Path, str]]:
    """(input DocBin, output name) pairs: one per selected domain, or the single file given."""
    if data.is_file() or data.suffix == ".spacy":
        if not data.exists():
            raise AdaptnerError(f"DocBin {data} does not exist.")
        return [(data, data.name)]
    selected = parse_domains(domains, available_domains(data))
    return [(data / f"{domain}.spacy", f"{domain}.spacy") for domain in selected]


def label_corpus(
    teacher: PathLike,
    data: PathLike,
    output: PathLike,
    *,
    domains: str = "all",
    batch_size: int = 32,
    drop_gold: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TeacherReport:
    """Label every doc of a corpus split (or one DocBin) with a teacher's BIO probabilities.

    Writes ``output/<domain>.spacy`` (the same docs, gold annotation kept, with
    ``doc._.teacher_probs`` and ``doc._.teacher_tags`` in their user data), each file
    atomically, and ``output/teacher.json``. The output directory reads like a corpus split:
    ``--paths.train output`` trains on it. ``drop_gold`` writes the docs without their gold
    entities (a pool of unlabelled text for the student: soft targets only). Domains of a
    split are written one by one, so an interrupted run keeps the finished ones.

    Raises:
        AdaptnerError: a missing or corrupt DocBin (named), or a teacher without bio_ner.
    """
    from .evaluation import load_pipeline

    data, output = Path(data), Path(output)
    files = _input_files(data, domains)
    nlp = load_pipeline(teacher)
    name = bio_component(nlp, f"The pipeline in {teacher}")
    report = TeacherReport(teacher=str(teacher), tags=list(nlp.get_pipe(name).tags),
                           output=str(output))
    for path, out_name in files:
        docs = read_docbin(path, nlp.vocab)
        write_labelled(nlp, docs, output, out_name, report, source=str(path),
                       batch_size=batch_size, drop_gold=drop_gold, progress=progress, log=log)
    return report


def write_labelled(
    nlp: Language,
    docs: Sequence[Doc],
    output: Path,
    out_name: str,
    report: TeacherReport,
    *,
    source: str,
    batch_size: int = 32,
    drop_gold: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> None:
    """Label ``docs`` with the teacher ``nlp``, write ``output/out_name`` atomically, add it to
    ``output/teacher.json`` and to ``report``."""
    start = time.perf_counter()
    docbin = DocBin(store_user_data=True)
    for doc in label_docs(nlp, docs, batch_size=batch_size, progress=progress,
                          desc=out_name, drop_gold=drop_gold):
        docbin.add(doc)
    seconds = time.perf_counter() - start
    words = sum(len(doc) for doc in docs)
    report.seconds += seconds
    report.docs += len(docs)
    report.words += words
    with atomic_path(output / out_name) as tmp:
        docbin.to_disk(tmp)
    report.files[out_name] = len(docs)
    _record_file(output, report.tags, out_name, {
        "docs": len(docs),
        "words": words,
        "seconds": round(seconds, 2),
        "teacher": report.teacher,
        "input": source,
        "gold_kept": not drop_gold,
    })
    if log is not None:
        log(f"✔ {len(docs):,} docs of {source} -> {output / out_name}")


def _record_file(output: Path, tags: list[str], name: str, entry: dict) -> None:
    """Add one labelled file to ``output/teacher.json`` (after each file: an interrupted run's
    record lists exactly the files it finished; a second run into the directory, e.g. target
    pools with --drop-gold, adds its own)."""
    meta_path = output / TEACHER_META
    meta: dict = {}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf8"))
        except (OSError, json.JSONDecodeError):
            meta = {}
    files = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    files[name] = entry
    write_json(meta_path, {"tags": tags, "files": files})


def read_teacher_meta(directory: PathLike) -> dict:
    """The ``teacher.json`` of a labelled directory (which teacher, which tags)."""
    path = Path(directory) / TEACHER_META
    if not path.exists():
        raise AdaptnerError(f"{path} does not exist: label the corpus with `adaptner distil`.")
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except (OSError, json.JSONDecodeError) as e:
        raise AdaptnerError(f"{path} is not valid JSON ({e}).") from e
