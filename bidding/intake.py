"""Opt-in support for incoming events (pure): what vehicles *not yet plugged in* are
expected to add during an event window, from the same whole-day forecast.

The event intake combines it with the bound of the fleet plugged in now:

    now_kw = deliverable_export_bound_kw(fleet_arrays(plugged, start), durations)
    later_kw = expected_arrivals_bound_kw(window_start, hours, history, plugged_ids, quantile=0.1)
    capacity_kw = now_kw + later_kw        # opt in if the commitment fits under it
"""
from __future__ import annotations

from datetime import date, datetime

import numpy as np

from .forecast import ForecastOptions, day_pool, day_profile, history_days, sample_days
from .history import SessionTable, Window

__all__ = ["expected_arrivals_bound_kw"]


def expected_arrivals_bound_kw(window_start: datetime, hours: int, history: SessionTable,
                               plugged_ids: set[str] | frozenset = frozenset(), quantile: float = 0.1,
                               timezone_name: str = "America/New_York",
                               options: ForecastOptions = ForecastOptions(n_samples=500)) -> np.ndarray:
    """(hours,) export kW (deliverable, the closed-form bound) expected from sessions that
    start at or after `window_start` (and from vehicles not in `plugged_ids`), at the
    given quantile of the whole-day resampled distribution (0.1 = exceeded 9 days in 10).
    Hours are whole hours from `window_start`; history strictly before that day is used."""
    from zoneinfo import ZoneInfo
    local = window_start.astimezone(ZoneInfo(timezone_name))
    window = Window(local.hour + local.minute / 60, int(hours), timezone_name)
    day = local.date()
    # Only sessions that arrive at or after the window's clock time on their own day count:
    # everything plugged in before the event starts is what the intake already sees.
    offset = (history.arrived_s - _clock_start(history, window)) >= -1e-6
    later = history.subset(offset & ~np.isin(history.vehicle_id.astype(str), list(plugged_ids)))
    pool = day_pool(day, history_days(history, window), options.lookback_days, options.same_day_type)
    profiles = [day_profile(later, window, d) for d in pool]
    if not profiles:
        return np.zeros(int(hours))
    rng = np.random.default_rng([options.seed, day.toordinal()])
    s = sample_days(profiles, options.n_samples, rng, options.opt_out_rate, options.telemetry_loss_rate)
    return np.quantile(s, quantile, axis=0)


def _clock_start(history: SessionTable, window: Window) -> np.ndarray:
    """For each session, the window start on its arrival's local date (epoch s)."""
    from zoneinfo import ZoneInfo
    z = ZoneInfo(window.timezone)
    out = np.empty(len(history))
    cache: dict[date, float] = {}
    for i, t in enumerate(history.arrived_s):
        d = datetime.fromtimestamp(t, z).date()
        if d not in cache:
            cache[d] = window.start_on(d).timestamp()
        out[i] = cache[d]
    return out


class ArrivalForecast:
    """The intake's view of `expected_arrivals_bound_kw`: session history read from the
    database once per event day (cached), hours mapped onto the event's intervals.

    Called as `forecast(start, durations_h, plugged_ids) -> (n,) kW`: what vehicles
    not plugged in now are expected to add to the export bound in each interval."""

    def __init__(self, engine, timezone_name: str = "America/New_York", quantile: float = 0.1):
        self.engine = engine
        self.timezone_name = timezone_name
        self.quantile = quantile
        self._history: dict[date, object] = {}

    def __call__(self, start: datetime, durations_h, plugged_ids) -> np.ndarray:
        from .store import load_sessions
        durations_h = np.asarray(durations_h, dtype=float)
        offsets = np.concatenate([[0.0], np.cumsum(durations_h)[:-1]])
        hours = max(1, int(np.ceil(float(durations_h.sum()) - 1e-9)))
        day = start.date()
        if day not in self._history:
            midnight = datetime(day.year, day.month, day.day, tzinfo=start.tzinfo)
            self._history = {day: load_sessions(self.engine, until=midnight)}
        history = self._history[day]
        if history is None or len(history) == 0:
            return np.zeros(len(durations_h))
        hourly = expected_arrivals_bound_kw(start, hours, history, set(plugged_ids), self.quantile,
                                            self.timezone_name)
        return hourly[np.minimum(offsets.astype(int), len(hourly) - 1)]
