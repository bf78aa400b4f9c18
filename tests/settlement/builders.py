"""Small builders for settlement tests: hourly local-time load profiles and
cumulative register readings from a power function."""
from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from aggregator.settlement.baseline import LoadProfile
from aggregator.settlement.calendar import local_day_bounds
from aggregator.settlement.delivery import RegisterReading

NY = ZoneInfo("America/New_York")
UTC = timezone.utc
HOUR = timedelta(hours=1)


def local(day: date, hour: int, minute: int = 0, fold: int = 0, tz: ZoneInfo = NY) -> datetime:
    """UTC instant of a local wall-clock time."""
    return datetime.combine(day, time(hour, minute), tzinfo=tz).replace(fold=fold).astimezone(UTC)


def hourly_profile(days: dict[date, Callable[[int], float] | dict[int, float]], tz: ZoneInfo = NY,
                   default: float | None = 50.0) -> LoadProfile:
    """Hourly profile: for each local day, kW per local wall-clock hour.

    A value source is a function hour -> kW or a dict (hours missing from it
    get ``default``; ``default=None`` leaves them out). DST days get 23/25
    slots; both passes of a repeated hour get the same value.
    """
    values: dict[datetime, float] = {}
    for day, source in days.items():
        start, end = local_day_bounds(day, tz)
        t = start
        while t < end:
            hour = t.astimezone(tz).hour
            if callable(source):
                value = source(hour)
            else:
                value = source.get(hour, default)
            if value is not None:
                values[t] = float(value)
            t += HOUR
    return LoadProfile(HOUR, values)


def registers(start: datetime, end: datetime, power_kw: Callable[[datetime], float],
              step: timedelta = timedelta(minutes=5)) -> list[RegisterReading]:
    """Cumulative import/export registers sampled every ``step`` for a power
    function (positive = import) that is constant over each step."""
    out = []
    imp = exp = 0.0
    t = start
    out.append(RegisterReading(t, imp, exp))
    while t < end:
        p = power_kw(t)
        hours = step.total_seconds() / 3600
        if p >= 0:
            imp += p * hours
        else:
            exp += -p * hours
        t += step
        out.append(RegisterReading(t, imp, exp))
    return out
