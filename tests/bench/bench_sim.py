"""Kite stand-in: maximum sustained tick output in full mode across 3 connections x 3000 tokens.

The stand-in runs as its own process (`ticker sim --profile full --tick-interval-ms 1`, one
core); this process is the client and counts ticks by each frame's 2-byte packet count. The
anchor is the same ticks framed by a per-tick `struct.pack` loop (how a hand-written stand-in
would build Kite frames), measured here in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import sys
import time

import aiohttp
import numpy as np
import orjson

CONNECTIONS, TOKENS, WARMUP, MEASURE = 3, 3000, 1.5, 4.0
GOAL = 300_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _tokens(url: str, api_key: str, access_token: str) -> list[int]:
    headers = {"Authorization": f"token {api_key}:{access_token}"}
    async with aiohttp.ClientSession() as s, s.get(f"{url}/instruments/NFO", headers=headers) as r:
        text = await r.text()
    return [int(line.split(",", 1)[0]) for line in text.splitlines()[1:] if ",CE," in line or ",PE," in line]


async def _client(url: str, ws_url: str, api_key: str, access_token: str) -> tuple[float, dict]:
    tokens = (await _tokens(url, api_key, access_token))[: CONNECTIONS * TOKENS]
    counts = [0] * CONNECTIONS
    counting = asyncio.Event()

    async def reader(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        mine = tokens[i * TOKENS:(i + 1) * TOKENS]
        await ws.send_str(orjson.dumps({"a": "subscribe", "v": mine}).decode())
        await ws.send_str(orjson.dumps({"a": "mode", "v": ["full", mine]}).decode())
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY and len(msg.data) > 2 and counting.is_set():
                counts[i] += int.from_bytes(msg.data[:2], "big")

    async with aiohttp.ClientSession() as s:
        q = f"{ws_url}?api_key={api_key}&access_token={access_token}"
        sockets = [await s.ws_connect(q, max_msg_size=0) for _ in range(CONNECTIONS)]
        tasks = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(sockets)]
        await asyncio.sleep(WARMUP)
        counting.set()
        t0 = time.perf_counter()
        await asyncio.sleep(MEASURE)
        elapsed = time.perf_counter() - t0
        total = sum(counts)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for ws in sockets:
            await ws.close()
        async with s.get(f"{url}/_sim/counters") as r:
            counters = await r.json()
    return total / elapsed, counters


def _anchor_ticks_per_second(n: int = 3000) -> float:
    """Per-tick struct.pack framing of n full-mode packets (the hand-written way)."""
    rng = np.random.default_rng(1)
    vals = rng.integers(1, 1_000_000, (n, 44)).tolist()
    head = struct.Struct(">H")
    body = struct.Struct(">16I")
    level = struct.Struct(">IIH2x")

    def frame() -> bytes:
        parts = [head.pack(n)]
        for v in vals:
            parts.append(head.pack(184))
            parts.append(body.pack(*v[:16]))
            for k in range(10):
                parts.append(level.pack(v[16 + k], v[26 + k], v[36 + k % 8] & 0xFFFF))
        return b"".join(parts)

    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        frame()
        reps += 1
    return reps * n / (time.perf_counter() - t0)


def run(report) -> None:
    from ticker.infra.kitesim.config import SimConfig

    port = _free_port()
    account = SimConfig(seed=3).resolve_accounts()[0]
    cmd = [sys.executable, "-m", "ticker.infra.kitesim.cli", "--profile", "full", "--port", str(port),
           "--seed", "3", "--tick-interval-ms", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "listening" not in line:
            report.row("sim: full-mode ticks/s (3 conns x 3000)", "did not start", goal=f">= {GOAL:,}", met=False)
            return
        url = f"http://127.0.0.1:{port}"
        rate, counters = asyncio.run(_client(url, f"ws://127.0.0.1:{port}/ws", account.api_key,
                                             account.access_token))
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    anchor = _anchor_ticks_per_second()
    report.row("sim: full-mode ticks/s (3 conns x 3000)", f"{rate:,.0f} ticks/s",
               anchor=f"struct.pack framing {anchor:,.0f} ticks/s", ratio=rate / anchor,
               goal=f">= {GOAL:,} ticks/s", met=rate >= GOAL)
    report.row("sim: frames skipped for a slow client", str(counters.get("frames_skipped", "?")))
