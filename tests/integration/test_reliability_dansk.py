"""Reliability on the real DANSK files: bad releases fail before any row, a simulation whose
driver is killed with -9 takes its workers along and resumes to the same records, and a training
whose disk fills up says so."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptner.corpus import convert_corpus
from adaptner.errors import AdaptnerError
from adaptner.simulation import TIMING_FIELDS, ALSettings, GridSpec, read_records, run_grid
from adaptner.training import train_pipeline
from tests.conftest import small_disk

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"
# 300 legal train docs: pool 150, 15 per round, 4 rounds after round 0, 8 epochs per round
SETTINGS = ALSettings(
    pool_fraction=0.5, query_fraction=0.05, budget=0.2, epochs=8, train_limit=300, eval_limit=60
)


def tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("column", ["ents", "dagw_domain", "tokens"])
def test_release_without_a_column_fails_before_any_row(dansk_dir, tmp_path, column):
    import pyarrow.parquet as pq

    src = tmp_path / "in"
    src.mkdir()
    table = pq.read_table(dansk_dir / "dev.parquet")
    pq.write_table(table.drop_columns([column]), src / "dev.parquet")
    out = tmp_path / "corpus"
    convert_corpus(dansk_dir, out, splits=["dev"])
    before = tree(out)
    for skip in (False, True):
        with pytest.raises(AdaptnerError, match=rf"dev.parquet: no column '{column}' in any of"):
            convert_corpus(src, out, splits=["dev"], skip_invalid=skip)
    assert tree(out) == before


def test_dev_release_converts_with_no_rejects(dansk_dir, tmp_path):
    report = convert_corpus(dansk_dir, tmp_path / "c", splits=["dev"], skip_invalid=True)
    assert report["splits"]["dev"]["rejected"] == 0
    assert report["splits"]["dev"]["stats"]["all"]["sentences"] == 1461


def spec(corpus: Path, model: Path, out: Path) -> GridSpec:
    return GridSpec(
        sources=["news"],
        targets=["legal"],
        strategies=["random", "margin"],
        modes=["reset"],
        seeds=[0],
        settings=SETTINGS,
        train_config=TEST_CONFIG,
        corpus_dir=corpus,
        output_dir=out,
        models_dir=out.parent / "training",
        source_model=model,
        baselines=[],
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        out += [int(x) for x in text.split()]
    return out


def lines(folder: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in folder.glob("*.jsonl"))


def test_killed_driver_takes_its_workers_and_resumes_identically(
    dansk_corpus, tiny_news_model, tmp_path
):
    out = tmp_path / "al"
    al_cfg = tmp_path / "al.cfg"
    al_cfg.write_text(
        "[simulation]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in vars(SETTINGS).items())
    )
    cmd = [
        sys.executable, "-m", "adaptner", "simulate", "-t", "legal", "--strategy", "random",
        "--strategy", "margin", "-n", "1", "--baselines", "none", "-j", "2", "-q",
        "--al-config", al_cfg, "--source-model", tiny_news_model, "--corpus", dansk_corpus,
        "-o", out, "--models-dir", tmp_path / "training",
    ]  # fmt: skip
    driver = subprocess.Popen(
        [str(c) for c in cmd], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 600
    while lines(out) < 1 and time.time() < deadline:
        time.sleep(0.2)
    assert lines(out) >= 1, driver.stderr.read() if driver.poll() is not None else "timeout"
    kids = children(driver.pid)
    assert kids, "the driver runs worker processes"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 15
    while any(alive(k) for k in kids) and time.time() < deadline:
        time.sleep(0.2)
    left = [k for k in kids if alive(k)]
    for k in left:
        os.kill(k, signal.SIGKILL)
    assert not left, "workers outlived their killed driver"
    written = lines(out)
    time.sleep(3)
    assert lines(out) == written  # nobody writes any more
    run_grid(spec(dansk_corpus, tiny_news_model, out), progress=False, log=lambda _: None)
    run_grid(
        spec(dansk_corpus, tiny_news_model, tmp_path / "whole"), progress=False, log=lambda _: None
    )
    for path in sorted((tmp_path / "whole").glob("*.jsonl")):
        whole = [
            {k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in read_records(path)[0]
        ]
        resumed = [
            {k: v for k, v in r.items() if k not in TIMING_FIELDS}
            for r in read_records(out / path.name)[0]
        ]
        assert resumed == whole and whole[-1]["last"]


def test_training_whose_disk_fills_up_says_so(corpus_dir, tmp_path):
    """The CPU pipeline trained on DANSK News into a disk with 64 kB left: spaCy's checkpoint
    fills it. The error is the disk, named with the output; the temporary is removed."""
    with small_disk(tmp_path / "disk", free=64_000) as disk:
        out = disk / "news"
        with pytest.raises(AdaptnerError) as info:
            train_pipeline(
                TEST_CONFIG,
                out,
                train_path=corpus_dir / "train",
                dev_path=corpus_dir / "dev",
                train_domains="news",
                overrides={"training.max_steps": 10, "corpora.dev.limit": 50},
                verbose=False,
            )
        assert str(info.value) == f"No space left on device writing {out}: free space and rerun."
        assert [p.name for p in disk.iterdir()] == ["filler"]
