"""Round trip through real annotation tools: a session batch into Label Studio / doccano and back.

Drives a real local Label Studio (pip ``label-studio``, started here on 127.0.0.1 unless --ls-url
is given) and, with ``--tool doccano``, a running doccano 1.8 (--doccano-url), through their REST
APIs only: create a project with the 18 DANSK labels, import a batch written by
``session next`` (Label Studio JSON / doccano JSONL), check that the pre-annotations arrived at
the right offsets, annotate a few tasks like a person would (one pre-annotation kept, one
edited, one skipped, one empty, one span that cuts a word in half, one answered twice), export
(Label Studio: JSON and JSON_MIN; doccano: JSONL) and import the exports back into the adaptner
session: without --snap (the cut span is refused, nothing imported), then with it.

The session: a legal pool (DANSK Legal train, gold kept aside to annotate with), Legal dev as
held-out set, and a source pipeline (--source, or configs/test/bio_cnn.cfg trained on News
here in a minute). Label Studio and doccano live in their own venvs (never the project's):

    python -m venv /tmp/lsvenv && /tmp/lsvenv/bin/pip install label-studio==1.23.2
    PATH=/tmp/lsvenv/bin:$PATH python bench/annotation_tools_roundtrip.py --workdir /tmp/rt
    python bench/annotation_tools_roundtrip.py --tool doccano --doccano-url http://127.0.0.1:8001

``--record tests/fixtures/session`` copies the batches and the tools' exports there (the test
fixtures were recorded this way).
"""

import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

import spacy
import typer
from spacy.tokens import DocBin

from adaptner.errors import AdaptnerError
from adaptner.labels import get_labels
from adaptner.readers import read_docbin
from adaptner.session.labelstudio import label_config_xml
from adaptner.session.loop import import_answers, init_session, next_batch, session_status

ROOT = Path(__file__).resolve().parents[1]
DANSK = (ROOT / ".." / "shared" / "data" / "dansk").resolve()
LS_USER = "admin@example.com"
LS_PASSWORD = "adaptner-roundtrip"
LS_TOKEN = "adaptnerroundtrip0123456789abcdef01234567"


