"""The CLI turns usage errors and AdaptnerErrors into one message and a non-zero exit."""

import sys

import pytest

from adaptner.cli import main


def run(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["adaptner", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code


def test_bad_option_value_is_a_usage_error(monkeypatch, capsys):
    assert run(monkeypatch, "evaluate", "x", "--batch-size", "0") == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--batch-size'" in err
    assert "Traceback" not in err


def test_missing_argument(monkeypatch, capsys):
    assert run(monkeypatch, "evaluate") == 2
    assert "Missing argument" in capsys.readouterr().err


def test_user_error_is_one_red_line(monkeypatch, capsys, tmp_path):
    code = run(monkeypatch, "train", str(tmp_path / "missing.cfg"), "-o", str(tmp_path / "out"))
    assert code == 1
    err = capsys.readouterr().err
    assert "missing.cfg does not exist" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
