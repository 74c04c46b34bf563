"""Domain-adaptive pretraining of a config's CNN tok2vec on unlabeled Danish text."""

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import spacy
from confection import Config
from spacy.language import DEFAULT_CONFIG_PRETRAIN_PATH, Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import load_config, registry
from tqdm import tqdm

from .errors import AdaptnerError
from .extensions import install_extensions
from .readers import load_domain_docs
from .training import load_training_config
from .util import atomic_output, check_output_dir, read_jsonl, write_json, write_jsonl

PathLike = str | Path

#: The weights file that training reads through ``paths.init_tok2vec``.
WEIGHTS_NAME = "model-last.bin"
#: The unlabeled texts pretrained on (one ``{"text": ...}`` per line), kept for provenance.
TEXTS_NAME = "texts.jsonl"
META_NAME = "pretrain_meta.json"
#: Split folder names whose texts make a dev/test score transductive when pretrained on.
HELD_OUT_SPLITS = ("dev", "test")
#: Components that are not a CNN tok2vec: spaCy's pretraining does not apply to them.
TRANSFORMER_FACTORIES = ("transformer", "curated_transformer")


# --- texts ----------------------------------------------------------------------------------


def collect_texts(
    corpus_dirs: Sequence[PathLike] = ("corpus/train",),
    domains: str = "all",
    pools: Sequence[PathLike] = (),
    *,
    progress: bool = False,
) -> tuple[list[str], list[dict[str, Any]]]:
    """The raw texts of the selected corpus domains and of target-pool files (labels ignored).

    Args:
        corpus_dirs: Split directories with ``<domain>.spacy`` files (e.g. corpus/train).
        domains: Corpus domains to take: "all", "news,legal", "all-but:legal", or "none" to
            use only the pools.
        pools: Target-pool files: a DocBin (.spacy), JSONL with "text", or one sentence per
            line (the formats ``adaptner session`` reads).
        progress: Show a progress bar over the sources.

    Returns:
        (texts in source order, one summary per source: {"source", "kind", "domains", "texts"}).

    Raises:
        AdaptnerError: a missing corpus directory or pool, an unknown domain, a corrupt file.
    """
    from .session.pool import read_pool

    install_extensions()
    nlp = spacy.blank("da")
    use_corpus = domains.strip().lower() != "none"
    sources: list[tuple[str, Path]] = []
    if use_corpus:
        sources += [("corpus", Path(d)) for d in corpus_dirs]
    sources += [("pool", Path(p)) for p in pools]
    if not sources:
        raise AdaptnerError(
            "No text to pretrain on: --domains none and no --pool file. Select corpus domains "
            "(--domains all) or pass a target pool (--pool FILE)."
        )
    texts: list[str] = []
    summary: list[dict[str, Any]] = []
    for kind, path in tqdm(sources, desc="read texts", unit="source", disable=not progress):
        if kind == "corpus":
            docs = load_domain_docs(path, domains, nlp.vocab)
            found = sorted({doc._.domain or "unknown" for doc in docs})
            new = [doc.text for doc in docs]
            summary.append({"source": str(path), "kind": kind, "domains": found, "texts": len(new)})
        else:
            new = [item.text for item in read_pool(path, nlp.make_doc, nlp.vocab)]
            summary.append({"source": str(path), "kind": kind, "domains": None, "texts": len(new)})
        texts.extend(new)
    return texts, summary


def prepare_texts(texts: Iterable[str], *, seed: int = 0, limit: int = 0) -> list[str]:
    """Strip, drop empty and duplicate texts, shuffle once with ``seed``, keep ``limit`` (0 = all).

    spaCy's pretraining loop reads the corpus in file order, so the file is shuffled here
    (domains would otherwise come in blocks); the reader reshuffles every epoch.
    """
    if limit < 0:
        raise AdaptnerError(f"--limit must be 0 (all) or positive, got {limit}.")
    unique = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
    order = np.random.default_rng(seed).permutation(len(unique))
    out = [unique[i] for i in order]
    return out[:limit] if limit else out


def is_transductive(corpus_dirs: Sequence[PathLike], domains: str = "all") -> bool:
    """Whether the corpus texts include a held-out split (dev/test) by its folder name."""
    if domains.strip().lower() == "none":
        return False
    return any(Path(d).name in HELD_OUT_SPLITS for d in corpus_dirs)


# --- reader ---------------------------------------------------------------------------------


