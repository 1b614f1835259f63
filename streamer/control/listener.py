"""Listen on the control channel and turn each valid message into a reconcile request.

Messages are `ControlMessage` JSON (kind subscriptions / tokens / instruments). An invalid one is
counted and logged, never fatal. After every (re)subscription a reconcile is requested too, since
messages sent while we were not listening are lost (pub/sub does not queue). A lost subscription
is retried with jittered back-off (capped at `retry_seconds`) and told to the shared `RedisLink`,
which logs the outage once, not once per retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import ControlMessage, Names
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.redis_link import RedisLink, jittered

log = logging.getLogger(__name__)


class ControlListener:
    def __init__(self, redis: Redis, names: Names, metrics: StreamerMetrics,
                 on_message: Callable[[ControlMessage | None], None], retry_seconds: float = 1.0,
                 link: RedisLink | None = None) -> None:
        self.redis = redis
        self.names = names
        self.metrics = metrics
        self.on_message = on_message  # None means "resynchronise": we may have missed messages
        self.retry_seconds = retry_seconds  # the longest pause between attempts
        self.link = link or RedisLink()
        self.listening = False
        self._attempt = 0  # failed attempts since the channel last worked

    async def run(self) -> None:
        while True:
            began = self.link.now()
            try:
                await self._listen(began)
            except (RedisError, OSError) as exc:
                self.link.failed("control", exc, since=began)
            finally:
                self.listening = False
            await asyncio.sleep(jittered(self._attempt, self.retry_seconds / 8, self.retry_seconds))
            self._attempt += 1

    async def _listen(self, began: float) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.names.control)
            self.listening = True
            self._attempt = 0
            self.link.ok("control", began)
            self.on_message(None)
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    self.handle(message["data"])
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def handle(self, data: bytes | str) -> ControlMessage | None:
        try:
            message = ControlMessage.model_validate_json(data)
        except ValidationError as exc:
            self.metrics.control.labels("invalid").inc()
            log.warning("ignored an invalid control message", extra={"error": str(exc.errors()[:2])[:300]})
            return None
        self.metrics.control.labels(message.kind).inc()
        log.info("control message", extra={"kind": message.kind, "account_id": message.account_id,
                                           "tokens": len(message.tokens), "reason": message.reason[:200]})
        self.on_message(message)
        return message
