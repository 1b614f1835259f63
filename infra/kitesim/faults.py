"""REST fault injection (Kite's rate limits live in limits.py).

A rule matches requests by an fnmatch pattern over "METHOD /route/template" (e.g. "POST /orders/*",
"GET /quote*", "*") and fires with probability `rate`, optionally only for the next `times` matches.
Kinds: "429" | "500" | "502" | "503" (Kite's error envelope with that status), "data_error" (a 502
DataException: Kite could not make sense of its order system's answer), "timeout" (the
response is withheld for `delay_ms`, default `SimConfig.timeout_seconds`, then a 504), "drop" (the
connection is closed without a response), "accept_timeout" / "accept_drop" (the request IS carried
out — e.g. the order is placed — and then the response is withheld / the connection dropped), and
"latency" (adds `delay_ms`, then goes on). Random draws come from a seeded generator.
"""

from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ticker.infra.kitesim.envelopes import KiteError, general_error, too_many_requests

FaultKind = Literal["429", "500", "502", "503", "data_error", "timeout", "drop", "accept_timeout",
                    "accept_drop", "latency"]
MAX_RULES = 100


class RouteFault(BaseModel):
    """One fault rule (the admin API's POST /_sim/faults body)."""

    model_config = ConfigDict(extra="forbid")

    route: str = Field("*", min_length=1, max_length=200)
    kind: FaultKind
    rate: float = Field(1.0, ge=0, le=1)
    times: int | None = Field(None, ge=1)
    delay_ms: float | None = Field(None, ge=0, le=600_000)


@dataclass
class Decision:
    """What to do with one request."""

    delay: float = 0.0             # seconds before handling
    before: str | None = None      # error / timeout / drop instead of handling
    after: str | None = None       # accept_timeout / accept_drop after handling
    hold: float = 0.0              # seconds a timeout withholds the response


def status_error(kind: str) -> KiteError:
    """The Kite error envelope a status-code fault answers with."""
    if kind == "429":
        return too_many_requests()
    if kind == "502":
        return KiteError(502, "NetworkException", "Bad gateway: the backend OMS is unreachable.")
    if kind == "503":
        return KiteError(503, "NetworkException", "Service unavailable. Please try again.")
    if kind == "data_error":
        return KiteError(502, "DataException", "Couldn't parse the JSON response received from the OMS.")
    return general_error()


class Faults:
    def __init__(self, seed: int, timeout_seconds: float, latency_ms: float = 0.0,
                 error_rate: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.timeout_seconds = timeout_seconds
        self.latency_ms = latency_ms
        self.error_rate = error_rate
        self.rules: list[tuple[RouteFault, list[int | None]]] = []
        self.fired: dict[str, int] = {}

    def add(self, rule: RouteFault) -> None:
        if len(self.rules) >= MAX_RULES:
            raise ValueError(f"at most {MAX_RULES} fault rules")
        self.rules.append((rule, [rule.times]))

    def reset(self) -> None:
        self.rules.clear()
        self.fired.clear()
        self.latency_ms = 0.0
        self.error_rate = 0.0

    def describe(self) -> dict:
        return {
            "latency_ms": self.latency_ms, "error_rate": self.error_rate,
            "rules": [{**r.model_dump(), "remaining": left[0]} for r, left in self.rules],
            "fired": dict(self.fired),
        }

    def decide(self, route_key: str) -> Decision:
        d = Decision(delay=self.latency_ms / 1000.0)
        for rule, left in self.rules:
            if not fnmatch.fnmatchcase(route_key, rule.route):
                continue
            if left[0] == 0 or self.rng.random() >= rule.rate:
                continue
            if left[0] is not None:
                left[0] -= 1
            self.fired[rule.kind] = self.fired.get(rule.kind, 0) + 1
            if rule.kind == "latency":
                d.delay += (rule.delay_ms or 0.0) / 1000.0
                continue
            hold = self.timeout_seconds if rule.delay_ms is None else rule.delay_ms / 1000.0
            if rule.kind.startswith("accept_"):
                d.after, d.hold = rule.kind, hold
            else:
                d.before, d.hold = rule.kind, hold
            break
        self.rules = [(r, left) for r, left in self.rules if left[0] != 0]
        if d.before is None and d.after is None and self.error_rate and self.rng.random() < self.error_rate:
            d.before = self.rng.choice(("500", "502", "503"))
            self.fired[d.before] = self.fired.get(d.before, 0) + 1
        return d
