"""The range rules every history request is held to (`ticker.core.history`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ticker.core.clock import IST
from ticker.core.history import (
    EARLIEST_DATE,
    INTERVALS,
    KITE_MAX_DAYS,
    MAX_RANGE_DAYS,
    max_span_days,
    range_issues,
)


def _at(*args: int) -> datetime:
    return datetime(*args, tzinfo=IST)


def test_each_interval_may_span_ten_kite_windows_up_to_the_overall_limit() -> None:
    assert {i: max_span_days(i) for i in INTERVALS} == {
        i: min(MAX_RANGE_DAYS, 10 * KITE_MAX_DAYS[i]) for i in INTERVALS}
    assert max_span_days("minute") == 600 and max_span_days("day") == MAX_RANGE_DAYS


@pytest.mark.parametrize("interval", INTERVALS)
def test_the_longest_span_is_accepted_and_one_more_day_is_not(interval) -> None:
    start = _at(2001, 1, 1, 9, 15)
    limit = max_span_days(interval)
    assert range_issues(start, start + timedelta(days=limit, hours=23), interval) == []
    [issue] = range_issues(start, start + timedelta(days=limit + 1), interval)
    assert (issue.field, issue.kind) == ("to", "range_too_long") and str(limit) in issue.message


def test_dates_before_2000_in_india_are_refused() -> None:
    assert EARLIEST_DATE.isoformat() == "2000-01-01"
    assert range_issues(_at(2000, 1, 1), _at(2000, 1, 2), "day") == []
    utc = UTC
    [issue] = range_issues(datetime(1999, 12, 31, 18, 29, tzinfo=utc), _at(2000, 1, 2), "day")
    assert (issue.field, issue.kind) == ("from", "too_early")
    issues = range_issues(_at(1900, 1, 1), _at(1900, 1, 2), "day")
    assert [i.field for i in issues] == ["from", "to"]


def test_order_overflow_and_unknown_intervals() -> None:
    assert [(i.field, i.kind) for i in range_issues(_at(2020, 1, 2), _at(2020, 1, 1), "day")] == [("to", "range_order")]
    assert range_issues(_at(2020, 1, 1), _at(2020, 1, 1), "day")[0].kind == "range_order"
    late = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-12)))
    assert range_issues(late - timedelta(hours=1), late, "day")[0].kind == "datetime_range"
    assert range_issues(_at(2020, 1, 1), _at(2020, 1, 2), "2minute")[0].field == "interval"
