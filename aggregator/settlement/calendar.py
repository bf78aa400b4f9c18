"""Program calendar: local days, day types, holidays and interval labels.

Everything here is pure: the program's timezone is passed in (a
``zoneinfo.ZoneInfo``), datetimes in and out are timezone-aware UTC unless a
name says "local".

DST rules used throughout the settlement package:

* A local day is the span between two local midnights, so it lasts 23, 24 or
  25 hours (``local_day_bounds``).
* Intervals are labelled by their local wall-clock *start* (hour-beginning,
  ``HB 16:00``) or by that start plus the interval length (hour-ending,
  ``HE 17:00``). On the spring-forward day the skipped wall-clock hour simply
  has no label (HB 02:00 / HE 03:00 are missing, as in the ISO calendars); on
  the fall-back day the second occurrence of the repeated hour carries a ``*``
  (``HB 01:00*`` / ``HE 02:00*``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from enum import Enum
from zoneinfo import ZoneInfo

UTC = timezone.utc


class LabelConvention(str, Enum):
    HOUR_BEGINNING = "hour-beginning"
    HOUR_ENDING = "hour-ending"


def require_utc(ts: datetime, what: str = "timestamp") -> datetime:
    """Return ``ts`` in UTC; naive datetimes are refused (no guessing)."""
    if ts.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {ts!r}")
    return ts.astimezone(UTC)


def local_date(ts: datetime, tz: ZoneInfo) -> date:
    """The program-local calendar date a UTC instant falls on."""
    return require_utc(ts).astimezone(tz).date()


def wall_clock(ts: datetime, tz: ZoneInfo) -> datetime:
    """Local wall-clock time of an instant as a *naive* datetime (fold kept)."""
    local = require_utc(ts).astimezone(tz)
    return local.replace(tzinfo=None)


def local_day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC start and end of a local day (23, 24 or 25 hours long)."""
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return start, end


def day_length(day: date, tz: ZoneInfo) -> timedelta:
    start, end = local_day_bounds(day, tz)
    return end - start


def wall_to_utc(naive_local: datetime, tz: ZoneInfo) -> list[datetime]:
    """All UTC instants showing this wall-clock time: [] in the spring-forward
    gap, two in the fall-back repeated hour, one otherwise."""
    found: list[datetime] = []
    for fold in (0, 1):
        candidate = naive_local.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        back = candidate.astimezone(tz).replace(tzinfo=None, fold=0)
        if back == naive_local.replace(fold=0) and candidate not in found:
            found.append(candidate)
    return found


def is_repeated_hour(ts: datetime, tz: ZoneInfo) -> bool:
    """True for the second pass through the fall-back hour."""
    local = require_utc(ts).astimezone(tz)
    return local.fold == 1 and len(wall_to_utc(local.replace(tzinfo=None, fold=0), tz)) == 2


def interval_label(start: datetime, end: datetime, tz: ZoneInfo,
                   convention: LabelConvention = LabelConvention.HOUR_BEGINNING) -> str:
    """``HB 16:00`` or ``HE 17:00`` (see module doc for DST days)."""
    start = require_utc(start)
    end = require_utc(end, "end")
    wall = wall_clock(start, tz)
    star = "*" if is_repeated_hour(start, tz) else ""
    convention = LabelConvention(convention)
    if convention is LabelConvention.HOUR_BEGINNING:
        return f"HB {wall:%H:%M}{star}"
    ending = wall + (end - start)
    minutes = ending.hour * 60 + ending.minute
    if ending.date() > wall.date() and minutes == 0:
        minutes = 24 * 60            # the last interval of the day ends at 24:00
    return f"HE {minutes // 60:02d}:{minutes % 60:02d}{star}"


# ---------------------------------------------------------------- holidays

def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    """A Sunday holiday is observed on Monday (NERC rule; Saturday stays)."""
    return day + timedelta(days=1) if day.weekday() == 6 else day


def nerc_holidays(year: int) -> frozenset[date]:
    """NERC off-peak holidays: New Year, Memorial Day, Independence Day,
    Labor Day, Thanksgiving, Christmas (Sunday -> Monday)."""
    return frozenset({
        _observed(date(year, 1, 1)),
        _last_weekday(year, 5, 0),
        _observed(date(year, 7, 4)),
        _nth_weekday(year, 9, 0, 1),
        _nth_weekday(year, 11, 3, 4),
        _observed(date(year, 12, 25)),
    })


def holidays_for(years: range | list[int]) -> frozenset[date]:
    out: set[date] = set()
    for year in years:
        out |= nerc_holidays(year)
    return frozenset(out)


@dataclass(frozen=True)
class DayCalendar:
    """How days are typed for baseline eligibility.

    ``holidays_as_weekend``: if True (CAISO-style weekend/holiday baselines) a
    holiday is a weekend-type day; if False it is excluded from every baseline.
    """
    holidays: frozenset[date] = frozenset()
    holidays_as_weekend: bool = False

    def day_type(self, day: date) -> str:
        if day.weekday() >= 5 or (self.holidays_as_weekend and day in self.holidays):
            return "weekend"
        return "weekday"

    def excluded(self, day: date) -> bool:
        return day in self.holidays and not self.holidays_as_weekend
