"""The Label Studio ML backend (`session serve`), started on 127.0.0.1 and driven over HTTP with
the payloads a real Label Studio 1.23.2 sent it (tests/fixtures/session/labelstudio/backend,
recorded with `adaptner session serve --record` by bench/label_studio_backend.py)."""

import base64
import copy
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from adaptner.errors import AdaptnerError  # noqa: E402
from adaptner.labels import get_labels  # noqa: E402
from adaptner.session.labelstudio import check_label_config, label_config_xml  # noqa: E402
from adaptner.session.loop import init_session, next_batch, open_store  # noqa: E402
from adaptner.session.server import check_binding, create_app  # noqa: E402
from adaptner.session.worker import RoundWorker  # noqa: E402
from adaptner.strategies import get_strategy  # noqa: E402

from .test_session_flow import SMALL, snapshot, tiny_pipeline  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "session" / "labelstudio" / "backend"


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf8"))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A tiny bio_ner pipeline with DANSK's 18 labels (the recorded project's label set)."""
    out = tmp_path_factory.mktemp("serve_source") / "source"
    tiny_pipeline(labels=get_labels()).to_disk(out)
    return out


@pytest.fixture
def session(tmp_path, source) -> Path:
    """A margin session over the recorded project's pool texts, all handed out (pushed)."""
    heldout = FIXTURES / "heldout.txt"
    nlp = spacy.blank("da")
    DocBin(docs=[nlp.make_doc(heldout.read_text(encoding="utf8").strip())]).to_disk(
        tmp_path / "heldout.spacy"
    )
    db = tmp_path / "adaptner.db"
    init_session(
        db,
        "demo",
        source=source,
        pool=FIXTURES / "pool.jsonl",
        heldout=tmp_path / "heldout.spacy",
        strategy="margin",
        session_dir=tmp_path / "sdir",
    )
    next_batch(db, "demo", n=100, output=tmp_path / "pushed.json", fmt="labelstudio")
    return db


class Running:
    """A backend (or another ASGI ``app``) served by uvicorn on 127.0.0.1 in a thread."""

    def __init__(self, db: Path | None, app=None, min_new: int = 1, **app_options) -> None:
        self.worker = None
        if app is None:
            self.worker = RoundWorker(
                db, "demo", settings=SMALL, min_new=min_new, echo=lambda _: None
            ).start()
            app = create_app(self.worker, **app_options)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the backend did not start"
            time.sleep(0.02)

    def call(self, method: str, path: str, body=None, *, raw: bytes | None = None, headers=None):
        """(status, decoded JSON body)."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait_trained(self) -> None:
        assert self.worker.wait_idle(120), "the round update did not finish"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        if self.worker is not None:
            self.worker.stop(30)


@pytest.fixture
def backend(session):
    running = Running(session)
    yield running
    running.stop()


def refused(status: int, body: dict, code: int, *words: str) -> None:
    """A 4xx with a one-line reason that names the cause."""
    assert status == code, body
    assert set(body) == {"error"}
    reason = body["error"]
    assert "\n" not in reason and "Traceback" not in reason
    for word in words:
        assert word in reason, reason


# --- health, setup, versions -------------------------------------------------------------
def test_health_setup_versions(backend):
    status, body = backend.call("GET", "/health")
    assert status == 200
    assert body["status"] == "UP" and body["model_version"] == "demo-round-0"
    assert body["training"] is False
    status, body = backend.call("POST", "/setup", recorded("setup"))
    assert (status, body) == (200, {"model_version": "demo-round-0"})
    assert backend.call("GET", "/versions") == (200, {"versions": ["demo-round-0"]})


def test_setup_names_every_difference(backend):
    payload = recorded("setup")
    payload["schema"] = (
        payload["schema"]
        .replace('<Label value="LAW"/>', "")
        .replace('<Label value="NORP"/>', '<Label value="NORP"/><Label value="DISEASE"/>')
    )
    status, body = backend.call("POST", "/setup", payload)
    refused(
        status, body, 422, "labels not in the session: DISEASE", "missing from the project: LAW"
    )
    payload["schema"] = recorded("setup")["schema"].replace("$text", "$sentence")
    refused(*backend.call("POST", "/setup", payload), 422, "$sentence", 'value="$text"')
    payload["schema"] = "<View><Labels name='x'"
    refused(*backend.call("POST", "/setup", payload), 422, "not valid XML")
    payload["schema"] = '<View><Choices name="c" toName="t"/><Text name="t" value="$text"/></View>'
    refused(*backend.call("POST", "/setup", payload), 422, "exactly one <Labels>", "Choices")


def test_label_config_round_trip():
    labels = get_labels()
    config = check_label_config(label_config_xml(labels), labels)
    assert config.labels == tuple(labels)
    assert (config.from_name, config.to_name, config.value_key) == ("label", "text", "text")


# --- predict -----------------------------------------------------------------------------
def test_predict_recorded_request(backend):
    payload = recorded("predict")
    status, body = backend.call("POST", "/predict", payload)
    assert status == 200, body
    assert body["model_version"] == "demo-round-0"
    assert len(body["results"]) == len(payload["tasks"])
    for task, result in zip(payload["tasks"], body["results"], strict=True):
        assert result["model_version"] == "demo-round-0"
        assert 0 < result["score"] <= 1
        text = task["data"]["text"]
        for r in result["result"]:
            assert (r["from_name"], r["to_name"], r["type"]) == ("label", "text", "labels")
            value = r["value"]
            assert text[value["start"] : value["end"]] == value["text"]
            assert value["labels"][0] in get_labels()


def test_predict_scores_follow_the_strategy(backend, source):
    """Sorting by score (descending) puts the texts in the margin strategy's order."""
    texts = [
        json.loads(line)["text"]
        for line in (FIXTURES / "pool.jsonl").read_text(encoding="utf8").splitlines()
    ]
    shape = recorded("predict")["tasks"][0]
    tasks = []
    for i, text in enumerate(texts):
        task = copy.deepcopy(shape)
        task["id"], task["data"] = 1000 + i, {"text": text}
        tasks.append(task)
    payload = {**recorded("predict"), "tasks": tasks}
    status, body = backend.call("POST", "/predict", payload)
    assert status == 200, body
    got = numpy.array([r["score"] for r in body["results"]])
    expected = [1 - i / len(texts) for i in range(len(texts))]
    assert numpy.allclose(sorted(got.tolist(), reverse=True), expected)
    nlp = spacy.load(source)
    docs = list(nlp.pipe(texts))
    margin = numpy.asarray(
        get_strategy("margin").score(docs, nlp=nlp, rng=numpy.random.default_rng(0))
    )
    for i in range(len(texts)):
        for j in range(len(texts)):
            if margin[i] > margin[j] + 1e-9:
                assert got[i] > got[j], (texts[i], texts[j])


