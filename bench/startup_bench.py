"""Start-up time of spaCy, the ``adaptner`` CLI and each session command as its own process.

Every command runs as a fresh process (what a user pays when calling it from a shell); each
is repeated ``--repeats`` times and the median wall time and CPU time (user + sys of the
child) are printed. The session commands run as a chain per repeat, each chain in a new
store: ``init`` (pool = the first ``--pool-size`` Legal train sentences, held-out = Legal
dev) -> ``next -n 20`` -> ``import`` (the batch accepted as pre-annotated) -> ``status`` ->
``export``. One extra, untimed chain runs under ``python -X importtime`` to list which heavy
modules (torch, transformers, spacy_transformers, spacy) each command imports.

With ``--venv`` it also times ``import spacy`` and ``spacy.load(<package>)`` with another
environment's interpreter, e.g. a fresh venv into which a packaged pipeline was installed
with ``pip install --no-index --find-links packages/ <package>``.

    python bench/startup_bench.py --model training/news/model-best --corpus corpus
    python bench/startup_bench.py --model M --corpus corpus --venv /tmp/fresh --package da_x

Prints a Markdown table (and writes JSON with -o). Timings depend on machine load: run it on
an idle machine and compare runs made one after the other.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

#: Modules whose import the table reports (top-level names).
HEAVY = ("spacy", "thinc", "torch", "transformers", "spacy_transformers")


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``cmd``; return (wall seconds, child CPU seconds, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-2000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stderr


def _imported(stderr: str) -> list[str]:
    """Top-level heavy modules named in ``-X importtime`` output."""
    found = set()
    for line in stderr.splitlines():
        if line.startswith("import time:"):
            module = line.rsplit("|", 1)[-1].strip().split(".")[0]
            if module in HEAVY:
                found.add(module)
    return [m for m in HEAVY if m in found]


def _installed(python: str) -> set[str]:
    """The heavy modules installed for ``python`` (``-X importtime`` also lists failed imports,
    e.g. thinc's ``try: import torch`` where torch is not installed)."""
    code = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {HEAVY!r} if importlib.util.find_spec(m)]))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def _answer(batch: Path, out: Path) -> None:
    """Accept every task of a Prodigy batch with its pre-annotated spans."""
    lines = []
    for raw in batch.read_text(encoding="utf8").splitlines():
        task = json.loads(raw)
        task["answer"] = "accept"
        lines.append(json.dumps(task, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf8")


def _session_chain(
    adaptner: list[str], model: Path, corpus: Path, pool_size: int, tmp: Path
) -> list[tuple[str, list[str], object]]:
    """The session commands of one chain: (label, argv, hook run before the command)."""
    db = ["--db", str(tmp / "adaptner.db")]
    batch, answers = tmp / "batch.jsonl", tmp / "answers.jsonl"
    return [
        (
            "adaptner session init",
            [
                *adaptner,
                "session",
                "init",
                "bench",
                "--source",
                str(model),
                "--pool",
                str(corpus / "train" / "legal.spacy"),
                "--heldout",
                str(corpus / "dev" / "legal.spacy"),
                "--limit",
                str(pool_size),
                "--dir",
                str(tmp / "session"),
                *db,
            ],
            None,
        ),
        (
            "adaptner session next",
            [*adaptner, "session", "next", "bench", "-n", "20", "-o", str(batch), *db],
            None,
        ),
        (
            "adaptner session import",
            [*adaptner, "session", "import", "bench", str(answers), *db],
            lambda: _answer(batch, answers),
        ),
        ("adaptner session status", [*adaptner, "session", "status", "bench", *db], None),
        (
            "adaptner session export",
            [*adaptner, "session", "export", "bench", "-o", str(tmp / "export"), *db],
            None,
        ),
    ]


def main(
    model: Path = typer.Option(..., "--model", help="A trained bio_ner CNN pipeline directory."),
    corpus: Path = typer.Option(
        Path("corpus"), "--corpus", help="Corpus folder with train/legal.spacy and dev/legal.spacy."
    ),
    python: Path = typer.Option(
        Path(sys.executable), "--python", help="Interpreter of the environment to time."
    ),
    venv: Path | None = typer.Option(
        None, "--venv", help="Also time spacy.load(--package) with this venv's interpreter."
    ),
    package: str | None = typer.Option(
        None, "--package", help="Installed pipeline package name for --venv."
    ),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Runs per command (median shown)."),
    pool_size: int = typer.Option(300, "--pool-size", min=20, help="Pool sentences for init."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write JSON here."),
) -> None:
    """Print the median wall and CPU seconds of each command run as its own process."""
    model, corpus = model.resolve(), corpus.resolve()
    if venv is not None and not package:
        raise typer.BadParameter("--venv needs --package")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.setdefault("OMP_NUM_THREADS", "1")
    py = str(python)
    adaptner_bin = Path(py).with_name("adaptner")
    adaptner = [str(adaptner_bin)] if adaptner_bin.exists() else [py, "-m", "adaptner"]
    xpy = [py, "-X", "importtime"]
    # (label, timed command, the same under -X importtime)
    simple = [
        ("python -c 'import spacy'", [py, "-c", "import spacy"]),
        (
            "python -c 'import spacy; spacy.blank(\"da\")'",
            [py, "-c", "import spacy; spacy.blank('da')"],
        ),
    ]
    simple = [(label, cmd, [*xpy, *cmd[1:]]) for label, cmd in simple]
    for args in (["--help"], ["session", "--help"], ["session", "status", "--help"]):
        simple.append(
            (f"adaptner {' '.join(args)}", [*adaptner, *args], [*xpy, "-m", "adaptner", *args])
        )
    if venv is not None:
        vpy = str(venv / "bin" / "python")
        for label, code in (
            ("fresh venv: python -c 'import spacy'", "import spacy"),
            (f"fresh venv: spacy.load('{package}')", f"import spacy; spacy.load('{package}')"),
        ):
            simple.append((label, [vpy, "-c", code], [vpy, "-X", "importtime", "-c", code]))
    times: dict[str, list[tuple[float, float]]] = {}
    modules: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        # untimed: which heavy modules each command imports
        installed = {py: _installed(py)}
        for label, _, xcmd in simple:
            have = installed.setdefault(xcmd[0], _installed(xcmd[0]))
            modules[label] = [m for m in _imported(_run(xcmd, tmp, env)[2]) if m in have]
        chain_dir = tmp / "importtime"
        chain_dir.mkdir()
        for label, cmd, hook in _session_chain(
            [*xpy, "-m", "adaptner"], model, corpus, pool_size, chain_dir
        ):
            if hook:
                hook()
            modules[label] = [m for m in _imported(_run(cmd, tmp, env)[2]) if m in installed[py]]
        for rep in range(repeats):
            for label, cmd, _ in simple:
                times.setdefault(label, []).append(_run(cmd, tmp, env)[:2])
            chain_dir = tmp / f"chain{rep}"
            chain_dir.mkdir()
            for label, cmd, hook in _session_chain(adaptner, model, corpus, pool_size, chain_dir):
                if hook:
                    hook()
                times.setdefault(label, []).append(_run(cmd, tmp, env)[:2])
            print(f"repeat {rep + 1}/{repeats} done", file=sys.stderr)
    rows = {
        label: {
            "wall_s": statistics.median(w for w, _ in runs),
            "cpu_s": statistics.median(c for _, c in runs),
            "runs_wall_s": [round(w, 3) for w, _ in runs],
            "imports": modules.get(label, []),
        }
        for label, runs in times.items()
    }
    print(f"python: {py}; {repeats} runs per command; load average {os.getloadavg()[0]:.2f}")
    print(
        "| command | wall s (median) | CPU s (median) | heavy modules imported (installed ones) |"
    )
    print("|---|---|---|---|")
    for label, row in rows.items():
        print(
            f"| `{label}` | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | "
            f"{', '.join(row['imports']) or '–'} |"
        )
    if output is not None:
        output.write_text(json.dumps(rows, indent=2), encoding="utf8")


if __name__ == "__main__":
    typer.run(main)
