"""Label Studio's side of a session: labelling configs, ML-backend payloads, its REST API.

The ML backend (``adaptner session serve``) reads what Label Studio sends (a project's
labelling config at ``/setup``, tasks at ``/predict``, annotation events at ``/webhook``) with
the functions here; ``session push`` loads a session's tasks into a project through
:class:`LabelStudioClient`. Answers themselves are read by :mod:`adaptner.session.formats`,
the same path as ``session import``.
"""

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from ..errors import AdaptnerError

#: Events whose annotation goes into the session store.
ANNOTATION_ACTIONS: tuple[str, ...] = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
#: Label Studio's "Start training" button (and ``POST /api/ml/{id}/train``).
TRAIN_ACTION = "START_TRAINING"


@dataclass(frozen=True)
class LabelConfig:
    """What adaptner needs from a labelling config: one ``<Labels>`` over one ``<Text>``.

    Attributes:
        from_name: The ``<Labels>`` control's name (predictions' ``from_name``).
        to_name: The ``<Text>`` object's name (predictions' ``to_name``).
        value_key: The task data key the text is read from (``$text`` -> ``text``).
        labels: The ``<Label value=...>`` entries, in config order.
    """

    from_name: str
    to_name: str
    value_key: str
    labels: tuple[str, ...]


#: The config ``session next --format labelstudio`` batches and ``session push`` assume.
DEFAULT_NAMES = ("label", "text", "text")


def label_config_xml(labels: Sequence[str]) -> str:
    """A labelling config for a session's labels: ``<Labels name="label">`` over ``$text``."""
    from xml.sax.saxutils import quoteattr

    items = "\n".join(f"    <Label value={quoteattr(label)}/>" for label in labels)
    return (
        f'<View>\n  <Labels name="label" toName="text">\n{items}\n  </Labels>\n'
        '  <Text name="text" value="$text"/>\n</View>'
    )


def parse_label_config(xml: Any) -> LabelConfig:
    """Find the ``<Labels>`` control and the ``<Text>`` it labels in a labelling config.

    Raises:
        AdaptnerError: not XML, no ``<Labels>`` over a ``<Text>``, more than one, or a text
            not read from a task data key (``value="$key"``).
    """
    if not isinstance(xml, str) or not xml.strip():
        raise AdaptnerError("the labelling config is missing or not a string")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as e:
        raise AdaptnerError(f"the labelling config is not valid XML ({e})") from None
    texts = {el.get("name"): el for el in root.iter() if el.tag == "Text" and el.get("name")}
    controls = [el for el in root.iter() if el.tag == "Labels"]
    over_text = [c for c in controls if c.get("toName") in texts]
    if len(over_text) != 1:
        found = ", ".join(sorted({el.tag for el in root.iter()} - {"View"})) or "nothing"
        raise AdaptnerError(
            f"the labelling config needs exactly one <Labels> control over a <Text> object "
            f"(named entities over a text), found {len(over_text)} (tags: {found})"
        )
    control = over_text[0]
    value = texts[control.get("toName")].get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise AdaptnerError(
            f"the <Text name={control.get('toName')!r}> object reads {value!r}; it must read a "
            'task data key such as value="$text"'
        )
    labels = tuple(el.get("value") or el.get("alias") or "" for el in control if el.tag == "Label")
    return LabelConfig(control.get("name") or "", control.get("toName") or "", value[1:], labels)


def check_label_config(xml: Any, session_labels: Sequence[str]) -> LabelConfig:
    """Parse a project's labelling config and check it against the session's labels.

    Answers are read from ``data.text`` (as ``session import`` reads Label Studio exports), so
    the text must come from ``$text``; every label of the project must be one of the session's
    and every session label must be offered.

    Raises:
        AdaptnerError: one message naming everything that differs.
    """
    config = parse_label_config(xml)
    problems = []
    if config.value_key != "text":
        problems.append(
            f"the <Text> object reads ${config.value_key}; adaptner's tasks keep the sentence "
            'in data.text, so use value="$text"'
        )
    extra = [label for label in config.labels if label not in session_labels]
    missing = [label for label in session_labels if label not in config.labels]
    if extra:
        problems.append(f"labels not in the session: {', '.join(extra)}")
    if missing:
        problems.append(f"session labels missing from the project: {', '.join(missing)}")
    if problems:
        raise AdaptnerError(
            "the project's labelling config does not match the session: "
            + "; ".join(problems)
            + f" (session labels: {', '.join(session_labels)})"
        )
    return config