def test_predict_bad_requests(backend):
    refused(*backend.call("POST", "/predict", {"tasks": []}), 422, "'tasks'")
    payload = recorded("predict")
    del payload["tasks"][2]["data"]["text"]
    refused(*backend.call("POST", "/predict", payload), 422, "task 3 (id 3)", "data.text")
    payload = recorded("predict")
    payload["label_config"] = payload["label_config"].replace('<Label value="LAW"/>', "")
    refused(*backend.call("POST", "/predict", payload), 422, "missing from the project: LAW")


# --- webhook -----------------------------------------------------------------------------
def stored_answers(db: Path) -> list:
    store = open_store(db)
    try:
        return store.answers(store.get_session("demo").id)
    finally:
        store.close()


def test_annotation_created_then_updated_trains_the_next_round(backend, session):
    status, body = backend.call("POST", "/webhook", recorded("webhook-annotation-created"))
    assert status == 200, body
    assert (body["new"], body["update"]) == (1, "queued")
    (answer,) = stored_answers(session)
    assert answer.text == "Spørgsmål 1"
    assert (answer.answer, answer.spans) == ("accept", [(0, 9, "PERSON")])
    backend.wait_trained()
    assert backend.worker.last_error is None
    status, body = backend.call("POST", "/predict", recorded("predict"))
    assert status == 200 and body["model_version"] == "demo-round-1"
    assert {r["model_version"] for r in body["results"]} == {"demo-round-1"}
    assert backend.call("GET", "/health")[1]["model_version"] == "demo-round-1"
    assert backend.call("GET", "/versions")[1] == {"versions": ["demo-round-0", "demo-round-1"]}
    # the annotator removes the entity: the answer is replaced and another round follows
    status, body = backend.call("POST", "/webhook", recorded("webhook-annotation-updated"))
    assert (status, body["replaced"], body["update"]) == (200, 1, "queued")
    assert [a.spans for a in stored_answers(session)] == [[]]
    backend.wait_trained()
    assert backend.call("GET", "/health")[1]["model_version"] == "demo-round-2"
    # the same event again changes nothing
    status, body = backend.call("POST", "/webhook", recorded("webhook-annotation-updated"))
    assert (status, body["duplicate"], body["update"]) == (200, 1, "not needed")


