"""No command destroys what it was not asked to, nothing wrong is accepted silently, and every
error names its real cause with a remedy that works.

Each case is one test, through the real entry point (``adaptner.cli.main``) where
the case is about the command line: a clear one-line error naming the file / row / key, exit
code 1, and nothing lost or half-written; kill -9 resume, corrupt DocBins and concurrent
imports too. DANSK-based cases are in tests/integration/test_reliability_dansk.py.
"""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from spacy.tokens import DocBin

from adaptner.cli import main
from adaptner.errors import AdaptnerError
from adaptner.simulation import ALSettings, GridSpec, read_records, run_grid
from adaptner.simulation.config import load_al_settings
from adaptner.simulation.engine import SETTINGS_FILE, check_folder_settings
from adaptner.training import load_training_config, train_pipeline
from adaptner.util import (
    OUTPUT_MARKER,
    atomic_output,
    clean_stale_temps,
    exit_with_parent,
    file_lock,
)
from tests.conftest import small_disk
from tests.unit.test_corpus import make_row
from tests.unit.test_corpus import write_jsonl as write_rows
from tests.unit.test_session_flow import assets  # noqa: F401 - a fixture of `answered`
from tests.unit.test_simulation_engine import make_source_pipeline, write_tiny_corpus

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"
TINY_AL = ALSettings(pool_fraction=0.5, query_fraction=0.1, budget=0.2, epochs=1, batch_size=8)
#: A pid that is not running (above the kernel's pid_max).
DEAD_PID = 2**22 + 1


