"""A minimal headless-Chromium driver over the DevTools protocol on a pipe (no driver binary, no extra package)."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    for name in CANDIDATES:
        if path := shutil.which(name):
            return path
    return None


def _high_fd(fd: int) -> int:
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class BrowserError(RuntimeError):
    pass


class Browser:
    """Chromium with ``--remote-debugging-pipe``: commands go to its fd 3, replies come from its fd 4 (NUL-separated)."""

    def __init__(self, exe: str, user_data_dir: Path, width: int = 1000, height: int = 760):
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        # chromium's ends move above fd 9 first, so redirecting them onto fds 3 and 4 cannot clobber one another
        # (bash, not sh: dash cannot redirect fds above 9)
        cmd_r, out_w = (_high_fd(fd) for fd in (cmd_r, out_w))
        args = [exe, *FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}", "about:blank"]
        # the shell only moves the pipe ends to fds 3 and 4, then becomes chromium
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{out_w}', *args],
            pass_fds=(cmd_r, out_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._id = 0
        self.session: str | None = None
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)[
            "sessionId"
        ]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def _messages(self, deadline: float):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise BrowserError("no reply from chromium in time")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise BrowserError("chromium closed the pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, browser: bool = False, timeout: float = 30) -> dict:
        """Run one DevTools command (on the page's session unless ``browser``) and return its result."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not browser:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._messages(deadline)
            if reply.get("id") == self._id:  # anything else is an event, which this driver does not need
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply["result"]

    def eval(self, expression: str):
        """Evaluate JavaScript in the page and return its (JSON) value."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                if value := self.eval(expression):
                    return value
            except BrowserError as e:  # e.g. the page is still loading
                last = e
            time.sleep(0.1)
        raise BrowserError(f"timed out waiting for {expression} (last error: {last})")

    def set_files(self, selector: str, paths: list[str]) -> None:
        """Put files into an ``<input type=file>`` as a user's file dialog would (fires its change event)."""
        res = self.send("Runtime.evaluate", {"expression": f"document.querySelector({json.dumps(selector)})"})
        self.send("DOM.setFileInputFiles", {"files": paths, "objectId": res["result"]["objectId"]})

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close", browser=True, timeout=5)
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._out_r):
            try:
                os.close(fd)
            except OSError:
                pass