def prediction(
    task: dict[str, Any], version: str, score: float | None, config: LabelConfig
) -> dict[str, Any]:
    """One Label Studio prediction (``result``, ``score``, ``model_version``) for a task."""
    from .formats import to_labelstudio

    pred = to_labelstudio(task, version, from_name=config.from_name, to_name=config.to_name)
    return {**pred["predictions"][0], "score": score}


def task_text(task: Any, index: int, value_key: str) -> str:
    """The text of a task Label Studio sent to ``/predict``.

    Raises:
        AdaptnerError: not a task object, or no non-empty string at ``data[value_key]``.
    """
    where = f"task {index + 1}" + (
        f" (id {task.get('id')})" if isinstance(task, dict) and "id" in task else ""
    )
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise AdaptnerError(f"{where}: expected an object with a 'data' object")
    text = task["data"].get(value_key)
    if not isinstance(text, str) or not text.strip():
        raise AdaptnerError(f"{where}: data.{value_key} must be a non-empty string")
    return text


def webhook_task(payload: dict[str, Any]) -> dict[str, Any]:
    """An ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED`` event as a task of a Label Studio
    JSON export (``data`` + ``annotations``), which ``session import`` reads.

    Raises:
        AdaptnerError: no ``task`` or ``annotation`` object in the event.
    """
    task, annotation = payload.get("task"), payload.get("annotation")
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise AdaptnerError(f"{payload.get('action')} event without a 'task' object with 'data'")
    if not isinstance(annotation, dict):
        raise AdaptnerError(f"{payload.get('action')} event without an 'annotation' object")
    keep = {k: task[k] for k in ("id", "data", "meta", "project") if k in task}
    return {**keep, "annotations": [annotation]}


# --- the REST API ---------------------------------------------------------------------
class LabelStudioClient:
    """A minimal Label Studio REST client (the standard library's urllib; no SDK needed).

    Args:
        url: Label Studio's address, e.g. ``http://127.0.0.1:8080``.
        token: An API token: a legacy token (``Token <key>``) or a personal access token
            (a JWT, exchanged for an access token at ``/api/token/refresh``).
    """

    def __init__(self, url: str, token: str, *, timeout: float = 300) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        if token.count(".") == 2:  # a personal access token (JWT refresh token)
            access = self.call("POST", "/api/token/refresh", {"refresh": token}, auth="")
            self.auth = f"Bearer {access['access']}"
        else:
            self.auth = f"Token {token}"

    def call(self, method: str, path: str, body: Any = None, *, auth: str | None = None) -> Any:
        """One JSON request; the decoded answer (None when empty).

        Raises:
            AdaptnerError: Label Studio is unreachable or answered with an error status.
        """
        headers = {"Accept": "application/json"}
        auth = self.auth if auth is None else auth
        if auth:
            headers["Authorization"] = auth
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                content = resp.read()
        except urllib.error.HTTPError as e:
            detail = " ".join(e.read().decode("utf8", "replace").split())[:300]
            raise AdaptnerError(
                f"Label Studio answered {method} {path} with HTTP {e.code}: {detail}"
            ) from None
        except OSError as e:
            raise AdaptnerError(f"Cannot reach Label Studio at {self.url} ({e}).") from None
        return json.loads(content) if content.strip() else None

    def project(self, project_id: int) -> dict[str, Any]:
        """A project (its ``label_config``, ``title``, ``task_number``...)."""
        return self.call("GET", f"/api/projects/{project_id}")

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """Import tasks (with their predictions) into a project."""
        return self.call("POST", f"/api/projects/{project_id}/import", tasks)

    def create_project(self, title: str, label_config: str) -> dict[str, Any]:
        """A new project with this labelling config."""
        return self.call("POST", "/api/projects", {"title": title, "label_config": label_config})

    def connect_backend(self, project_id: int, url: str, title: str) -> dict[str, Any]:
        """Connect an ML backend to a project (Label Studio calls its /health and /setup).

        Raises:
            AdaptnerError: Label Studio could not connect it (its reason, and the usual cause
                for a backend on this machine).
        """
        ml = self.call("POST", "/api/ml", {"url": url, "project": project_id, "title": title})
        if ml.get("readable_state") != "Connected":
            raise AdaptnerError(
                f"Label Studio could not connect the backend at {url} to project {project_id} "
                f"({ml.get('readable_state')}: {ml.get('error_message')}). Is `adaptner session "
                "serve` running there? Label Studio refuses backends on 127.0.0.1 and private "
                "addresses unless started with ML_BLOCK_LOCAL_IP=false (and "
                "SSRF_PROTECTION_ENABLED=false for the backend's webhook)."
            )
        return ml