def run_cli(monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["adaptner", *map(str, args)])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def one_error_line(capsys) -> str:
    """The CLI's error: exactly one line starting with ✘ (no traceback)."""
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip() and "%|" not in x]  # no progress bars
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("✘"), err
    return lines[0]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (hidden ones too, lock files aside) with its bytes."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.suffix != ".lock"
    }


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(corpus dir, source pipeline dir) of the hand-built two-domain corpus."""
    root = tmp_path_factory.mktemp("reliability")
    corpus = write_tiny_corpus(root / "corpus")
    return corpus, make_source_pipeline(root / "source", corpus, epochs=5)


def train_args(corpus: Path, out: Path) -> list:
    return [
        "train", TEST_CONFIG, "-o", out, "--train", corpus / "train", "--dev", corpus / "dev",
        "-q", "--training.max_steps", "4", "--training.eval_frequency", "2",
    ]  # fmt: skip


# --- one output policy ---------------------------------------------------------------------------
def test_output_policy_refuses_foreign_dir_and_keeps_it(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(
        AdaptnerError, match=r"corpus exists and was not written by `adaptner train`"
    ):
        with atomic_output(out, "train"):
            pytest.fail("must not start writing")
    assert tree(out) == {"keep.txt": b"precious"}
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_output_policy_names_the_other_command(tmp_path):
    out = tmp_path / "x"
    with atomic_output(out, "corpus") as tmp:
        (tmp / "a").write_text("1")
    assert json.loads((out / OUTPUT_MARKER).read_text())["command"] == "corpus"
    with pytest.raises(AdaptnerError, match=r"was written by `adaptner corpus`.*--force"):
        with atomic_output(out, "train"):
            pass
    with atomic_output(out, "corpus") as tmp:  # its own output: replaced without --force
        (tmp / "b").write_text("2")
    assert sorted(tree(out)) == [OUTPUT_MARKER, "b"]


def test_force_keeps_the_old_output_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(out, "train", force=True) as tmp:
            (tmp / "half").write_text("x")
            assert tree(out) == {"keep.txt": b"old"}  # still there while writing
            raise RuntimeError("killed")
    assert tree(out) == {"keep.txt": b"old"}
    with atomic_output(out, "train", force=True) as tmp:
        (tmp / "new").write_text("y")
    assert sorted(tree(out)) == [OUTPUT_MARKER, "new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_onto_a_file_is_refused_and_the_file_stays(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("precious")
    for force in (False, True):
        with pytest.raises(AdaptnerError, match=r"notes.txt is a file, not a directory"):
            with atomic_output(f, "train", force=force):
                pass
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # no hidden .notes.txt.old-N
    assert f.read_text() == "precious"


def test_parent_is_a_file_or_unwritable(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    with pytest.raises(
        AdaptnerError, match=r"Cannot write .*notes.txt/model: .*notes.txt is a file"
    ):
        with atomic_output(f / "model", "train"):
            pass
    with pytest.raises(AdaptnerError, match=r"Cannot write /proc/adaptner-test"):
        with atomic_output(Path("/proc/adaptner-test"), "train"):
            pass


def test_claimed_output_folders_follow_the_policy(tmp_path):
    """Commands that add files one at a time (datamap, aum, distil, curves, session export)."""
    from adaptner.util import claim_output_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(AdaptnerError, match=r"was not written by `adaptner distil`.*--force"):
        claim_output_dir(out, "distil")
    assert tree(out) == {"keep.txt": b"precious"}
    claim_output_dir(out, "distil", force=True)  # kept, and marked as distil's from now on
    assert json.loads((out / OUTPUT_MARKER).read_text())["command"] == "distil"
    claim_output_dir(out, "distil")  # its own: a second run adds to it
    assert sorted(tree(out)) == [OUTPUT_MARKER, "keep.txt"]
    with pytest.raises(AdaptnerError, match=r"was written by `adaptner distil`"):
        claim_output_dir(out, "aum")
    legacy = tmp_path / "old"
    legacy.mkdir()
    (legacy / "teacher.json").write_text("{}")
    claim_output_dir(legacy, "distil", owned_files=("teacher.json",))


def test_temporaries_of_killed_runs_are_cleaned_with_a_message(tmp_path):
    out = tmp_path / "model"
    dead = tmp_path / f".model.{DEAD_PID}-abc.tmp"
    dead.mkdir()
    (dead / "half.bin").write_text("x")
    legacy = tmp_path / ".model.k2j3h4.tmp"  # made before temporaries carried a pid
    legacy.mkdir()
    old = tmp_path / f".model.old-{DEAD_PID}"
    old.mkdir()
    live = tmp_path / f".model.{os.getppid()}-xyz.tmp"  # a concurrent run: left alone
    live.mkdir()
    other = tmp_path / ".modelx.123-a.tmp"  # another output's temporary
    other.mkdir()
    messages: list[str] = []
    with atomic_output(out, "train", log=messages.append) as tmp:
        (tmp / "m").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", live.name, other.name])
    assert len(messages) == 3 and all("left by an interrupted run" in m for m in messages)
    assert clean_stale_temps(out, messages.append) == []


def test_train_refuses_a_directory_it_did_not_write(tiny, tmp_path, monkeypatch, capsys):
    corpus, _ = tiny
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "keep.spacy").write_bytes(b"data")
    code = run_cli(monkeypatch, *train_args(corpus, out))
    line = one_error_line(capsys)
    assert code == 1
    assert f"Output {out} exists and was not written by `adaptner train`" in line
    assert "keep.spacy" in line and "--force" in line
    assert tree(out) == {"keep.spacy": b"data"}
    f = tmp_path / "model.txt"
    f.write_text("x")
    assert run_cli(monkeypatch, *train_args(corpus, f)) == 1
    assert "is a file, not a directory" in one_error_line(capsys)
    assert run_cli(monkeypatch, *train_args(corpus, f / "sub")) == 1
    assert "model.txt is a file, not a directory" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "model.txt"]


def test_train_prints_the_final_path_cleans_and_replaces_its_own_output(tiny, tmp_path, capsys):
    corpus, _ = tiny
    out = tmp_path / "model"
    stale = tmp_path / f".model.{DEAD_PID}-q.tmp"
    stale.mkdir()
    opts = {"training.max_steps": 4, "training.eval_frequency": 2}
    kwargs = {"train_path": corpus / "train", "dev_path": corpus / "dev", "overrides": opts}
    best = train_pipeline(TEST_CONFIG, out, **kwargs)
    captured = capsys.readouterr()
    assert best == out / "model-best"
    assert f"{out}/model-last" in captured.out  # spaCy's "Saved pipeline to ..." line
    assert ".tmp" not in captured.out
    assert [x for x in captured.err.splitlines() if ".tmp" in x] == [
        f"ℹ removed {stale}, left by an interrupted run"
    ]
    assert f"removed {stale}" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert json.loads((out / OUTPUT_MARKER).read_text())["command"] == "train"
    first = (out / "train_meta.json").read_text()
    train_pipeline(TEST_CONFIG, out, seed=1, verbose=False, **kwargs)  # own output: no --force
    assert (out / "train_meta.json").read_text() != first
    (out / OUTPUT_MARKER).unlink()  # an output from before markers: train_meta.json says whose
    train_pipeline(TEST_CONFIG, out, seed=2, verbose=False, **kwargs)


def test_killed_train_leaves_a_temporary_that_the_next_run_removes(tiny, tmp_path):
    corpus, _ = tiny
    out = tmp_path / "model"
    args = [str(a) for a in train_args(corpus, out)] + ["--checkpoint-every", "0"]
    args[args.index("4")] = "100000"  # long enough to be killed while training
    cmd = [sys.executable, "-m", "adaptner", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while not list(tmp_path.glob(".model.*.tmp")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.kill()
    proc.wait(timeout=60)
    temps = list(tmp_path.glob(".model.*.tmp"))
    assert len(temps) == 1 and not out.exists()
    done = subprocess.run(
        [*cmd[: cmd.index("100000")], "4", *cmd[cmd.index("100000") + 1 :]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"removed {temps[0]}, left by an interrupted run" in done.stderr
    assert f"-> {out}/model-best" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("command", ["pretrain", "tiny-bert"])
def test_other_directory_writers_share_the_policy(tiny, tmp_path, monkeypatch, capsys, command):
    corpus, _ = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    if command == "pretrain":
        args = ["pretrain", TEST_CONFIG, "-o", out, "--corpus", corpus / "train", "-q"]
    else:
        args = ["tiny-bert", "-o", out, "--corpus", corpus / "train", "--vocab-size", "100"]
    assert run_cli(monkeypatch, *args) == 1
    assert f"was not written by `adaptner {command}`" in one_error_line(capsys)
    assert tree(out) == {"keep.txt": b"precious"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- config errors -------------------------------------------------------------------------------
def typo_config(tmp_path: Path, old: str, new: str) -> Path:
    text = TEST_CONFIG.read_text()
    assert old in text
    path = tmp_path / "typo.cfg"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, overrides, message",
    [
        ("[training]\n", "[trainig]\n", {}, "unknown section [trainig] (did you mean [training]?)"),
        (
            "max_steps = 60",
            "max_step = 60",
            {},
            "unknown key 'max_step' in [training] (did you mean training.max_steps?)",
        ),
        (
            "",
            "",
            {"training.max_step": 3},
            "override --training.max_step: unknown key 'max_step' in [training] (did you mean "
            "--training.max_steps?)",
        ),
        (
            "",
            "",
            {"trainig.max_steps": 3},
            "override --trainig.max_steps: no section [trainig] (did you mean "
            "--training.max_steps?)",
        ),
        ("", "", {"paths.trian": "x"}, "no key 'trian' in [paths] (did you mean --paths.train?)"),
    ],
)
def test_config_typos_are_named_with_the_closest_name(tmp_path, old, new, overrides, message):
    path = typo_config(tmp_path, old, new) if old else TEST_CONFIG
    with pytest.raises(AdaptnerError, match=re.escape(message)):
        load_training_config(path, overrides=overrides)


def test_config_typo_is_one_line_from_the_cli(tiny, tmp_path, monkeypatch, capsys):
    corpus, _ = tiny
    args = train_args(corpus, tmp_path / "m")
    args[1] = typo_config(tmp_path, "[training]\n", "[trainig]\n")
    assert run_cli(monkeypatch, *args) == 1
    line = one_error_line(capsys)
    assert "typo.cfg: unknown section [trainig] (did you mean [training]?)" in line
    assert "--training.max_steps" not in line  # no override the user did not give is blamed
    assert not (tmp_path / "m").exists()


def test_al_config_typos(tmp_path):
    section = tmp_path / "a.cfg"
    section.write_text("[simulaton]\nepochs = 2\n")
    with pytest.raises(
        AdaptnerError, match=r"no \[simulation\] section \(found \[simulaton\]; did"
    ):
        load_al_settings(section)
    key = tmp_path / "b.cfg"
    key.write_text("[simulation]\nepoch = 2\npool_fractoin = 0.5\n")
    with pytest.raises(
        AdaptnerError,
        match=r"simulation.epoch \(did you mean epochs\?\); unknown key simulation.pool_fractoin "
        r"\(did you mean pool_fraction\?\)",
    ):
        load_al_settings(key)


# --- corpus input validation ---------------------------------------------------------------------
@pytest.fixture
def good_corpus(tmp_path):
    """(input dir with 4 good train rows, converted corpus dir, its files)."""
    src = tmp_path / "in"
    src.mkdir()
    write_rows(src / "train.jsonl", [make_row(), make_row(domain="Legal")] * 2)
    out = tmp_path / "corpus"
    from adaptner.corpus import convert_corpus

    convert_corpus(src, out, splits=["train"], report_path=out / "report.json")
    return src, out, tree(out)


def drop_column(rows: list[dict], column: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != column} for r in rows]


@pytest.mark.parametrize("column", ["text", "tokens", "ents", "dagw_domain"])
@pytest.mark.parametrize("skip", [False, True])
def test_missing_column_fails_before_any_row(good_corpus, monkeypatch, capsys, column, skip):
    src, out, before = good_corpus
    write_rows(src / "train.jsonl", drop_column([make_row()] * 3, column))
    args = ["corpus", "-i", src, "-o", out, "-s", "train", "--no-verify"]
    code = run_cli(monkeypatch, *args, *(["--skip-invalid"] if skip else []))
    line = one_error_line(capsys)
    assert code == 1
    assert f"train.jsonl: no column '{column}' in any of its 3 rows" in line
    assert tree(out) == before  # the good corpus, report included, is untouched


def test_empty_input_fails(good_corpus, monkeypatch, capsys):
    src, out, before = good_corpus
    (src / "train.jsonl").write_text("\n")
    assert run_cli(monkeypatch, "corpus", "-i", src, "-o", out, "-s", "train", "--no-verify") == 1
    assert "train.jsonl has no rows" in one_error_line(capsys)
    assert tree(out) == before


def test_every_row_rejected_never_replaces_the_corpus(good_corpus, monkeypatch, capsys):
    src, out, before = good_corpus
    bad = make_row(ents=[{"start": 0, "end": 4, "label": "PER"}])
    write_rows(src / "train.jsonl", [bad, bad])
    args = ["corpus", "-i", src, "-o", out, "-s", "train", "--no-verify", "--skip-invalid"]
    assert run_cli(monkeypatch, *args) == 1
    line = one_error_line(capsys)
    assert "Every row of" in line and "(2) was rejected; first: row 0" in line
    assert tree(out) == before


def test_a_worse_corpus_needs_force(good_corpus, monkeypatch, capsys):
    src, out, before = good_corpus
    bad = make_row(ents=[{"start": 0, "end": 4, "label": "PER"}])
    write_rows(src / "train.jsonl", [make_row(), bad, bad])
    args = ["corpus", "-i", src, "-o", out, "-s", "train", "--no-verify", "--skip-invalid"]
    assert run_cli(monkeypatch, *args) == 1
    line = one_error_line(capsys)
    assert f"{out / 'train'} holds 4 docs; this input gives 1 (2 rows of" in line
    assert "--force" in line
    assert tree(out) == before
    assert run_cli(monkeypatch, *args, "--force") == 0
    assert len(DocBin().from_disk(out / "train" / "all.spacy")) == 1
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 2  # follows -o


def test_strict_mode_lists_every_bad_row(good_corpus, monkeypatch, capsys):
    src, out, before = good_corpus
    past_end = make_row(ents=[{"start": 17, "end": 30, "label": "GPE"}])
    rows = [make_row(), make_row(ents=[{"start": 0, "end": 4, "label": "PER"}]), make_row(),
            past_end, make_row(ents=[{"start": 0, "end": 3, "label": "PERSON"}])]  # fmt: skip
    write_rows(src / "train.jsonl", rows)
    assert run_cli(monkeypatch, "corpus", "-i", src, "-o", out, "-s", "train", "--no-verify") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "✘ 3 bad rows in" in err
    assert "row 1: entity 0 'Anne' has unknown label 'PER'" in err
    assert "row 3: entity 0 GPE [17:30] lies outside the text (length 19)" in err
    assert "row 4: entity 0 PERSON [0:3] 'Ann' does not align to token boundaries" in err
    assert tree(out) == before


def test_report_and_rejects_follow_output(good_corpus, tmp_path, monkeypatch):
    src, out, before = good_corpus
    bad = make_row(ents=[{"start": 0, "end": 4, "label": "PER"}])
    write_rows(src / "train.jsonl", [make_row(), bad])
    other = tmp_path / "other"
    args = ["corpus", "-i", src, "-o", other, "-s", "train", "--no-verify", "--skip-invalid"]
    monkeypatch.chdir(tmp_path)  # the old defaults were corpus/report.json, corpus/rejects.jsonl
    assert run_cli(monkeypatch, *args) == 0
    assert tree(out) == before
    assert (other / "report.json").exists() and (other / "report.md").exists()
    assert len((other / "rejects.jsonl").read_text().splitlines()) == 1


def test_corpus_refuses_a_split_folder_it_did_not_write(good_corpus, tmp_path, monkeypatch, capsys):
    src, _, _ = good_corpus
    out = tmp_path / "models"
    (out / "train").mkdir(parents=True)
    (out / "train" / "model.bin").write_bytes(b"weights")
    assert run_cli(monkeypatch, "corpus", "-i", src, "-o", out, "-s", "train", "--no-verify") == 1
    assert "was not written by `adaptner corpus`" in one_error_line(capsys)
    assert tree(out) == {"train/model.bin": b"weights"}


def test_corrupt_docbin_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    _, source = tiny
    pool = tmp_path / "pool.spacy"
    pool.write_bytes(b"\x00not a docbin")
    db = tmp_path / "s.db"
    assert (
        run_cli(monkeypatch, "session", "init", "s", "--source", source, "--pool", pool, "--db", db)
        == 1
    )
    assert "pool.spacy" in one_error_line(capsys)


# --- session init --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["pool", "heldout"])
def test_failed_session_init_leaves_no_database(tiny, tmp_path, monkeypatch, capsys, bad):
    corpus, source = tiny
    db = tmp_path / "sessions.db"
    pool = corpus / "train" / "legal.spacy"
    args = ["session", "init", "s", "--source", source, "--db", db]
    if bad == "pool":
        (tmp_path / "pool.jsonl").write_text('{"txt": 1}\n')
        args += ["--pool", tmp_path / "pool.jsonl"]
    else:
        args += ["--pool", pool, "--heldout", tmp_path / "missing.spacy"]
    assert run_cli(monkeypatch, *args) == 1
    one_error_line(capsys)
    assert list(tmp_path.glob("sessions.db*")) == []
    # an existing store is kept, with its sessions, when a second init fails
    assert (
        run_cli(
            monkeypatch, "session", "init", "ok", "--source", source, "--pool", pool, "--db", db
        )
        == 0
    )
    capsys.readouterr()
    assert run_cli(monkeypatch, *args) == 1
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("SELECT name FROM sessions")] == ["ok"]
    conn.close()


# --- simulation folders --------------------------------------------------------------------------
def grid(tiny, out: Path, **changes) -> GridSpec:
    corpus, source = tiny
    fields = {
        "sources": ["news"], "targets": ["legal"], "strategies": ["random"], "modes": ["reset"],
        "seeds": [0], "settings": TINY_AL, "train_config": TEST_CONFIG, "corpus_dir": corpus,
        "output_dir": out, "models_dir": out.parent / "training", "source_model": source,
        "baselines": [],
    }  # fmt: skip
    fields.update(changes)
    return GridSpec(**fields)


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    """A finished one-run simulation folder and its files."""
    out = tmp_path_factory.mktemp("finished") / "al"
    run_grid(grid(tiny, out), progress=False, log=lambda _: None)
    return out, tree(out)


def test_rerun_with_other_settings_is_refused_for_finished_runs(
    tiny, finished, tmp_path, monkeypatch, capsys
):
    out, before = finished
    corpus, source = tiny
    al = tmp_path / "al.cfg"
    al.write_text(
        "[simulation]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in vars(TINY_AL).items())
    )
    args = ["simulate", "-t", "legal", "--source-model", source, "--corpus", corpus, "-o", out,
            "--baselines", "none", "-n", "1", "-q", "--al-config", al]  # fmt: skip
    assert run_cli(monkeypatch, *args) == 0  # same settings: complete, nothing rerun
    assert "1 runs and 0 baselines complete" in capsys.readouterr().out
    assert run_cli(monkeypatch, *args, "--epochs", "3", "--batch-size", "4") == 1
    line = one_error_line(capsys)
    assert "reset_s0.jsonl, line 1: written with different parameters" in line
    assert "(batch_size: file 8 vs now 4, epochs: file 1 vs now 3)" in line
    # a run the folder does not have yet: the folder's settings file refuses it
    assert run_cli(monkeypatch, *args, "--epochs", "3", "--strategy", "margin") == 1
    line = one_error_line(capsys)
    assert f"{out} holds runs made with other settings (epochs: folder 1, now 3; see" in line
    assert tree(out) == before
    # without the settings file (a folder from before it existed) each run's records say so
    moved = tmp_path / "old_al"
    moved.mkdir()
    for name, data in before.items():
        if name != SETTINGS_FILE and not name.startswith("."):
            (moved / name).write_bytes(data)
    with pytest.raises(
        AdaptnerError,
        match=r"line 1: written with different parameters \(epochs: file 1 vs now 3\)\. Pass "
        r"the file's values \(--epochs 1\) to continue it",
    ):
        run_grid(grid(tiny, moved, settings=TINY_AL.replace(epochs=3)), progress=False, log=len)
    assert not (moved / SETTINGS_FILE).exists()  # refused before recording the new settings


def test_settings_file_keys_are_compared(tmp_path):
    check_folder_settings(tmp_path, TINY_AL)
    check_folder_settings(tmp_path, TINY_AL)
    with pytest.raises(
        AdaptnerError, match=r"\(learn_rate: folder None, now 0.01; see .*simulation.json\)"
    ):
        check_folder_settings(tmp_path, TINY_AL.replace(learn_rate=0.01))


def test_duplicated_round_line_has_one_remedy(tiny, finished, tmp_path, monkeypatch, capsys):
    out, before = finished
    copy = tmp_path / "al"
    copy.mkdir()
    for name, data in before.items():
        (copy / name).write_bytes(data)
    run = next(copy.glob("*.jsonl"))
    lines = run.read_text().splitlines(keepends=True)
    run.write_text(lines[0] + lines[1] + lines[1])
    corpus, source = tiny
    with pytest.raises(AdaptnerError) as exc:
        run_grid(grid(tiny, copy), progress=False, log=lambda _: None)
    msg = str(exc.value)
    assert f"{run}, line 3 repeats round 1 (two processes wrote this run at once)" in msg
    assert "Delete line 3 and every line after it, then re-run the same command" in msg
    assert "Delete the file" not in msg and "Finished rounds are saved" not in msg


def test_two_writers_of_one_run_are_refused(tiny, tmp_path):
    out = tmp_path / "al"
    run_id = "news_legal_random_reset_s0"
    with file_lock(out / f".{run_id}.lock", "test holder"):
        with pytest.raises(
            AdaptnerError,
            match=r"1 of 1 tasks failed.*reset_s0.jsonl is being written by another process \(pid",
        ):
            run_grid(grid(tiny, out), progress=False, log=lambda _: None)
    assert not (out / f"{run_id}.jsonl").exists()
    run_grid(grid(tiny, out), progress=False, log=lambda _: None)  # lock released: it runs
    assert read_records(out / f"{run_id}.jsonl")[0][-1]["last"]


def test_two_drivers_on_one_folder_are_refused(tiny, tmp_path):
    out = tmp_path / "al"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from adaptner.util import file_lock
            with file_lock({str(out / '.simulate.lock')!r}, "x"):
                print("locked", flush=True)
                time.sleep(120)
        """)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            AdaptnerError,
            match=rf"folder {out} is being written by another process \(pid {holder.pid}",
        ):
            run_grid(grid(tiny, out), progress=False, log=lambda _: None)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in out.iterdir()) == [".simulate.lock"]  # nothing was written


