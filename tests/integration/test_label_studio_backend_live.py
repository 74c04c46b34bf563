"""The ML backend against a real local Label Studio (bench/label_studio_backend.py).

Runs only where ``label-studio`` is installed (on PATH, or $LABEL_STUDIO_BIN): CI does not
install it. Install it in its own venv, never the project's:
``python -m venv /tmp/lsvenv && /tmp/lsvenv/bin/pip install label-studio==1.23.2``, then
``LABEL_STUDIO_BIN=/tmp/lsvenv/bin/label-studio pytest tests/integration -k backend_live``.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("uvicorn")

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(
        "label_studio_backend", BENCH / "label_studio_backend.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_studio_backend_loop(tmp_path, request):
    bench = load_bench()
    from annotation_tools_roundtrip import label_studio_exe

    if label_studio_exe() is None:
        pytest.skip(
            "label-studio is not installed: pip install label-studio==1.23.2 in its own venv "
            "and put it on PATH or set LABEL_STUDIO_BIN"
        )
    corpus = request.getfixturevalue("corpus_dir")
    log = bench.run(
        tmp_path / "run",
        tmp_path / "out",
        corpus=corpus,
        source=None,
        n_pool=120,
        rounds=3,
        strategy="margin",
        ls_url=None,
        ls_token=bench.LS_TOKEN,
        record=None,
        command="pytest",
    )
    assert log["connected"]["state"] == "Connected"
    assert log["push"]["tasks"] == 120
    versions = [(r["model_version"], r["next_model_version"]) for r in log["rounds"]]
    assert versions == [(f"rt-round-{k}", f"rt-round-{k + 1}") for k in range(3)]
    for row in log["rounds"]:
        assert row["tasks_with_current_predictions"] == 120 - row["round"]
        assert row["spearman_ls_score_vs_strategy"] > 0.95
        assert row["latency_s"] < 30
    assert (tmp_path / "out" / "label_studio_backend.png").exists()
