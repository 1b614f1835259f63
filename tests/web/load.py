"""Load generation for the web bench (`python -m tests.web.load <role> ...`), run as its own process.

Roles: `orders URL` (closed loop), `orders-paced URL RATE` (open loop), `ws PORT PATH TOKENS`
(WebSocket clients counting frames), `anchor-orders PORT` and `anchor-ws PORT` (the bare-aiohttp
servers the bench compares against). Each load role prints one JSON line with its figures. The
clients are minimal asyncio protocols, cheap enough that they are not what limits the measurement.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson

from tests.bench.harness import percentile

CONCURRENCY, WARMUP, MEASURE = 64, 1.0, 4.0
WS_CLIENTS, TOKENS, FANOUT_SECONDS = 100, 20, 3.0
API_KEY = "b" * 40


def _order(i: int) -> bytes:
    from tests.web.seed import CALL, LOT

    return orjson.dumps({"exchange": "NFO", "tradingsymbol": CALL.tradingsymbol, "transaction_type": "BUY",
                         "quantity": LOT, "product": "NRML", "order_type": "LIMIT", "price": 100.0 + (i % 50) / 20})


class HttpConn(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 client connection, one request in flight: cheap enough that the
    load process is not what limits the measured throughput (aiohttp's client would be)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def request(self, raw: bytes) -> asyncio.Future[int]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)  # type: ignore[attr-defined]
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        start = head.find(b"content-length:")
        length = int(head[start + 15:head.find(b"\r\n", start) if b"\r\n" in head[start:] else None]) if start >= 0 else 0
        if len(self.buf) < end + 4 + length:
            return
        status = int(head[9:12])
        del self.buf[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("closed"))


def _post(path: str, host: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\nIdempotency-Key: {uuid.uuid4().hex}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _load_orders(url: str, concurrency: int, warmup: float, measure: float) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counting = False
    stop = False
    bodies = [_order(i) for i in range(200)]
    loop = asyncio.get_running_loop()

    async def worker(n: int) -> None:
        _, conn = await loop.create_connection(HttpConn, host, port)
        i = n
        while not stop:
            raw = _post(parts.path, f"{host}:{port}", bodies[i % len(bodies)])
            t0 = time.perf_counter()
            status = await conn.request(raw)
            if counting:
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
            i += concurrency
        conn.transport.close()

    tasks = [asyncio.create_task(worker(n)) for n in range(concurrency)]
    await asyncio.sleep(warmup)
    counting = True
    t0 = time.perf_counter()
    await asyncio.sleep(measure)
    counting = False
    elapsed = time.perf_counter() - t0
    stop = True
    await asyncio.gather(*tasks)
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "statuses": statuses}


async def _load_paced(url: str, rate: float, warmup: float, measure: float, pool: int = 64) -> dict[str, Any]:
    """Open loop: requests are due on a fixed schedule whatever the server's speed, served by a fixed
    pool of keep-alive connections (a request waits for a free one, as a client's pool would), and
    latency counts from the due time, so a stall shows in the percentiles instead of quietly
    lowering the offered load."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    idle: asyncio.Queue[HttpConn] = asyncio.Queue()
    for _ in range(pool):
        idle.put_nowait((await loop.create_connection(HttpConn, host, port))[1])
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bodies = [_order(i) for i in range(200)]
    inflight: set[asyncio.Task] = set()

    async def one(i: int, due: float, counted: bool) -> None:
        conn = await idle.get()
        status = await conn.request(_post(parts.path, f"{host}:{port}", bodies[i % len(bodies)]))
        if counted:
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1
        idle.put_nowait(conn)

    start = time.perf_counter()
    for i in range(int(rate * (warmup + measure))):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due, i >= rate * warmup))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    await asyncio.gather(*inflight)
    while not idle.empty():
        idle.get_nowait().transport.close()
    latencies.sort()
    return {"rps": rate, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "statuses": statuses}


