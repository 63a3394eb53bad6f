"""Screenshots of web pages with headless Chromium, standard library only.

Drives Debian's `chromium` over the DevTools protocol on a pipe (--remote-debugging-pipe:
commands on fd 3, answers on fd 4, NUL-separated JSON), so it can set a login cookie
before loading a page, wait until the page shows what it should, and save a PNG plus
the page's visible text (used to check what the screenshot shows).

    python3 tests/compose/screenshot.py URL OUT.png [--cookie NAME=VALUE] [--wait-for TEXT]...
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit


def _pipe_fds(commands: int, answers: int) -> None:
    """In the child: the DevTools pipe on fds 3 and 4 (via fds >= 10, so neither clobbers the other)."""
    high_commands = fcntl.fcntl(commands, fcntl.F_DUPFD, 10)
    high_answers = fcntl.fcntl(answers, fcntl.F_DUPFD, 10)
    os.dup2(high_commands, 3)
    os.dup2(high_answers, 4)


class Browser:
    def __init__(self, width: int = 1600, height: int = 1000):
        binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if not binary:
            raise SystemExit("no chromium on PATH (apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="e2e-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # chromium reads commands from fd 3 and writes to fd 4
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
             f"--window-size={width},{height}", f"--user-data-dir={self.profile}", "about:blank"],
            pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _pipe_fds(to_chrome_r, from_chrome_w),
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Network.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True,
                  width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _read_message(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self._from_chrome], [], [], 1.0)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, timeout: float = 60.0, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read_message(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def set_cookie(self, url: str, name: str, value: str) -> None:
        parts = urlsplit(url)
        self.call("Network.setCookie", session=True, name=name, value=value,
                  url=f"{parts.scheme}://{parts.netloc}/", path="/")

    def text(self) -> str:
        result = self.call("Runtime.evaluate", session=True, expression="document.body ? document.body.innerText : ''",
                           returnByValue=True)
        return result.get("result", {}).get("value", "") or ""

    def open(self, url: str, wait_for: list[str], timeout: float = 60.0, settle: float = 2.0) -> str:
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            time.sleep(1.0)
            text = self.text()
            if all(needle in text for needle in wait_for):
                time.sleep(settle)  # let charts and icons finish drawing
                return self.text()
        missing = [needle for needle in wait_for if needle not in text]
        raise TimeoutError(f"{url} did not show {missing} within {timeout:.0f} s; it shows:\n{text[:2000]}")

    def screenshot(self, path: str) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=False)["data"]
        with open(path, "wb") as out:
            out.write(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def capture(url: str, out: str, *, cookies: dict[str, str] | None = None, wait_for: list[str] | None = None,
            timeout: float = 60.0) -> str:
    """Open URL (after setting cookies for its origin), wait for every text in wait_for,
    save a PNG to out and the page text beside it (out with .txt); return the text."""
    browser = Browser()
    try:
        for name, value in (cookies or {}).items():
            browser.set_cookie(url, name, value)
        try:
            text = browser.open(url, wait_for or [], timeout=timeout)
        finally:
            browser.screenshot(out)  # also on a timeout: the picture shows what went wrong
        with open(os.path.splitext(out)[0] + ".txt", "w") as handle:
            handle.write(text)
        return text
    finally:
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--cookie", action="append", default=[], help="NAME=VALUE for the URL's origin")
    parser.add_argument("--wait-for", action="append", default=[], help="text the page must show")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    cookies = dict(item.split("=", 1) for item in args.cookie)
    capture(args.url, args.out, cookies=cookies, wait_for=args.wait_for, timeout=args.timeout)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