def test_lock_is_released_by_kill_9(tmp_path):
    lock = tmp_path / ".x.lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, signal
            from adaptner.util import file_lock
            with file_lock({str(lock)!r}, "x"):
                os.kill(os.getpid(), signal.SIGKILL)
        """)],
        cwd=ROOT,
    )  # fmt: skip
    assert proc.wait(timeout=120) == -signal.SIGKILL
    with file_lock(lock, "x"):
        pass


def test_workers_exit_with_their_driver(tmp_path):
    """exit_with_parent (the worker initializer): a driver killed by -9 takes its workers along."""
    pid_file = tmp_path / "worker.pid"
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import subprocess, sys, time
            code = ("from adaptner.util import exit_with_parent; import os, time; "
                    "exit_with_parent(0.1); open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                    "time.sleep(300)")
            subprocess.Popen([sys.executable, "-c", code])
            time.sleep(300)
        """)],
        cwd=ROOT,
    )  # fmt: skip
    deadline = time.time() + 120
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    worker = int(pid_file.read_text())
    driver.kill()
    driver.wait()
    deadline = time.time() + 10
    while alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    if alive(worker):
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its driver")
    assert exit_with_parent  # imported: the worker initializer of the local backend


# --- errors that name the real cause, remedies that work -----------------------------------------
def test_train_outside_the_project_names_the_corpus_and_the_remedy_works(
    tiny, tmp_path, monkeypatch, capsys
):
    corpus, _ = tiny
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    base = ["train", "test/bio_cnn", "-q", "--training.max_steps", "4",
            "--training.eval_frequency", "2"]  # fmt: skip  (a shipped config, found by name)
    assert run_cli(monkeypatch, *base, "-o", "m") == 1
    line = one_error_line(capsys)
    assert f"paths.train = corpus/train does not exist (relative to {elsewhere})" in line
    assert "pass --train DIR (the same as --paths.train DIR)" in line
    # the remedy, both spellings: an explicit override wins over the default
    overrides = ["--paths.train", corpus / "train", "--paths.dev", corpus / "dev"]
    assert run_cli(monkeypatch, *base, "-o", "m1", *overrides) == 0
    options = ["--train", corpus / "train", "--dev", corpus / "dev"]
    assert run_cli(monkeypatch, *base, "-o", "m2", *options) == 0
    meta = json.loads((elsewhere / "m1" / "model-best" / "meta.json").read_text())
    assert meta["name"] and (elsewhere / "m2" / "model-best").is_dir()
    capsys.readouterr()
    # both at once must agree
    assert run_cli(monkeypatch, *base, "-o", "m3", "--train", corpus / "dev",
                   "--paths.train", corpus / "train") == 1  # fmt: skip
    line = one_error_line(capsys)
    assert f"--train {corpus / 'dev'} and --paths.train {corpus / 'train'}" in line
    assert sorted(p.name for p in elsewhere.iterdir()) == ["m1", "m2"]


