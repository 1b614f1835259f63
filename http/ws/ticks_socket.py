"""`/ws/ticks`: live ticks for browser and mobile clients.

Client → server: `{"action": "subscribe"|"unsubscribe", "tokens": [...]}`, `{"action": "ping"}`,
`{"action": "subscribe_chain"|"unsubscribe_chain", "underlying": "NIFTY", "expiry": "YYYY-MM-DD"}`,
`{"action": "subscribe_orders"|"unsubscribe_orders"}`; `subscribe`, `subscribe_chain` and
`subscribe_orders` take `"since": {"offset", "epoch"}` to resume (see history_replay.py).
Server → client: `connected`, `subscribed`, `unsubscribed`, `tick`, `error`, `pong`,
`chain_subscribed`, `chain_unsubscribed`, `chain`, `orders_subscribed`, `orders_unsubscribed`,
`orders` and `gap` messages, each a JSON object with a `type`; what came from a published message
carries its `offset` and `epoch`.
A chain subscription starts with the whole chain (`"full": true`, as `GET /chain` answers it);
then come the streamer's chain messages: figures and the rows that changed.
With `?batch=true` ticks come as `{"type": "ticks", "data": [...]}`, everything waiting for the
client in one message: far fewer frames for busy subscriptions. A bad message gets an `error` reply
and the connection stays open.
Authentication happens before the upgrade: a refused client gets a plain 401, never a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime
from typing import Annotated, Literal

import orjson
from aiohttp import WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from ticker.core.clock import IST
from ticker.core.tick_envelope import StreamPosition, stream_parts
from ticker.http.chain_view import CHAIN_READER, ChainReader, Sources
from ticker.http.inputs import QueryBool, read_query
from ticker.http.keys import REQUEST_ID
from ticker.http.middleware.auth import AuthError, authenticate_ws
from ticker.http.middleware.errors import DEPENDENCY_ERRORS, ApiError, field_errors
from ticker.http.middleware.observe import REQUEST_ID_HEADER
from ticker.http.state import Services, services
from ticker.http.ws.history_replay import OVERFLOW, Gap, covered, entry_items, find_gap, replay
from ticker.http.ws.hub import (
    CHAIN,
    ORDERS,
    TICKS,
    Route,
    Stamped,
    Whole,
    WsClient,
    chain_message,
    stamped_run,
    stamped_ticks,
    ticks_in,
    whole_message,
)
from ticker.infra.stores.tick_history import Entry

log = logging.getLogger("ticker.http.ws")

MAX_CLIENT_MESSAGE = 256 * 1024
MAX_TICKS_PER_SEND = 500
Token = Annotated[int, Field(ge=0, lt=1 << 32)]


class WsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # `token` (the JWT) is read by authentication

    batch: QueryBool = False


class Since(BaseModel):
    """Where the client left off: the `offset` and `epoch` of the last message it received, and on
    a sharded tick bus the `stream` it came from (`ticks:NIFTY`: each shard has its own offsets)."""

    model_config = ConfigDict(extra="forbid")

    offset: str = Field(max_length=41, pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")
    epoch: str = Field(min_length=1, max_length=64)
    stream: str | None = Field(None, max_length=80, pattern=r"^(ticks|chain|orders)(:[A-Z0-9&_\-]{1,64})?$")

    @property
    def shard(self) -> str | None:
        return stream_parts(self.stream)[1] if self.stream else None

    def position(self) -> StreamPosition:
        return StreamPosition(self.offset, self.epoch)


class WsCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["subscribe", "unsubscribe", "ping", "subscribe_chain", "unsubscribe_chain",
                    "subscribe_orders", "unsubscribe_orders"]
    tokens: list[Token] = Field(default_factory=list, max_length=3000)
    underlying: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Z0-9&_\-]+$")
    expiry: date | None = None
    # one position, or on a sharded tick bus one per stream the client follows
    since: Since | Annotated[list[Since], Field(min_length=1, max_length=512)] | None = Field(
        None, union_mode="left_to_right")


def _msg(kind: str, **fields: object) -> bytes:
    return orjson.dumps({"type": kind, **fields})


class TickClient:
    """One client's conversation: commands in, replies and ticks out through a single sender."""

    def __init__(self, svc: Services, ws: web.WebSocketResponse, client: WsClient, batch: bool = False,
                 chains: ChainReader | None = None) -> None:
        self.svc = svc
        self.chains = chains or ChainReader()
        self.ws = ws
        self.client = client
        self.batch = batch  # one `ticks` message per send instead of one `tick` message per tick
        self.replies: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)

    async def reply(self, message: bytes) -> None:
        # Replies wait for room rather than drop: a client that floods commands is slowed, not lied to.
        await self.replies.put(message)
        if self.client.queue.empty():
            self.client.queue.put_nowait(b"")  # wake the sender; empty messages are skipped

    async def pump(self) -> None:
        """The only task that writes to the socket: replies first, then queued ticks in order. A
        send never ends in the middle of a message's ticks, so a `ticks` frame's offset covers
        everything in it."""
        ws, queue, metrics = self.ws, self.client.queue, self.svc.metrics
        carry: bytes | None = None
        while not ws.closed:
            ticks = [carry if carry is not None else await queue.get()]
            carry, count = None, ticks_in(ticks[0])
            while not queue.empty():
                item = queue.get_nowait()
                if count >= MAX_TICKS_PER_SEND and not _same_message(ticks[-1], item):
                    carry = item
                    break
                ticks.append(item)
                count += ticks_in(item)
            while not self.replies.empty():
                await ws.send_frame(self.replies.get_nowait(), WSMsgType.TEXT)
                metrics.ws_sent.inc()
            ticks = [t for t in ticks if t]  # empty ones only woke us for a reply
            whole = [t for t in ticks if isinstance(t, Whole)]
            if whole:  # chain messages go as they are
                ticks = [t for t in ticks if not isinstance(t, Whole)]
                for message in whole:
                    await ws.send_frame(message, WSMsgType.TEXT)
                metrics.ws_sent.inc(len(whole))
            if not ticks:
                continue
            count = sum(map(ticks_in, ticks))
            if self.batch:  # a frame per stream (one, unless the bus is sharded): one offset covers it
                for group in _by_stream(ticks):
                    stamp = next((s for s in map(_stamp, reversed(group)) if s), b"")
                    await ws.send_frame(b'{"type":"ticks",' + stamp + b'"data":[' + b",".join(group) + b"]}",
                                        WSMsgType.TEXT)
                    metrics.ws_sent.inc()
            else:
                for tick in ticks:
                    await ws.send_frame(b'{"type":"tick",' + _stamp(tick) + b'"data":' + tick + b"}", WSMsgType.TEXT)
                metrics.ws_sent.inc(len(ticks))
            metrics.ws_ticks_sent.inc(count)

    async def handle(self, data: str | bytes) -> None:
        try:
            command = WsCommand.model_validate_json(data, strict=True)
        except ValidationError as exc:
            problems = field_errors(exc, "message")
            text = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:3])
            await self.reply(_msg("error", message=f"invalid message: {text}", details=problems))
            return
        if command.action == "ping":
            await self.reply(_msg("pong", dropped=self.client.dropped))
        elif command.action == "subscribe":
            await self.subscribe(command.tokens, command.since)
        elif command.action in ("subscribe_chain", "unsubscribe_chain"):
            await self.chain(command)
        elif command.action == "subscribe_orders":
            await self.orders(command.since)
        elif command.action == "unsubscribe_orders":
            self.svc.hub.subscribe_orders(self.client, False)
            await self.reply(_msg("orders_unsubscribed"))
        else:
            self.svc.hub.unsubscribe(self.client, command.tokens)
            await self.reply(_msg("unsubscribed", tokens=command.tokens, total=len(self.client.tokens)))

    async def subscribe(self, tokens: list[int], since: Since | list[Since] | None = None) -> None:
        hub, limit = self.svc.hub, self.svc.settings.ws_max_tokens_per_client
        new = [t for t in dict.fromkeys(tokens) if t not in self.client.tokens]
        if len(self.client.tokens) + len(new) > limit:
            await self.reply(_msg("error", message=f"at most {limit} tokens per connection; "
                                  f"{len(self.client.tokens)} already subscribed"))
            return
        if since is not None:
            await self.resume_ticks(new, tokens, _positions(since))
            return
        # Snapshot first, then join the feed: nothing older than the snapshot arrives after it.
        try:
            latest = await hub.snapshot(new)
        except (RedisError, OSError) as exc:  # Redis is away: subscribe anyway, ticks follow once it is back
            self.svc.outages.suspect(exc)
            latest = []
        hub.subscribe(self.client, new)
        await self.reply(_msg("subscribed", tokens=tokens, total=len(self.client.tokens)))
        for message in latest:
            self.client.offer(message)

    async def resume_ticks(self, new: list[int], tokens: list[int], since: list[Since]) -> None:
        """Subscribe `new` and send what was published for them after `since` (see history_replay):
        one position, or on a sharded bus one per shard's stream."""
        wanted, snapshot_sent = set(new), False
        self.client.hold()
        self.svc.hub.subscribe(self.client, new)
        await self.reply(_msg("subscribed", tokens=tokens, total=len(self.client.tokens)))

        async def stand_in(gap: Gap) -> None:  # the latest tick of each stands in for what was lost
            nonlocal snapshot_sent
            await self.reply(gap.message())
            if not snapshot_sent:
                snapshot_sent = True
                for message in await self.svc.hub.snapshot(new):
                    await self.client.queue.put(message)

        def convert(entry: Entry, route: Route) -> Iterable[bytes]:
            if self.batch:  # sent together anyway: encoded and queued as one run
                run = stamped_run(*entry_items(entry), wanted, route.stream)
                return [run] if run is not None else []
            return stamped_ticks(*entry_items(entry), wanted.__contains__, route.stream)

        parts = {self.svc.hub.history_route(TICKS, s.shard): s.position() for s in since}
        await self.resume(list(parts.items()), convert, stand_in, lambda message: message.key in wanted)

    async def resume(self, parts: list[tuple[Route, StreamPosition | None]],
                     convert: Callable[[Entry, Route], Iterable[bytes]],
                     stand_in: Callable[[Gap], Awaitable[None]], mine: Callable[[Stamped], bool]) -> None:
        """With the client's live feed held aside (`WsClient.hold`): replay each stream's history
        after its position, or tell of the gap and let `stand_in` send what stands in for it; then
        release the live feed without what the replays covered."""
        replayed: list[Callable[[bytes], bool]] = []
        behind: list[Gap] = []
        try:
            for route, since in parts:
                last, done = await self._replay_one(route, since, convert, stand_in)
                if last:
                    replayed.append(covered(route.stream, last, mine))
                if not done:
                    behind.append(Gap(route.stream, last or (since.offset if since else ""), None, None, OVERFLOW))
        finally:
            complete = self.client.release(lambda message: any(check(message) for check in replayed))
        if not complete:  # the client fell behind: what follows is not exact
            behind = [Gap(r.stream, s.offset if s else "", None, None, OVERFLOW) for r, s in parts]
        for gap in behind:
            await self.reply(gap.message())

    async def _replay_one(self, route: Route, since: StreamPosition | None, convert: Callable[[Entry, Route], Iterable[bytes]],
                          stand_in: Callable[[Gap], Awaitable[None]]) -> tuple[str | None, bool]:
        """One stream's part of `resume`: the last offset replayed (None: none) and whether all was."""
        redis, envelope = self.svc.ticks, self.svc.settings.tick_message_format == "envelope"
        try:
            gap = None if since is None else await find_gap(redis, route.names, route.stream, route.history,
                                                           since, envelope=envelope)
            if since is not None and gap is None:
                return await replay(redis, route.history, since.offset, self.client, lambda e: convert(e, route))
            if gap is not None:
                await stand_in(gap)
        except (RedisError, OSError) as exc:  # Redis is away: live messages follow once it is back
            self.svc.outages.suspect(exc)
            await self.reply(_msg("error", message=f"the {route.stream} history cannot be read right now; "
                                  "live messages follow, resume again to fill the gap"))
        return None, True

    async def orders(self, since: Since | list[Since] | None) -> None:
        """Join the order updates; with `since`, first those published after it (after a gap,
        every update history still holds)."""
        self.client.hold()
        self.svc.hub.subscribe_orders(self.client, True)
        await self.reply(_msg("orders_subscribed"))
        route = self.svc.hub.history_route(ORDERS)

        def convert(entry: Entry, route: Route) -> Iterable[bytes]:
            return [whole_message("orders", route.stream, *entry_items(entry))]

        async def stand_in(gap: Gap) -> None:
            await self.reply(gap.message())
            await replay(self.svc.ticks, route.history, "0-0", self.client, lambda e: convert(e, route))

        position = _positions(since)[-1].position() if since else None
        await self.resume([(route, position)], convert, stand_in, lambda _: True)

    async def chain(self, command: WsCommand) -> None:
        """Join (or leave) a chain's stream; joining sends the whole chain first."""
        if command.underlying is None:
            await self.reply(_msg("error", message="give the chain's underlying (and expiry, or the nearest is used)"))
            return
        src = Sources(self.svc.db, self.svc.tick_pipe, self.svc.names)
        try:
            if command.action == "unsubscribe_chain":
                key = (command.underlying, command.expiry.isoformat() if command.expiry else "")
                if command.expiry is None:
                    listing = await self.chains.listing(src, command.underlying, None, _today())
                    key = (listing.underlying, listing.expiry.isoformat())
                self.svc.hub.unsubscribe_chain(self.client, key)
                await self.reply(_msg("chain_unsubscribed", underlying=key[0], expiry=key[1]))
                return
            doc = await self.chains.snapshot(src, command.underlying, command.expiry)
        except ApiError as exc:
            await self.reply(_msg("error", message=exc.message, details=exc.details))
            return
        except (RedisError, OSError, *DEPENDENCY_ERRORS) as exc:
            self.svc.outages.suspect(exc)
            await self.reply(_msg("error", message="the chain cannot be read right now; retry shortly"))
            return
        key = (doc["underlying"], doc["expiry"])
        if command.since is not None:
            await self.resume_chain(key, doc, _positions(command.since)[-1].position())
            return
        self.svc.hub.subscribe_chain(self.client, key)  # after the snapshot: nothing older follows it
        await self.reply(_msg("chain_subscribed", underlying=key[0], expiry=key[1]))
        self.client.offer(chain_message({**doc, "full": True}))

    async def resume_chain(self, key: tuple[str, str], doc: dict, since: StreamPosition) -> None:
        """Join a chain's stream and replay its messages after `since`; after a gap, the whole chain."""
        self.client.hold()
        self.svc.hub.subscribe_chain(self.client, key)
        await self.reply(_msg("chain_subscribed", underlying=key[0], expiry=key[1]))

        def convert(entry: Entry, route: Route) -> Iterable[bytes]:
            chains, position = entry_items(entry)
            return [chain_message(c, position, route.stream) for c in chains
                    if isinstance(c, dict) and (c.get("underlying"), c.get("expiry")) == key]

        async def stand_in(gap: Gap) -> None:
            await self.reply(gap.message())
            await self.client.queue.put(chain_message({**doc, "full": True}))

        route = self.svc.hub.history_route(CHAIN, key[0])
        await self.resume([(route, since)], convert, stand_in, lambda message: message.key == key)


