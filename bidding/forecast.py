"""Flexibility forecast (pure): the distribution of deliverable export kW per hour
of a programme window, from session history.

Whole events, day-level correlation kept
---------------------------------------
1. Every historical day d is replayed through the window at the same local clock
   hours: the sessions present then (plug-in times, SoC at arrival, announced and
   actual departures, overrides, all as they happened together on d) give each
   EV's deliverable export per hour (`day_profile`).
2. A forecast sample draws one whole historical day from the pool (same day type,
   within a lookback) -- so a day when everyone came late or low stays one day --
   then draws per-EV opt-outs and telemetry loss on top.

What one EV can deliver
-----------------------
The allocator's closed-form bound (`aggregator.allocator.bound`, the per-EV terms
whose sum is `deliverable_export_bound_kw`): the EV's reserve floor and what it
must still charge before its departure limit each 15-min slot's export, each
slot taken alone. An EV plugged in before the window is taken as charged at full
power since its arrival (what the bound assumes from t = 0); an EV arriving
during the window counts from the next 15-min boundary, and one that leaves
early (actual departure before the announced one) counts until it left, with
its need due then.  Hourly figure = mean of its four slots.  Negative = the EV
must import even at best (it offsets the others).

"P90" is the quantity delivered with 90 % probability: the 10th percentile of
the distribution; "P50" the median.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from aggregator.allocator import FleetArrays, validate_fleet
from aggregator.allocator.bound import lowest_import_kw

from .history import SessionTable, Window, epoch

__all__ = ["SLOT_H", "DayProfile", "day_profile", "day_pool", "ForecastOptions", "Forecast", "forecast",
           "profile_cache", "sample_days", "history_days"]

SLOT_H = 0.25


@dataclass(frozen=True)
class DayProfile:
    day: date
    vehicle_id: np.ndarray      # (N,)
    kind: np.ndarray            # (N,)
    site: np.ndarray            # (N,)
    export_kw: np.ndarray       # (N, H) deliverable export per EV and hour (closed-form bound)
    present: np.ndarray         # (N, H) share of the hour the EV was plugged in

    @property
    def total_kw(self) -> np.ndarray:
        return self.export_kw.sum(axis=0)


def day_profile(table: SessionTable, window: Window, day: date) -> DayProfile:
    """Each EV's deliverable export per window hour on `day` (see module doc)."""
    H = window.hours
    S = int(round(H / SLOT_H))
    t0 = epoch(window.start_on(day))
    t_end = t0 + H * 3600
    end = table.end_s
    m = (table.arrived_s < t_end) & (end > t0)
    sub = table.subset(m)
    n = len(sub)
    slot_kw = np.zeros((n, S))
    present = np.zeros((n, S))
    if n:
        rel_arr = (sub.arrived_s - t0) / 3600.0
        rel_end = (sub.end_s[...] - t0) / 3600.0
        first = np.clip(np.ceil(np.maximum(rel_arr, 0.0) / SLOT_H - 1e-9), 0, S).astype(int)
        slot_start = np.arange(S) * SLOT_H
        present = np.clip(np.minimum(rel_end[:, None], slot_start + SLOT_H) - np.maximum(slot_start, first[:, None] * SLOT_H), 0, SLOT_H) / SLOT_H
        for k in np.unique(first):
            if k >= S:
                continue
            idx = np.flatnonzero(first == k)
            start_h = k * SLOT_H
            charged = np.maximum(0.0, start_h - rel_arr[idx])   # hours plugged before the plan start
            cap = sub.capacity_kwh[idx]
            e0 = np.minimum(cap, sub.energy_at_arrival_kwh[idx] + sub.eta_charge[idx] * sub.max_charge_kw[idx] * charged)
            fleet = FleetArrays(
                ids=np.arange(idx.size).astype(str), energy_kwh=e0, capacity_kwh=cap,
                floor_kwh=np.minimum(sub.floor_kwh[idx], cap), need_kwh=np.minimum(sub.need_kwh[idx], cap),
                departure_h=rel_end[idx] - start_h, max_charge_kw=sub.max_charge_kw[idx],
                max_discharge_kw=sub.max_discharge_kw[idx], eta_charge=sub.eta_charge[idx],
                eta_discharge=sub.eta_discharge[idx])
            valid, _ = validate_fleet(fleet)
            if len(valid) == 0:
                continue
            rows = idx[valid.ids.astype(int)]
            per = -lowest_import_kw(valid, np.full(S - k, SLOT_H), per_ev=True)
            slot_kw[rows, k:] = _energy_coupled(per, valid, (S - k) * SLOT_H)
    per_h = S // H
    export = slot_kw.reshape(n, H, per_h).mean(axis=2)
    pres = present.reshape(n, H, per_h).mean(axis=2)
    return DayProfile(day, sub.vehicle_id, sub.kind, sub.site, export, pres)