def test_corpus_options_rule():
    from adaptner.training import corpus_options

    assert corpus_options({}, train=None, dev=None) == {
        "train": Path("corpus/train"), "dev": Path("corpus/dev")
    }  # fmt: skip
    assert corpus_options({"paths.train": "x"}, train=None)["train"] == Path("x")
    assert corpus_options({"paths.train": "x"}, train=Path("x"))["train"] == Path("x")
    assert corpus_options({}, train=Path("y"))["train"] == Path("y")
    with pytest.raises(AdaptnerError, match="--dev a and --paths.dev b name different corpora"):
        corpus_options({"paths.dev": "b"}, dev=Path("a"))


def test_evaluate_refuses_a_directory_before_scoring(tiny, tmp_path, monkeypatch, capsys):
    import adaptner.evaluation

    corpus, source = tiny
    out = tmp_path / "metrics"
    out.mkdir()

    def no_scoring(*args, **kwargs):
        pytest.fail("scored before checking --output")

    monkeypatch.setattr(adaptner.evaluation, "evaluate_model", no_scoring)
    assert run_cli(monkeypatch, "evaluate", source, "--data", corpus / "dev", "-o", out) == 1
    line = one_error_line(capsys)
    assert f"Output {out} is a directory; `adaptner evaluate` writes a file there" in line
    assert list(out.iterdir()) == []


