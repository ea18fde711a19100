"""Open a report page in a real headless browser with the network off, and say what it saw.

Chromium (Debian's `chromium`) is driven over the DevTools protocol on a pipe (no extra package):
the page is loaded from a file with every proxy pointing at a closed port, every request the page
makes is recorded, and when it has loaded the browser counts the images it decoded. A report that
opens anywhere makes no request but for its own file and `data:` URLs, and shows its figures.

    python -m baeraser_lib.lab.browser reports/index.html reports/03_unlearn.html
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")


@dataclass
class PageVisit:
    url: str
    loaded: bool
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    images: int = 0  # <img> elements in the page
    images_decoded: int = 0  # of them, decoded with a size (a figure a person would see)
    title: str = ""

    @property
    def remote_requests(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(LOCAL_SCHEMES)]


def find_browser() -> str | None:
    """The path of a Chromium-family browser, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


class _Pipe:
    """DevTools messages over the pipe Chromium opens with --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, to_browser: int, from_browser: int):
        self.w, self.r, self.buf, self.next_id, self.events = to_browser, from_browser, b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def _read(self, deadline: float) -> dict | None:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                return None
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                return None
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 20.0) -> dict:
        want = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while (msg := self._read(deadline)) is not None:
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)
        raise TimeoutError(f"the browser did not answer {method} within {timeout} s")

    def wait_for(self, method: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if any(e.get("method") == method for e in self.events):
            return True
        while (msg := self._read(deadline)) is not None:
            self.events.append(msg)
            if msg.get("method") == method:
                return True
        return False


def visit(page: str | os.PathLike, browser: str | None = None, timeout: float = 30.0) -> PageVisit:
    """Load `page` (a local HTML file) with the network off; record its requests and images."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError(f"no Chromium-family browser found (looked for {', '.join(BROWSERS)})")
    url = Path(page).resolve().as_uri()
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()

    def wire():  # in the child: fd 3 reads our messages, fd 4 writes its answers
        import fcntl

        a, b = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)

    profile = tempfile.mkdtemp(prefix="baeraser-browser-")
    args = [browser, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # the network is off
            f"--user-data-dir={profile}", "about:blank"]
    proc = subprocess.Popen(args, preexec_fn=wire, pass_fds=(3, 4), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_r), os.close(from_w)
    cdp = _Pipe(to_w, from_r)
    try:
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp.call("Network.enable", session=session)
        cdp.call("Page.enable", session=session)
        cdp.call("Page.navigate", {"url": url}, session=session)
        loaded = cdp.wait_for("Page.loadEventFired", timeout)
        time.sleep(0.5)  # late requests (a script's fetch after load) still get recorded
        probe = ("JSON.stringify({n: document.images.length, ok: Array.from(document.images)"
                 ".filter(i => i.complete && i.naturalWidth > 0).length, title: document.title})")
        got = cdp.call("Runtime.evaluate", {"expression": probe, "returnByValue": True}, session=session)
        seen = json.loads(got["result"]["value"])
        requests = [e["params"]["request"]["url"] for e in cdp.events
                    if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session]
        return PageVisit(url, loaded, requests, seen["n"], seen["ok"], seen["title"])
    finally:
        try:
            cdp.send("Browser.close")
            proc.wait(5)
        except Exception:
            proc.kill()
        os.close(to_w), os.close(from_r)
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    pages = argv if argv is not None else sys.argv[1:]
    if not pages:
        print(__doc__)
        return 2
    if find_browser() is None:
        print(f"no browser: install Debian's chromium to run this check (looked for {', '.join(BROWSERS)})")
        return 0
    bad = 0
    for page in pages:
        v = visit(page)
        ok = v.loaded and not v.remote_requests
        bad += not ok
        print(f"[{'ok' if ok else 'FAIL'}] {page}: loaded={v.loaded}, {v.images_decoded}/{v.images} images "
              f"decoded, {len(v.requests)} requests, remote: {v.remote_requests or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
