"""The Kite adapter's ticker WebSocket on its own: an account's pool against the stand-in, its frames
into a plain sink, its counts into plain counters; no streamer involved."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import pytest

from tests.waiting import wait_for
from ticker.core.wire import decode
from ticker.infra.kite.ticker_pool import AccountPool
from ticker.infra.kite.ticker_socket import Credentials, Timing
from ticker.infra.kitesim.universe import KIND_CE


async def until(condition: Callable[[], object]) -> None:
    """Wait (generously bounded) until `condition()` holds."""
    async def holds() -> bool:
        return bool(condition())
    await wait_for(holds)


class Count:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class ByLabel:
    def __init__(self) -> None:
        self.counts: dict[str, Count] = {}

    def labels(self, *values: str) -> Count:
        return self.counts.setdefault(values[0], Count())


class Metrics:
    def __init__(self) -> None:
        self.connections, self.token_rejections, self.reconnects = Count(), Count(), ByLabel()


class Sink:
    """Decodes every binary frame and keeps which tokens arrived in which mode."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[int, int]] = Counter()
        self.texts: list[str] = []

    def frame(self, account_id: str, data: bytes) -> int:
        if len(data) < 2:
            return 0
        ticks = decode(data)
        self.seen.update(zip(ticks.token.tolist(), ticks.mode.tolist(), strict=True))
        return len(ticks)

    def text(self, account_id: str, text: str) -> None:
        self.texts.append(text)

    def tokens(self) -> set[int]:
        return {token for token, _ in self.seen}


class Tasks:
    def __init__(self) -> None:
        self.running: set[asyncio.Task] = set()

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def cancel(self, task: asyncio.Task) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def _pool(sim, session, sink, metrics, tasks, rejected, per_connection: int = 3, token: str | None = None):
    acc = sim.account
    return AccountPool(acc.api_key, Credentials(acc.api_key, token or acc.access_token), ws_root=sim.ws_url,
                       max_connections=2, per_connection=per_connection, session=session, sink=sink,
                       metrics=metrics, timing=Timing(30.0, 0.05, 0.5, 100), supervisor=tasks,
                       on_rejected=lambda account, creds: rejected.append(account))


async def test_a_pool_streams_its_tokens_in_their_modes_over_as_many_sockets_as_it_needs(kitesim, session):
    uni = kitesim.state.universe
    tokens = [int(t) for t in uni.token[uni.kind == KIND_CE][:4]]
    sink, metrics, tasks, rejected = Sink(), Metrics(), Tasks(), []
    pool = _pool(kitesim, session, sink, metrics, tasks, rejected)
    try:
        await pool.apply({tokens[0]: "full", tokens[1]: "ltp", tokens[2]: "quote", tokens[3]: "full"})
        assert len(pool.conns) == 2  # three fit on the first socket, the fourth opens a second
        await until(lambda: sink.tokens() == set(tokens))
        assert {(tokens[1], 0), (tokens[2], 1), (tokens[0], 2), (tokens[3], 2)} <= set(sink.seen)
        assert metrics.connections.value == 2 and not rejected

        await pool.apply({tokens[0]: "full"})  # the second socket is emptied and closed
        assert len(pool.conns) == 1 and pool.tokens == {tokens[0]: "full"}
    finally:
        await pool.stop()
    await until(lambda: metrics.connections.value == 0)


async def test_a_refused_token_is_reported_once_and_the_socket_stops(kitesim, session):
    uni = kitesim.state.universe
    token = int(uni.token[uni.kind == KIND_CE][0])
    sink, metrics, tasks, rejected = Sink(), Metrics(), Tasks(), []
    pool = _pool(kitesim, session, sink, metrics, tasks, rejected, token="not-a-token")
    try:
        await pool.apply({token: "ltp"})
        await until(lambda: rejected == [kitesim.account.api_key])
        await until(lambda: not tasks.running)
        assert pool.describe()["rejected"] and metrics.token_rejections.value == 1 and not sink.seen
    finally:
        await pool.stop()