def test_disk_full_while_training_is_named_as_such(tiny, tmp_path, monkeypatch, capsys):
    import errno

    import adaptner.training

    corpus, _ = tiny
    out = tmp_path / "model"

    def full(nlp, output_path, **kwargs):
        (output_path / "model-last").mkdir()
        raise OSError(errno.ENOSPC, "No space left on device", str(output_path / "model-last"))

    monkeypatch.setattr(adaptner.training, "train_loop", full)
    assert run_cli(monkeypatch, *train_args(corpus, out), "--checkpoint-every", "0") == 1
    line = one_error_line(capsys)
    assert line == f"✘ No space left on device writing {out}: free space and rerun."
    assert list(tmp_path.iterdir()) == []  # the temporary is removed
    # with checkpoints, the same line; the run's working directory stays for --resume
    assert run_cli(monkeypatch, *train_args(corpus, out)) == 1
    assert one_error_line(capsys) == line
    assert [p.name for p in tmp_path.iterdir()] == [".model.run"]


def test_only_a_hub_error_becomes_a_transformer_message():
    import errno

    from confection import Config

    from adaptner.training import _init_error

    config = Config({"paths": {"transformer": "bert-base"}})
    full = OSError(errno.ENOSPC, "No space left on device", "/x")
    assert _init_error(full, config, "c.cfg") is None
    denied = PermissionError(errno.EACCES, "Permission denied", "/x")
    assert _init_error(denied, config, "c.cfg") is None
    hub = OSError("Can't load tokenizer for 'bert-base'")
    assert "Cannot load the transformer 'bert-base'" in str(_init_error(hub, config, "c.cfg"))
    other = ValueError("something else")
    assert _init_error(other, config, "c.cfg") is None


