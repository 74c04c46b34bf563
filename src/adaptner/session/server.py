"""A Label Studio ML backend for a session (``adaptner session serve``).

Label Studio (1.23) calls an ML backend at:

- ``GET /health``: is it up (``{"status": "UP"}``, plus the model version, the newest round
  trained (``trained_round``: served, or kept back when it scored below the source) and the
  training state);
- ``POST /setup``: when a project connects, with the project's labelling config (``schema``),
  checked here against the session's labels; answers the ``model_version``;
- ``POST /predict``: pre-annotations for ``tasks``, one result per task, each with the
  ``model_version`` that made it and a ``score`` = the task's usefulness by the session's query
  strategy (1.0 = the most useful; sort the Data Manager by prediction score, descending);
- ``POST /webhook``: every project event (Label Studio adds this webhook when the backend is
  connected). ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED`` go into the session store through
  ``session import``'s validation (held-out and foreign texts refused) and queue a round
  update; ``START_TRAINING`` queues one; other events are acknowledged and ignored.
- ``GET /versions``: every round's model version.

A bad request gets a 4xx and ``{"error": "<one line>"}``; nothing is stored from it.
"""

import base64
import binascii
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import AdaptnerError
from ..util import write_json
from . import labelstudio
from .labelstudio import LabelConfig
from .loop import AnswersRefused, import_answers, open_store
from .worker import RoundWorker

logger = logging.getLogger("adaptner.serve")