def _stamp(item: bytes) -> bytes:
    """`"offset":...,"epoch":...,` for a tick that came from a sequenced message, else nothing."""
    stamp = item.stamp if isinstance(item, Stamped) else b""
    return stamp + b"," if stamp else b""


def _same_message(a: bytes, b: bytes) -> bool:
    return (isinstance(a, Stamped) and isinstance(b, Stamped) and bool(a.offset)
            and (a.stream, a.offset) == (b.stream, b.offset))


def _today() -> date:
    return datetime.now(IST).date()


async def _authorize(request: web.Request, svc: Services) -> dict:
    try:
        return await authenticate_ws(svc.settings, svc.jwt, request)
    except AuthError as exc:
        svc.metrics.ws_refused.labels("auth").inc()
        raise ApiError(401, "unauthorized", str(exc)) from None


async def ws_ticks(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    user = await _authorize(request, svc)
    batch = read_query(request, WsQuery).batch
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_CLIENT_MESSAGE)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "websocket_required", "this endpoint speaks WebSocket only (send an Upgrade request)")
    if svc.hub.full or svc.stopping.is_set():
        svc.metrics.ws_refused.labels("capacity").inc()
        raise ApiError(503, "unavailable", "no room for more WebSocket clients here; retry shortly",
                       headers={"Retry-After": "5"})
    ws.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    await ws.prepare(request)
    client = svc.hub.connect(user, socket=ws)
    session = TickClient(svc, ws, client, batch=batch, chains=request.app.get(CHAIN_READER))
    sender = asyncio.create_task(session.pump(), name=f"ws-send-{client.id}")
    try:
        await session.reply(_msg("connected", connection_id=client.id, user=user, batch=batch))
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await session.handle(message.data)
            elif message.type == WSMsgType.BINARY:
                await session.reply(_msg("error", message="send JSON text frames"))
            if sender.done():
                break
    finally:
        svc.hub.disconnect(client)
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, ConnectionError):
            pass  # cancelled by us, or the peer went away mid-send
        except Exception:
            log.exception("WebSocket sender %s failed", client.id)
        with contextlib.suppress(ConnectionError):
            await ws.close()
    return ws


def _positions(since: Since | list[Since]) -> list[Since]:
    return since if isinstance(since, list) else [since]


def _by_stream(ticks: list[bytes]) -> list[list[bytes]]:
    """Consecutive ticks of one stream together (snapshot ticks, unstamped, join any group)."""
    groups: list[list[bytes]] = []
    current: str | None = None
    for tick in ticks:
        stream = tick.stream if isinstance(tick, Stamped) and tick.stamp else None
        if groups and (stream is None or current is None or stream == current):
            groups[-1].append(tick)
            current = current or stream
        else:
            groups.append([tick])
            current = stream
    return groups