@pytest.mark.parametrize(
    "code, cause",
    [("ENOSPC", "No space left on device"), ("EACCES", "Permission denied"),
     ("EPERM", "Operation not permitted"), ("EROFS", "Read-only file system")],
)  # fmt: skip
def test_file_system_errors_are_one_line(tmp_path, monkeypatch, capsys, code, cause):
    import errno

    from adaptner.util import write_text

    out = tmp_path / "report.md"

    def fail(self, *args, **kwargs):
        raise OSError(getattr(errno, code), cause, str(self))

    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(AdaptnerError, match=rf"^{cause} writing {re.escape(str(out))}: "):
        write_text(out, "x")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    # anywhere else, the command line names the file and the cause in one line
    monkeypatch.setattr(sys, "argv", ["adaptner", "session", "status"])
    import adaptner.cli

    def status(*args, **kwargs):
        raise OSError(getattr(errno, code), cause, "/data/adaptner.db")

    monkeypatch.setattr(adaptner.cli, "app", status)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert one_error_line(capsys) == f"✘ {cause}: /data/adaptner.db: " + {
        "ENOSPC": "free space and rerun.",
        "EROFS": "choose a writable location.",
    }.get(code, "check the permissions of the file and its folders.")


def test_an_unreadable_input_is_not_called_corrupt(tmp_path, monkeypatch):
    import errno

    import spacy

    from adaptner.readers import read_docbin
    from adaptner.util import load_spacy

    path = tmp_path / "x.spacy"
    DocBin().to_disk(path)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(DocBin, "from_disk", denied)
    monkeypatch.setattr(spacy, "load", denied)
    expected = rf"^Permission denied: {re.escape(str(path))}: check the permissions of the file"
    with pytest.raises(AdaptnerError, match=expected):
        read_docbin(path, spacy.blank("da").vocab)
    with pytest.raises(AdaptnerError, match=expected):
        load_spacy(tmp_path, "Train one first.")


