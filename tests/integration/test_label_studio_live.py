"""A live round trip through a real local Label Studio (bench/annotation_tools_roundtrip.py).

Runs only where ``label-studio`` is installed (on PATH, or $LABEL_STUDIO_BIN): CI does not
install it. Install it in its own venv, never the project's:
``python -m venv /tmp/lsvenv && /tmp/lsvenv/bin/pip install label-studio==1.23.2``, then
``LABEL_STUDIO_BIN=/tmp/lsvenv/bin/label-studio pytest tests/integration -k label_studio``.
"""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "annotation_tools_roundtrip.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("annotation_tools_roundtrip", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_studio_round_trip(tmp_path, request):
    bench = load_bench()
    if bench.label_studio_exe() is None:
        pytest.skip(
            "label-studio is not installed: pip install label-studio==1.23.2 in its own venv "
            "and put it on PATH or set LABEL_STUDIO_BIN"
        )
    corpus = request.getfixturevalue("corpus_dir")  # DANSK, converted (after the skip check)
    result = bench.run_roundtrip(tmp_path / "rt", corpus=corpus)["labelstudio"]
    n = result["batch"]
    assert result["loaded"] is True  # every task of the batch is in the project
    assert result["pre_annotations_shown"].startswith(f"{n}/{n} tasks")  # offsets and labels
    for kind in ("JSON", "JSON_MIN"):
        assert result[kind]["without_snap"].startswith("refused: ")
        assert "ends inside a token" in result[kind]["without_snap"]
        assert len(result[kind]["snaps"]) == 1
    assert result["JSON"]["counts"] == {
        "answered": 6,
        "accepted": 5,
        "ignored": 1,
        "outstanding": n - 6,
    }
    assert result["JSON_MIN"]["counts"]["answered"] == 5  # JSON_MIN leaves out skipped tasks
