"""One account's connections: up to MAX_WS_CONNECTIONS sockets, each holding up to
MAX_INSTRUMENTS_PER_WS tokens.

`apply(tokens)` moves the pool to a new token set with the fewest messages: tokens that stay keep
their connection; removed ones are unsubscribed where they live; new ones fill the first
connection with room (opening another only when the open ones are full); emptied connections are
closed. New credentials restart the account's connections with everything they held. Each socket
runs as a task of the owner's `Tasks` (which keeps, logs and cancels them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import aiohttp

from ticker.core.wire_layout import Mode
from ticker.infra.kite.ticker_socket import Credentials, FrameSink, SocketMetrics, TickerSocket, Timing

log = logging.getLogger(__name__)


class Tasks(Protocol):
    """Who runs the sockets: starts a named task and holds it, cancels one and waits for its end."""

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task: ...

    async def cancel(self, task: asyncio.Task) -> None: ...


class AccountPool:
    def __init__(self, account_id: str, creds: Credentials, *, ws_root: str, max_connections: int,
                 per_connection: int, session: aiohttp.ClientSession, sink: FrameSink,
                 metrics: SocketMetrics, timing: Timing, supervisor: Tasks,
                 on_rejected: Callable[[str, Credentials], None]) -> None:
        self.account_id = account_id
        self.creds = creds
        self.ws_root = ws_root
        self.max_connections = max_connections
        self.per_connection = per_connection
        self.session = session
        self.sink = sink
        self.metrics = metrics
        self.timing = timing
        self.supervisor = supervisor
        self.on_rejected = on_rejected
        self.conns: dict[int, TickerSocket] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self.where: dict[int, int] = {}  # token -> connection index
        self.overflow: list[int] = []  # tokens beyond this pool's capacity (a planning bug if any)

    @property
    def tokens(self) -> dict[int, Mode]:
        return {t: m for c in self.conns.values() for t, m in c.tokens.items()}

    async def apply(self, wanted: dict[int, Mode]) -> None:
        current = self.tokens
        removals: dict[int, list[int]] = {}
        for token in current.keys() - wanted.keys():
            removals.setdefault(self.where.pop(token), []).append(token)
        changes: dict[int, dict[int, Mode]] = {}
        for token, mode in wanted.items():
            if token in current and current[token] != mode:
                changes.setdefault(self.where[token], {})[token] = mode
        fresh = sorted(t for t in wanted if t not in current)
        for index in sorted(set(removals) | set(changes)):
            await self.conns[index].update(changes.get(index, {}), removals.get(index, []))
        await self._place({t: wanted[t] for t in fresh})
        for index in [i for i, c in self.conns.items() if not c.tokens]:
            await self._close(index)

    async def _place(self, fresh: dict[int, Mode]) -> None:
        self.overflow = []
        pending = list(fresh.items())
        for index in range(self.max_connections):
            if not pending:
                break
            conn = self.conns.get(index)
            room = self.per_connection - (len(conn.tokens) if conn else 0)
            if room <= 0:
                continue
            part, pending = dict(pending[:room]), pending[room:]
            for token in part:
                self.where[token] = index
            if conn is None:
                self._open(index, part)
            else:
                await conn.update(part, [])
        if pending:
            self.overflow = [t for t, _ in pending]
            log.error("account pool is full; tokens left unstreamed",
                      extra={"account_id": self.account_id, "count": len(pending)})

    def _open(self, index: int, tokens: dict[int, Mode]) -> None:
        conn = TickerSocket(self.account_id, index, self.creds, self.ws_root, self.session, self.sink,
                            self.metrics, self.timing, self.on_rejected)
        conn.tokens.update(tokens)
        self.conns[index] = conn
        self._tasks[index] = self.supervisor.spawn(f"ws:{self.account_id}:{index}", conn.run())

    async def _close(self, index: int) -> None:
        self.conns.pop(index, None)
        task = self._tasks.pop(index, None)
        if task is not None:
            await self.supervisor.cancel(task)

    async def set_credentials(self, creds: Credentials) -> None:
        """A new access token: reconnect every socket with it, keeping their tokens."""
        if creds == self.creds:
            return
        self.creds = creds
        held = {i: dict(c.tokens) for i, c in self.conns.items()}
        for index in list(self.conns):
            await self._close(index)
        for index, tokens in held.items():
            self._open(index, tokens)

    async def stop(self) -> None:
        for index in list(self.conns):
            await self._close(index)
        self.where.clear()

    def describe(self) -> dict:
        conns = [c.describe() for c in self.conns.values()]
        return {
            "connections": len(conns),
            "connected": sum(1 for c in conns if c["connected"]),
            "tokens": sum(c["tokens"] for c in conns),
            "rejected": any(c["rejected"] for c in conns),
            "sockets": conns,
        }
