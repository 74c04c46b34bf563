"""Convert the DANSK release (parquet or JSONL) to validated per-domain DocBins."""

import hashlib
import json
import shutil
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacy.tokens import Doc, DocBin, Span
from spacy.vocab import Vocab

from .errors import AdaptnerError
from .extensions import install_extensions
from .labels import DOMAINS, ONTONOTES_LABELS, SPLITS, domain_slug
from .util import (
    atomic_output,
    atomic_path,
    check_output_dir,
    raise_file_system_error,
    read_jsonl,
    write_json,
    write_jsonl,
    write_text,
)

#: sha256 of the public release files (chcaa/dansk-ner, after March 2024).
DANSK_SHA256 = {
    "train.parquet": "8799b178b7333d6cdb793cc17532c0c84d59efc774edecaf93e4dc9ecb4fb87f",
    "dev.parquet": "8e7bb2a40210977e59f119497f0d39daf882f4b6d831940c78c81c514c67d088",
}
HUB_DATASET = "chcaa/dansk-ner"
HUB_API = "https://huggingface.co/api/datasets/{repo}/tree/main/data"
HUB_FILE = "https://huggingface.co/datasets/{repo}/resolve/main/{path}"


class RowError(AdaptnerError):
    """A row of the input that cannot be converted."""

    def __init__(self, split: str, index: int, reason: str, source: str = "") -> None:
        self.split, self.index, self.reason, self.source = split, index, reason, source
        where = f"{source} " if source else ""
        super().__init__(f"{where}split '{split}', row {index}: {reason}")


@dataclass
class SplitResult:
    """What converting one split produced."""

    split: str
    source: str
    docs: list[Doc] = field(default_factory=list)  # in row order
    docs_by_domain: dict[str, list[Doc]] = field(default_factory=dict)
    rejects: list[dict[str, Any]] = field(default_factory=list)


