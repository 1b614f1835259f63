"""`ticker tail` shows what subscribers receive: run it as a user would, publish, read its table."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import orjson

from ticker.infra.cli.tail import Board

TICKER = str(Path(sys.executable).with_name("ticker"))


def _tick(token: int, symbol: str, ltp: float, iv: float) -> dict:
    return {"instrument_token": token, "tradingsymbol": symbol, "name": "NIFTY", "expiry": "2026-11-24",
            "strike": 24000.0, "instrument_type": "CE", "last_price": ltp, "iv": iv, "delta": 0.51,
            "gamma": 0.0004, "theta": -12.5, "vega": 9.1, "ts": time.time()}


def test_board_keeps_latest_per_token_and_filters() -> None:
    board = Board(rows=2, tokens={1, 2, 3})
    board.add(orjson.dumps([_tick(1, "A", 1.0, 0.1), _tick(2, "B", 2.0, 0.2), _tick(9, "Z", 9.0, 0.9)]))
    board.add(orjson.dumps([_tick(1, "A", 1.5, 0.15), _tick(3, "C", 3.0, 0.3)]))
    assert list(board.latest) == [1, 3]  # bounded to 2 rows, most recent kept; token 9 filtered out
    assert board.latest[1]["last_price"] == 1.5
    assert "A" in board.render("x") and "Z" not in board.render("x")


async def test_tail_process_shows_published_ticks(settings, redis, names) -> None:
    env = {**os.environ, "REDIS_URL": settings.redis_url, "REDIS_NAMESPACE": settings.redis_namespace,
           "PUBLISH_CHANNEL_PREFIX": settings.publish_channel_prefix}
    proc = await asyncio.create_subprocess_exec(
        TICKER, "tail", "--seconds", "3", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    done = asyncio.create_task(proc.communicate())
    # Its three seconds start once it has subscribed, whenever a busy machine gets it there: publish
    # until it has finished.
    deadline, i = time.monotonic() + 120, 0
    while not done.done() and time.monotonic() < deadline:
        await redis.publish(names.options, orjson.dumps([_tick(777, "NIFTY24000CE", 100 + i, 0.1234)]))
        i += 1
        await asyncio.sleep(0.1)
    out, err = await asyncio.wait_for(done, 30)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "NIFTY24000CE" in text and "0.1234" in text and "0.5100" in text