@registry.readers("adaptner.PretrainText.v1")
def create_pretrain_text(
    path: Path,
    min_length: int = 1,
    max_length: int = 500,
    shuffle: bool = True,
    seed: int = 0,
    epochs: int = 0,
    progress: bool = False,
) -> Callable[[Language], Iterator[Example]]:
    """Read ``{"text": ...}`` lines for ``spacy pretrain``, reshuffled every epoch.

    The texts are tokenized once and kept; each call (one epoch of spaCy's pretraining loop)
    yields them in a new order drawn from ``seed``. With ``progress``, one bar counts words
    over all ``epochs``.

    Args:
        path: A JSONL file with one object per line holding a "text" string.
        min_length / max_length: Skip docs with fewer / at least this many tokens (0 = no bound).
        shuffle: Shuffle the docs every epoch.
        seed: Seed of the per-epoch shuffles.
        epochs: Number of epochs, for the progress bar's total (0 = unknown).
        progress: Show a progress bar (words).
    """
    state: dict[str, Any] = {"docs": None, "rng": np.random.default_rng(seed), "bar": None}

    def load(nlp: Language) -> list[Doc]:
        p = Path(path)
        if not p.exists():
            raise AdaptnerError(f"Pretraining texts {p} do not exist.")
        docs = []
        for lineno, obj in read_jsonl(p, objects=False):
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise AdaptnerError(f'{p}:{lineno}: expected an object with a "text" string.')
            doc = nlp.make_doc(text)
            if min_length >= 1 and len(doc) < min_length:
                continue
            if max_length >= 1 and len(doc) >= max_length:
                continue
            docs.append(doc)
        if not docs:
            raise AdaptnerError(
                f"{p} holds no text of {min_length} to {max_length} tokens to pretrain on."
            )
        return docs

    def read(nlp: Language) -> Iterator[Example]:
        if state["docs"] is None:
            state["docs"] = load(nlp)
            if progress:
                words = sum(len(doc) for doc in state["docs"])
                state["bar"] = tqdm(
                    total=words * epochs if epochs else None, desc="pretrain", unit="word"
                )
        docs: list[Doc] = state["docs"]
        order = state["rng"].permutation(len(docs)) if shuffle else np.arange(len(docs))
        bar = state["bar"]
        for i in order:
            doc = docs[int(i)]
            yield Example(doc, doc)
            if bar is not None:
                bar.update(len(doc))
        if bar is not None and bar.total is not None and bar.n >= bar.total:
            bar.close()

    return read


# --- config ---------------------------------------------------------------------------------


def build_pretrain_config(
    config_path: PathLike,
    texts_path: PathLike,
    *,
    epochs: int | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
) -> Config:
    """The training config with its ``[pretraining]`` block aimed at ``texts_path``.

    The config's own ``[pretraining]`` block is used (spaCy's defaults fill an empty one);
    ``corpora.pretrain`` is added, reading ``texts_path`` with ``adaptner.PretrainText.v1``.

    Raises:
        AdaptnerError: a missing/bad config, a pretraining component that is not in the
            pipeline or is a transformer, or ``epochs`` below 1.
    """
    config = load_training_config(config_path, seed=seed, overrides=overrides)
    if not config.get("pretraining"):
        defaults = load_config(DEFAULT_CONFIG_PRETRAIN_PATH, interpolate=False)
        config["pretraining"] = defaults["pretraining"]
    P = config["pretraining"]
    if epochs is not None:
        if epochs < 1:
            raise AdaptnerError(f"--epochs must be at least 1, got {epochs}.")
        P["max_epochs"] = epochs
    component = P.get("component")
    pipeline = list(config["nlp"]["pipeline"])
    if component not in pipeline:
        raise AdaptnerError(
            f"{config_path}: [pretraining] component = {component!r} is not in the pipeline "
            f"({', '.join(pipeline)}). Pretrain a config with a CNN tok2vec "
            "(configs/bio_cnn.cfg) or set pretraining.component."
        )
    factory = config["components"].get(component, {}).get("factory")
    if factory in TRANSFORMER_FACTORIES:
        raise AdaptnerError(
            f"{config_path}: component {component!r} is a {factory}; spaCy's pretraining "
            "trains a CNN tok2vec. Use configs/bio_cnn.cfg."
        )
    P["corpus"] = "corpora.pretrain"
    config.setdefault("corpora", {})["pretrain"] = {
        "@readers": "adaptner.PretrainText.v1",
        "path": str(texts_path),
        "min_length": 1,
        "max_length": 500,
        "shuffle": True,
        "seed": "${system.seed}",
        "epochs": "${pretraining.max_epochs}",
        "progress": progress,
    }
    config["initialize"]["init_tok2vec"] = None
    return config


# --- running --------------------------------------------------------------------------------