def test_min_new_waits_for_answers_or_start_training(session):
    running = Running(session, min_new=2)
    try:
        status, body = running.call("POST", "/webhook", recorded("webhook-annotation-created"))
        assert (status, body["update"]) == (200, "queued")
        running.wait_trained()
        assert running.call("GET", "/health")[1]["model_version"] == "demo-round-0"  # 1 of 2
        status, body = running.call("POST", "/webhook", recorded("webhook-start-training"))
        assert status == 200
        running.wait_trained()
        assert running.call("GET", "/health")[1]["model_version"] == "demo-round-1"
    finally:
        running.stop()


def test_skipped_task_is_stored_as_ignore_without_training(backend, session):
    status, body = backend.call("POST", "/webhook", recorded("webhook-annotation-skipped"))
    assert (status, body["new"], body["update"]) == (200, 1, "not needed")
    assert [a.answer for a in stored_answers(session)] == ["ignore"]
    assert backend.worker.pending() is False


@pytest.mark.parametrize(
    "name,words",
    [
        ("webhook-annotation-heldout", ["held-out set"]),
        ("webhook-annotation-foreign", ["not handed out"]),
        ("webhook-annotation-cut-word", ["ends inside a token", "'Kildeskattelovens'"]),
    ],
)
def test_refused_annotations_store_nothing(backend, session, name, words):
    before = snapshot(session)
    refused(*backend.call("POST", "/webhook", recorded(name)), 422, "ANNOTATION_CREATED", *words)
    assert snapshot(session) == before
    assert backend.worker.pending() is False


def test_snap_widens_a_cut_word(session):
    running = Running(session, snap=True)
    try:
        status, body = running.call("POST", "/webhook", recorded("webhook-annotation-cut-word"))
        assert (status, body["new"]) == (200, 1), body
        (answer,) = stored_answers(session)
        assert answer.text[slice(*answer.spans[0][:2])] == "Kildeskattelovens"
    finally:
        running.stop()


def test_annotation_with_a_label_outside_the_session(backend, session):
    payload = recorded("webhook-annotation-created")
    payload["annotation"]["result"][0]["value"]["labels"] = ["DISEASE"]
    before = snapshot(session)
    refused(*backend.call("POST", "/webhook", payload), 422, "'DISEASE' is not in the session")
    assert snapshot(session) == before


def test_webhook_other_events_and_bad_payloads(backend, session):
    before = snapshot(session)
    status, body = backend.call("POST", "/webhook", recorded("webhook-tasks-created"))
    assert (status, body["status"]) == (200, "ignored")
    status, body = backend.call("POST", "/webhook", recorded("webhook-start-training"))
    assert (status, body["status"]) == (200, "update queued")
    backend.wait_trained()  # nothing new to learn: the model stays
    assert backend.call("GET", "/health")[1]["model_version"] == "demo-round-0"
    payload = recorded("webhook-annotation-created")
    del payload["task"]
    refused(*backend.call("POST", "/webhook", payload), 422, "without a 'task'")
    refused(*backend.call("POST", "/webhook", {"project": {}}), 400, "'action'")
    refused(*backend.call("POST", "/webhook", raw=b'{"action": '), 400, "not JSON")
    refused(*backend.call("POST", "/webhook", [1, 2]), 400, "JSON object, got list")
    refused(*backend.call("POST", "/webhook", raw=b"\xff\xfe"), 400, "not JSON")
    refused(*backend.call("GET", "/webhook"), 405, "GET /webhook")
    refused(*backend.call("GET", "/nowhere"), 404, "/nowhere")
    assert snapshot(session) == before


# --- limits and access ---------------------------------------------------------------------
def test_body_size_limit(session):
    running = Running(session, max_body=2000)
    try:
        status, body = running.call("POST", "/predict", recorded("predict"))  # ~4 kB
        refused(status, body, 413, "2000 byte limit")
        assert running.call("POST", "/setup", {"schema": label_config_xml(["PERSON"])})[0] == 422
    finally:
        running.stop()


def test_token(session):
    running = Running(session, token="s3cret")
    try:
        refused(*running.call("GET", "/health"), 401, "token")
        refused(*running.call("GET", "/health", headers={"Authorization": "Bearer nope"}), 401)
        assert running.call("GET", "/health", headers={"Authorization": "Bearer s3cret"})[0] == 200
        basic = base64.b64encode(b"labelstudio:s3cret").decode()
        headers = {"Authorization": f"Basic {basic}"}
        assert running.call("POST", "/setup", recorded("setup"), headers=headers)[0] == 200
        refused(*running.call("GET", "/health", headers={"Authorization": "Basic %%%"}), 401)
    finally:
        running.stop()