def _energy_coupled(per: np.ndarray, fleet: FleetArrays, horizon_h: float) -> np.ndarray:
    """Couple the slots of one event: the per-slot bound counts the same energy again in
    every slot, so cap each EV's export over the rest of the window by the energy it can
    spare over it -- the window term of `shortfall_lower_bound_kwh`: (most it can hold at
    the start - least it must hold at the window end) x eta_discharge -- spread as a
    level held as long as possible (water-filling: min(slot bound, level)). Slots where the
    EV must import are kept as they are."""
    b = np.minimum(fleet.departure_h, horizon_h)
    e_req = np.maximum(np.minimum(fleet.floor_kwh, fleet.energy_kwh),
                       fleet.need_kwh - fleet.eta_charge * fleet.max_charge_kw * np.maximum(0.0, fleet.departure_h - b))
    budget = np.maximum(0.0, (fleet.energy_kwh - e_req) * fleet.eta_discharge) / SLOT_H   # kW-slots
    pos = np.maximum(per, 0.0)
    need_cut = pos.sum(axis=1) > budget + 1e-9
    if not need_cut.any():
        return per
    x = np.sort(pos[need_cut], axis=1)
    B = budget[need_cut]
    S = x.shape[1]
    cum = np.cumsum(x, axis=1)
    # f(level = x_k) = cum_k + x_k (S - k - 1); the level lies where f crosses B
    f = cum + x * (S - 1 - np.arange(S))
    k = (f <= B[:, None]).sum(axis=1)            # slots fully below the level
    below = np.where(k > 0, cum[np.arange(x.shape[0]), np.maximum(k - 1, 0)], 0.0)
    level = (B - below) / np.maximum(S - k, 1)
    out = per.copy()
    out[need_cut] = np.where(per[need_cut] > 0, np.minimum(per[need_cut], level[:, None]), per[need_cut])
    return out


def profile_cache(table: SessionTable, window: Window):
    """A memoised `day_profile` for one table and window (the backtest asks for the same days again)."""
    cache: dict[date, DayProfile] = {}

    def get(day: date) -> DayProfile:
        if day not in cache:
            cache[day] = day_profile(table, window, day)
        return cache[day]
    return get


def day_pool(target: date, history_days: list[date] | set[date], lookback_days: int = 42,
             same_day_type: bool = True, min_days: int = 8, exclude: set[date] | frozenset = frozenset()) -> list[date]:
    """Historical days the forecast for `target` resamples: strictly before it, within
    `lookback_days`, same day type (weekday / weekend) when `same_day_type`; widened
    (twice the lookback, then any day type) while fewer than `min_days` are found."""
    have = {d for d in history_days if d < target and d not in exclude}
    weekend = target.weekday() >= 5

    def pick(lookback: int, typed: bool) -> list[date]:
        lo = target - timedelta(days=lookback)
        return sorted(d for d in have if d >= lo and (not typed or (d.weekday() >= 5) == weekend))
    days = pick(lookback_days, same_day_type)
    if len(days) < min_days:
        days = pick(2 * lookback_days, same_day_type)
    if len(days) < min_days:
        days = pick(2 * lookback_days, False)
    return days


