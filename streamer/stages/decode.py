"""The decode stage: whole WebSocket frames in, columnar ticks and postbacks out to the batch stage.

Called synchronously by every socket reader, so it does the least possible: decode the binary
frame in one `ticker.core.wire.decode` call and append it to the buffer; route text frames (Kite's
order postbacks, error and info messages). An order postback reaches the orders channel only when
its `checksum` verifies with the account's api_secret (`ticker.core.postbacks`); one that does not
is dropped, counted by reason and logged (throttled). An account with no stored api_secret cannot
verify: its postbacks pass, and that is logged once and shown in /health. A malformed frame costs only its bad packets: the
intact ones are recovered (`salvage`) and buffered, the rest counted as dropped, reason
`malformed`. Checking each packet against its token's kind happens in the enrich stage
(enrich.py), where the instrument table is at hand.
"""

from __future__ import annotations

import logging
import time

import orjson

from ticker.core.postbacks import check_postback
from ticker.core.wire import Ticks, WireError, decode, salvage
from ticker.infra.runtime.throttle import Throttle
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.batch import Chunk, TickBuffer

log = logging.getLogger(__name__)


class Decoder:
    def __init__(self, buffer: TickBuffer, metrics: StreamerMetrics) -> None:
        self.buffer = buffer
        self.metrics = metrics
        self.received_total = 0
        self._heartbeats, self._frames = metrics.frames.labels("heartbeat"), metrics.frames.labels("ticks")
        self.last_tick: dict[str, float] = {}  # account id -> epoch of its last tick (bounded by accounts)
        self.secrets: dict[str, str | None] = {}  # account id -> api_secret, to verify its postbacks
        self.unverified: set[str] = set()  # accounts whose postbacks passed without a secret to check them
        self._throttle = Throttle()

    def frame(self, account_id: str, data: bytes) -> int:
        """A binary frame; returns the number of ticks it held (0 for heartbeats and bad frames)."""
        if len(data) < 2:
            self._heartbeats.inc()
            return 0
        try:
            ticks = decode(data)
        except WireError:
            ticks = self._salvage(account_id, data)
        n = len(ticks)
        self._frames.inc()
        if n == 0:
            return 0
        now = time.time()
        self.metrics.received.inc(n)
        self.received_total += n
        self.last_tick[account_id] = now
        dropped = self.buffer.put(Chunk(ticks, now, account_id))
        if dropped:
            self.metrics.dropped.labels("buffer_full").inc(dropped)
            self._warn("buffer_full", "tick buffer full: dropping the oldest ticks", dropped=dropped)
        return n

    def _salvage(self, account_id: str, data: bytes) -> Ticks:
        """The intact packets of a malformed frame; the lost ones are counted."""
        self.metrics.frames.labels("malformed").inc()
        saved = salvage(data)
        if saved.lost:
            self.metrics.dropped.labels("malformed").inc(saved.lost)
        self._warn("malformed", "malformed tick frame: kept its intact packets", account_id=account_id,
                   error=saved.problem, kept=len(saved.ticks), lost=saved.lost)
        return saved.ticks

    def text(self, account_id: str, text: str | bytes) -> None:
        """Kite's JSON text messages: order postbacks are relayed, errors logged."""
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.metrics.frames.labels("bad_text").inc()
            return
        kind = message.get("type") if isinstance(message, dict) else None
        self.metrics.frames.labels(f"text_{kind}" if kind in ("order", "error", "message") else "text_other").inc()
        if kind == "order" and isinstance(message.get("data"), dict):
            self._order(account_id, message["data"])
        elif kind == "error":
            self._warn(f"kite_error:{account_id}", "Kite ticker reported an error", account_id=account_id,
                       detail=str(message.get("data"))[:300])
        elif kind == "message":
            log.info("Kite ticker message", extra={"account_id": account_id, "detail": str(message.get("data"))[:300]})

    def _order(self, account_id: str, update: dict) -> None:
        """Relay a genuine order update; drop and count a forged or damaged one."""
        secret = self.secrets.get(account_id)
        if secret is None:
            if account_id not in self.unverified:
                self.unverified.add(account_id)
                log.warning("order postbacks of this account pass unverified: it has no stored api_secret",
                            extra={"account_id": account_id})
            self.metrics.postbacks_unverified.inc()
        elif (problem := check_postback(update, secret)) is not None:
            self.metrics.postbacks_rejected.labels(problem).inc()
            self._warn(f"postback:{problem}", "order postback dropped: its checksum does not verify",
                       account_id=account_id, reason=problem, order_id=str(update.get("order_id"))[:40])
            return
        doc = orjson.dumps({**update, "account_id": account_id})
        if not self.buffer.put_order(doc):
            self.metrics.dropped.labels("orders_buffer_full").inc()

    def set_secrets(self, secrets: dict[str, str | None]) -> None:
        """The api_secret of every account (None: not stored), as the accounts were last read."""
        self.secrets = dict(secrets)
        self.unverified &= {a for a, secret in secrets.items() if secret is None}

    def forget(self, keep: set[str]) -> None:
        for account_id in [a for a in self.last_tick if a not in keep]:
            del self.last_tick[account_id]

    def _warn(self, kind: str, message: str, **extra: object) -> None:
        """Log a warning at most once a minute per kind, so a flood cannot flood the logs."""
        held = self._throttle.allow(kind)
        if held is not None:
            log.warning(message, extra={**extra, "repeats_not_logged": held} if held else extra)
