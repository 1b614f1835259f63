"""The parts of fetch_history that need no Kite: request checks, chunking, candle parsing, the cache."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import asyncpg
import numpy as np
import pytest

from ticker.infra.kite.schemas import Candle
from ticker.jobs.data.history_fetch import IST, MAX_DAYS, HistoryError, day_runs, days_between, parse_payload
from ticker.jobs.data.history_greeks import align, close_instants
from ticker.jobs.data.history_store import Candles, HistoryStore, parse_candles, parse_stamps


def _payload(**over: object) -> dict:
    return {"instrument_token": 12345, "from": "2030-01-01 09:15:00", "to": "2030-03-31 15:30:00",
            "interval": "minute", **over}


@pytest.mark.parametrize(("over", "message"), [
    ({"to": "2029-12-31 09:15:00"}, "`to` must be after `from`"),
    ({"to": "2030-01-01 09:15:00"}, "`to` must be after `from`"),
    ({"interval": "2minute"}, "interval"),
    ({"instrument_token": 0}, "instrument_token"),
    ({"from": "yesterday"}, "from"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_requests_fail_with_a_clear_message(over: dict, message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        parse_payload(_payload(**over))


def test_times_without_a_zone_are_ist() -> None:
    req = parse_payload(_payload(**{"from": "2030-01-01T09:15:00", "to": "2030-01-01T04:00:00Z"}))
    assert req.from_ == datetime(2030, 1, 1, 9, 15, tzinfo=IST)
    assert req.to.utcoffset() == timedelta(hours=5, minutes=30) and req.to.hour == 9 and req.to.minute == 30


@pytest.mark.parametrize(("n_days", "interval", "requests"), [
    (91, "minute", 2), (60, "minute", 1), (61, "minute", 2), (121, "minute", 3),
    (100, "5minute", 1), (401, "60minute", 2), (2000, "day", 1), (1, "minute", 1),
])
def test_day_runs_respect_kites_limits(n_days: int, interval: str, requests: int) -> None:
    days = [date(2030, 1, 1) + timedelta(days=i) for i in range(n_days)]
    runs = day_runs(days, MAX_DAYS[interval])
    assert len(runs) == requests
    assert all((last - first).days < MAX_DAYS[interval] for first, last in runs)
    covered = [first + timedelta(days=i) for first, last in runs for i in range((last - first).days + 1)]
    assert covered == days


def test_day_runs_only_span_missing_days() -> None:
    d = date(2030, 1, 1)
    missing = [d, d + timedelta(days=1), d + timedelta(days=5), d + timedelta(days=6)]
    assert day_runs(missing, 60) == [(d, d + timedelta(days=1)), (d + timedelta(days=5), d + timedelta(days=6))]
    assert day_runs([], 60) == []


def test_days_between_uses_ist_dates() -> None:
    start = datetime(2030, 1, 1, 20, 0, tzinfo=IST)
    assert days_between(start, start + timedelta(hours=5)) == [date(2030, 1, 1), date(2030, 1, 2)]


def test_kite_stamps_parse_to_epoch() -> None:
    stamps = ["2030-01-02T09:15:00+0530", "2030-01-02T09:16:00+05:30", "2030-01-02T03:47:00Z"]
    expected = datetime(2030, 1, 2, 9, 15, tzinfo=IST).timestamp()
    assert parse_stamps(stamps).tolist() == [expected, expected + 60, expected + 120]
    with pytest.raises(ValueError, match="offset"):
        parse_stamps(["2030-01-02T09:15:00+5"])


def _kite(day: date, minutes: int, oi: bool) -> list[Candle]:
    """Candles as the Kite adapter reads them from Kite's rows."""
    out = []
    for m in range(minutes):
        stamp = (datetime(day.year, day.month, day.day, 9, 15) + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%S")
        row = [f"{stamp}+0530", 100.0 + m, 101.0 + m, 99.0 + m, 100.5 + m, 10 * m] + ([5000 + m] if oi else [])
        out.append(Candle.from_kite(row))
    return out


def test_candles_split_per_day_and_survive_the_cache_form() -> None:
    d1, d3 = date(2030, 1, 1), date(2030, 1, 3)
    raw = _kite(d3, 3, True) + _kite(d1, 5, True)  # out of order on purpose
    per_day = parse_candles(raw, True, d1, d3)
    assert [len(per_day[d1 + timedelta(days=i)]) for i in range(3)] == [5, 0, 3]
    back = Candles.from_json(per_day[d1].to_json())
    assert back.c.tolist() == [100.5, 101.5, 102.5, 103.5, 104.5] and back.oi.tolist()[0] == 5000
    rows = Candles.concat([per_day[d1], per_day[d3]]).rows()
    assert rows[0] == ["2030-01-01T09:15:00+05:30", 100.0, 101.0, 99.0, 100.5, 0, 5000]
    assert len(rows) == 8
    with pytest.raises(ValueError, match="open interest"):
        parse_candles(_kite(d1, 2, False), True, d1, d1)


def test_close_instants_and_alignment() -> None:
    t = np.array([datetime(2030, 1, 1, 9, 15, tzinfo=IST).timestamp(),
                  datetime(2030, 1, 1, 15, 29, tzinfo=IST).timestamp()])
    assert (close_instants(t, 60) - t).tolist() == [60.0, 60.0]
    assert close_instants(t, 3600)[1] == datetime(2030, 1, 1, 15, 30, tzinfo=IST).timestamp()
    midnight = np.array([datetime(2030, 1, 1, tzinfo=IST).timestamp()])
    assert close_instants(midnight, 86_400)[0] == datetime(2030, 1, 1, 15, 30, tzinfo=IST).timestamp()

    opt = parse_candles(_kite(date(2030, 1, 1), 4, False), False, date(2030, 1, 1), date(2030, 1, 1))
    und = opt[date(2030, 1, 1)].take(np.array([0, 2, 3]))
    got = align(opt[date(2030, 1, 1)], und)
    assert np.isnan(got[1]) and got[[0, 2, 3]].tolist() == und.c.tolist()


async def test_the_cache_keeps_days_per_flag_set(private_db: asyncpg.Pool) -> None:
    store = HistoryStore(private_db)
    d = date(2030, 1, 1)
    per_day = parse_candles(_kite(d, 3, True), True, d, d + timedelta(days=1))
    await store.save(99, "minute", True, False, per_day)
    loaded = await store.load(99, "minute", True, False, [d, d + timedelta(days=1), d + timedelta(days=2)])
    assert set(loaded) == {d, d + timedelta(days=1)}
    assert loaded[d].c.tolist() == per_day[d].c.tolist() and len(loaded[d + timedelta(days=1)]) == 0
    assert await store.load(99, "minute", False, False, [d]) == {}
    await store.save(99, "minute", True, False, {d: per_day[d].take(np.array([0]))})  # a re-fetch replaces
    assert len((await store.load(99, "minute", True, False, [d]))[d]) == 1