def find_split_file(input_dir: Path, split: str) -> Path | None:
    """The file holding ``split`` in ``input_dir``: <split>.parquet, .jsonl or .json(l) shards."""
    for name in (f"{split}.parquet", f"{split}.jsonl", f"{split}.jsonl.gz"):
        if (input_dir / name).exists():
            return input_dir / name
    shards = sorted(input_dir.glob(f"{split}-*.parquet")) + sorted(
        input_dir.glob(f"data/{split}-*.parquet")
    )
    return shards[0] if shards else None


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row index, row dict) from a parquet file or JSONL file.

    Raises:
        AdaptnerError: if the file cannot be read, naming the file (and line for JSONL).
    """
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001
            raise_file_system_error(e)
            raise AdaptnerError(f"Cannot read parquet file {path}: {e}") from e
        for i, row in enumerate(table.to_pylist()):
            yield i, row
        return
    for index, (_, row) in enumerate(read_jsonl(path)):
        yield index, row


def _meta(row: dict[str, Any], key: str) -> Any:
    if key in row:
        return row[key]
    for container in ("meta", "user_data"):
        if isinstance(row.get(container), dict) and key in row[container]:
            return row[container][key]
    return None


def row_to_doc(
    row: dict[str, Any], vocab: Vocab, split: str, index: int, source: str = ""
) -> Doc:
    """Build a Doc from one row in spaCy's ``Doc.from_json`` layout, validating it.

    Checks: text and tokens present; tokens in order, inside the text, separated by at
    most one space; entity offsets on token boundaries; no overlapping entities; labels
    among the 18 OntoNotes types.

    Raises:
        RowError: naming split, row index and the reason.
    """

    def fail(reason: str) -> RowError:
        return RowError(split, index, reason, source)

    text = row.get("text")
    if not isinstance(text, str):
        raise fail("missing or non-string 'text'")
    tokens = row.get("tokens")
    if tokens is None or len(tokens) == 0:
        if text.strip():
            raise fail("no 'tokens' for a non-empty text")
        tokens = []
    words: list[str] = []
    spaces: list[bool] = []
    prev_end = 0
    for k, tok in enumerate(tokens):
        try:
            start, end = int(tok["start"]), int(tok["end"])
        except (KeyError, TypeError, ValueError):
            raise fail(f"token {k} lacks integer 'start'/'end'") from None
        if not (prev_end <= start < end <= len(text)):
            raise fail(f"token {k} [{start}:{end}] is out of order or outside the text")
        gap = text[prev_end:start]
        if k == 0 and gap:
            raise fail(f"text starts with {gap!r} before the first token")
        if k > 0:
            if gap not in ("", " "):
                raise fail(f"gap {gap!r} between tokens {k - 1} and {k} is not a single space")
            spaces[-1] = gap == " "
        words.append(text[start:end])
        spaces.append(False)
        prev_end = end
    if text[prev_end:] and words:
        tail = text[prev_end:]
        if tail != " ":
            raise fail(f"text ends with {tail!r} after the last token")
        spaces[-1] = True
    doc = Doc(vocab, words=words, spaces=spaces)
    if doc.text != text:
        raise fail("tokens do not reproduce the text")
    spans: list[Span] = []
    for k, ent in enumerate(row.get("ents") or []):
        try:
            start, end, label = int(ent["start"]), int(ent["end"]), ent["label"]
        except (KeyError, TypeError, ValueError):
            raise fail(f"entity {k} lacks 'start'/'end'/'label'") from None
        if not 0 <= start < end <= len(text):
            raise fail(
                f"entity {k} {label} [{start}:{end}] lies outside the text (length {len(text)})"
                if end > len(text) or start < 0
                else f"entity {k} {label} [{start}:{end}] is empty or reversed"
            )
        if label not in ONTONOTES_LABELS:
            raise fail(
                f"entity {k} {text[start:end]!r} has unknown label {label!r} "
                f"(expected one of the 18 OntoNotes types)"
            )
        span = doc.char_span(start, end, label=label, alignment_mode="strict")
        if span is None:
            raise fail(
                f"entity {k} {label} [{start}:{end}] {text[start:end]!r} does not align "
                "to token boundaries"
            )
        spans.append(span)
    spans.sort(key=lambda s: (s.start, s.end))
    for a, b in zip(spans, spans[1:], strict=False):
        if b.start < a.end:
            raise fail(f"entities {a.text!r} ({a.label_}) and {b.text!r} ({b.label_}) overlap")
    doc.ents = spans
    sents = row.get("sents") or []
    if len(doc) and sents:
        starts = {int(s["start"]) for s in sents}
        for tok in doc:
            tok.is_sent_start = tok.idx in starts or tok.i == 0
    doc._.domain = domain_slug(_meta(row, "dagw_domain"))
    doc._.source = _meta(row, "dagw_source")
    doc.user_data["dagw_source_full"] = _meta(row, "dagw_source_full")
    doc.user_data["split"] = split
    doc.user_data["row"] = index
    return doc


#: Columns every input row needs (``dagw_domain`` may sit in ``meta`` / ``user_data``).
REQUIRED_COLUMNS = ("text", "tokens", "ents", "dagw_domain")
#: Bad rows listed in a strict-mode error (the rest are counted).
MAX_LISTED_ROWS = 50


def check_columns(path: Path, rows: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """Fail, naming the file, when it has no rows or lacks a required column in every row.

    Raises:
        AdaptnerError: an empty input or missing columns (all named).
    """
    if not rows:
        raise AdaptnerError(f"{path} has no rows: nothing to convert. Is it the right file?")
    missing = [
        col
        for col in REQUIRED_COLUMNS
        if not any(col in row or _meta(row, col) is not None for _, row in rows)
    ]
    if missing:
        have = sorted({k for _, row in rows[:100] for k in row})
        raise AdaptnerError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} in any of its "
            f"{len(rows)} rows (columns: {', '.join(have)}). DANSK rows need "
            f"{', '.join(REQUIRED_COLUMNS)}."
        )


def convert_split(
    path: Path, split: str, vocab: Vocab, skip_invalid: bool = False, progress: bool = False
) -> SplitResult:
    """Convert one split file.

    Missing columns and empty files fail before any row is converted; every bad row is
    found in one pass: with ``skip_invalid`` they become rejects, else they are all listed.

    Raises:
        AdaptnerError: an empty input, missing columns, or bad rows (unless ``skip_invalid``).
    """
    result = SplitResult(split=split, source=str(path))
    all_rows = list(read_rows(path))
    check_columns(path, all_rows)
    rows: Any = all_rows
    if progress:
        from tqdm import tqdm

        rows = tqdm(all_rows, desc=f"corpus {split}", unit="rows", leave=False)
    errors: list[RowError] = []
    for index, row in rows:
        try:
            doc = row_to_doc(row, vocab, split, index, source=str(path))
        except RowError as e:
            errors.append(e)
            result.rejects.append({"split": split, "row": index, "reason": e.reason, "data": row})
            continue
        result.docs.append(doc)
        result.docs_by_domain.setdefault(doc._.domain, []).append(doc)
    if errors and not skip_invalid:
        if len(errors) == 1:
            raise errors[0]
        listed = "\n".join(str(e) for e in errors[:MAX_LISTED_ROWS])
        more = len(errors) - MAX_LISTED_ROWS
        raise AdaptnerError(
            f"{len(errors)} bad rows in {path} (split '{split}'); fix them, or pass "
            "--skip-invalid to write them to --rejects and convert the rest:\n"
            + listed
            + (f"\n… and {more} more" if more > 0 else "")
        )
    if not result.docs:
        raise AdaptnerError(
            f"Every row of {path} ({len(result.rejects)}) was rejected; first: "
            f"row {result.rejects[0]['row']}: {result.rejects[0]['reason']}. Nothing written."
        )
    return result


def _existing_docs(split_dir: Path) -> int:
    """Docs in an existing ``<split>/all.spacy`` (0 when there is none or it is unreadable)."""
    path = split_dir / "all.spacy"
    if not path.is_file():
        return 0
    try:
        return len(DocBin().from_disk(path))
    except Exception:  # noqa: BLE001 - a broken old corpus is not worth keeping
        return 0


def split_stats(docs_by_domain: dict[str, list[Doc]]) -> dict[str, Any]:
    """Counts of sentences, tokens and entities per label, per domain and overall."""
    out: dict[str, Any] = {}
    total: dict[str, Any] = {"sentences": 0, "tokens": 0, "entities": 0, "labels": Counter()}
    for domain in _ordered(docs_by_domain):
        docs = docs_by_domain[domain]
        labels = Counter(ent.label_ for doc in docs for ent in doc.ents)
        stats = {
            "sentences": len(docs),
            "tokens": sum(len(d) for d in docs),
            "entities": sum(labels.values()),
            "labels": dict(sorted(labels.items())),
        }
        out[domain] = stats
        for key in ("sentences", "tokens", "entities"):
            total[key] += stats[key]
        total["labels"].update(labels)
    total["labels"] = dict(sorted(total["labels"].items()))
    out["all"] = total
    return out


def _ordered(domains: Sequence[str]) -> list[str]:
    known = [d for d in DOMAINS if d in domains]
    return known + sorted(d for d in domains if d not in DOMAINS)


def report_markdown(report: dict[str, Any]) -> str:
    """The corpus report as Markdown tables: one per split, rows = domains, columns = labels."""
    lines = ["# DANSK corpus report", ""]
    for split, missing in report["missing_splits"].items():
        lines.append(f"- split **{split}** not found: {missing}")
    if report["missing_splits"]:
        lines.append("")
    for split, info in report["splits"].items():
        stats = info["stats"]
        lines += [f"## {split} ({info['source']})", ""]
        if info["rejected"]:
            lines += [f"{info['rejected']} rows rejected (see {info['rejects_file']}).", ""]
        head = ["domain", "sentences", "tokens", "entities", *ONTONOTES_LABELS]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for domain, s in stats.items():
            cells = [domain, s["sentences"], s["tokens"], s["entities"]]
            cells += [s["labels"].get(label, 0) for label in ONTONOTES_LABELS]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def convert_corpus(
    input_dir: Path,
    output_dir: Path,
    splits: Sequence[str] = SPLITS,
    skip_invalid: bool = False,
    rejects_path: Path | None = None,
    report_path: Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    force: bool = False,
) -> dict[str, Any]:
    """Convert every split found in ``input_dir`` to ``output_dir/<split>/<domain>.spacy``.

    Every split is converted and checked before anything is written; each split directory
    is built in a temporary directory and renamed into place, so a failure leaves earlier
    output untouched. A split with rejected rows never replaces an existing split that has
    more documents, and a split directory ``corpus`` did not write is never replaced,
    unless ``force``.

    Returns:
        The report: per split the source file, counts per domain and label, rejects;
        and ``missing_splits`` with a reason for every split that was not found.

    Raises:
        AdaptnerError: a missing input directory, no split at all, an empty input, missing
            columns, bad rows (unless ``skip_invalid``; all listed), every row rejected, a
            worse corpus than the one in place, or an output directory that is not a corpus.
    """
    install_extensions()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise AdaptnerError(
            f"DANSK directory {input_dir} does not exist. Point --input at the folder with "
            "train.parquet/dev.parquet (or .jsonl), or run `adaptner download`."
        )
    report: dict[str, Any] = {"input": str(input_dir), "splits": {}, "missing_splits": {}}
    results: list[SplitResult] = []
    vocab = Vocab()
    for split in splits:
        path = find_split_file(input_dir, split)
        if path is None:
            reason = f"no {split}.parquet or {split}.jsonl in {input_dir}"
            report["missing_splits"][split] = reason
            log(f"split '{split}' is missing ({reason}); later steps will score on what exists")
            continue
        results.append(convert_split(path, split, vocab, skip_invalid, progress))
    if not results:
        looked = ", ".join(splits)
        raise AdaptnerError(f"No DANSK split found in {input_dir} (looked for {looked}).")
    for res in results:
        split_dir = output_dir / res.split
        check_output_dir(split_dir, "corpus", force=force, owned_files=("all.spacy",))
        before = _existing_docs(split_dir)
        if res.rejects and before > len(res.docs) and not force:
            raise AdaptnerError(
                f"{split_dir} holds {before} docs; this input gives {len(res.docs)} "
                f"({len(res.rejects)} rows of {res.source} rejected). Refusing to replace a "
                "corpus with a smaller one: fix the rows, write to another --output, or pass "
                "--force."
            )
    all_rejects: list[dict[str, Any]] = []
    for res in results:
        all_rejects.extend(res.rejects)
        with atomic_output(
            output_dir / res.split, "corpus", force=True, owned_files=("all.spacy",)
        ) as tmp:
            for domain, docs in res.docs_by_domain.items():
                DocBin(docs=docs, store_user_data=True).to_disk(tmp / f"{domain}.spacy")
            DocBin(docs=res.docs, store_user_data=True).to_disk(tmp / "all.spacy")
        report["splits"][res.split] = {
            "source": res.source,
            "rejected": len(res.rejects),
            "rejects_file": str(rejects_path) if res.rejects and rejects_path else None,
            "stats": split_stats(res.docs_by_domain),
        }
        log(
            f"{res.split}: {len(res.docs)} docs in "
            f"{len(res.docs_by_domain)} domains -> {output_dir / res.split}"
            + (f" ({len(res.rejects)} rejected)" if res.rejects else "")
        )
    if all_rejects and rejects_path is not None:
        write_jsonl(rejects_path, all_rejects)
    if report_path is not None:
        write_json(Path(report_path), report)
        write_text(Path(report_path).with_suffix(".md"), report_markdown(report))
    return report


def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksums(directory: Path) -> dict[str, str]:
    """Check the known release files in ``directory``; returns file -> 'ok'/'missing'.

    Raises:
        AdaptnerError: on a checksum mismatch.
    """
    status = {}
    for name, expected in DANSK_SHA256.items():
        path = Path(directory) / name
        if not path.exists():
            status[name] = "missing"
            continue
        got = sha256sum(path)
        if got != expected:
            raise AdaptnerError(
                f"{path}: sha256 {got} does not match the DANSK release ({expected}). "
                "The file is corrupt or from another release; download it again."
            )
        status[name] = "ok"
    return status


def download_dansk(output_dir: Path, repo: str = HUB_DATASET, timeout: float = 30.0) -> list[Path]:
    """Download the DANSK parquet files from the Hugging Face hub and verify them.

    Files are written as ``<split>.parquet`` (temp file, then rename). Known files
    (train, dev) are checked against their sha256; others are recorded in
    ``SHA256SUMS`` beside them.

    Raises:
        AdaptnerError: when the hub cannot be reached or a checksum does not match.
    """
    output_dir = Path(output_dir)
    try:
        with urllib.request.urlopen(HUB_API.format(repo=repo), timeout=timeout) as r:
            listing = json.load(r)
    except Exception as e:  # noqa: BLE001
        raise AdaptnerError(
            f"Cannot reach the Hugging Face hub for {repo} ({e}). Offline? Use a local copy: "
            "`adaptner corpus --input ../shared/data/dansk`."
        ) from e
    written = []
    sums = []
    for entry in listing:
        name = Path(entry.get("path", "")).name
        if not name.endswith(".parquet"):
            continue
        split = name.split("-")[0].split(".")[0]
        if split not in SPLITS:
            continue
        target = output_dir / f"{split}.parquet"
        with atomic_path(target) as tmp:
            url = HUB_FILE.format(repo=repo, path=entry["path"])
            with urllib.request.urlopen(url, timeout=timeout) as r, tmp.open("wb") as f:
                shutil.copyfileobj(r, f)
            digest = sha256sum(tmp)
            expected = DANSK_SHA256.get(target.name)
            if expected and digest != expected:
                raise AdaptnerError(f"{url}: sha256 {digest} does not match {expected}")
        sums.append(f"{digest}  {target.name}")
        written.append(target)
    if not written:
        raise AdaptnerError(f"No parquet files found for {repo} on the hub.")
    write_text(output_dir / "SHA256SUMS", "\n".join(sums) + "\n")
    return written
