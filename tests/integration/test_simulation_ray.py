"""`--backend ray` on a real local Ray (started once per session): the same records as the
local pool, a killed worker process re-run from its last saved round, and a killed driver
resumed by re-running the CLI (which joins the running Ray with --ray-address)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adaptner.errors import AdaptnerError
from adaptner.simulation import TIMING_FIELDS, GridSpec, read_records, run_grid
from adaptner.simulation.config import load_al_settings

ray = pytest.importorskip(
    "ray", reason="Ray is not installed; the Ray tests need pip install -e '.[test,ray]'"
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"
AL_CONFIG = ROOT / "configs" / "al" / "test" / "tiny.cfg"
# tiny.cfg (100 target docs, pool 50, rounds 0-3 of 10 docs) with rounds long enough (about
# a second) that a kill lands inside a run.
EPOCHS = 12
SETTINGS = load_al_settings(AL_CONFIG, epochs=EPOCHS)
STRATEGIES = ["random", "margin"]
RUN_IDS = [f"news_social_media_{s}_reset_s0" for s in STRATEGIES]


@pytest.fixture(scope="session")
def ray_address():
    """A local Ray with 2 CPUs for the whole session; its address, for other drivers."""
    saved = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception:  # noqa: BLE001 - Ray's own start-up can time out on a loaded machine
        ray.shutdown()  # one retry; a second failure fails every test that uses the cluster
        ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["address"]
    ray.shutdown()
    if saved is None:
        os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
    else:
        os.environ["RAY_USAGE_STATS_ENABLED"] = saved


def grid(corpus_dir: Path, source: Path, out: Path, **changes) -> GridSpec:
    fields = {
        "sources": ["news"],
        "targets": ["social_media"],
        "strategies": STRATEGIES,
        "modes": ["reset"],
        "seeds": [0],
        "settings": SETTINGS,
        "train_config": TEST_CONFIG,
        "corpus_dir": corpus_dir,
        "output_dir": out,
        "models_dir": out.parent / "training",
        "source_model": source,
        "baselines": [],
    }
    fields.update(changes)
    return GridSpec(**fields)


def results(folder: Path) -> dict[str, list[dict]]:
    """Every run's records without timings, and every baseline without its seconds."""
    out = {
        p.stem: [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in read_records(p)[0]]
        for p in sorted(folder.glob("*.jsonl"))
    }
    for p in sorted(folder.glob("baselines/*.json")):
        data = json.loads(p.read_text(encoding="utf8"))
        data.pop("seconds")
        out[p.stem] = [data]
    return out


def rounds(folder: Path) -> dict[str, list[int]]:
    return {p.stem: [r["round"] for r in read_records(p)[0]] for p in folder.glob("*.jsonl")}


@pytest.fixture(scope="module")
def local_results(corpus_dir, tiny_news_model, tmp_path_factory):
    """The grid (with two baselines) on the local process pool: the reference."""
    out = tmp_path_factory.mktemp("local") / "al"
    spec = grid(corpus_dir, tiny_news_model, out, baselines=["source_only", "target_full"])
    run_grid(spec, workers=2, progress=False, log=lambda _: None)
    return results(out)


def test_ray_matches_the_local_pool(
    ray_address, corpus_dir, tiny_news_model, local_results, tmp_path
):
    out = tmp_path / "al"
    logs: list[str] = []
    spec = grid(corpus_dir, tiny_news_model, out, baselines=["source_only", "target_full"])
    run_grid(spec, backend="ray", progress=False, log=logs.append)
    assert any("(0/10 rounds done, 4 tasks to run, backend ray)" in line for line in logs), logs
    assert sorted(local_results) == sorted(
        [*RUN_IDS, "news_social_media_source_only_s0", "news_social_media_target_full_s0"]
    )
    assert results(out) == local_results  # same rounds, same F1, same labeled docs
    assert rounds(out) == {run: [0, 1, 2, 3] for run in RUN_IDS}