def read_pretrain_log(path: PathLike) -> list[dict[str, Any]]:
    """spaCy's per-save log (``log.jsonl``): epoch, words seen, cumulative and epoch loss."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines() if line]


def run_pretraining(
    config_path: PathLike,
    output_dir: PathLike,
    *,
    corpus_dirs: Sequence[PathLike] = ("corpus/train",),
    domains: str = "all",
    pools: Sequence[PathLike] = (),
    epochs: int | None = None,
    limit: int = 0,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    force: bool = False,
) -> Path:
    """Pretrain the config's tok2vec (spaCy's character objective) and return the weights path.

    Writes, atomically, into ``output_dir``: ``texts.jsonl`` (the texts used), ``config.cfg``
    (the config with its ``corpora.pretrain``), spaCy's ``model<N>.bin`` checkpoints and
    ``log.jsonl``, ``model-last.bin`` (for ``paths.init_tok2vec``) and ``pretrain_meta.json``.
    Train with the same config (same tok2vec) so the weights fit.

    Args:
        config_path: A training config with a CNN tok2vec (configs/bio_cnn.cfg).
        output_dir: Where the weights go.
        corpus_dirs: Split directories whose texts are used (labels ignored). Texts of a
            dev/test split make dev/test scores transductive; the meta records it.
        domains: Corpus domains ("all", "news,legal", "all-but:legal", "none").
        pools: Target-pool files (.spacy, .jsonl with "text", or plain text lines).
        epochs: Override ``pretraining.max_epochs``.
        limit: Keep at most this many texts (after the shuffle; 0 = all).
        seed: The one seed for the shuffles, weight init and dropout.
        overrides: Config overrides, e.g. {"pretraining.dropout": 0.1}.
        progress: Show progress bars.
        log: Where messages go.
        force: Replace an output directory that ``pretrain`` did not write.

    Raises:
        AdaptnerError: bad config, no texts, missing corpus or pool, bad epochs/limit, an
            output directory that ``pretrain`` did not write (without ``force``).
    """
    from spacy.training.pretrain import pretrain

    install_extensions()
    output_dir = Path(output_dir)
    # Check the config (and --epochs) before reading any text.
    build_pretrain_config(config_path, output_dir / TEXTS_NAME, epochs=epochs, overrides=overrides)
    check_output_dir(output_dir, "pretrain", force=force, owned_files=(META_NAME,))
    texts, sources = collect_texts(corpus_dirs, domains, pools, progress=progress)
    texts = prepare_texts(texts, seed=seed, limit=limit)
    if not texts:
        raise AdaptnerError("The selected sources hold no text to pretrain on.")
    transductive = is_transductive(corpus_dirs, domains)
    if transductive:
        log(
            "⚠ pretraining on dev/test texts: scores on those splits with these weights are "
            "transductive (texts seen without labels)."
        )
    start = time.perf_counter()
    with atomic_output(
        output_dir, "pretrain", force=force, owned_files=(META_NAME,), log=log
    ) as tmp:
        write_jsonl(tmp / TEXTS_NAME, ({"text": t} for t in texts))
        final = build_pretrain_config(
            config_path, output_dir / TEXTS_NAME, epochs=epochs, seed=seed, overrides=overrides
        )
        final.to_disk(tmp / "config.cfg")
        runtime = build_pretrain_config(
            config_path,
            tmp / TEXTS_NAME,
            epochs=epochs,
            seed=seed,
            overrides=overrides,
            progress=progress,
        )
        try:
            pretrain(runtime.interpolate(), tmp, use_gpu=-1, silent=True)
        except AdaptnerError:
            raise
        except Exception as e:
            if type(e).__name__ == "ConfigValidationError":
                raise AdaptnerError(f"Config {config_path} is invalid for pretraining:\n{e}") from e
            raise
        seconds = time.perf_counter() - start
        entries = read_pretrain_log(tmp / "log.jsonl")
        n_epochs = int(final["pretraining"]["max_epochs"])
        write_json(
            tmp / META_NAME,
            {
                "config": str(config_path),
                "weights": str(output_dir / WEIGHTS_NAME),
                "component": final["pretraining"]["component"],
                "layer": final["pretraining"]["layer"],
                "objective": final["pretraining"]["objective"].get("@architectures"),
                "sources": sources,
                "domains": domains,
                "texts": len(texts),
                "words_per_epoch": entries[-1]["nr_word"] // n_epochs if entries else None,
                "epochs": n_epochs,
                "seed": seed,
                "limit": limit,
                "transductive": transductive,
                "seconds": round(seconds, 2),
                "epoch_loss": {
                    int(e["epoch"]): e["epoch_loss"] for e in entries if e["epoch"] < n_epochs
                },
                "overrides": dict(overrides or {}),
            },
        )
    return output_dir / WEIGHTS_NAME