async def _anchor_server(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        job_id = uuid.uuid4().hex
        return web.Response(body=orjson.dumps({"job_id": job_id, "status_url": f"/jobs/{job_id}",
                                               "echo": len(doc)}), status=202, content_type="application/json")

    async def ready(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/orders", handle)
    app.router.add_get("/ready", ready)
    await _serve(app, port)


async def _serve(app: Any, port: int) -> None:
    from aiohttp import web

    from ticker.infra.runtime.startup import stop_event

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await stop_event().wait()
    await runner.cleanup()


# --- load: WebSocket fan-out -------------------------------------------------------------------
class FrameCounter(asyncio.Protocol):
    """A minimal WebSocket client: counts the server's text frames, and the ticks in them, without
    decoding any JSON (a tick is one `"instrument_token"` key)."""

    def __init__(self, path: str, host: str, subscribe: bytes | None) -> None:
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                        f"Sec-WebSocket-Version: 13\r\nX-API-Key: {API_KEY}\r\n\r\n").encode()
        self.subscribe = subscribe
        self.buf = bytearray()
        self.upgraded = False
        self.frames = 0
        self.ticks = 0
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    @staticmethod
    def frame(payload: bytes) -> bytes:
        """A masked client text frame (payload under 64 KiB)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        n = len(payload)
        head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        return head + mask + masked

    def send_text(self, payload: bytes) -> None:
        self.transport.write(self.frame(payload))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in self.buf[:end]:
                self.ready.set_exception(RuntimeError(bytes(self.buf[:end]).decode(errors="replace")))
                return
            del self.buf[: end + 4]
            self.upgraded = True
            if self.subscribe:
                self.send_text(self.subscribe)
            self.ready.set_result(None)
        buf, pos, size = self.buf, 0, len(self.buf)
        while size - pos >= 2:
            n, head = buf[pos + 1] & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if size - pos < head + n:
                break
            if buf[pos] & 0x0F == 1:
                self.frames += 1
                self.ticks += buf.count(b'"instrument_token"', pos + head, pos + head + n)
            pos += head + n
        del buf[:pos]


async def _load_ws(port: int, path: str, clients: int, seconds: float, tokens: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    subscribe = orjson.dumps({"action": "subscribe", "tokens": list(range(1, tokens + 1))}) if tokens else None
    protocols = []
    for _ in range(clients):
        _, proto = await loop.create_connection(lambda: FrameCounter(path, f"127.0.0.1:{port}", subscribe),
                                                "127.0.0.1", port)
        protocols.append(proto)
    await asyncio.gather(*(p.ready for p in protocols))
    print("ready", flush=True)  # the parent starts the feed now
    await asyncio.sleep(1.0)
    frames, ticks = sum(p.frames for p in protocols), sum(p.ticks for p in protocols)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - t0
    frames, ticks = sum(p.frames for p in protocols) - frames, sum(p.ticks for p in protocols) - ticks
    for p in protocols:
        p.transport.close()
    return {"msgs": frames / elapsed, "ticks": ticks / elapsed}


async def _anchor_ws_server(port: int, clients: int) -> None:
    from aiohttp import WSMsgType, web

    message = orjson.dumps({"type": "tick", "data": _tick(1)})
    sockets: list[web.WebSocketResponse] = []
    go = asyncio.Event()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.append(ws)
        if len(sockets) == clients:
            go.set()
        await go.wait()
        with contextlib.suppress(ConnectionError):
            while not ws.closed:  # each socket's own writer, as the hub's per-client senders are
                for _ in range(256):
                    await ws.send_frame(message, WSMsgType.TEXT)
                await asyncio.sleep(0)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    await _serve(app, port)


def _tick(token: int) -> dict[str, Any]:
    """An option tick of the size the streamer publishes (price, depth summary, Greeks)."""
    return {"instrument_token": token, "tradingsymbol": f"NIFTY25DEC{25000 + token * 50}CE", "name": "NIFTY",
            "expiry": "2025-12-30", "strike": 25000.0 + token * 50, "instrument_type": "CE", "last_price": 123.45,
            "volume": 1234500, "oi": 456700, "bid": 123.4, "ask": 123.5, "exchange_timestamp": 1764307800,
            "underlying_price": 25812.35, "iv": 0.1234, "delta": 0.5123, "gamma": 0.00123, "theta": -12.34,
            "vega": 23.45, "rho": 5.67, "model": "black76"}


async def publish_ticks(redis_url: str, channel: str, seconds: float) -> int:
    """Publish batches (one tick per subscribed token) back to back, each in an envelope as the
    streamer sends it (seq, epoch, offset: the web stamps every tick with them); returns batches sent."""
    from ticker.infra.stores.redis import connect

    client = connect(redis_url)
    batch = orjson.dumps([_tick(t) for t in range(1, TOKENS + 1)])
    sent = 0
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            ms = int(time.time() * 1000)
            head = b'{"seq":%d,"epoch":"bench","offset":"%d-%d","ts":%d,"ticks":' % (sent + 1, ms, sent, ms)
            await client.publish(channel, head + batch + b"}")
            sent += 1
            await asyncio.sleep(0.002)  # a steady stream, not a flood that only measures drops
    finally:
        await client.aclose()
    return sent


# --- the bench ---------------------------------------------------------------------------------
def _main(argv: list[str]) -> int:
    role, *rest = argv
    if role == "orders":
        result = asyncio.run(_load_orders(rest[0], CONCURRENCY, WARMUP, MEASURE))
    elif role == "orders-paced":
        result = asyncio.run(_load_paced(rest[0], float(rest[1]), WARMUP, MEASURE))
    elif role == "ws":
        port, path, tokens = int(rest[0]), rest[1], int(rest[2])
        result = asyncio.run(_load_ws(port, path, WS_CLIENTS, FANOUT_SECONDS, tokens))
    elif role == "anchor-orders":
        asyncio.run(_anchor_server(int(rest[0])))
        return 0
    elif role == "anchor-ws":
        asyncio.run(_anchor_ws_server(int(rest[0]), WS_CLIENTS))
        return 0
    else:
        raise SystemExit(f"unknown role {role}")
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
