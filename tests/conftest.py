"""Shared fixtures: repository paths and the real DANSK data."""

from pathlib import Path

import pytest
import spacy

import adaptner  # noqa: F401 - installs extensions and registers functions

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


@pytest.fixture
def nlp_blank():
    return spacy.blank("da")
