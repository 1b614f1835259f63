"""Run the real `KiteTicker` (threaded, Twisted) against a stand-in and print a JSON verdict.

Twisted's reactor runs once per process, so tests start this module in a subprocess:
`python -m tests.kitesim.kiteticker_probe`. The stand-in runs in a background thread; its engine
tap records the Ticks it meant to send per frame, and every frame KiteTicker received is compared
with kiteconnect's own parse of it, field by field.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import threading
import time

N_TOKENS = 100
DEADLINE = 120.0  # generous: a busy machine may run the threaded client slowly


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


class SimThread:
    """The stand-in on its own event loop thread; `meant` maps frame bytes -> Ticks sent."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.meant: dict[bytes, object] = {}
        self.lock = threading.Lock()
        self.handle = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from ticker.infra.kitesim.config import SimConfig
        from ticker.infra.kitesim.server import running_sim

        self.loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with running_sim(SimConfig(seed=7, accounts=1, tick_interval_ms=100)) as sim:
            sim.state.engine.tap = self._tap
            self.handle = sim
            self.ready.set()
            await self._stop.wait()

    def _tap(self, conn: object, ticks: object, frame: bytes) -> None:
        with self.lock:
            if len(self.meant) < 2000:
                self.meant[frame] = ticks

    def stop(self) -> None:
        if self.loop and self._stop:
            self.loop.call_soon_threadsafe(self._stop.set)


def main() -> int:
    from kiteconnect import KiteTicker

    from ticker.core.wire import kite_dicts
    from ticker.infra.kitesim.universe import KIND_CE, KIND_PE

    sim = SimThread()
    sim.thread.start()
    if not sim.ready.wait(DEADLINE):
        print(json.dumps({"error": "stand-in did not start"}))
        return 1
    handle = sim.handle
    uni = handle.state.universe
    opts = (uni.kind == KIND_CE) | (uni.kind == KIND_PE)
    tokens = [int(t) for t in uni.token[opts][:N_TOKENS]]
    received: list[bytes] = []
    full_seen: dict[int, int] = {}
    done = threading.Event()

    kt = KiteTicker(handle.account.api_key, handle.account.access_token, root=handle.ws_url, reconnect=False)

    def on_connect(ws, response):
        ws.subscribe(tokens)
        ws.set_mode(ws.MODE_FULL, tokens)

    def on_message(ws, payload, is_binary):
        if is_binary and len(payload) > 4:
            received.append(bytes(payload))

    def on_ticks(ws, ticks):
        for t in ticks:
            if t["mode"] == "full" and len(t["depth"]["buy"]) == 5 and len(t["depth"]["sell"]) == 5:
                full_seen[t["instrument_token"]] = full_seen.get(t["instrument_token"], 0) + 1
        if len(full_seen) == len(tokens) and min(full_seen.values()) >= 2:
            done.set()

    kt.on_connect, kt.on_message, kt.on_ticks = on_connect, on_message, on_ticks
    kt.connect(threaded=True)
    started = time.monotonic()
    done.wait(DEADLINE)
    compared = mismatched = unmatched = 0
    for frame in list(received):
        with sim.lock:
            meant = sim.meant.get(frame)
        if meant is None:
            unmatched += 1
            continue
        compared += 1
        if not _same(kt._parse_binary(frame), kite_dicts(meant)):
            mismatched += 1
    verdict = {
        "tokens": len(tokens), "full_with_depth": len(full_seen), "frames": len(received),
        "compared": compared, "mismatched": mismatched, "unmatched": unmatched,
        "seconds": round(time.monotonic() - started, 2),
    }
    print(json.dumps(verdict), flush=True)
    kt.close()
    sim.stop()
    sys.stdout.flush()
    os._exit(0)  # the Twisted reactor thread cannot be restarted or joined cleanly


if __name__ == "__main__":
    sys.exit(main())
