"""Pools: the unlabeled sentences a session hands out, from a DocBin, JSONL or text files."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spacy.tokens import Doc
from spacy.vocab import Vocab

from ..errors import AdaptnerError
from ..util import read_jsonl
from .formats import Offsets, doc_offsets


@dataclass
class PoolItem:
    """One pool sentence: text, token offsets, and where it comes from."""

    text: str
    offsets: Offsets
    domain: str | None = None
    source: str | None = None


def read_pool(
    path: str | Path,
    tokenize: Callable[[str], Doc],
    vocab: Vocab,
    *,
    domain: str | None = None,
) -> list[PoolItem]:
    """Read a target pool: a DocBin (.spacy; gold entities dropped), JSONL, plain text, or a
    folder of plain-text documents.

    JSONL lines are objects with ``text`` (and optionally ``meta.domain``/``meta.source``);
    any other file is read as one sentence per line (blank lines skipped); a folder is read
    by :func:`read_documents` (every ``*.txt`` in it, split into sentences).

    Args:
        path: The pool file or folder.
        tokenize: Makes a Doc from a text (the pipeline's tokenizer).
        vocab: The vocab for reading DocBins.
        domain: Domain to record for texts without one.

    Raises:
        AdaptnerError: a missing or empty file, or a bad JSONL line (file:line and why).
    """
    from ..readers import read_docbin

    path = Path(path)
    if not path.exists():
        raise AdaptnerError(f"Pool file {path} does not exist.")
    items: list[PoolItem] = []
    if path.is_dir():
        items = read_documents(path, tokenize, domain=domain)
    elif path.suffix == ".spacy":
        for doc in read_docbin(path, vocab):
            if doc.text.strip():
                items.append(
                    PoolItem(doc.text, doc_offsets(doc), doc._.domain or domain, doc._.source)
                )
    elif path.suffix == ".jsonl":
        for lineno, obj in read_jsonl(path, objects=False):
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise AdaptnerError(
                    f'{path}:{lineno}: expected an object with a non-empty "text" string.'
                )
            meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
            offsets = doc_offsets(tokenize(text))
            items.append(PoolItem(text, offsets, meta.get("domain", domain), meta.get("source")))
    else:
        for line in path.read_text(encoding="utf8").splitlines():
            text = line.strip()
            if text:
                items.append(PoolItem(text, doc_offsets(tokenize(text)), domain, None))
    if not items:
        raise AdaptnerError(f"Pool file {path} holds no sentences.")
    return items


#: Blank lines: paragraph breaks, where a sentence always ends (headings have no full stop).
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")


def read_documents(
    folder: Path, tokenize: Callable[[str], Doc], *, domain: str | None = None
) -> list[PoolItem]:
    """Every ``*.txt`` document under ``folder`` (sorted by path), split into sentences.

    A document is cut at blank lines (paragraphs), and each paragraph into sentences by
    spaCy's rule-based ``sentencizer`` on the pipeline's tokens. A sentence keeps its exact
    text (inner line breaks included), and its ``source`` is ``<path in folder>:<offset>``,
    the character offset of its first character in the document, so an entity at ``start``
    in the sentence is at ``offset + start`` in the document.

    Raises:
        AdaptnerError: no ``*.txt`` file, or one that is not UTF-8 (named, with the byte).
    """
    from spacy.pipeline import Sentencizer

    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise AdaptnerError(
            f"Pool folder {folder} has no *.txt documents (a folder pool is read as plain-text "
            "documents, one per .txt file)."
        )
    sentencizer = Sentencizer()
    items: list[PoolItem] = []
    for file in files:
        try:
            document = file.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise AdaptnerError(
                f"{file}: not UTF-8 ({e.reason} at byte {e.start}); save it as UTF-8."
            ) from None
        name = file.relative_to(folder).as_posix()
        start = 0
        for brk in [*_PARAGRAPH_BREAK.finditer(document), None]:
            end = brk.start() if brk else len(document)
            paragraph = document[start:end]
            if paragraph.strip():
                doc = sentencizer(tokenize(paragraph))
                for sent in doc.sents:
                    words = [t for t in sent if not t.is_space]
                    if not words:
                        continue
                    first, last = words[0].idx, words[-1].idx + len(words[-1])
                    offsets = [
                        (t.idx - first, t.idx + len(t) - first)
                        for t in sent
                        if first <= t.idx and t.idx + len(t) <= last
                    ]
                    items.append(
                        PoolItem(paragraph[first:last], offsets, domain, f"{name}:{start + first}")
                    )
            start = brk.end() if brk else len(document)
    return items


