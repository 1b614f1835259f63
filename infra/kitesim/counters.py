"""Counters of everything the stand-in received, for tests to assert on ("exactly one order with
this tag", "never more than 10 orders in any second"). Every collection is bounded."""

from __future__ import annotations

from collections import Counter, deque

MAX_KEYS = 100_000
MAX_TIMES = 100_000
OVERFLOW = "__overflow__"


def _bump(counter: Counter, key: str, n: int = 1) -> None:
    if key not in counter and len(counter) >= MAX_KEYS:
        key = OVERFLOW
    counter[key] += n


class Counters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[str] = Counter()          # "METHOD /route" -> count
        self.requests_by_source: Counter[str] = Counter()  # "METHOD /route from 127.0.0.2" -> count
        self.orders_by_tag: Counter[str] = Counter()     # orders created, by tag ("" when none)
        self.order_times: dict[str, deque[float]] = {}   # api_key -> epoch times of created orders
        self.order_attempts: Counter[str] = Counter()    # api_key -> placement requests seen
        self.rate_limited: Counter[str] = Counter()      # api_key -> placements refused with 429
        self.rate_limited_by_route: Counter[str] = Counter()  # "METHOD /route" -> 429s of Kite's limits
        self.rate_limited_by_user: Counter[str] = Counter()   # Kite user id -> 429s of Kite's limits
        self.ws_accepted: Counter[str] = Counter()       # api_key -> WebSocket upgrades accepted
        self.ws_refused: Counter[str] = Counter()        # "403" / "429" -> refused upgrades
        self.subscribe_messages = 0
        self.tokens_refused = 0
        self.frames_sent = 0
        self.ticks_sent = 0
        self.frames_skipped = 0                           # a client too slow to take its frame
        self.frames_injected = 0                          # raw frames sent by POST /_sim/ws/inject

    def request(self, route_key: str, source: str | None = None) -> None:
        _bump(self.requests, route_key)
        _bump(self.requests_by_source, f"{route_key} from {source or 'unknown'}")

    def throttled(self, route_key: str, user_id: str) -> None:
        """A request refused by Kite's rate limits (not an injected 429 fault)."""
        _bump(self.rate_limited_by_route, route_key)
        _bump(self.rate_limited_by_user, user_id)

    def order_created(self, api_key: str, tag: str | None, at: float) -> None:
        _bump(self.orders_by_tag, tag or "")
        self.order_times.setdefault(api_key, deque(maxlen=MAX_TIMES)).append(at)

    def max_orders_in_window(self, api_key: str, window: float = 1.0) -> int:
        """Most orders created by one api_key inside any `window`-second interval."""
        times = sorted(self.order_times.get(api_key, ()))
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def snapshot(self) -> dict:
        return {
            "requests": dict(self.requests),
            "requests_by_source": dict(self.requests_by_source),
            "orders_by_tag": dict(self.orders_by_tag),
            "orders_per_account": {k: list(v) for k, v in self.order_times.items()},
            "max_orders_per_second": {k: self.max_orders_in_window(k) for k in self.order_times},
            "order_attempts": dict(self.order_attempts),
            "rate_limited": dict(self.rate_limited),
            "rate_limited_by_route": dict(self.rate_limited_by_route),
            "rate_limited_by_user": dict(self.rate_limited_by_user),
            "ws_accepted": dict(self.ws_accepted),
            "ws_refused": dict(self.ws_refused),
            "subscribe_messages": self.subscribe_messages,
            "tokens_refused": self.tokens_refused,
            "frames_sent": self.frames_sent,
            "ticks_sent": self.ticks_sent,
            "frames_skipped": self.frames_skipped,
            "frames_injected": self.frames_injected,
        }
