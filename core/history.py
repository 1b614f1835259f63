"""What a history request may ask for: Kite's per-interval day limits and the range rules.

Kite serves at most `KITE_MAX_DAYS[interval]` days of candles per request; the history job splits a
longer range into requests of that length. Whoever accepts a history request (the HTTP API) checks
it here first, with the same table, so a range the job would refuse is refused before it is queued,
with a message that names the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from ticker.core.clock import IST

# Kite Connect's limit on the days one historical-data request may span, per candle interval.
KITE_MAX_DAYS: dict[str, int] = {"minute": 60, "3minute": 100, "5minute": 100, "10minute": 100,
                                 "15minute": 200, "30minute": 200, "60minute": 400, "day": 2000}
INTERVALS = tuple(KITE_MAX_DAYS)
MAX_RANGE_DAYS = 20 * 365  # what one history job may span in total, whatever the interval
# A request is split into at most this many Kite requests: it bounds a job's run time and the size
# of its result (ten windows of minute candles are already ~600 days, over 200k candles).
MAX_WINDOWS = 10
# Candles Kite serves start long after this; earlier dates also fall into the historical offsets of
# IANA time zones (Asia/Kolkata was +05:21:10 in 1900), which timestamps cannot round-trip through.
EARLIEST_DATE = date(2000, 1, 1)


@dataclass(frozen=True)
class RangeIssue:
    field: str  # "from", "to" or "interval", as the request names them
    kind: str
    message: str


def max_span_days(interval: str) -> int:
    """The most days one request for `interval` candles may span."""
    return min(MAX_RANGE_DAYS, KITE_MAX_DAYS[interval] * MAX_WINDOWS)


def _ist(value: datetime) -> datetime | None:
    try:
        return value.astimezone(IST)
    except (OverflowError, ValueError):  # year 9999 written with a negative offset, and the like
        return None


def range_issues(start: datetime, end: datetime, interval: str) -> list[RangeIssue]:
    """Everything wrong with a [start, end] range of `interval` candles; empty when it can be served.

    `start` and `end` must be time-zone aware."""
    if interval not in KITE_MAX_DAYS:
        return [RangeIssue("interval", "literal_error", f"interval must be one of {', '.join(INTERVALS)}")]
    issues = []
    bounds = {"from": _ist(start), "to": _ist(end)}
    for field, value in bounds.items():
        if value is None:
            issues.append(RangeIssue(field, "datetime_range", f"{field} is out of range"))
        elif value.date() < EARLIEST_DATE:
            issues.append(RangeIssue(field, "too_early", f"{field} must be on or after "
                                     f"{EARLIEST_DATE.isoformat()} (India time)"))
    if issues:
        return issues
    if end <= start:
        return [RangeIssue("to", "range_order", "to must be after from")]
    span, limit = (end - start).days, max_span_days(interval)
    if span > limit:
        issues.append(RangeIssue("to", "range_too_long", f"the range spans {span} days; with interval "
                                 f"{interval} one request may span at most {limit} days"))
    return issues