@dataclass(frozen=True)
class ForecastOptions:
    n_samples: int = 2000
    lookback_days: int = 42
    same_day_type: bool = True
    opt_out_rate: float = 0.0         # per EV and event, on top of the overrides in the history
    telemetry_loss_rate: float = 0.0  # per EV and event: its delivery is not credited
    seed: int = 0


@dataclass(frozen=True)
class Forecast:
    window: Window
    day: date
    samples: np.ndarray               # (n_samples, H) deliverable export kW
    pool: tuple[date, ...]            # the historical days resampled
    options: ForecastOptions

    def quantile(self, q: float) -> np.ndarray:
        return np.quantile(self.samples, q, axis=0) if self.samples.size else np.zeros(self.window.hours)

    @property
    def mean(self) -> np.ndarray:
        return self.samples.mean(axis=0) if self.samples.size else np.zeros(self.window.hours)

    @property
    def p50(self) -> np.ndarray:
        return self.quantile(0.5)

    @property
    def p90(self) -> np.ndarray:
        """Exceeded with 90 % probability (the 10th percentile)."""
        return self.quantile(0.1)


def sample_days(profiles: list[DayProfile], n_samples: int, rng: np.random.Generator,
                opt_out_rate: float = 0.0, telemetry_loss_rate: float = 0.0) -> np.ndarray:
    """(n_samples, H): whole days drawn with replacement, per-EV opt-outs (the EV still
    imports what it must) and telemetry loss (its export is not credited) on top."""
    if not profiles:
        return np.zeros((0, 0))
    H = profiles[0].export_kw.shape[1]
    out = np.zeros((n_samples, H))
    pick = rng.integers(len(profiles), size=n_samples)
    for j in np.unique(pick):
        rows = np.flatnonzero(pick == j)
        x = profiles[j].export_kw                     # (N, H)
        if x.shape[0] == 0:
            continue
        if opt_out_rate <= 0 and telemetry_loss_rate <= 0:
            out[rows] = x.sum(axis=0)
            continue
        u = rng.random((rows.size, x.shape[0]))
        opted_out = u < opt_out_rate
        lost = rng.random((rows.size, x.shape[0])) < telemetry_loss_rate
        full = (~opted_out & ~lost).astype(float)
        only_import = (opted_out & ~lost).astype(float)
        out[rows] = full @ x + only_import @ np.minimum(x, 0.0)
    return out


def forecast(profile_of, history_days, window: Window, day: date, options: ForecastOptions = ForecastOptions(),
             exclude: set[date] | frozenset = frozenset()) -> Forecast:
    """The forecast for `window` on `day`. `profile_of(date) -> DayProfile` (e.g. `profile_cache`);
    `history_days` are the dates the history covers."""
    pool = day_pool(day, history_days, options.lookback_days, options.same_day_type, exclude=exclude)
    profiles = [profile_of(d) for d in pool]
    rng = np.random.default_rng([options.seed, day.toordinal()])
    samples = sample_days(profiles, options.n_samples, rng, options.opt_out_rate, options.telemetry_loss_rate)
    if samples.size == 0:
        samples = np.zeros((0, window.hours))
    return Forecast(window, day, samples, tuple(pool), options)


def history_days(table: SessionTable, window: Window) -> list[date]:
    """Local dates covered by the history (from the first arrival to the last departure)."""
    if len(table) == 0:
        return []
    from bidding.history import from_epoch
    from zoneinfo import ZoneInfo
    tz = ZoneInfo(window.timezone)
    first = from_epoch(np.nanmin(table.arrived_s)).astimezone(tz).date()
    last = from_epoch(np.nanmax(table.end_s)).astimezone(tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