# --- HTTP ---------------------------------------------------------------------------------
class Api:
    """A tiny JSON REST client (urllib: no extra dependency)."""

    def __init__(self, url: str, auth: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.auth = auth

    def call(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        headers = {"Accept": "*/*" if raw else "application/json"}
        if self.auth:
            headers["Authorization"] = self.auth
        data = None
        if isinstance(body, tuple):  # (field name, file name, bytes): multipart upload
            boundary = uuid.uuid4().hex
            name, filename, content = body
            data = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                    f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                ).encode()
                + content
                + f"\r\n--{boundary}--\r\n".encode()
            )
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data = json.dumps(body).encode("utf8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                content = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf8", "replace")[:500]
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {detail}") from None
        if raw:
            return content
        return json.loads(content) if content.strip() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen | None, timeout: float, log: Path | None) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise RuntimeError(f"the server exited with code {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


# --- the session -----------------------------------------------------------------------------
def prepare_session(
    workdir: Path,
    corpus: Path | None,
    source: Path | None,
    n_pool: int,
    n_heldout: int,
    strategy: str = "random",
    source_docs: Path | None = None,
) -> tuple[Path, dict[str, list[dict]]]:
    """A session over a Legal pool slice; returns the store and the pool's gold entities.
    ``source_docs``: the source's gold DocBin, replayed in every round."""
    from adaptner.corpus import convert_corpus
    from adaptner.training import train_pipeline

    if corpus is None:
        corpus = workdir / "corpus"
        if not (corpus / "dev" / "legal.spacy").exists():
            convert_corpus(DANSK, corpus, splits=["train", "dev"])
    if source is None:
        source = workdir / "source" / "model-best"
        if not (source / "config.cfg").exists():
            source = train_pipeline(
                ROOT / "configs" / "test" / "bio_cnn.cfg",
                workdir / "source",
                train_path=corpus / "train",
                dev_path=corpus / "dev",
                train_domains="news,wiki_books",
                seed=0,
                verbose=False,
                # enough steps that the model pre-annotates some legal sentences
                overrides={"training.max_steps": 600, "training.eval_frequency": 200},
            )
    vocab = spacy.blank("da").vocab
    pool = read_docbin(corpus / "train" / "legal.spacy", vocab)[:n_pool]
    heldout = read_docbin(corpus / "dev" / "legal.spacy", vocab)[:n_heldout]
    DocBin(store_user_data=True, docs=pool).to_disk(workdir / "pool.spacy")
    DocBin(store_user_data=True, docs=heldout).to_disk(workdir / "heldout.spacy")
    gold = {
        d.text: [{"start": e.start_char, "end": e.end_char, "label": e.label_} for e in d.ents]
        for d in pool
    }
    db = workdir / "adaptner.db"
    init_session(
        db,
        "rt",
        source=source,
        pool=workdir / "pool.spacy",
        heldout=workdir / "heldout.spacy",
        strategy=strategy,
        session_dir=workdir / "sdir",
        source_docs=source_docs,
    )
    return db, gold


def pick_tasks(tasks: list[dict], gold: dict[str, list[dict]]) -> dict[str, int]:
    """Which task gets which treatment (indices into the batch)."""
    with_pred = [i for i, t in enumerate(tasks) if t["spans"]]
    if len(with_pred) < 2:
        raise RuntimeError(
            f"the model pre-annotated only {len(with_pred)} of {len(tasks)} tasks; pass a "
            "larger -n or a better --source"
        )
    differs = [i for i in with_pred if t_spans(tasks[i]) != gold_spans(gold, tasks[i])]
    edited = differs[0] if differs else with_pred[0]
    kept = next(i for i in with_pred if i != edited)
    rest = [i for i in range(len(tasks)) if i not in (edited, kept)]
    with_gold = [i for i in rest if gold[tasks[i]["text"]]]
    if len(with_gold) < 2:
        raise RuntimeError("fewer than 2 of the other tasks have gold entities; pass a larger -n")
    cut, twice = with_gold[:2]
    rest = [i for i in rest if i not in (cut, twice)]
    return {
        "kept": kept,
        "edited": edited,
        "cut": cut,
        "skipped": rest[0],
        "empty": rest[1],
        "twice": twice,
    }


def t_spans(task: dict) -> list[tuple]:
    return [(s["start"], s["end"], s["label"]) for s in task["spans"]]


def gold_spans(gold: dict, task: dict) -> list[tuple]:
    return [(s["start"], s["end"], s["label"]) for s in gold[task["text"]]]


def edit(task: dict, gold: dict) -> list[tuple]:
    """The annotator's correction of a pre-annotation: the gold, or the prediction minus one."""
    g = gold_spans(gold, task)
    return g if g != t_spans(task) else t_spans(task)[1:]


def cut_word(task: dict, gold: dict) -> tuple[list[tuple], tuple]:
    """Gold spans with the first one's end moved into the middle of its last word."""
    spans = gold_spans(gold, task)
    s, e, label = spans[0]
    text = task["text"]
    word_start = text.rfind(" ", s, e) + 1 if " " in text[s:e] else s
    cut = (s, word_start + max(1, (e - word_start) // 2), label)
    assert cut[1] < e and text[cut[1] - 1].isalnum() and text[cut[1]].isalnum()
    return [cut, *spans[1:]], cut


# --- Label Studio ----------------------------------------------------------------------------
def ls_result(text: str, spans: list[tuple]) -> list[dict]:
    return [
        {
            "id": uuid.uuid4().hex[:10],
            "from_name": "label",
            "to_name": "text",
            "type": "labels",
            "origin": "manual",
            "value": {"start": s, "end": e, "text": text[s:e], "labels": [label]},
        }
        for s, e, label in spans
    ]


def label_studio_exe() -> str | None:
    """The ``label-studio`` executable: $LABEL_STUDIO_BIN, else on PATH, else None."""
    exe = os.environ.get("LABEL_STUDIO_BIN")
    if exe and Path(exe).exists():
        return exe
    return shutil.which("label-studio")


def start_label_studio(workdir: Path, port: int) -> tuple[subprocess.Popen, str, Path]:
    exe = label_studio_exe()
    if exe is None:
        raise RuntimeError(
            "label-studio is not on PATH (install it in its own venv; or set LABEL_STUDIO_BIN)"
        )
    data = workdir / "ls-data"
    data.mkdir(parents=True, exist_ok=True)
    log = workdir / "label-studio.log"
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "DJANGO_DEBUG": "false"}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen(
        [
            exe,
            "start",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-browser",
            "--data-dir",
            str(data),
            "--username",
            LS_USER,
            "--password",
            LS_PASSWORD,
            "--user-token",
            LS_TOKEN,
            "--enable-legacy-api-token",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}", log


def labelstudio_roundtrip(
    workdir: Path, db: Path, gold: dict, url: str, token: str, n: int, record: Path | None
) -> dict[str, Any]:
    api = Api(url, f"Token {token}")
    batch = next_batch(db, "rt", n=n, output=workdir / "ls-batch.json", fmt="labelstudio")
    copy = batch.copy_path
    tasks = batch.tasks
    plan = pick_tasks(tasks, gold)
    project = api.call(
        "POST",
        "/api/projects",
        {
            "title": f"adaptner rt {uuid.uuid4().hex[:6]}",
            "label_config": label_config_xml(get_labels()),
        },
    )
    pid = project["id"]
    api.call("POST", f"/api/projects/{pid}/import", json.loads(batch.path.read_text("utf8")))
    listed = api.call("GET", f"/api/tasks?project={pid}&page_size=1000&fields=all")
    ls_tasks = listed["tasks"] if isinstance(listed, dict) else listed
    by_hash = {t["data"]["_input_hash"]: t for t in ls_tasks}
    loaded = len(ls_tasks) == len(tasks) and all(t["_input_hash"] in by_hash for t in tasks)
    # the pre-annotations as Label Studio stores them (what its editor shows as predictions)
    shown = 0
    for t in tasks:
        preds = api.call("GET", f"/api/predictions?task={by_hash[t['_input_hash']]['id']}")
        got = sorted(
            (r["value"]["start"], r["value"]["end"], r["value"]["labels"][0])
            for p in preds
            for r in p["result"]
        )
        shown += got == sorted(t_spans(t))
    n_spans = sum(len(t["spans"]) for t in tasks)

    def annotate(i: int, spans: list[tuple], cancelled: bool = False) -> None:
        t = tasks[i]
        api.call(
            "POST",
            f"/api/tasks/{by_hash[t['_input_hash']]['id']}/annotations",
            {
                "result": [] if cancelled else ls_result(t["text"], spans),
                "was_cancelled": cancelled,
                "lead_time": 3.5,
                "project": pid,
            },
        )

    annotate(plan["kept"], t_spans(tasks[plan["kept"]]))
    annotate(plan["edited"], edit(tasks[plan["edited"]], gold))
    annotate(plan["skipped"], [], cancelled=True)
    annotate(plan["empty"], [])
    cut_spans, cut = cut_word(tasks[plan["cut"]], gold)
    annotate(plan["cut"], cut_spans)
    twice = tasks[plan["twice"]]
    annotate(plan["twice"], gold_spans(gold, twice)[:-1])  # one entity missed at first
    time.sleep(1.1)  # the second annotation is the later one
    annotate(plan["twice"], gold_spans(gold, twice))
    exports = {}
    for kind in ("JSON", "JSON_MIN"):
        content = api.call("GET", f"/api/projects/{pid}/export?exportType={kind}", raw=True)
        path = workdir / f"ls-export-{kind.lower()}.json"
        path.write_bytes(content)
        exports[kind] = path
    report: dict[str, Any] = {
        "batch": len(tasks),
        "loaded": loaded,
        "pre_annotations_shown": f"{shown}/{len(tasks)} tasks ({n_spans} spans)",
        "plan": plan,
        "cut": cut,
    }
    expected = {
        "JSON": (6, 5, 1),  # answers, accepts, ignores (skipped)
        "JSON_MIN": (5, 5, 0),  # JSON_MIN leaves skipped tasks out
    }
    for kind, path in exports.items():
        report[kind] = back_in(db, path, workdir, kind, tasks, plan, gold, expected[kind])
    if record is not None:
        out = record / "labelstudio"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(batch.path, out / "batch.json")
        shutil.copy(copy, out / "batch.prodigy.jsonl")
        shutil.copy(exports["JSON"], out / "export.json")
        shutil.copy(exports["JSON_MIN"], out / "export-min.json")
        write_plan(out / "plan.json", tasks, plan, cut, "Label Studio 1.23.2")
    return report


def write_plan(path: Path, tasks: list[dict], plan: dict, cut: tuple, tool: str) -> None:
    path.write_text(
        json.dumps(
            {
                "tool": tool,
                "recorded_with": "bench/annotation_tools_roundtrip.py",
                "plan": {k: tasks[i]["_input_hash"] for k, i in plan.items()},
                "cut_span": list(cut),
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf8",
    )


def back_in(
    db: Path,
    path: Path,
    workdir: Path,
    kind: str,
    tasks: list[dict],
    plan: dict,
    gold: dict,
    expected: tuple[int, int, int] | None,
) -> dict[str, Any]:
    """Import an export into a copy of the session: refused without --snap, in with it."""
    trial = workdir / f"trial-{kind.lower()}.db"
    shutil.copy(db, trial)
    out: dict[str, Any] = {}
    try:
        import_answers(trial, "rt", path)
        out["without_snap"] = "imported (unexpected)"
    except AdaptnerError as e:
        first = str(e).splitlines()[1].strip()
        out["without_snap"] = f"refused: {first}"
    r = import_answers(trial, "rt", path, snap=True)
    out["with_snap"] = (
        f"{r.fmt}: {r.new} new ({r.accepted} accept, {r.rejected} reject, {r.ignored} ignore), "
        f"{len(r.snaps)} snapped, {r.unannotated} unannotated"
    )
    out["snaps"] = r.snaps
    if expected is not None:
        assert (r.new, r.accepted, r.ignored) == expected, out
    c = session_status(trial, "rt")["counts"]
    out["counts"] = {k: c[k] for k in ("answered", "accepted", "ignored", "outstanding")}
    return out


# --- doccano ---------------------------------------------------------------------------------
def doccano_roundtrip(
    workdir: Path,
    db: Path,
    gold: dict,
    url: str,
    user: str,
    password: str,
    n: int,
    record: Path | None,
) -> dict[str, Any]:
    api = Api(url)
    token = api.call("POST", "/v1/auth/login/", {"username": user, "password": password})["key"]
    api.auth = f"Token {token}"
    batch = next_batch(db, "rt", n=n, output=workdir / "doccano-batch.jsonl", fmt="doccano")
    tasks = batch.tasks
    plan = pick_tasks(tasks, gold)
    project = api.call(
        "POST",
        "/v1/projects",
        {
            "name": f"adaptner rt {uuid.uuid4().hex[:6]}",
            "description": "adaptner round trip",
            "project_type": "SequenceLabeling",
            "resourcetype": "SequenceLabelingProject",
            "guideline": "",
            "allow_overlapping": False,
            "grapheme_mode": False,
            "use_relation": False,
        },
    )
    pid = project["id"]
    colors = ["#209cee", "#ff3860", "#23d160", "#ffdd57", "#b86bff", "#ff7f50"]
    for i, label in enumerate(get_labels()):
        api.call(
            "POST",
            f"/v1/projects/{pid}/span-types",
            {"text": label, "background_color": colors[i % len(colors)], "text_color": "#ffffff"},
        )
    upload = api.call(
        "POST", "/v1/fp/process/", ("filepond", batch.path.name, batch.path.read_bytes()), raw=True
    )
    job = api.call(
        "POST",
        f"/v1/projects/{pid}/upload",
        {
            "uploadIds": [upload.decode().strip()],
            "format": "JSONL",
            "task": "SequenceLabeling",
            "column_data": "text",
            "column_label": "label",
            "delimiter": "",
            "encoding": "utf_8",
        },
    )
    status = wait_task(api, job["task_id"])
    if status.get("error"):
        raise RuntimeError(f"doccano import failed: {status['error']}")
    examples = api.call("GET", f"/v1/projects/{pid}/examples?limit=1000")["results"]
    by_text = {e["text"]: e for e in examples}
    loaded = len(examples) == len(tasks) and all(t["text"] in by_text for t in tasks)
    types = {t["id"]: t["text"] for t in api.call("GET", f"/v1/projects/{pid}/span-types")}
    shown = 0
    for t in tasks:
        spans = api.call("GET", f"/v1/projects/{pid}/examples/{by_text[t['text']]['id']}/spans")
        got = sorted((s["start_offset"], s["end_offset"], types[s["label"]]) for s in spans)
        shown += got == sorted(t_spans(t))
    n_spans = sum(len(t["spans"]) for t in tasks)
    label_ids = {v: k for k, v in types.items()}

    def set_spans(i: int, spans: list[tuple], confirm: bool = True) -> None:
        ex = by_text[tasks[i]["text"]]["id"]
        base = f"/v1/projects/{pid}/examples/{ex}"
        for s in api.call("GET", f"{base}/spans"):
            api.call("DELETE", f"{base}/spans/{s['id']}")
        for s, e, label in spans:
            api.call(
                "POST",
                f"{base}/spans",
                {"start_offset": s, "end_offset": e, "label": label_ids[label]},
            )
        if confirm:
            api.call("POST", f"{base}/states", {})

    set_spans(plan["kept"], t_spans(tasks[plan["kept"]]))
    set_spans(plan["edited"], edit(tasks[plan["edited"]], gold))
    set_spans(plan["empty"], [])
    cut_spans, cut = cut_word(tasks[plan["cut"]], gold)
    set_spans(plan["cut"], cut_spans)
    set_spans(plan["twice"], gold_spans(gold, tasks[plan["twice"]]))
    # "skipped": doccano has no skip; the example is left unconfirmed (not exported as approved)
    exports = {}
    for approved in (True, False):
        job = api.call(
            "POST", f"/v1/projects/{pid}/download", {"format": "JSONL", "exportApproved": approved}
        )
        wait_task(api, job["task_id"])
        content = api.call("GET", f"/v1/projects/{pid}/download?taskId={job['task_id']}", raw=True)
        name = "approved" if approved else "all"
        exports[name] = unzip_jsonl(content, workdir / f"doccano-export-{name}.jsonl")
    report: dict[str, Any] = {
        "batch": len(tasks),
        "loaded": loaded,
        "pre_annotations_shown": f"{shown}/{len(tasks)} tasks ({n_spans} spans)",
        "plan": plan,
        "cut": cut,
        "approved": back_in(
            db, exports["approved"], workdir, "doccano", tasks, plan, gold, (5, 5, 0)
        ),
        "all": back_in(db, exports["all"], workdir, "doccano-all", tasks, plan, gold, None),
    }
    if record is not None:
        out = record / "doccano"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(batch.path, out / "batch.jsonl")
        shutil.copy(batch.copy_path, out / "batch.prodigy.jsonl")
        shutil.copy(exports["approved"], out / "export-approved.jsonl")
        shutil.copy(exports["all"], out / "export-all.jsonl")
        write_plan(out / "plan.json", tasks, plan, cut, "doccano 1.8.4")
    return report


def wait_task(api: Api, task_id: str, timeout: float = 300) -> dict:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        status = api.call("GET", f"/v1/tasks/status/{task_id}")
        if status.get("ready"):
            return status
        time.sleep(1)
    raise RuntimeError(f"doccano task {task_id} did not finish in {timeout:.0f} s")


def unzip_jsonl(content: bytes, path: Path) -> Path:
    if content[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            names = [n for n in z.namelist() if n.endswith(".jsonl")]
            content = b"".join(z.read(n) for n in names)
    path.write_bytes(content)
    return path


# --- CLI ----------------------------------------------------------------------------------------
def main(
    workdir: Path = typer.Option(
        Path("/tmp/adaptner-roundtrip"), "--workdir", "-w", help="Scratch directory (wiped)."
    ),
    tool: str = typer.Option("labelstudio", "--tool", help="labelstudio | doccano | both."),
    corpus: Path | None = typer.Option(
        None, "--corpus", help="Converted DANSK corpus (default: convert here)."
    ),
    source: Path | None = typer.Option(
        None, "--source", help="Source pipeline (default: train a tiny one)."
    ),
    n: int = typer.Option(12, "-n", min=7, help="Batch size (6 tasks are annotated)."),
    n_pool: int = typer.Option(120, "--pool", help="Legal train sentences in the pool."),
    ls_url: str | None = typer.Option(
        None, "--ls-url", help="A running Label Studio (else one is started)."
    ),
    ls_token: str = typer.Option(LS_TOKEN, "--ls-token", help="Its legacy API token."),
    ls_port: int = typer.Option(
        0, "--ls-port", help="Port for the started Label Studio (0 = free)."
    ),
    doccano_url: str = typer.Option(
        "http://127.0.0.1:8001", "--doccano-url", help="A running doccano."
    ),
    doccano_user: str = typer.Option("admin", "--doccano-user", help="doccano user."),
    doccano_password: str = typer.Option(
        "adminpass123", "--doccano-password", help="Its password."
    ),
    strategy: str = typer.Option(
        "random", "--strategy", help="Session strategy (random: ordinary sentences)."
    ),
    record: Path | None = typer.Option(None, "--record", help="Copy batches and exports here."),
) -> None:
    """Run the round trip(s) and print what happened at each step."""
    if tool not in ("labelstudio", "doccano", "both"):
        raise typer.BadParameter("--tool must be labelstudio, doccano or both")
    results = run_roundtrip(
        workdir,
        tool=tool,
        corpus=corpus,
        source=source,
        n=n,
        n_pool=n_pool,
        ls_url=ls_url,
        ls_token=ls_token,
        ls_port=ls_port,
        doccano=(doccano_url, doccano_user, doccano_password),
        strategy=strategy,
        record=record,
    )
    print(json.dumps(results, indent=1, ensure_ascii=False, default=str))


def run_roundtrip(
    workdir: Path,
    *,
    tool: str = "labelstudio",
    corpus: Path | None = None,
    source: Path | None = None,
    n: int = 12,
    n_pool: int = 120,
    ls_url: str | None = None,
    ls_token: str = LS_TOKEN,
    ls_port: int = 0,
    doccano: tuple[str, str, str] = ("http://127.0.0.1:8001", "admin", "adminpass123"),
    strategy: str = "random",
    record: Path | None = None,
) -> dict[str, Any]:
    """The round trip(s); returns what happened at each step (asserting the expected counts)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    t0 = time.perf_counter()
    db, gold = prepare_session(workdir, corpus, source, n_pool, 40, strategy)
    print(f"session ready in {time.perf_counter() - t0:.0f} s")
    results: dict[str, Any] = {}
    if tool in ("labelstudio", "both"):
        proc = None
        try:
            if ls_url is None:
                proc, ls_url, log = start_label_studio(workdir, ls_port or free_port())
                t1 = time.perf_counter()
                wait_for(f"{ls_url}/health", proc, 900, log)
                print(f"Label Studio up at {ls_url} in {time.perf_counter() - t1:.0f} s")
            results["labelstudio"] = labelstudio_roundtrip(
                workdir, db, gold, ls_url, ls_token, n, record
            )
        finally:
            if proc is not None:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=60)
    if tool in ("doccano", "both"):
        results["doccano"] = doccano_roundtrip(workdir, db, gold, *doccano, n, record)
    return results


if __name__ == "__main__":
    typer.run(main)