# --- loading tasks into a project --------------------------------------------------------
@dataclass
class PushResult:
    """What ``session push`` did."""

    batch_id: int
    round: int
    n: int
    path: Any
    remaining: int
    response: Any
    project_id: int


def push_session(
    db: Any,
    name: str,
    client: LabelStudioClient,
    project_id: int | None = None,
    *,
    create: str | None = None,
    backend: str | None = None,
    n: int = 0,
    reissue: bool = False,
) -> PushResult:
    """Hand out the session's most useful pool texts as one batch and import them into a
    Label Studio project, with the current model's pre-annotations.

    The project's labelling config is checked against the session first (nothing is handed
    out if it differs). The batch is recorded like ``session next`` (so the project's
    answers are the session's, not foreign ones) and kept at
    ``<session dir>/labelstudio/push-<batch>.json``. Each task's prediction ``score`` is its
    usefulness by the session's strategy (1.0 = the most useful), as the backend's.

    Args:
        project_id: The project to push to; or
        create: the title of a new project, created with the session's labelling config
            (:func:`label_config_xml`).
        backend: The address of ``session serve`` for this session, connected to the
            project (Settings > Model) before the tasks are imported.
        n: How many texts (0 = every text not handed out yet).
        reissue: Also push texts handed out before and not answered yet (e.g. after a push
            that Label Studio refused).

    Raises:
        AdaptnerError: Label Studio unreachable or refusing, a config that differs from the
            session, or nothing left to hand out.
    """
    from pathlib import Path

    from ..util import write_json
    from .formats import to_labelstudio
    from .loop import model_version, next_batch, open_store, usefulness

    store = open_store(db)
    try:
        session = store.get_session(name)
        left = len(store.candidates(session.id, reissue=reissue))
    finally:
        store.close()
    if (project_id is None) == (create is None):
        raise AdaptnerError("Pass either a project id or the title of a project to create.")
    if create is not None:
        project = client.create_project(create, label_config_xml(session.labels))
        project_id = int(project["id"])
    else:
        project = client.project(project_id)
    config = check_label_config(project.get("label_config"), session.labels)
    if backend is not None:
        client.connect_backend(project_id, backend, f"adaptner {name}")
    output = Path(session.session_dir) / "labelstudio" / "push-{batch}.json"
    batch = next_batch(
        db, name, n=n or max(left, 1), output=output, fmt="labelstudio", reissue=reissue
    )
    version = model_version(session, batch.round)
    tasks = []
    for task in batch.tasks:
        ls_task = to_labelstudio(task, version, from_name=config.from_name, to_name=config.to_name)
        ls_task["predictions"][0]["score"] = usefulness(task["meta"]["rank"], len(batch.tasks))
        tasks.append(ls_task)
    write_json(batch.path, tasks)
    try:
        response = client.import_tasks(project_id, tasks)
    except AdaptnerError as e:
        raise AdaptnerError(
            f"{e} The batch {batch.batch_id} was recorded as handed out; run `session push` "
            "again with --reissue to push it once Label Studio accepts it."
        ) from None
    return PushResult(
        batch.batch_id, batch.round, len(tasks), batch.path, batch.remaining, response, project_id
    )