def test_simulate_finds_its_al_config_from_any_directory(tiny, tmp_path, monkeypatch, capsys):
    corpus, source = tiny
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "al"
    args = ["simulate", "-t", "legal", "--source-model", source, "--corpus", corpus,
            "--baselines", "none", "-n", "1", "-q", "-o", out]  # fmt: skip
    # the packaged default is read (it is the file that sets the paper's 20 % pool)
    assert run_cli(monkeypatch, *args, "--pool-fraction", "0") == 1
    assert "pool_fraction must be in (0, 1], got 0.0" in one_error_line(capsys)
    assert run_cli(monkeypatch, *args, "--al-config", "test/tiny", "--budget", "0.2") == 0
    assert "2 epochs per round" in capsys.readouterr().out  # configs/al/test/tiny.cfg's
    assert run_cli(monkeypatch, *args, "--al-config", "defualt") == 1
    line = one_error_line(capsys)
    assert "AL config defualt does not exist" in line
    assert "default, e5, e5_top_layers, fixed_pool" in line


def test_configs_ship_with_the_package_in_one_copy(tmp_path):
    import zipfile

    from adaptner.packaging import build_adaptner_wheel
    from adaptner.util import shipped_configs

    assert {"default", "e5", "fixed_pool", "full_pool"} <= set(shipped_configs("al"))
    training = shipped_configs()
    assert {"bio_cnn", "bio_trf_e5", "test/bio_cnn"} <= set(training)
    assert (ROOT / "configs").resolve() == training["bio_cnn"].parent.resolve()  # a link
    names = zipfile.ZipFile(build_adaptner_wheel(tmp_path)).namelist()
    for name in ("configs/bio_cnn.cfg", "configs/al/default.cfg", "configs/al/e5.cfg"):
        assert f"adaptner/{name}" in names


def test_two_pipelines_get_two_package_names(tiny, tmp_path):
    import spacy

    from adaptner.packaging import package_name, pipeline_part

    nlp = spacy.blank("da")
    names = set()
    for config in ("configs/bio_cnn.cfg", "configs/bio_trf_e5.cfg"):
        model = tmp_path / Path(config).stem / "all" / "model-best"
        model.mkdir(parents=True)
        (model.parent / "train_meta.json").write_text(json.dumps({"config": config}))
        names.add(package_name("all", "all", pipeline_part(model, nlp)))
    assert names == {"adaptner_all_all_bio_cnn", "adaptner_all_all_bio_trf_e5"}
    assert pipeline_part(tmp_path / "nowhere" / "model-best", nlp) == "cnn"


def test_no_project_step_forces_over_another_steps_output():
    import yaml

    project = yaml.safe_load((ROOT / "project.yml").read_text())
    scripts = {c["name"]: " ".join(c.get("script", [])) for c in project["commands"]}
    packaging = {name for name, script in scripts.items() if "adaptner package" in script}
    assert {"package", "package-e5"} <= packaging
    for name in packaging:
        assert "--force" not in scripts[name].split(), name
        assert "--name" not in scripts[name]  # the names come from the configs, which differ
    assert project["vars"]["config"] != project["vars"]["e5_config"]


# --- every command's --output --------------------------------------------------------------------
#: Commands that write one file (and files beside it), a folder of wheels, or a directory.
FILE_OUTPUTS = ("evaluate", "matrix", "session review")
WHEELS = ("package",)
OUTPUT_COMMANDS = (
    "evaluate", "matrix", "curves", "datamap", "aum", "session export", "session review",
    "distil", "encoder e5-small", "encoder prune", "encoder vectors", "package",
)  # fmt: skip
#: Full-disk runs that need the e5 encoder or a trained e5 pipeline (tests/integration/test_e5.py
#: builds them); their --output goes through the same atomic_output as every other directory.
NEEDS_E5 = ("encoder e5-small", "encoder prune", "encoder vectors")


@pytest.fixture(scope="module")
def answered(tmp_path_factory, request):
    """A session store with one answered batch (for `session export` and `session review`)."""
    pipeline_assets = request.getfixturevalue("assets")
    from adaptner.session.loop import import_answers, init_session, next_batch
    from tests.unit.test_session_flow import answer_batch

    root = tmp_path_factory.mktemp("answered")
    db = root / "adaptner.db"
    init_session(db, "demo", source=pipeline_assets / "source",
                 pool=pipeline_assets / "pool.txt", heldout=pipeline_assets / "heldout.spacy",
                 strategy="random", domain="legal", session_dir=root / "sdir")  # fmt: skip
    batch = next_batch(db, "demo", n=4, output=root / "b1.jsonl")
    import_answers(db, "demo", answer_batch(batch.path, root / "a1.jsonl"))
    return db


