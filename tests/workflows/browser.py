"""Render a local page in headless Chromium (Debian's package) and report what a person would see.

    seen = render_page(Path("report/index.html"), Path("shot.png"))
    seen.console, seen.exceptions, seen.requests, seen.images   # what the page did

Chromium runs with a fresh profile and everything that phones home off; we speak the DevTools
protocol to it (websockets): console messages and uncaught exceptions are collected from load
on, every network request that is not the page itself or a data: URI is recorded (a
self-contained page makes none), each <img> reports whether it decoded, and a full-page PNG is
captured.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]


@dataclass
class Seen:
    console: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    title: str = ""


def _devtools_url(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            return found[1]
        if not line and proc.poll() is not None:
            break
    raise RuntimeError("chromium did not start its DevTools endpoint")


def render_page(page: Path, screenshot: Path, *, width: int = 1280, timeout: float = 60) -> Seen:
    """Load `page`, wait for it, and save a full-page screenshot; returns what happened."""
    from websockets.sync.client import connect

    seen = Seen()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                             "--remote-debugging-port=0", f"--window-size={width},900", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        browser_url = _devtools_url(proc, timeout)
        with connect(browser_url, max_size=None, open_timeout=timeout) as ws:
            ids = iter(range(1, 10**6))

            def call(method: str, session: str | None = None, **params) -> dict:
                msg_id = next(ids)
                msg = {"id": msg_id, "method": method, "params": params}
                if session:
                    msg["sessionId"] = session
                ws.send(json.dumps(msg))
                while True:
                    reply = json.loads(ws.recv(timeout=timeout))
                    if reply.get("id") == msg_id:
                        if "error" in reply:
                            raise RuntimeError(f"{method}: {reply['error']}")
                        return reply.get("result", {})
                    _event(reply, seen, page)

            target = call("Target.createTarget", url="about:blank")["targetId"]
            session = call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                call(f"{domain}.enable", session)
            call("Emulation.setDeviceMetricsOverride", session, width=width, height=900,
                 deviceScaleFactor=1, mobile=False)
            call("Page.navigate", session, url=page.resolve().as_uri())
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:  # until the load event (events are collected)
                reply = json.loads(ws.recv(timeout=timeout))
                _event(reply, seen, page)
                if reply.get("method") == "Page.loadEventFired":
                    break
            images = call("Runtime.evaluate", session, returnByValue=True, awaitPromise=True,
                          expression="Promise.all(Array.from(document.images).map(i => i.decode()"
                                     ".then(() => true, () => false).then(ok => ({ok, "
                                     "width: i.naturalWidth, alt: i.alt}))))")
            seen.images = images["result"]["value"]
            seen.title = call("Runtime.evaluate", session, expression="document.title",
                              returnByValue=True)["result"]["value"]
            size = call("Page.getLayoutMetrics", session)["cssContentSize"]
            shot = call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                              "scale": 1})
            screenshot.write_bytes(base64.b64decode(shot["data"]))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return seen


def _event(msg: dict, seen: Seen, page: Path) -> None:
    method, params = msg.get("method"), msg.get("params", {})
    if method == "Runtime.consoleAPICalled":
        seen.console.append(f"{params['type']}: " + " ".join(
            str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
    elif method == "Log.entryAdded":
        entry = params["entry"]
        seen.console.append(f"{entry['level']}: {entry.get('text', '')}")
    elif method == "Runtime.exceptionThrown":
        seen.exceptions.append(params["exceptionDetails"].get("text", "exception"))
    elif method == "Network.requestWillBeSent":
        url = params["request"]["url"]
        if not url.startswith("data:") and url != page.resolve().as_uri():
            seen.requests.append(url)
