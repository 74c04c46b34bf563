"""Screenshot a Label Studio labelling page (pre-annotations shown) with headless Chromium.

Logs into Label Studio with a user's e-mail and password (its login form), hands the session
cookie to a headless Chromium over the DevTools protocol, opens the task's labelling page and
saves a PNG. Needs ``chromium-headless-shell`` (Debian: ``apt-get install
chromium-headless-shell``) and ``websocket-client`` (pip), e.g. in Label Studio's own venv:

    /work/ls-venv/bin/pip install websocket-client
    /work/ls-venv/bin/python bench/label_studio_screenshot.py --url http://127.0.0.1:8080 \\
        --project 2 --task 311 --out bench/results/label_studio/labelling_page.png
"""

import argparse
import base64
import http.cookiejar
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path


def login(url: str, email: str, password: str) -> str:
    """The ``sessionid`` cookie of a logged-in user (Label Studio's login form)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{url}/user/login/").read().decode("utf8")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": csrf, "email": email, "password": password}
    ).encode()
    req = urllib.request.Request(f"{url}/user/login/", data=form, method="POST")
    req.add_header("Referer", f"{url}/user/login/")
    opener.open(req).read()
    for cookie in jar:
        if cookie.name == "sessionid":
            return cookie.value
    raise RuntimeError("Label Studio did not log the user in (wrong e-mail or password?)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevTools:
    """A minimal Chrome DevTools protocol session over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=120)
        self.seq = 0

    def send(self, method: str, **params) -> dict:
        self.seq += 1
        self.ws.send(json.dumps({"id": self.seq, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.seq:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})


def screenshot(url: str, sessionid: str, page: str, out: Path, wait: float, selector: str) -> None:
    exe = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if exe is None:
        raise RuntimeError("no chromium-headless-shell or chromium on PATH")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="ls-shot-")
    proc = subprocess.Popen(
        [
            exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
            f"--remote-debugging-port={port}", "--window-size=1400,900", "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [p for p in json.loads(r.read()) if p["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not start")
            time.sleep(0.5)
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        tools.send("Network.enable")
        host = urllib.parse.urlparse(url).hostname
        tools.send("Network.setCookie", name="sessionid", value=sessionid, domain=host, path="/")
        tools.send("Page.enable")
        tools.send("Page.navigate", url=page)
        deadline = time.monotonic() + wait
        found = False
        while time.monotonic() < deadline and not found:
            time.sleep(1)
            res = tools.send(
                "Runtime.evaluate", expression=f"document.querySelectorAll({selector!r}).length"
            )
            found = res.get("result", {}).get("value", 0) > 0
        time.sleep(2)  # let the regions finish drawing
        shot = tools.send("Page.captureScreenshot", format="png")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        print(f"{'found' if found else 'NOT found'} {selector!r}; screenshot -> {out}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--email", default="admin@example.com")
    ap.add_argument("--password", default="adaptner-roundtrip")
    ap.add_argument("--project", type=int, required=True)
    ap.add_argument("--task", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--wait", type=float, default=90, help="Seconds to wait for the regions.")
    ap.add_argument(
        "--selector",
        default=".htx-highlight",
        help="CSS selector of a labelled span on the page (what must be drawn).",
    )
    args = ap.parse_args()
    sessionid = login(args.url, args.email, args.password)
    page = f"{args.url}/projects/{args.project}/data?tab=0&task={args.task}"
    screenshot(args.url, sessionid, page, args.out, args.wait, args.selector)


if __name__ == "__main__":
    main()
