"""`ticker tail` shows what subscribers receive: run it as a user would, publish, read its table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from datetime import date
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from tests.streamer.redis_server import RedisServer
from ticker.core.contracts import Names
from ticker.infra.cli.chain_board import REVERSE, ChainBoard, ChainListing
from ticker.infra.cli.tail import Board
from ticker.infra.stores.redis import connect
from ticker.infra.stores.tick_history import publish_sequenced

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


@pytest.mark.parametrize("bus", ["redis_url", "tick_redis_url"])
async def test_tail_process_shows_published_ticks(bus, settings, redis, names, tmp_path) -> None:
    """On REDIS_URL's Redis, or on a tick bus of its own (TICK_REDIS_URL; REDIS_URL then has no ticks)."""
    env = {**os.environ, "REDIS_URL": settings.redis_url, "REDIS_NAMESPACE": settings.redis_namespace,
           "PUBLISH_CHANNEL_PREFIX": settings.publish_channel_prefix}
    env.pop("TICK_REDIS_URL", None)
    async with contextlib.AsyncExitStack() as stack:
        if bus == "tick_redis_url":
            server = RedisServer(tmp_path / "tick-bus")
            env["TICK_REDIS_URL"] = server.start()
            stack.callback(server.kill)
            redis = connect(server.url)
            stack.push_async_callback(redis.aclose)
        await _tail_shows(env, redis, names)


async def _tail_shows(env: dict[str, str], redis: Redis, names: Names) -> None:
    proc = await asyncio.create_subprocess_exec(
        TICKER, "tail", "--seconds", "3", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    done = asyncio.create_task(proc.communicate())
    # Its three seconds start once it has subscribed, whenever a busy machine gets it there: publish
    # until it has finished.
    deadline, i = time.monotonic() + 120, 0
    while not done.done() and time.monotonic() < deadline:
        await publish_sequenced(redis, names, names.options, [orjson.dumps(_tick(777, "NIFTY24000CE", 100 + i, 0.1234))],
                                envelope=True, history_seconds=60)  # as the streamer publishes
        i += 1
        await asyncio.sleep(0.1)
    out, err = await asyncio.wait_for(done, 30)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "NIFTY24000CE" in text and "0.1234" in text and "0.5100" in text


def _chain(expiry: str, rows: list[dict], underlying: str = "NIFTY") -> bytes:
    return orjson.dumps({"underlying": underlying, "expiry": expiry, "full": False, "ts": time.time(),
                         "spot": 24010.0, "forward": 24030.0, "atm_strike": 24000.0, "atm_iv": 0.1234,
                         "pcr_oi": 0.9, "max_pain": 24000.0, "straddle": 250.5, "rows": rows})


def _strike(strike: float, ltp: float) -> dict:
    leg = {"ltp": ltp, "oi": 1500, "iv": 0.125, "delta": 0.5, "token": 1, "tradingsymbol": "X", "age_ms": 10}
    return {"strike": strike, "ce": leg, "pe": {**leg, "delta": -0.5}}


def test_chain_board_keeps_the_latest_row_per_listed_strike() -> None:
    board = ChainBoard(ChainListing("NIFTY", date(2026, 11, 24), [23950.0, 24000.0, 24050.0]), rows=40)
    assert "waiting for the first update" in board.render("c", ansi=False)
    assert board.add(_chain("2026-11-24", [_strike(23950, 90.0), _strike(24000, 60.0), _strike(99999, 1.0)]))
    assert board.add(_chain("2026-11-24", [_strike(24000, 61.5)]))  # only the strike that ticked
    assert not board.add(_chain("2026-12-01", [_strike(24050, 5.0)]))  # another expiry
    assert not board.add(_chain("2026-11-24", [_strike(24050, 5.0)], underlying="BANKNIFTY"))
    assert not board.add(b"not json")
    assert sorted(board.latest) == [23950.0, 24000.0]  # bounded by the listing
    assert board.latest[23950.0].ce.ltp == 90.0 and board.latest[24000.0].ce.ltp == 61.5
    text = board.render("c", ansi=False)
    assert "ATM IV 12.3%" in text and "max pain 24000" in text and "straddle 250.50" in text
    atm = [line for line in text.splitlines() if "*24000*" in line]
    assert len(atm) == 1 and "61.50" in atm[0] and "12.5" in atm[0] and "-0.500" in atm[0]
    assert f"{REVERSE}" in board.render("c", ansi=True)


def test_boards_read_envelopes_and_bare_arrays() -> None:
    envelope = {"seq": 7, "epoch": "e", "offset": "1-0", "ts": 1}
    board = Board(rows=5, tokens=None)
    board.add(orjson.dumps({**envelope, "ticks": [_tick(1, "A", 1.0, 0.1), _tick(2, "B", 2.0, 0.2)]}))
    board.add(orjson.dumps([_tick(3, "C", 3.0, 0.3)]))  # TICK_MESSAGE_FORMAT=array
    orders = Board(rows=5, tokens=None)
    orders.add(orjson.dumps({**envelope, "updates": [{"order_id": "9", "status": "OPEN"}]}))
    assert list(board.latest) == [1, 2, 3] and list(orders.latest) == ["9"]
    chains = ChainBoard(ChainListing("NIFTY", date(2026, 11, 24), [24000.0]), rows=40)
    other, mine = (orjson.loads(_chain("2026-11-24", [_strike(24000, p)], u)) for u, p in (("BANKNIFTY", 1.0), ("NIFTY", 7.0)))
    assert chains.add(orjson.dumps({**envelope, "chains": [other, mine]}))
    assert not chains.add(orjson.dumps({**envelope, "chains": [other]}))
    assert chains.received == 1 and chains.latest[24000.0].ce.ltp == 7.0