#: Default largest request body (Label Studio sends up to 100 tasks per /predict).
MAX_BODY_BYTES = 8 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BadRequest(Exception):
    """A request refused with ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = " ".join(reason.split())


def one_line(error: Exception) -> str:
    """An error's message as one line (the first line of a multi-line message)."""
    if isinstance(error, AnswersRefused):
        return "; ".join(
            (f"{e.where}: " if e.where else "") + " ".join(e.reason.split()) for e in error.errors
        )
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class TokenAuth:
    """Refuse requests without the token: ``Authorization: Bearer|Token <token>``, or Basic
    auth with the token as password (Label Studio's "basic auth" ML-backend setting)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode("utf8") if token else None

    def _ok(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode("utf8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif scheme.lower() not in ("bearer", "token"):
            return False
        return hmac.compare_digest(value.encode("utf8"), self.token or b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is not None and scope["type"] == "http":
            headers = dict(scope["headers"])
            header = headers.get(b"authorization", b"").decode("latin-1")
            if not self._ok(header):
                response = JSONResponse(
                    {"error": "missing or wrong token (send Authorization: Bearer <token>)"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="adaptner"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, read up to ``max_bytes``.

    Raises:
        BadRequest: 413 for a larger body, 400 for one that is not a JSON object.
    """
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise BadRequest(400, f"Content-Length {declared!r} is not a byte count")
    if declared is not None and int(declared) > max_bytes:
        raise BadRequest(413, f"request body over the {max_bytes} byte limit (--max-body)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"request body over the {max_bytes} byte limit (--max-body)")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks).decode("utf8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(400, f"request body is not JSON ({e})") from None
    if not isinstance(body, dict):
        raise BadRequest(400, f"request body must be a JSON object, got {type(body).__name__}")
    return body


class Backend:
    """The endpoints, over one session's :class:`RoundWorker`.

    Args:
        worker: Serves the session's newest model and trains the next round.
        max_body: Largest request body, in bytes.
        record: A directory to keep every request body in (``<n>-<endpoint>.json``), to
            record Label Studio's real payloads; None = keep nothing.
        snap: Widen spans that start or end inside a word to whole tokens (as ``session
            import --snap``) instead of refusing the annotation.
    """

    def __init__(
        self,
        worker: RoundWorker,
        *,
        max_body: int = MAX_BODY_BYTES,
        record: Path | None = None,
        snap: bool = False,
    ) -> None:
        self.worker = worker
        self.snap = snap
        self.session = worker.session
        self.max_body = max_body
        self.record = Path(record) if record else None
        self.inbox = Path(self.session.session_dir) / "webhook"
        self._seq = 0

    # --- plumbing -----------------------------------------------------------------
    async def body(self, request: Request, endpoint: str) -> dict[str, Any]:
        body = await read_json(request, self.max_body)
        if self.record is not None:
            self._seq += 1
            write_json(self.record / f"{self._seq:04d}-{endpoint}.json", body)
        return body

    def config(self, xml: Any) -> LabelConfig:
        """The project's config if the request has one (checked), else adaptner's default."""
        if xml is None:
            return LabelConfig(*labelstudio.DEFAULT_NAMES, tuple(self.session.labels))
        try:
            return labelstudio.check_label_config(xml, self.session.labels)
        except AdaptnerError as e:
            raise BadRequest(422, one_line(e)) from None

    # --- endpoints ----------------------------------------------------------------
    async def health(self, request: Request) -> JSONResponse:
        served = self.worker.served
        return JSONResponse(
            {
                "status": "UP",
                "model_class": "adaptner",
                "session": self.session.name,
                "model_version": served.version,
                "round": served.round,
                "trained_round": self.worker.trained_round,
                "fallback": served.note,
                "training": self.worker.pending(),
                "last_error": self.worker.last_error,
            }
        )

    async def setup(self, request: Request) -> JSONResponse:
        body = await self.body(request, "setup")
        self.config(body.get("schema") if "schema" in body else body.get("label_config", ""))
        return JSONResponse({"model_version": self.worker.served.version})

    async def versions(self, request: Request) -> JSONResponse:
        def rounds() -> list[str]:
            from .loop import model_version

            store = open_store(self.worker.db)
            try:
                return [model_version(self.session, r.round) for r in store.rounds(self.session.id)]
            finally:
                store.close()

        return JSONResponse({"versions": await run_in_threadpool(rounds)})

    async def predict(self, request: Request) -> JSONResponse:
        body = await self.body(request, "predict")
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise BadRequest(422, "'tasks' must be a non-empty list of Label Studio tasks")
        config = self.config(body.get("label_config"))
        try:
            texts = [labelstudio.task_text(t, i, config.value_key) for i, t in enumerate(tasks)]
        except AdaptnerError as e:
            raise BadRequest(422, one_line(e)) from None
        served, predicted = await run_in_threadpool(self.worker.predict, texts)
        results = [
            labelstudio.prediction(task, served.version, score, config) for task, score in predicted
        ]
        return JSONResponse({"results": results, "model_version": served.version})

    async def webhook(self, request: Request) -> JSONResponse:
        body = await self.body(request, "webhook")
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest(400, "webhook payload without an 'action'")
        version = self.worker.served.version
        if action == labelstudio.TRAIN_ACTION:
            self.worker.request_update(force=True)
            return JSONResponse({"status": "update queued", "model_version": version})
        if action not in labelstudio.ANNOTATION_ACTIONS:
            return JSONResponse(
                {"status": "ignored", "reason": f"{action} needs nothing from this backend"}
            )
        try:
            task = labelstudio.webhook_task(body)
        except AdaptnerError as e:
            raise BadRequest(422, one_line(e)) from None
        result = await run_in_threadpool(self._import, action, task)
        changed = result.new + result.replaced
        if changed and result.accepted:
            self.worker.request_update()
        return JSONResponse(
            {
                "status": "imported",
                "new": result.new,
                "replaced": result.replaced,
                "duplicate": result.duplicate,
                "stale": result.stale,
                "update": "queued" if changed and result.accepted else "not needed",
                "model_version": version,
            }
        )

    def _import(self, action: str, task: dict[str, Any]) -> Any:
        """Write the event as a one-task Label Studio export and import it like
        ``session import`` does; a refused one is renamed ``*.refused.json``."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        ann = task["annotations"][0].get("id")
        path = self.inbox / f"{stamp}-{time.time_ns() % 10**9:09d}-task{task.get('id')}-{ann}.json"
        write_json(path, [task])
        try:
            return import_answers(
                self.worker.db, self.session.name, path, fmt="labelstudio", snap=self.snap
            )
        except AdaptnerError as e:
            path.rename(path.with_suffix(".refused.json"))
            raise BadRequest(422, f"{action} refused: {one_line(e)}") from None


def create_app(
    worker: RoundWorker,
    *,
    token: str | None = None,
    max_body: int = MAX_BODY_BYTES,
    record: Path | None = None,
    snap: bool = False,
) -> Starlette:
    """The ASGI app of the backend (see the module docstring for the endpoints)."""
    backend = Backend(worker, max_body=max_body, record=record, snap=snap)

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BadRequest)
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        reason = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse({"error": reason}, status_code=exc.status_code)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("error in %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal error: {type(exc).__name__}: {one_line(exc)}"}, status_code=500
        )

    routes = [
        Route("/", backend.health, methods=["GET"]),
        Route("/health", backend.health, methods=["GET"]),
        Route("/setup", backend.setup, methods=["POST"]),
        Route("/predict", backend.predict, methods=["POST"]),
        Route("/webhook", backend.webhook, methods=["POST"]),
        Route("/versions", backend.versions, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(TokenAuth, token=token)],
        exception_handlers={
            BadRequest: bad_request,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )


def check_binding(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token.

    Raises:
        AdaptnerError: ``host`` is not a loopback address and no token is set.
    """
    if host not in LOOPBACK and not token:
        raise AdaptnerError(
            f"--host {host} makes the backend reachable from other machines; set a token "
            "(--token or $ADAPTNER_SERVE_TOKEN) and give it to Label Studio as the basic-auth "
            "password of the ML backend (and as an 'Authorization: Bearer <token>' header of "
            "its /webhook webhook)."
        )


def serve(
    db: str | Path,
    name: str,
    *,
    host: str = "127.0.0.1",
    port: int = 9090,
    token: str | None = None,
    mode: str = "warm",
    settings: Any = None,
    min_new: int = 1,
    max_body: int = MAX_BODY_BYTES,
    record: Path | None = None,
    snap: bool = False,
    echo: Any = print,
    prune: bool = False,
) -> None:
    """Run the backend until interrupted (uvicorn, one process); ``prune``: delete the saved
    models no later round can use after every round."""
    import uvicorn

    check_binding(host, token)
    echo(f"loading session {name!r} and scoring its pool ...")
    worker = RoundWorker(
        db, name, mode=mode, settings=settings, min_new=min_new, echo=echo, prune=prune
    )
    echo(
        f"{worker.served.version}: {len(worker.served.tasks)} pool texts scored "
        f"({worker.session.strategy}); listening on http://{host}:{port}"
    )
    app = create_app(worker, token=token, max_body=max_body, record=record, snap=snap)
    worker.start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        worker.stop(timeout=5)
