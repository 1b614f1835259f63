"""Headless Chromium driven over its DevTools protocol (CDP), with aiohttp: no browser-automation
package, only Debian's `chromium`.

Chromium is started with `--remote-debugging-port=0` and writes the port it chose, and its browser
WebSocket path, to `DevToolsActivePort` in its profile folder. One WebSocket to the browser then
carries everything: a page target is created and attached in flat mode (each command names its
`sessionId`), and the tests use Runtime.evaluate to read the DOM and Page.captureScreenshot to
take pictures.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

START_BOUND = 60.0  # seconds for Chromium to come up on a busy machine
REQUIRE_ENV = "TICKER_TEST_REQUIRE_CHROMIUM"
WIDTH, HEIGHT = 1680, 980


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CdpError(Exception):
    """Chromium answered a command with an error, or a script threw."""


class Page:
    """One tab: commands go over the browser's socket, tagged with the tab's session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session_id: str, calls: Calls) -> None:
        self.ws, self.session_id, self.calls = ws, session_id, calls

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.calls.send(method, params, self.session_id)

    async def evaluate(self, expression: str) -> Any:
        """The expression's value (JSON-able), a promise awaited; CdpError when it throws."""
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise CdpError(details.get("exception", {}).get("description") or details.get("text"))
        return answer["result"].get("value")

    async def navigate(self, url: str) -> None:
        """Opens `url` and returns once its document has loaded (its scripts have run)."""
        answer = await self.send("Page.navigate", url=url)
        if answer.get("errorText"):
            raise CdpError(f"{url}: {answer['errorText']}")
        deadline = time.monotonic() + START_BOUND
        loaded = "location.href !== 'about:blank' && document.readyState === 'complete'"
        while not await self.evaluate(loaded):
            if time.monotonic() > deadline:
                raise CdpError(f"{url} did not finish loading")
            await asyncio.sleep(0.05)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


class Calls:
    """Request ids and the answers waiting for them, read by one task."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def send(self, method: str, params: dict[str, Any], session_id: str | None = None) -> dict[str, Any]:
        call_id = next(self.ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        answer = self.waiting[call_id] = asyncio.get_running_loop().create_future()
        await self.ws.send_str(json.dumps(message))
        async with asyncio.timeout(START_BOUND):
            return await answer

    async def _read(self) -> None:
        async for message in self.ws:
            doc = json.loads(message.data)
            waiter = self.waiting.pop(doc.get("id", -1), None)  # events (no id) are not used
            if waiter is None or waiter.done():
                continue
            if "error" in doc:
                waiter.set_exception(CdpError(doc["error"].get("message", str(doc["error"]))))
            else:
                waiter.set_result(doc.get("result", {}))
        for waiter in self.waiting.values():
            if not waiter.done():
                waiter.set_exception(CdpError("Chromium closed the DevTools connection"))

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


async def _devtools_address(profile: Path, browser: subprocess.Popen[bytes]) -> str:
    """ws://127.0.0.1:<port>/devtools/browser/<id>, once Chromium has written it."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_BOUND
    while True:
        lines = marker.read_text().split() if marker.exists() else []
        if len(lines) >= 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        if browser.poll() is not None:
            raise CdpError(f"chromium exited with {browser.returncode} before it listened")
        if time.monotonic() > deadline:
            raise CdpError("chromium did not open its DevTools port")
        await asyncio.sleep(0.1)


class Browser:
    """A running Chromium's DevTools connection; each `page()` is a new tab with its own sessionStorage."""

    def __init__(self, calls: Calls, width: int, height: int) -> None:
        self.calls, self.width, self.height = calls, width, height

    async def page(self) -> Page:
        target = await self.calls.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.calls.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self.calls.ws, attached["sessionId"], self.calls)
        await page.send("Page.enable")
        await page.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                        deviceScaleFactor=1, mobile=False)
        return page


@contextlib.asynccontextmanager
async def chromium(width: int = WIDTH, height: int = HEIGHT) -> AsyncIterator[Browser]:
    """A fresh headless Chromium with a profile of its own, stopped on the way out."""
    binary = chromium_path()
    if binary is None:
        raise CdpError("chromium is not installed")
    with tempfile.TemporaryDirectory(prefix="chromium-") as folder:
        profile = Path(folder)
        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                "--remote-debugging-port=0", f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        browser = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "HOME": folder})
        try:
            address = await _devtools_address(profile, browser)
            async with aiohttp.ClientSession() as http, http.ws_connect(address, max_msg_size=0) as ws:
                calls = Calls(ws)
                try:
                    yield Browser(calls, width, height)
                finally:
                    await calls.close()
        finally:
            browser.terminate()
            try:
                browser.wait(30)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait(30)