@pytest.fixture(scope="module")
def matrix_models(tmp_path_factory):
    return tmp_path_factory.mktemp("matrix") / "models"


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A pipeline trained by `adaptner train` (train_meta.json beside it), for `package`."""
    corpus, _ = tiny
    out = tmp_path_factory.mktemp("trained") / "news"
    opts = {"training.max_steps": 4, "training.eval_frequency": 2}
    return train_pipeline(TEST_CONFIG, out, train_path=corpus / "train",
                          dev_path=corpus / "dev", train_domains="news", overrides=opts,
                          verbose=False)  # fmt: skip


def output_args(command: str, out: Path, request) -> list:
    """The command line of ``command`` writing ``out``, on the tiny fixtures."""
    corpus, source = request.getfixturevalue("tiny")
    split = ["--train", corpus / "train", "--dev", corpus / "dev"]
    steps = ["--training.max_steps", "4", "--training.eval_frequency", "2"]
    if command.startswith("session"):
        db = request.getfixturevalue("answered")
        return [*command.split(), "demo", "-o", out, "--db", db]
    return {
        "evaluate": ["evaluate", source, "--data", corpus / "dev", "-o", out],
        "matrix": ["matrix", TEST_CONFIG, "-d", "news,legal", *split, "--data", corpus / "dev",
                   "--models-dir", request.getfixturevalue("matrix_models"), "-o", out, *steps],
        "curves": ["curves", "-i", request.getfixturevalue("finished")[0], "-o", out],
        "datamap": ["datamap", TEST_CONFIG, "-o", out, "-d", "news", "--epochs", "1", *split],
        "aum": ["aum", TEST_CONFIG, "-o", out, "-d", "legal", "--epochs", "1", "--limit", "10",
                *split],
        "distil": ["distil", source, "--data", corpus / "dev", "-d", "news", "-o", out],
        "encoder e5-small": ["encoder", "e5-small", "-o", out],
        "encoder prune": ["encoder", "prune", source, "-o", out],
        "encoder vectors": ["encoder", "vectors", source, "-o", out, "--corpus", corpus / "dev"],
        "package": ["package", request.getfixturevalue("trained"), "-o", out, "--no-eval",
                    "--no-adaptner-wheel"],
    }[command]  # fmt: skip


def output_name(command: str) -> str:
    return {"evaluate": "out.json", "matrix": "out.json", "session review": "out.html"}.get(
        command, "out"
    )


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB tmpfs filled to the last byte (holding only ``filler``)."""
    with small_disk(tmp_path / "full") as mnt:
        yield mnt


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_every_output_against_a_directory(command, tmp_path, request, monkeypatch, capsys):
    out = tmp_path / output_name(command)
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code = run_cli(monkeypatch, *output_args(command, out, request))
    if command in WHEELS:  # a folder of wheels: others' files stay beside the new wheel
        assert code == 0
        assert [p.suffix for p in out.iterdir() if p.name != "keep.txt"] == [".whl"]
    else:
        line = one_error_line(capsys)
        assert code == 1
        if command in FILE_OUTPUTS:
            assert f"Output {out} is a directory; `adaptner {command}` writes a file" in line
        else:
            assert f"Output {out} exists and was not written by `adaptner {command}`" in line
            assert "--force" in line
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_every_output_against_a_file(command, tmp_path, request, monkeypatch, capsys):
    out = tmp_path / output_name(command)
    out.write_text("precious")
    code = run_cli(monkeypatch, *output_args(command, out, request))
    if command in FILE_OUTPUTS:  # a report is replaced as a whole
        assert code == 0
        assert out.read_text(encoding="utf8") != "precious"
        beside = {"evaluate": [".md"], "matrix": [".md", ".png"], "session review": []}[command]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [out.name, *(out.with_suffix(s).name for s in beside)]
        )
        return
    line = one_error_line(capsys)
    assert code == 1
    assert f"Output {out} is a file, not a directory; `adaptner {command}` writes a dir" in line
    assert out.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_every_output_under_a_file(command, tmp_path, request, monkeypatch, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    out = notes / output_name(command)
    code = run_cli(monkeypatch, *output_args(command, out, request))
    line = one_error_line(capsys)
    assert code == 1
    assert f"Cannot write {out}: {notes} is a file, not a directory." in line
    assert notes.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_every_output_on_a_full_disk(command, full_disk, request, monkeypatch, capsys):
    if command in NEEDS_E5:
        pytest.skip(f"{command} needs the e5 encoder; its output is written by atomic_output")
    out = full_disk / output_name(command)
    code = run_cli(monkeypatch, *output_args(command, out, request))
    line = one_error_line(capsys)
    assert code == 1
    assert line.startswith(f"✘ No space left on device writing {out}"), line
    assert line.endswith(": free space and rerun."), line
    assert [p.name for p in full_disk.iterdir()] == ["filler"]  # nothing half-written


def test_session_store_on_a_full_disk_is_named_and_left_out(
    full_disk, tmp_path, request, monkeypatch, capsys
):
    pipeline_assets = request.getfixturevalue("assets")
    db = full_disk / "adaptner.db"
    code = run_cli(monkeypatch, "session", "init", "demo", "--source", pipeline_assets / "source",
                   "--pool", pipeline_assets / "pool.txt", "--db", db,
                   "--dir", tmp_path / "sdir")  # fmt: skip
    assert code == 1
    line = one_error_line(capsys)
    assert line == f"✘ No space left on device writing {db}: free space and rerun."
    assert [p.name for p in full_disk.iterdir()] == ["filler"]  # no empty store left behind
