"""`/ws/ticks`: live ticks for browser and mobile clients.

Client → server: `{"action": "subscribe"|"unsubscribe", "tokens": [...]}`, `{"action": "ping"}`,
`{"action": "subscribe_chain"|"unsubscribe_chain", "underlying": "NIFTY", "expiry": "YYYY-MM-DD"}`.
Server → client: `connected`, `subscribed`, `unsubscribed`, `tick`, `error`, `pong`,
`chain_subscribed`, `chain_unsubscribed` and `chain` messages, each a JSON object with a `type`.
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
from datetime import date, datetime
from typing import Annotated, Literal

import orjson
from aiohttp import WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from ticker.core.clock import IST
from ticker.http.chain_view import CHAIN_READER, ChainReader, Sources
from ticker.http.inputs import QueryBool, read_query
from ticker.http.keys import REQUEST_ID
from ticker.http.middleware.auth import AuthError, authenticate_ws
from ticker.http.middleware.errors import DEPENDENCY_ERRORS, ApiError, field_errors
from ticker.http.middleware.observe import REQUEST_ID_HEADER
from ticker.http.state import Services, services
from ticker.http.ws.hub import Whole, WsClient, chain_message

log = logging.getLogger("ticker.http.ws")

MAX_CLIENT_MESSAGE = 256 * 1024
MAX_TICKS_PER_SEND = 500
Token = Annotated[int, Field(ge=0, lt=1 << 32)]


class WsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # `token` (the JWT) is read by authentication

    batch: QueryBool = False


class WsCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["subscribe", "unsubscribe", "ping", "subscribe_chain", "unsubscribe_chain"]
    tokens: list[Token] = Field(default_factory=list, max_length=3000)
    underlying: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Z0-9&_\-]+$")
    expiry: date | None = None


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
        """The only task that writes to the socket: replies first, then queued ticks in order."""
        ws, queue, metrics = self.ws, self.client.queue, self.svc.metrics
        while not ws.closed:
            ticks = [await queue.get()]
            while not queue.empty() and len(ticks) < MAX_TICKS_PER_SEND:
                ticks.append(queue.get_nowait())
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
            if self.batch:
                await ws.send_frame(b'{"type":"ticks","data":[' + b",".join(ticks) + b"]}", WSMsgType.TEXT)
                metrics.ws_sent.inc()
            else:
                for tick in ticks:
                    await ws.send_frame(b'{"type":"tick","data":' + tick + b"}", WSMsgType.TEXT)
                metrics.ws_sent.inc(len(ticks))
            metrics.ws_ticks_sent.inc(len(ticks))

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
            await self.subscribe(command.tokens)
        elif command.action in ("subscribe_chain", "unsubscribe_chain"):
            await self.chain(command)
        else:
            self.svc.hub.unsubscribe(self.client, command.tokens)
            await self.reply(_msg("unsubscribed", tokens=command.tokens, total=len(self.client.tokens)))

    async def subscribe(self, tokens: list[int]) -> None:
        hub, limit = self.svc.hub, self.svc.settings.ws_max_tokens_per_client
        new = [t for t in dict.fromkeys(tokens) if t not in self.client.tokens]
        if len(self.client.tokens) + len(new) > limit:
            await self.reply(_msg("error", message=f"at most {limit} tokens per connection; "
                                  f"{len(self.client.tokens)} already subscribed"))
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


    async def chain(self, command: WsCommand) -> None:
        """Join (or leave) a chain's stream; joining sends the whole chain first."""
        if command.underlying is None:
            await self.reply(_msg("error", message="give the chain's underlying (and expiry, or the nearest is used)"))
            return
        src = Sources(self.svc.db, self.svc.pipe, self.svc.names)
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
        self.svc.hub.subscribe_chain(self.client, key)  # after the snapshot: nothing older follows it
        await self.reply(_msg("chain_subscribed", underlying=key[0], expiry=key[1]))
        self.client.offer(chain_message({**doc, "full": True}))


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
