"""The NSE market clock: trading days, session hours and expiry dates, in India Standard Time.

Pure calendar arithmetic. Exchange holidays default to NSE's calendar (`core.holidays`); a
caller passes its own set instead (the scheduler passes the calendar plus its MARKET_HOLIDAYS).
India has kept UTC+05:30 without daylight saving since 1945, so IST is a fixed offset and needs no
time-zone database. Naive datetimes are taken to be IST, as Kite sends them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta, timezone

from ticker.core.holidays import NSE_HOLIDAYS

IST = timezone(timedelta(hours=5, minutes=30), "IST")
MARKET_OPEN = time(9, 15)
MARKET_CLOSE = time(15, 30)
MONDAY, TUESDAY, WEDNESDAY, THURSDAY, FRIDAY, SATURDAY, SUNDAY = range(7)

_ONE_DAY = timedelta(days=1)
_SEARCH_DAYS = 3660  # a calendar that never opens in ten years is a configuration error


def to_ist(dt: datetime) -> datetime:
    """`dt` as an aware IST datetime (naive input is taken to be IST already)."""
    return dt.replace(tzinfo=IST) if dt.tzinfo is None else dt.astimezone(IST)


def ist_date(day: date | datetime) -> date:
    """The IST calendar date of a date or datetime."""
    return to_ist(day).date() if isinstance(day, datetime) else day


def is_trading_day(day: date | datetime, holidays: Iterable[date] | None = None) -> bool:
    """Monday to Friday and not an exchange holiday (None: NSE's calendar)."""
    d = ist_date(day)
    return d.weekday() < SATURDAY and d not in _as_set(holidays)


def is_market_open(dt: datetime, open: time = MARKET_OPEN, close: time = MARKET_CLOSE,  # noqa: A002
                   holidays: Iterable[date] | None = None) -> bool:
    """True from `open` (inclusive) to `close` (exclusive) on a trading day."""
    local = to_ist(dt)
    return is_trading_day(local.date(), holidays) and open <= local.time() < close


def next_open(dt: datetime, open: time = MARKET_OPEN, holidays: Iterable[date] | None = None) -> datetime:  # noqa: A002
    """The first session opening at or after `dt`, as an aware IST datetime."""
    local = to_ist(dt)
    day = local.date() if local.time() <= open else local.date() + _ONE_DAY
    return datetime.combine(_trading_day_from(day, _ONE_DAY, _as_set(holidays)), open, IST)


def previous_trading_day(day: date | datetime, holidays: Iterable[date] | None = None) -> date:
    """The last trading day strictly before `day`."""
    return _trading_day_from(ist_date(day) - _ONE_DAY, -_ONE_DAY, _as_set(holidays))


def upcoming_expiries(today: date | datetime, weekday: int, count: int, monthly: bool = False,
                      holidays: Iterable[date] | None = None) -> list[date]:
    """The next `count` expiry dates on or after `today`, earliest first.

    Weekly contracts expire every `weekday` (0 = Monday; NIFTY: Tuesday), monthly ones on the
    last such weekday of the month. An expiry that falls on a holiday moves to the previous
    trading day; one that moves to before `today` has already passed.
    """
    if not 0 <= weekday <= 6:
        raise ValueError(f"weekday must be 0 (Monday) to 6 (Sunday), not {weekday}")
    start = ist_date(today)
    closed = _as_set(holidays)
    nominal = _monthly(start, weekday) if monthly else _weekly(start, weekday)
    out: list[date] = []
    while len(out) < count:
        expiry = _trading_day_from(next(nominal), -_ONE_DAY, closed)
        if expiry >= start and (not out or expiry > out[-1]):
            out.append(expiry)
    return out


def _weekly(start: date, weekday: int) -> Iterator[date]:
    day = start + timedelta(days=(weekday - start.weekday()) % 7)
    while True:
        yield day
        day += timedelta(days=7)


def _monthly(start: date, weekday: int) -> Iterator[date]:
    year, month = start.year, start.month
    while True:
        following = date(year + month // 12, month % 12 + 1, 1)
        last = following - _ONE_DAY
        yield last - timedelta(days=(last.weekday() - weekday) % 7)
        year, month = following.year, following.month


def _trading_day_from(day: date, direction: timedelta, closed: frozenset[date]) -> date:
    """`day` if it is a trading day, else the nearest one in `direction`."""
    for _ in range(_SEARCH_DAYS):
        if day.weekday() < SATURDAY and day not in closed:
            return day
        day += direction
    raise ValueError("no trading day within ten years: check the holiday list")


def _as_set(holidays: Iterable[date] | None) -> frozenset[date]:
    if holidays is None:
        return NSE_HOLIDAYS
    return holidays if isinstance(holidays, frozenset) else frozenset(holidays)