def test_binding_beyond_loopback_needs_a_token():
    check_binding("127.0.0.1", None)
    check_binding("0.0.0.0", "s3cret")
    with pytest.raises(AdaptnerError, match="--token"):
        check_binding("0.0.0.0", None)


def test_cli_refuses_an_open_address_without_token(monkeypatch, capsys, tmp_path):
    import sys

    from adaptner.cli import main

    argv = ["adaptner", "session", "serve", "demo", "--host", "0.0.0.0", "--db", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delenv("ADAPTNER_SERVE_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "--host 0.0.0.0" in err and "--token" in err and "Traceback" not in err


# --- session push ------------------------------------------------------------------------------
def fake_label_studio(config: str, imported: list, fail: list):
    """Label Studio's two push endpoints (a project's config; task import), in memory."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def project(request):
        assert request.headers["authorization"] == "Token t0ken"
        return JSONResponse({"id": 7, "label_config": config})

    async def import_tasks(request):
        if fail:
            return JSONResponse({"detail": fail.pop()}, status_code=500)
        tasks = await request.json()
        imported.extend(tasks)
        return JSONResponse({"task_count": len(tasks)}, status_code=201)

    async def create(request):
        body = await request.json()
        created.append(body)
        return JSONResponse({"id": 7, **body}, status_code=201)

    async def connect(request):
        body = await request.json()
        ok = body["url"] == "http://127.0.0.1:9090"
        state = "Connected" if ok else "Error"
        error = None if ok else "Max retries exceeded"
        return JSONResponse({"readable_state": state, "error_message": error}, status_code=201)

    created: list = []
    return Starlette(
        routes=[
            Route("/api/projects", create, methods=["POST"]),
            Route("/api/projects/7", project),
            Route("/api/projects/7/import", import_tasks, methods=["POST"]),
            Route("/api/ml", connect, methods=["POST"]),
        ]
    )


def test_push(tmp_path, source):
    from adaptner.session.labelstudio import LabelStudioClient, push_session

    db = tmp_path / "adaptner.db"
    init_session(db, "demo", source=source, pool=FIXTURES / "pool.jsonl", strategy="margin")
    config = label_config_xml(get_labels()).replace('name="label"', 'name="ner"')
    imported, fail = [], []
    running = Running(None, fake_label_studio(config.replace("LAW", "LOV"), imported, fail))
    try:
        client = LabelStudioClient(running.url, "t0ken")
        with pytest.raises(AdaptnerError, match="labels not in the session: LOV"):
            push_session(db, "demo", client, 7)
        assert snapshot(db)["batches"] == []  # nothing handed out
    finally:
        running.stop()
    fail.append("database is locked")
    running = Running(None, fake_label_studio(config, imported, fail))
    try:
        client = LabelStudioClient(running.url, "t0ken")
        with pytest.raises(AdaptnerError, match="HTTP 500: .*database is locked.*--reissue"):
            push_session(db, "demo", client, 7, n=5)
        result = push_session(db, "demo", client, 7, n=5, reissue=True)
    finally:
        running.stop()
    assert (result.n, len(imported)) == (5, 5)
    scores = [t["predictions"][0]["score"] for t in imported]
    assert scores == [1.0, 0.8, 0.6, 0.4, 0.2]  # the strategy's order
    for task in imported:
        assert task["data"]["meta"]["session"] == "demo"
        for r in task["predictions"][0]["result"]:
            assert (r["from_name"], r["to_name"]) == ("ner", "text")
    assert json.loads(result.path.read_text(encoding="utf8")) == imported
    # a new project with the session's config, the backend connected, the rest of the pool
    imported.clear()
    running = Running(None, fake_label_studio(config, imported, fail))
    try:
        client = LabelStudioClient(running.url, "t0ken")
        with pytest.raises(AdaptnerError, match="could not connect .*ML_BLOCK_LOCAL_IP=false"):
            push_session(db, "demo", client, create="x", backend="http://127.0.0.1:1")
        with pytest.raises(AdaptnerError, match="either a project id or the title"):
            push_session(db, "demo", client, 7, create="x")
        result = push_session(
            db, "demo", client, create="contracts", backend="http://127.0.0.1:9090"
        )
    finally:
        running.stop()
    assert (result.project_id, result.n, len(imported)) == (7, 35, 35)  # 40 - 5 pushed before
