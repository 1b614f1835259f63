"""`GET /history` refuses, before queueing, every range the history job would refuse (and a few it
would choke on), with a 422 that names the field; what it accepts, the job accepts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import get_args
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.web.seed import NIFTY_INDEX
from ticker.core import history as core_history
from ticker.http.middleware.errors import ApiError
from ticker.http.routes.jobs_api import HistoryQuery, Interval, history_payload
from ticker.jobs.data import history_fetch as job_history

KOLKATA = ZoneInfo("Asia/Kolkata")


def test_the_job_and_the_api_know_the_same_intervals() -> None:
    assert set(get_args(job_history.Interval)) == set(get_args(Interval)) == set(core_history.INTERVALS)


@pytest.mark.parametrize("interval", core_history.INTERVALS)
def test_the_job_refuses_a_range_just_over_what_the_api_allows(interval: str) -> None:
    start = datetime(2020, 1, 1, 9, 15)
    limit = core_history.max_span_days(interval)
    job_history.parse_payload({"instrument_token": 256265, "from": start.isoformat(),
                               "to": (start + timedelta(days=limit)).isoformat(), "interval": interval})
    with pytest.raises(job_history.HistoryError):
        job_history.parse_payload({"instrument_token": 256265, "from": start.isoformat(),
                                   "to": (start + timedelta(days=limit + 1)).isoformat(), "interval": interval})


@pytest.mark.parametrize(("query", "field", "kind"), [
    ("from=1990-01-01T09:15&to=2024-01-01T09:15&interval=day", "from", "too_early"),
    ("from=1900-01-01T00:00&to=1900-01-02T00:00", "from", "too_early"),
    ("from=1999-12-31T23:59:59&to=2000-01-03T00:00", "from", "too_early"),
    ("from=2000-01-01T00:00:00%2B14:00&to=2000-01-03T00:00%2B14:00", "from", "too_early"),  # 1999 in India
    ("from=2000-01-01T00:00&to=2026-01-01T00:00&interval=day", "to", "range_too_long"),
    ("from=2024-01-01T09:15&to=2025-09-01T09:15&interval=minute", "to", "range_too_long"),
    ("from=2020-01-01T09:15&to=2031-01-01T09:15&interval=60minute", "to", "range_too_long"),
    ("from=2025-01-02T00:00&to=2025-01-01T00:00", "to", "range_order"),
    ("from=2025-01-02T00:00&to=2025-01-02T00:00", "to", "range_order"),
    ("from=2025-01-01T00:00Z&to=2025-01-02T00:00", "to", "tz_mismatch"),
    ("from=9999-12-31T22:00-12:00&to=9999-12-31T23:00-12:00", "from", "datetime_range"),
    ("from=2025-02-30T09:15&to=2025-03-02T09:15", "from", "datetime_from_date_parsing"),
    ("from=2025-01-01&to=2025-01-02T09:15", "from", "value_error"),
    ("from=2025-01-01T25:00&to=2025-01-02T09:15", "from", "datetime_from_date_parsing"),
])
async def test_ranges_the_job_would_refuse_are_422s_naming_the_field(api, redis, names, query, field,
                                                                      kind) -> None:
    queued = await redis.zcard(names.default_queue)
    resp = await api.get(f"/history?instrument_token={NIFTY_INDEX}&{query}")
    assert resp.status == 422, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "validation_error"
    assert [(d["field"], d["type"]) for d in err["details"]][:1] == [(field, kind)], err
    assert field in err["message"]
    assert await redis.zcard(names.default_queue) == queued  # nothing was enqueued


@pytest.mark.parametrize("query", [
    "from=2000-01-01T00:00&to=2000-01-02T00:00&interval=day",
    "from=2024-01-01T09:15&to=2025-08-23T09:15&interval=minute",  # exactly 600 days
    "from=2005-01-01T00:00&to=2024-12-27T00:00&interval=day",  # 7300 days
    "from=2025-01-01T03:45:00Z&to=2025-01-01T10:00:00%2B05:30",
])
async def test_ranges_within_the_limits_are_accepted(api, query) -> None:
    resp = await api.get(f"/history?instrument_token={NIFTY_INDEX}&{query}")
    assert resp.status == 202, await resp.text()


async def test_the_same_instant_written_two_ways_is_the_same_job(api) -> None:
    base = f"/history?instrument_token={NIFTY_INDEX}&interval=day"
    a = await (await api.get(f"{base}&from=2025-03-03T09:15:00&to=2025-03-04T09:15:00")).json()
    b = await (await api.get(f"{base}&from=2025-03-03T03:45:00Z&to=2025-03-04T03:45:00Z")).json()
    assert a["job_id"] == b["job_id"] and b["duplicate"]


_offset = st.one_of(st.just(""), st.just("Z"), st.builds(
    lambda sign, h, m: f"{sign}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)))
_start = st.one_of(st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)),
                   st.datetimes(datetime(1995, 1, 1), datetime(2040, 1, 1)))
_span = st.builds(timedelta, seconds=st.integers(-86_400, 8_000 * 86_400))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=_start, span=_span, start_offset=_offset, end_offset=_offset,
       interval=st.sampled_from(core_history.INTERVALS))
def test_whatever_the_api_accepts_the_job_accepts(start, span, start_offset, end_offset, interval) -> None:
    try:
        end = start + span
    except OverflowError:
        assume(False)
    try:
        q = HistoryQuery.model_validate({"instrument_token": str(NIFTY_INDEX),
                                         "from": f"{start:%Y-%m-%dT%H:%M:%S}{start_offset}",
                                         "to": f"{end:%Y-%m-%dT%H:%M:%S}{end_offset}", "interval": interval})
    except ValidationError:
        assume(False)
    try:
        payload = history_payload(q, KOLKATA)
    except ApiError as exc:
        assert exc.status == 422 and exc.details
        return
    job_history.parse_payload(payload)  # raises HistoryError if the job would refuse it
