"""adaptner as a live Label Studio ML backend: the whole active-learning loop in the browser tool.

Runs a real local Label Studio 1.23.2 (its own venv, 127.0.0.1; started here unless --ls-url)
and ``adaptner session serve`` for a session over a Legal pool (DANSK Legal train, gold kept
aside to annotate with; Legal dev as held-out set; a CNN source pipeline trained on News here
unless --source), then, through Label Studio's REST API only:

1. creates a project with the session's labels and connects the backend (Settings > Model),
2. pushes the pool (``session push``: every sentence, pre-annotated by round 0),
3. for each of --rounds rounds: asks Label Studio to retrieve predictions for every task (it
   calls the backend's /predict), picks the unannotated task Label Studio ranks first by
   prediction score, submits its gold annotation as an annotator would, and times two waits:
   until /predict has answered for the next 50 tasks (what the annotator waits for; from the
   newest model that has finished, a round may still be training) and until /predict answers
   from a model that learnt the annotation (the next round, served from memory before it is
   saved; a round that scored below the source on the held-out set is trained but not
   served, and counts once the backend has decided so: ``trained_round`` in /health);
4. checks that Label Studio's order by prediction score is the strategy's: the Spearman
   correlation between the scores Label Studio stored for the round's model and the
   strategy's own scores (recomputed from the served round's saved model) over the
   unannotated tasks.

Writes ``<out>/label_studio_backend.json`` (every step) and ``.png`` (latency and order per
round), named with the command and date. Label Studio is started with ML_BLOCK_LOCAL_IP=false
and SSRF_PROTECTION_ENABLED=false: without them it refuses a backend and webhooks on
127.0.0.1.

    python -m venv /work/ls-venv && /work/ls-venv/bin/pip install label-studio==1.23.2
    LABEL_STUDIO_BIN=/work/ls-venv/bin/label-studio \\
        python bench/label_studio_backend.py --workdir /tmp/lsb --out bench/results/label_studio

``--record DIR`` keeps every request Label Studio sent the backend (the test fixtures in
tests/fixtures/session/labelstudio/backend were recorded that way).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy
import typer

# Run as a script, Python puts bench/ first on sys.path: the round-trip helpers import as is.
from annotation_tools_roundtrip import (
    LS_TOKEN,
    free_port,
    ls_result,
    prepare_session,
    start_label_studio,
    wait_for,
)

from adaptner.session.labelstudio import LabelStudioClient, push_session
from adaptner.session.loop import load_pipeline, open_store
from adaptner.strategies import get_strategy

#: Tasks the annotator's next batch holds (the session rounds' batch size).
NEXT_BATCH = 50


def backend_call(url: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode("utf8")
    req = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def start_backend(
    db: Path, port: int, log: Path, record: Path | None, trainer: str = "auto"
) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "adaptner", "session", "serve", "rt",
        "--db", str(db), "--port", str(port), "--trainer", trainer,
    ]  # fmt: skip
    if record is not None:
        cmd += ["--record", str(record)]
    return subprocess.Popen(
        cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def spearman(a: numpy.ndarray, b: numpy.ndarray) -> float:
    ra = numpy.argsort(numpy.argsort(a, kind="stable"), kind="stable")
    rb = numpy.argsort(numpy.argsort(b, kind="stable"), kind="stable")
    return float(numpy.corrcoef(ra, rb)[0, 1])


def run(
    workdir: Path,
    out: Path,
    *,
    corpus: Path | None,
    source: Path | None,
    n_pool: int,
    rounds: int,
    strategy: str,
    ls_url: str | None,
    ls_token: str,
    record: Path | None,
    command: str,
    trainer: str = "auto",
    source_docs: Path | None = None,
) -> dict[str, Any]:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    t0 = time.perf_counter()
    db, gold = prepare_session(workdir, corpus, source, n_pool, 150, strategy, source_docs)
    log: dict[str, Any] = {
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "strategy": strategy,
        "trainer": trainer,
        "source_docs": None if source_docs is None else str(source_docs),
        "pool": n_pool,
        "session_ready_s": round(time.perf_counter() - t0, 1),
        "rounds": [],
    }
    print(f"session ready in {log['session_ready_s']} s")
    procs: list[subprocess.Popen] = []
    try:
        if ls_url is None:
            os.environ["ML_BLOCK_LOCAL_IP"] = "false"
            os.environ["SSRF_PROTECTION_ENABLED"] = "false"
            proc, ls_url, ls_log = start_label_studio(workdir, free_port())
            procs.append(proc)
            t1 = time.perf_counter()
            wait_for(f"{ls_url}/health", proc, 1800, ls_log)
            log["label_studio_start_s"] = round(time.perf_counter() - t1, 1)
        port = free_port()
        backend = f"http://127.0.0.1:{port}"
        t1 = time.perf_counter()
        procs.append(start_backend(db, port, workdir / "backend.log", record, trainer))
        wait_for(f"{backend}/health", procs[-1], 600, workdir / "backend.log")
        log["backend_start_s"] = round(time.perf_counter() - t1, 1)
        ls = LabelStudioClient(ls_url, ls_token)
        store = open_store(db)
        session = store.get_session("rt")
        store.close()
        t1 = time.perf_counter()
        # create the project, connect the backend (Label Studio checks it), push the pool
        pushed = push_session(db, "rt", ls, create="adaptner backend bench", backend=backend)
        pid = pushed.project_id
        version = backend_call(backend, "/health")["model_version"]
        log["connected"] = {"state": "Connected", "model_version": version}
        log["push"] = {"tasks": pushed.n, "seconds": round(time.perf_counter() - t1, 1)}
        print(f"pushed {pushed.n} tasks in {log['push']['seconds']} s")
        for k in range(rounds):
            log["rounds"].append(one_round(ls, pid, backend, gold, db, session, k))
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
    for key in ("latency_s", "next_batch_s"):
        values = [r[key] for r in log["rounds"]]
        log[key] = {
            "median": round(float(numpy.median(values)), 2),
            "max": round(max(values), 2),
            "n": len(values),
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_studio_backend.json").write_text(
        json.dumps(log, indent=1, ensure_ascii=False) + "\n", encoding="utf8"
    )
    plot(log, out / "label_studio_backend.png")
    return log


def all_tasks(ls: LabelStudioClient, pid: int) -> list[dict]:
    tasks, page = [], 1
    while True:
        got = ls.call("GET", f"/api/tasks?project={pid}&page={page}&page_size=500&fields=all")
        tasks += got["tasks"]
        if len(tasks) >= got["total"] or not got["tasks"]:
            return tasks
        page += 1


def one_round(
    ls: LabelStudioClient, pid: int, backend: str, gold: dict, db: Path, session: Any, k: int
) -> dict[str, Any]:
    health = backend_call(backend, "/health")
    version, served_round = health["model_version"], health["round"]
    t0 = time.perf_counter()
    ls.call(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
        {"selectedItems": {"all": True, "excluded": []}, "project": str(pid)},
    )
    retrieve_s = time.perf_counter() - t0
    tasks = [t for t in all_tasks(ls, pid) if not t["annotations"]]
    scored = []
    for t in tasks:
        preds = [p for p in t["predictions"] if p["model_version"] == version]
        if preds:
            scored.append((preds[-1]["score"], t))
    # Label Studio's order by prediction score vs the strategy's scores from the saved model
    # of the served round (the backend may still be saving it: wait for the store)
    model_dir = None
    while model_dir is None:
        store = open_store(db)
        try:
            rounds = {r.round: r.model_dir for r in store.rounds(session.id)}
        finally:
            store.close()
        model_dir = rounds.get(served_round)
        time.sleep(0 if model_dir else 0.2)
    nlp = load_pipeline(model_dir)
    docs = list(nlp.pipe([t["data"]["text"] for _, t in scored]))
    strat = numpy.asarray(
        get_strategy(session.strategy, **session.strategy_params).score(
            docs, nlp=nlp, rng=numpy.random.default_rng(0)
        )
    )
    ls_scores = numpy.array([s for s, _ in scored], dtype="float64")
    rho = spearman(ls_scores, strat)
    top = max(scored, key=lambda st: st[0])[1]
    text = top["data"]["text"]
    spans = [(s["start"], s["end"], s["label"]) for s in gold[text]]
    trained_before = backend_call(backend, "/health")["trained_round"]
    submitted = time.perf_counter()
    ls.call(
        "POST",
        f"/api/tasks/{top['id']}/annotations",
        {"result": ls_result(text, spans), "lead_time": 5.0},
    )
    t_submit = time.perf_counter()
    # what the annotator waits for: predictions for the next batch of tasks, from the newest
    # model that has finished (a round may still be training on the answer just given)
    batch = [t for _, t in sorted(scored, key=lambda st: -st[0]) if t["id"] != top["id"]]
    batch = [{"id": t["id"], "data": {"text": t["data"]["text"]}} for t in batch[:NEXT_BATCH]]
    next_answer = backend_call(backend, "/predict", {"tasks": batch})
    next_batch_s = time.perf_counter() - submitted
    probe = {"tasks": [{"id": top["id"], "data": {"text": text}}]}
    kept_back = False  # the round trained, but scored below the source: its model waits
    while True:
        answer = backend_call(backend, "/predict", probe)
        if answer["model_version"] != version:
            break
        health = backend_call(backend, "/health")  # the backend's decision, before the save
        if health["trained_round"] > trained_before and health["model_version"] == version:
            kept_back = True
            break
        if time.perf_counter() - submitted > 600:
            raise RuntimeError(f"round {k}: no new model 600 s after the annotation")
        time.sleep(0.1)
    latency = time.perf_counter() - submitted
    row = {
        "round": k,
        "model_version": version,
        "next_model_version": answer["model_version"],
        "retrieve_predictions_s": round(retrieve_s, 2),
        "tasks_with_current_predictions": len(scored),
        "spearman_ls_score_vs_strategy": round(rho, 4),
        "annotated_task": top["id"],
        "annotated_text": text[:80],
        "gold_entities": len(spans),
        "submit_s": round(t_submit - submitted, 3),
        "next_batch_s": round(next_batch_s, 2),
        "next_batch_tasks": len(batch),
        "next_batch_model_version": next_answer["model_version"],
        "latency_s": round(latency, 2),
        "round_kept_back": kept_back,
    }
    print(json.dumps(row, ensure_ascii=False))
    return row


def plot(log: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = log["rounds"]
    x = [r["round"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.4
    a1.bar([v - width / 2 for v in x], [r.get("next_batch_s", 0) for r in rows], width,
           color="tab:orange", label=f"-> next {NEXT_BATCH} tasks predicted")  # fmt: skip
    a1.bar([v + width / 2 for v in x], [r["latency_s"] for r in rows], width,
           color="tab:blue", label="-> a model that learnt it",
           hatch=["//" if r.get("round_kept_back") else "" for r in rows])  # fmt: skip
    a1.axhline(10, color="tab:red", ls="--", lw=1, label="target 10 s")
    tallest = max([10.0, *(r["latency_s"] for r in rows)])
    a1.set_ylim(0, tallest * 1.5)  # room for the legend above the bars
    a1.set_xlabel("annotation (round before it)")
    a1.set_ylabel("seconds after the submission")
    a1.set_title(f"annotation submitted (trainer {log.get('trainer', 'auto')})", fontsize=9)
    handles, _ = a1.get_legend_handles_labels()
    if any(r.get("round_kept_back") for r in rows):
        from matplotlib.patches import Patch

        kept = Patch(facecolor="tab:blue", hatch="//", label="trained, kept back (below source)")
        handles.append(kept)
    a1.legend(handles=handles)
    a2.plot(x, [r["spearman_ls_score_vs_strategy"] for r in rows], "o-", color="tab:green")
    a2.set_ylim(-1.05, 1.05)
    a2.set_xlabel("round")
    a2.set_ylabel("Spearman rho")
    a2.set_title(f"Label Studio score order vs {log['strategy']} scores")
    title = textwrap.fill(f"{log['command']}  ({log['date']})", 140)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    workdir: Path = typer.Option(
        Path("/tmp/adaptner-ls-backend"), "--workdir", "-w", help="Scratch directory (wiped)."
    ),
    out: Path = typer.Option(
        Path("bench/results/label_studio"), "--out", help="Where the log and figure go."
    ),
    corpus: Path | None = typer.Option(None, "--corpus", help="Converted DANSK corpus."),
    source: Path | None = typer.Option(
        None, "--source", help="Source pipeline (default: a CNN trained on News here)."
    ),
    n_pool: int = typer.Option(300, "--pool", help="Legal train sentences in the pool."),
    rounds: int = typer.Option(8, "--rounds", min=1, help="Annotations (one round each)."),
    strategy: str = typer.Option("margin", "--strategy", help="Session strategy."),
    trainer: str = typer.Option(
        "auto",
        "--trainer",
        help="session serve --trainer: auto (top_layers for a transformer source, fine_tune "
        "for a CNN) | top_layers | cached_head | fine_tune.",
    ),
    source_docs: Path | None = typer.Option(
        None,
        "--source-docs",
        help="The source's gold DocBin (e.g. corpus/train/news.spacy): every round replays a "
        "sample of it (session init --source-docs).",
    ),
    ls_url: str | None = typer.Option(
        None, "--ls-url", help="A running Label Studio (else one is started here)."
    ),
    ls_token: str = typer.Option(LS_TOKEN, "--ls-token", help="Its legacy API token."),
    record: Path | None = typer.Option(
        None, "--record", help="Keep the requests Label Studio sends the backend here."
    ),
) -> None:
    """Run the live loop and write the log and figure."""
    command = "python bench/label_studio_backend.py " + " ".join(sys.argv[1:])
    log = run(
        workdir,
        out,
        corpus=corpus,
        source=source,
        n_pool=n_pool,
        rounds=rounds,
        strategy=strategy,
        ls_url=ls_url,
        ls_token=ls_token,
        record=record,
        command=command.strip(),
        trainer=trainer,
        source_docs=source_docs,
    )
    print(json.dumps({"next_batch_s": log["next_batch_s"], "latency_s": log["latency_s"]}))


if __name__ == "__main__":
    typer.run(main)