def find_task_pid(title: str) -> int | None:
    """The pid of the Ray worker process running the task named ``title`` (its proctitle)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip()
            except OSError:
                continue
            if cmdline.decode(errors="replace") == title:
                return int(proc.name)
    return None


def kill_when(path: Path, n_rounds: int, title: str, timeout: float = 300) -> dict:
    """In a thread: SIGKILL the process titled ``title`` once ``path`` holds ``n_rounds``."""
    seen: dict = {}

    def watch() -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if path.exists() and len(read_records(path)[0]) >= n_rounds:
                pid = find_task_pid(title)
                if pid is not None:
                    seen["rounds"] = len(read_records(path)[0])
                    os.kill(pid, signal.SIGKILL)
                    seen["pid"] = pid
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    seen["thread"] = thread
    return seen


def test_a_killed_worker_is_rerun_from_its_last_round(
    ray_address, corpus_dir, tiny_news_model, local_results, tmp_path
):
    out = tmp_path / "al"
    victim = "news_social_media_margin_reset_s0"
    killed = kill_when(out / f"{victim}.jsonl", 2, f"ray::adaptner:{victim}")
    logs: list[str] = []
    run_grid(grid(corpus_dir, tiny_news_model, out), backend="ray", progress=False, log=logs.append)
    killed["thread"].join(timeout=5)
    assert "pid" in killed, "the worker was never seen running the margin run"
    retried = [line for line in logs if line.startswith(f"⚠ {victim}: its Ray worker died")]
    assert retried == [
        f"⚠ {victim}: its Ray worker died (WorkerCrashedError); re-running from round "
        f"{killed['rounds']} (retry 1 of 3)"
    ], logs
    # every round exactly once, and the same records as without the kill
    assert rounds(out) == {run: [0, 1, 2, 3] for run in RUN_IDS}
    expected = {k: v for k, v in local_results.items() if k in RUN_IDS}
    assert results(out) == expected


def test_no_retries_left_reports_the_task(ray_address, corpus_dir, tiny_news_model, tmp_path):
    out = tmp_path / "al"
    victim = "news_social_media_random_reset_s0"
    killed = kill_when(out / f"{victim}.jsonl", 1, f"ray::adaptner:{victim}")
    failed = rf"1 of 2 tasks failed; first: {victim}: its Ray worker died 1 times"
    with pytest.raises(AdaptnerError, match=failed):
        run_grid(
            grid(corpus_dir, tiny_news_model, out),
            backend="ray",
            ray_retries=0,
            progress=False,
            log=lambda _: None,
        )
    killed["thread"].join(timeout=5)
    saved = rounds(out)
    assert saved["news_social_media_margin_reset_s0"] == [0, 1, 2, 3]
    assert saved[victim] == list(range(killed["rounds"]))  # kept for a resume


def test_a_killed_driver_resumes(ray_address, corpus_dir, tiny_news_model, local_results, tmp_path):
    out = tmp_path / "al"
    cmd = [
        sys.executable, "-m", "adaptner", "simulate", "-s", "news", "-t", "social_media",
        "--strategy", "random", "--strategy", "margin", "-m", "reset", "-n", "1",
        "--source-model", tiny_news_model, "--corpus", corpus_dir, "-o", out,
        "--al-config", AL_CONFIG, "--epochs", EPOCHS, "-c", TEST_CONFIG,
        "--baselines", "none", "--quiet", "--backend", "ray", "--ray-address", ray_address,
    ]  # fmt: skip
    cmd = list(map(str, cmd))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 300
        while sum(map(len, rounds(out).values())) < 3 and driver.poll() is None:
            assert time.monotonic() < end, "no rounds saved in 300 s"
            time.sleep(0.05)
        driver.kill()
    finally:
        driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL, driver.stdout.read().decode()
    done = sum(map(len, rounds(out).values()))
    assert 3 <= done < 8, "the driver must be killed mid-grid"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"({done}/8 rounds done, " in rerun.stdout
    assert rounds(out) == {run: [0, 1, 2, 3] for run in RUN_IDS}
    assert results(out) == {k: v for k, v in local_results.items() if k in RUN_IDS}
