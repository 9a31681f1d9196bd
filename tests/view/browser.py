"""A real headless browser for the viewer's tests: Debian's chromium, driven over the Chrome
DevTools protocol (a websocket, spoken with the ``websockets`` package viser already needs).

Why not ``chromium --screenshot`` alone: the page shows our picture only after its websocket to the
viewer is up and a render came back; a one-shot screenshot under a virtual time budget may fire
before that. Here the page stays open, screenshots are taken when the test asks, and the page keeps
its connection while the test changes the GUI from the server side, as a person watching would.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
         "--remote-debugging-port=0")


class Browser:
    """One chromium showing ``url`` in a ``width`` x ``height`` window; ``screenshot()`` -> uint8 [H, W, 3].
    ``close()`` ends it like a closed tab: the viewer sees the browser disconnect."""

    def __init__(self, url: str, width: int = 1000, height: int = 700, timeout: float = 30.0) -> None:
        from websockets.sync.client import connect

        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed")
        self._profile = Path(tempfile.mkdtemp(prefix="dynavatar-chromium-"))
        self._proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self._profile}",
                                       f"--window-size={width},{height}", url],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._ids = itertools.count(1)
        try:
            self._ws = connect(self._page_socket(timeout), max_size=2**26, open_timeout=timeout)
        except BaseException:
            self.close()
            raise

    def _page_socket(self, timeout: float) -> str:
        """The DevTools websocket of the page (chromium writes its port into the profile)."""
        port_file, deadline = self._profile / "DevToolsActivePort", time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self._proc.returncode}")
            if port_file.is_file() and port_file.read_text().strip():
                port = int(port_file.read_text().split()[0])
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                        pages = [t for t in json.load(r) if t.get("type") == "page"]
                except OSError:
                    pages = []
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise TimeoutError("chromium's DevTools endpoint did not come up")

    def call(self, method: str, **params) -> dict:
        """One DevTools command; -> its result (events in between are skipped)."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def screenshot(self, path: str | Path | None = None) -> np.ndarray:
        """The page as it is now, uint8 [H, W, 3] (also written to ``path`` as PNG)."""
        from PIL import Image

        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        if path is not None:
            Path(path).write_bytes(png)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def evaluate(self, expression: str):
        """Run JavaScript in the page; -> its value."""
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
