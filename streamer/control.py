"""Listen on the control channel and turn each valid message into a reconcile request.

Messages are `ControlMessage` JSON (kind subscriptions / tokens / instruments). An invalid one is
counted and logged, never fatal. After every (re)subscription a reconcile is requested too, since
messages sent while we were not listening are lost (pub/sub does not queue).
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
from ticker.streamer.metrics import StreamerMetrics

log = logging.getLogger(__name__)


class ControlListener:
    def __init__(self, redis: Redis, names: Names, metrics: StreamerMetrics,
                 on_message: Callable[[ControlMessage | None], None], retry_seconds: float = 1.0) -> None:
        self.redis = redis
        self.names = names
        self.metrics = metrics
        self.on_message = on_message  # None means "resynchronise": we may have missed messages
        self.retry_seconds = retry_seconds
        self.listening = False

    async def run(self) -> None:
        warned = False
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                if self.listening or not warned:  # once per outage, not once per retry
                    log.warning("control channel lost; resubscribing", extra={"error": type(exc).__name__})
                    warned = True
            finally:
                self.listening = False
            await asyncio.sleep(self.retry_seconds)

    async def _listen(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.names.control)
            self.listening = True
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
