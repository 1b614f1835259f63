"""The NSE market clock: sessions, trading days, next opening and expiry dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from ticker.core.clock import (
    IST,
    TUESDAY,
    is_market_open,
    is_trading_day,
    next_open,
    previous_trading_day,
    to_ist,
    upcoming_expiries,
)
from ticker.core.holidays import CALENDAR_YEARS, NSE_HOLIDAYS, holiday_name, nse_holidays

HOLI = date(2025, 3, 14)            # a Friday holiday
TUE_HOLIDAY = date(2025, 10, 21)    # a Tuesday holiday (Diwali, as an example)


def ist(*args) -> datetime:
    return datetime(*args, tzinfo=IST)


def test_ist_is_five_thirty_ahead_of_utc():
    assert IST.utcoffset(None) == timedelta(hours=5, minutes=30)
    assert to_ist(datetime(2025, 1, 6, 3, 45, tzinfo=UTC)) == ist(2025, 1, 6, 9, 15)
    assert to_ist(datetime(2025, 1, 6, 9, 15)) == ist(2025, 1, 6, 9, 15)   # naive means IST


def test_trading_days_are_weekdays_that_are_not_holidays():
    assert is_trading_day(date(2025, 3, 13))
    assert not is_trading_day(date(2025, 3, 15))            # Saturday
    assert not is_trading_day(date(2025, 3, 16))            # Sunday
    assert not is_trading_day(HOLI, holidays=[HOLI])
    assert is_trading_day(HOLI)                              # without the holiday list
    # A datetime counts by its IST date: 20:00 UTC Friday is already Saturday in India.
    assert not is_trading_day(datetime(2025, 3, 14, 20, 0, tzinfo=UTC))


@pytest.mark.parametrize(("moment", "open_"), [
    (ist(2025, 3, 13, 9, 14, 59), False),
    (ist(2025, 3, 13, 9, 15), True),
    (ist(2025, 3, 13, 12, 0), True),
    (ist(2025, 3, 13, 15, 29, 59, 999999), True),
    (ist(2025, 3, 13, 15, 30), False),
    (ist(2025, 3, 15, 11, 0), False),                               # Saturday
    (datetime(2025, 3, 13, 4, 0, tzinfo=UTC), True),       # 09:30 IST
    (datetime(2025, 3, 13, 12, 0), True),                           # naive: IST noon
])
def test_market_open_during_the_session_only(moment, open_):
    assert is_market_open(moment) is open_


def test_market_closed_on_holidays_and_custom_hours():
    assert not is_market_open(ist(2025, 3, 14, 11, 0), holidays={HOLI})
    assert is_market_open(ist(2025, 3, 13, 9, 5), open=time(9, 0), close=time(9, 8))
    assert not is_market_open(ist(2025, 3, 13, 9, 8), open=time(9, 0), close=time(9, 8))


@pytest.mark.parametrize(("moment", "expected"), [
    (ist(2025, 3, 13, 7, 0), ist(2025, 3, 13, 9, 15)),      # before the open: today
    (ist(2025, 3, 13, 9, 15), ist(2025, 3, 13, 9, 15)),     # exactly at the open
    (ist(2025, 3, 13, 9, 16), ist(2025, 3, 17, 9, 15)),     # in session: next trading day (Fri is Holi)
    (ist(2025, 3, 15, 10, 0), ist(2025, 3, 17, 9, 15)),     # weekend: Monday
    (datetime(2025, 3, 12, 22, 0, tzinfo=UTC), ist(2025, 3, 13, 9, 15)),
])
def test_next_open(moment, expected):
    got = next_open(moment, holidays=[HOLI])
    assert got == expected and got.utcoffset() == timedelta(hours=5, minutes=30)


def test_next_open_with_a_calendar_that_never_opens_is_an_error():
    every_day = [date(2025, 1, 1) + timedelta(days=i) for i in range(4000)]
    with pytest.raises(ValueError):
        next_open(ist(2025, 1, 1), holidays=every_day)


def test_weekly_expiries_are_tuesdays_from_today():
    assert upcoming_expiries(date(2025, 1, 1), TUESDAY, 3) == [date(2025, 1, 7), date(2025, 1, 14), date(2025, 1, 21)]
    # An expiry day is still upcoming on the day itself.
    assert upcoming_expiries(date(2025, 1, 7), TUESDAY, 1) == [date(2025, 1, 7)]
    assert upcoming_expiries(ist(2025, 1, 7, 16, 0), TUESDAY, 1) == [date(2025, 1, 7)]
    assert upcoming_expiries(date(2025, 1, 8), TUESDAY, 0) == []


def test_expiry_on_a_holiday_moves_to_the_previous_trading_day():
    got = upcoming_expiries(date(2025, 10, 15), TUESDAY, 2, holidays=[TUE_HOLIDAY])
    assert got == [date(2025, 10, 20), date(2025, 10, 28)]
    both = [TUE_HOLIDAY, date(2025, 10, 20)]                     # Monday closed too: Friday
    assert upcoming_expiries(date(2025, 10, 15), TUESDAY, 1, holidays=both) == [date(2025, 10, 17)]
    # Once the moved expiry is behind us, the next one is upcoming.
    assert upcoming_expiries(TUE_HOLIDAY, TUESDAY, 1, holidays=[TUE_HOLIDAY]) == [date(2025, 10, 28)]


def test_monthly_expiries_are_the_last_tuesday_of_each_month():
    got = upcoming_expiries(date(2024, 12, 30), TUESDAY, 5, monthly=True)
    assert got == [date(2024, 12, 31), date(2025, 1, 28), date(2025, 2, 25), date(2025, 3, 25), date(2025, 4, 29)]
    assert upcoming_expiries(date(2025, 1, 29), TUESDAY, 1, monthly=True) == [date(2025, 2, 25)]
    moved = upcoming_expiries(date(2025, 4, 1), TUESDAY, 1, monthly=True, holidays=[date(2025, 4, 29)])
    assert moved == [date(2025, 4, 28)]


def test_bad_weekday_is_an_error():
    with pytest.raises(ValueError):
        upcoming_expiries(date(2025, 1, 1), 7, 1)


def test_nse_calendar_is_the_default_and_lists_weekdays_only():
    assert {d.year for d in NSE_HOLIDAYS} == set(CALENDAR_YEARS)
    assert all(d.weekday() < 5 for d in NSE_HOLIDAYS)  # weekend holidays need no listing
    assert holiday_name(date(2026, 1, 26)) == "Republic Day" and holiday_name(date(2026, 1, 27)) is None
    assert not is_trading_day(date(2026, 11, 24))                     # Guru Nanak Jayanti, a Tuesday
    assert is_trading_day(date(2026, 11, 24), holidays=())            # an explicit empty calendar
    assert not is_market_open(ist(2026, 3, 3, 11, 0))                  # Holi
    assert next_open(ist(2026, 3, 31, 8, 0)) == ist(2026, 4, 1, 9, 15)  # Mahavir Jayanti
    assert previous_trading_day(date(2026, 4, 6)) == date(2026, 4, 2)  # over a weekend and Good Friday
    assert nse_holidays({date(2031, 1, 1)}) == NSE_HOLIDAYS | {date(2031, 1, 1)}


def test_expiries_on_nse_holidays_move_to_the_previous_trading_day():
    # The January 2027 monthly falls on Republic Day and moves to Monday the 25th.
    assert upcoming_expiries(date(2027, 1, 1), TUESDAY, 1, monthly=True) == [date(2027, 1, 25)]
    weeklies = upcoming_expiries(date(2026, 11, 18), TUESDAY, 2)
    assert weeklies == [date(2026, 11, 23), date(2026, 12, 1)]       # 24 Nov is a holiday
    assert upcoming_expiries(date(2026, 3, 1), TUESDAY, 1) == [date(2026, 3, 2)]  # Holi on the 3rd
