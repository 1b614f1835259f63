"""NSE trading holidays (equity and equity-derivatives segments) as data.

The market clock (`core.clock`) closes on these days by default and moves an expiry that falls on
one to the previous trading day; deployments add dates NSE announces later (special closures)
through the `MARKET_HOLIDAYS` setting, which extends this calendar rather than replacing it.
Only weekday holidays are listed: Saturdays and Sundays are closed anyway.

Sources:
- 2026: NSE circular "Trading holidays for the calendar year 2026" (December 2025), plus the
  15 January 2026 closure NSE added for the Maharashtra municipal corporation elections.
- 2027: NSE had not yet published its 2027 circular when this table was written (it usually
  comes out in December). Listed are only the 2027 holidays whose dates do not depend on a
  lunar calendar or on the circular: Republic Day, Good Friday (from the date of Easter) and
  Dr. Baba Saheb Ambedkar Jayanti. Add the rest with MARKET_HOLIDAYS until the table is updated.
"""

from __future__ import annotations

from datetime import date

NSE_HOLIDAY_NAMES: dict[date, str] = {
    # 2026
    date(2026, 1, 15): "Municipal Corporation Election - Maharashtra",
    date(2026, 1, 26): "Republic Day",
    date(2026, 3, 3): "Holi",
    date(2026, 3, 26): "Shri Ram Navami",
    date(2026, 3, 31): "Shri Mahavir Jayanti",
    date(2026, 4, 3): "Good Friday",
    date(2026, 4, 14): "Dr. Baba Saheb Ambedkar Jayanti",
    date(2026, 5, 1): "Maharashtra Day",
    date(2026, 5, 28): "Bakri Id",
    date(2026, 6, 26): "Muharram",
    date(2026, 9, 14): "Ganesh Chaturthi",
    date(2026, 10, 2): "Mahatma Gandhi Jayanti",
    date(2026, 10, 20): "Dussehra",
    date(2026, 11, 10): "Diwali-Balipratipada",
    date(2026, 11, 24): "Prakash Gurpurb Sri Guru Nanak Dev",
    date(2026, 12, 25): "Christmas",
    # 2027 (provisional: the dates that do not wait for NSE's circular)
    date(2027, 1, 26): "Republic Day",
    date(2027, 3, 26): "Good Friday",
    date(2027, 4, 14): "Dr. Baba Saheb Ambedkar Jayanti",
}

NSE_HOLIDAYS: frozenset[date] = frozenset(NSE_HOLIDAY_NAMES)
CALENDAR_YEARS: tuple[int, ...] = (2026, 2027)


def nse_holidays(extra: frozenset[date] | set[date] | tuple[date, ...] = ()) -> frozenset[date]:
    """The NSE calendar plus `extra` dates (a deployment's MARKET_HOLIDAYS)."""
    return NSE_HOLIDAYS | frozenset(extra) if extra else NSE_HOLIDAYS


def holiday_name(day: date) -> str | None:
    """Why NSE is closed on `day`, or None when it is not a listed holiday."""
    return NSE_HOLIDAY_NAMES.get(day)
