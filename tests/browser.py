"""A headless Chromium driven over the DevTools protocol (aiohttp's websocket), for tests.

Only what the results page's test needs: open a page, evaluate an expression in it (the
DevTools protocol is not bound by the page's Content-Security-Policy), read the console
and the browser's log, take a screenshot. Chromium is Debian's package (``apt-get install
-y chromium``); :func:`chromium_path` is None where it is absent, and the test skips loudly.
Everything stays on loopback: Chromium is started without its background networking.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio

__all__ = ["Page", "chromium_path", "open_page"]

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    """The Chromium binary on this machine, if any."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab: send protocol commands, keep the events (console, log) that came meanwhile."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse[bool]) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events on the way are kept)."""
        number = next(self._ids)
        await self._socket.send_json({"id": number, "method": method, "params": params})
        while True:
            message = json.loads((await self._socket.receive()).data)
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def wait_for(self, event: str) -> dict[str, Any]:
        """The next event named ``event`` (or one kept already)."""
        for message in self.events:
            if message.get("method") == event:
                self.events.remove(message)
                return message
        while True:
            message = json.loads((await self._socket.receive()).data)
            if message.get("method") == event:
                found: dict[str, Any] = message
                return found
            self.events.append(message)

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (awaited if it is a promise)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"the expression failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page at ``path``."""
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def messages(self) -> list[str]:
        """What the page's console and the browser's log said so far."""
        said = []
        for message in self.events:
            params = message.get("params", {})
            if message.get("method") == "Log.entryAdded":
                said.append(str(params["entry"].get("text")))
            elif message.get("method") == "Runtime.consoleAPICalled":
                said.append(" ".join(str(arg.get("value")) for arg in params.get("args", [])))
        return said


@asynccontextmanager
async def open_page(url: str) -> AsyncIterator[Page]:
    """Chromium, headless, with ``url`` loaded in its one tab (a fresh profile each time)."""
    binary = chromium_path()
    assert binary is not None, "check chromium_path() first"
    with tempfile.TemporaryDirectory(prefix="hailuo-chromium-") as profile:
        process = await anyio.open_process(
            [binary, *_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            with anyio.fail_after(60):
                while not port_file.exists() or not port_file.read_text().strip():  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            port = port_file.read_text().split()[0]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                    targets = await answer.json()
                tab = next(target for target in targets if target["type"] == "page")
                async with session.ws_connect(
                    tab["webSocketDebuggerUrl"], max_msg_size=0
                ) as socket:
                    page = Page(socket)
                    for domain in ("Page", "Runtime", "Log"):
                        await page.call(f"{domain}.enable")
                    await page.call("Page.navigate", url=url)
                    await page.wait_for("Page.loadEventFired")
                    yield page
        finally:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
