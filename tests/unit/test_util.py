"""Tests for the shared helpers: atomic writes and domain selection."""

import pytest

from adaptner.errors import AdaptnerError
from adaptner.util import append_jsonl, atomic_path, parse_domains, parse_params, write_json


def test_parse_domains_forms():
    avail = ["news", "legal", "web"]
    assert parse_domains("all", avail) == avail
    assert parse_domains("legal", avail) == ["legal"]
    assert parse_domains("news, web", avail) == ["news", "web"]
    assert parse_domains("all-but:legal", avail) == ["news", "web"]
    assert parse_domains(["web", "news"], avail) == ["web", "news"]


def test_parse_domains_unknown():
    with pytest.raises(AdaptnerError, match="Unknown domain 'sports'.*Known domains: news"):
        parse_domains("sports", ["news"])


def test_atomic_file_untouched_on_error(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_replaces_whole(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_path(target, is_dir=True) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_append_jsonl(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, {"round": 1})
    append_jsonl(path, {"round": 2})
    assert path.read_text().count("\n") == 2


def test_parse_params_json_values_and_named_errors():
    assert parse_params(["k=3", " mode =downweight", "w=0.5", "x=a=b"], "--param", "k=1") == {
        "k": 3,
        "mode": "downweight",
        "w": 0.5,
        "x": "a=b",
    }
    with pytest.raises(AdaptnerError, match=r"--cartography-param 'bad' must look like key=value"):
        parse_params(["bad"], "--cartography-param", "hard_quantile=0.1")
