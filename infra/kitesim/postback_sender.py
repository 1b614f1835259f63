"""Order postbacks as Kite sends them.

Every order update carries the app's `app_id` and a `checksum`: the SHA-256 hex digest of
order_id + order_timestamp + api_secret, which a receiver recomputes to know the update is
genuine. Updates go to the account's ticker connections (postbacks over WebSocket, every status
change) and, when the account has a `postback_url`, as the raw JSON body of an HTTP POST for the
statuses Kite's Postback API documents: COMPLETE, CANCELLED, REJECTED and UPDATE (a modification
or a partial fill).

HTTP delivery runs in one background task with a bounded queue: a receiver that is down or slow
costs dropped postbacks (counted), never the stand-in's memory or its order path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque

import aiohttp
import orjson

from ticker.infra.kitesim.config import SimAccount

log = logging.getLogger(__name__)
POSTBACK_STATUSES = frozenset({"COMPLETE", "CANCELLED", "REJECTED", "UPDATE"})
QUEUE_MAX = 10_000
TIMEOUT_SECONDS = 5.0


def postback_checksum(order_id: str, order_timestamp: str, api_secret: str) -> str:
    return hashlib.sha256(f"{order_id}{order_timestamp}{api_secret}".encode()).hexdigest()


def signed(account: SimAccount, update: dict) -> dict:
    """The order update with the app's id and its checksum, as Kite posts it."""
    checksum = postback_checksum(str(update["order_id"]), str(update["order_timestamp"]), account.api_secret)
    return {**update, "app_id": account.app_id, "checksum": checksum}


class Postbacks:
    """Queue and deliver HTTP postbacks (one at a time, in order)."""

    def __init__(self, max_queue: int = QUEUE_MAX) -> None:
        self._queue: deque[tuple[str, bytes]] = deque(maxlen=max_queue)
        self._wake = asyncio.Event()
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def offer(self, account: SimAccount, update: dict) -> None:
        if not account.postback_url or update.get("status") not in POSTBACK_STATUSES:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append((account.postback_url, orjson.dumps(update)))
        self._wake.set()

    def describe(self) -> dict:
        return {"queued": len(self._queue), "sent": self.sent, "failed": self.failed, "dropped": self.dropped}

    async def run(self) -> None:
        """Deliver until cancelled; a failed delivery is counted and logged once per outage."""
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        failing = False
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                url, body = self._queue.popleft()
                ok = await self._post(session, url, body)
                if ok == failing:
                    failing = not ok
                    (log.warning if failing else log.info)(
                        "postback delivery %s: %s", "failing" if failing else "recovered", url)

    async def _post(self, session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                ok = resp.status < 400
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        if ok:
            self.sent += 1
        else:
            self.failed += 1
        return ok
