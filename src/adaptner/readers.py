"""Corpus reader over the per-domain DocBins written by ``adaptner corpus``."""

import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry

from .errors import AdaptnerError
from .extensions import install_extensions
from .util import parse_domains, raise_file_system_error


def available_domains(corpus_dir: str | Path) -> list[str]:
    """Domain slugs that have a DocBin in ``corpus_dir`` (``all.spacy`` excluded)."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise AdaptnerError(
            f"Corpus directory {corpus_dir} does not exist. Run `adaptner corpus` "
            "(or `spacy project run corpus`) first."
        )
    return sorted(p.stem for p in corpus_dir.glob("*.spacy") if p.stem != "all")


def read_docbin(path: str | Path, vocab) -> list[Doc]:
    """Read all Docs of a DocBin, with a clear error for missing or corrupt files."""
    install_extensions()
    path = Path(path)
    if not path.exists():
        raise AdaptnerError(f"DocBin {path} does not exist.")
    try:
        docbin = DocBin(store_user_data=True).from_disk(path)
        return list(docbin.get_docs(vocab))
    except AdaptnerError:
        raise
    except Exception as e:  # noqa: BLE001 - anything DocBin raises on bad bytes
        raise_file_system_error(e)
        raise AdaptnerError(
            f"DocBin {path} is corrupt or not a DocBin ({type(e).__name__}: {e}). "
            "Re-create it with `adaptner corpus`."
        ) from e


def load_domain_docs(
    corpus_dir: str | Path, domains: str | list[str], vocab
) -> list[Doc]:
    """Docs of the selected domains from ``corpus_dir/<domain>.spacy``, in domain order."""
    corpus_dir = Path(corpus_dir)
    selected = parse_domains(domains, available_domains(corpus_dir))
    docs: list[Doc] = []
    for domain in selected:
        docs.extend(read_docbin(corpus_dir / f"{domain}.spacy", vocab))
    return docs


@registry.readers("adaptner.DomainCorpus.v1")
def create_domain_corpus(
    path: Path | None,
    domains: str = "all",
    limit: int = 0,
    shuffle: bool = False,
    seed: int = 0,
) -> Callable[[Language], Iterable[Example]]:
    """Read training examples for a selection of domains.

    Args:
        path: A corpus split directory holding ``<domain>.spacy`` files (e.g. corpus/train),
            or a single ``.spacy`` file (then ``domains`` filters on ``doc._.domain``).
        domains: "all", a slug, "news,legal", or "all-but:legal".
        limit: Keep at most this many docs (0 = all), after the optional shuffle.
        shuffle: Shuffle the docs once, with ``seed``.
        seed: Seed for the shuffle.
    """

    def read(nlp: Language) -> Iterator[Example]:
        if path is None:
            raise AdaptnerError("No corpus path given (paths.train / paths.dev is null).")
        p = Path(path)
        if p.is_file() or p.suffix == ".spacy":
            docs = read_docbin(p, nlp.vocab)
            if domains not in ("all", "*", ""):
                present = sorted({d._.domain or "unknown" for d in docs})
                wanted = set(parse_domains(domains, present))
                docs = [d for d in docs if (d._.domain or "unknown") in wanted]
        else:
            docs = load_domain_docs(p, domains, nlp.vocab)
        if shuffle:
            random.Random(seed).shuffle(docs)
        if limit:
            docs = docs[:limit]
        for doc in docs:
            yield Example(nlp.make_doc(doc.text), doc)

    return read
