"""Season backtest: size a bid each event day from the history before it, dispatch
the event with the real allocator (receding horizon, 15-min steps), meter it,
settle it with the settlement package, and score it with the programme's
payment schedule -- for our sizing and for the naive ones (nameplate, mean).

Pure apart from the optional progress callback; the history is a
`SessionTable` (e.g. from `sim.history.generate_history`).

Dispatch model: an EV plugged in before the event is assumed to have charged at
full power since its arrival (pre-charging for a known event, as the bound
assumes); it joins at the first 15-min step after it plugs in; the allocator
only knows the announced departure (an early departure surprises it); an EV
whose telemetry is lost (Bernoulli per EV and event) still moves energy but its
meter readings never reach the settlement.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from aggregator.allocator import AllocatorOptions, FleetArrays, Targets, allocate
from aggregator.settlement.delivery import RegisterReading
from aggregator.settlement.engine import DeviceMetering, SettlementInputs, settle_event
from aggregator.settlement.performance import EventInterval

from .bids import STRATEGIES, quantities
from .forecast import ForecastOptions, forecast, history_days, profile_cache
from .history import SessionTable, Window, epoch, from_epoch
from .programs import Program

__all__ = ["EventResult", "BacktestResult", "event_days", "dispatch_event", "run_backtest"]

STEP_H = 0.25


@dataclass(frozen=True)
class EventResult:
    day: date
    strategy: str
    committed_kw: tuple[float, ...]
    delivered_kw: tuple[float, ...]     # credited by the settlement, per hour
    revenue: float
    penalty: float
    ratio: float                        # credited / committed over the event (1 when nothing committed)


@dataclass
class BacktestResult:
    scenario: str
    program: str
    season: int
    strategies: tuple[str, ...]
    events: list[EventResult] = field(default_factory=list)

    def summary(self) -> list[dict]:
        rows = []
        for s in self.strategies:
            ev = [e for e in self.events if e.strategy == s]
            committed = sum(sum(e.committed_kw) for e in ev)
            delivered = sum(sum(e.delivered_kw) for e in ev)
            rev = sum(e.revenue for e in ev)
            pen = sum(e.penalty for e in ev)
            rows.append({"strategy": s, "events": len(ev), "committed_kwh": committed, "delivered_kwh": delivered,
                         "revenue": rev, "penalties": pen, "net": rev - pen,
                         "performance_ratio": delivered / committed if committed else float("nan"),
                         "events_short": sum(1 for e in ev if e.ratio < 0.999)})
        return rows


def event_days(year: int, program: Program, n: int | None = None, seed: int = 0) -> list[date]:
    """Programme event days: `n` (default the programme's events per season) weekdays drawn
    from its months, sorted."""
    days = [d for m in program.months for d in _month_days(year, m) if d.weekday() < 5]
    n = program.events_per_season if n is None else n
    rng = np.random.default_rng([seed, year])
    pick = rng.choice(len(days), size=min(n, len(days)), replace=False)
    return sorted(days[i] for i in pick)


def _month_days(year: int, month: int) -> list[date]:
    d = date(year, month, 1)
    out = []
    while d.month == month:
        out.append(d)
        d += timedelta(days=1)
    return out


def dispatch_event(table: SessionTable, window: Window, day: date, commit_kw: np.ndarray,
                   rng: np.random.Generator, telemetry_loss_rate: float = 0.0,
                   options: AllocatorOptions = AllocatorOptions()) -> dict[str, list[RegisterReading]]:
    """Run the event through the allocator; the register readings each EV's charger reports
    (lost telemetry: no readings) at every 15-min step boundary."""
    H = window.hours
    S = int(round(H / STEP_H))
    t0 = epoch(window.start_on(day))
    t_end = t0 + H * 3600
    sub = table.subset((table.arrived_s < t_end) & (table.end_s > t0))
    n = len(sub)
    if n == 0:
        return {}
    charged = np.maximum(0.0, (t0 - sub.arrived_s) / 3600)
    e = np.minimum(sub.capacity_kwh, sub.energy_at_arrival_kwh + sub.eta_charge * sub.max_charge_kw * charged)
    imp = np.zeros(n)
    exp = np.zeros(n)
    regs = np.zeros((S + 1, n, 2))
    target = -np.repeat(np.asarray(commit_kw, dtype=float), int(round(1 / STEP_H)))
    ids = np.array([f"{v}#{i}" for i, v in enumerate(sub.vehicle_id)], dtype=object)
    for j in range(S):
        tj = t0 + j * STEP_H * 3600
        here = (sub.arrived_s <= tj) & (sub.end_s > tj) & (sub.departs_s > tj + 60)
        idx = np.flatnonzero(here)
        if idx.size:
            fleet = FleetArrays(ids=ids[idx], energy_kwh=np.minimum(e[idx], sub.capacity_kwh[idx]),
                                capacity_kwh=sub.capacity_kwh[idx], floor_kwh=np.minimum(sub.floor_kwh[idx], sub.capacity_kwh[idx]),
                                need_kwh=np.minimum(sub.need_kwh[idx], sub.capacity_kwh[idx]),
                                departure_h=(sub.departs_s[idx] - tj) / 3600, max_charge_kw=sub.max_charge_kw[idx],
                                max_discharge_kw=sub.max_discharge_kw[idx], eta_charge=sub.eta_charge[idx],
                                eta_discharge=sub.eta_discharge[idx])
            plan = allocate(fleet, Targets(np.full(S - j, STEP_H), target[j:]), options)
            if plan.ids is not None and plan.power_kw.size:
                pos = {v: k for k, v in enumerate(ids[idx])}
                rows = idx[[pos[v] for v in plan.ids]]
                p = plan.power_kw[:, 0]
                # an early departure (unknown to the allocator) cuts the step short
                frac = np.clip((sub.end_s[rows] - tj) / (STEP_H * 3600), 0.0, 1.0)
                kwh = p * STEP_H * frac
                imp[rows] += np.maximum(kwh, 0)
                exp[rows] += np.maximum(-kwh, 0)
                e[rows] = e[rows] + np.where(kwh > 0, kwh * sub.eta_charge[rows], kwh / sub.eta_discharge[rows])
        regs[j + 1, :, 0] = imp
        regs[j + 1, :, 1] = exp
    lost = rng.random(n) < telemetry_loss_rate
    out = {}
    for i in np.flatnonzero(~lost):
        out[str(ids[i])] = [RegisterReading(from_epoch(t0 + j * STEP_H * 3600), float(regs[j, i, 0]), float(regs[j, i, 1]))
                            for j in range(S + 1)]
    return out


def settle_and_score(program: Program, window: Window, day: date, commit_kw: np.ndarray,
                     readings: dict, strategy: str) -> EventResult:
    starts = window.hour_starts(day)
    intervals = tuple(EventInterval(h, s, s + timedelta(hours=1), float(q)) for h, (s, q) in enumerate(zip(starts, commit_kw)))
    if readings:
        res = settle_event(SettlementInputs(f"{day}-{strategy}", intervals, DeviceMetering(readings),
                                            timezone=window.timezone, max_credit_ratio=program.max_credit_ratio),
                           computed_at=starts[-1] + timedelta(hours=2))
        credited = np.array([r.credited_kw if r.coverage > 0 else 0.0 for r in res.intervals])
    else:
        credited = np.zeros(len(starts))
    q = np.asarray(commit_kw, dtype=float)
    rev, pen = program.revenue_and_penalty(q, credited)
    committed = float(q.sum())
    ratio = float(np.minimum(credited, q).sum() / committed) if committed > 0 else 1.0
    return EventResult(day, strategy, tuple(float(x) for x in q), tuple(float(x) for x in credited),
                       float(rev.sum()), float(pen.sum()), ratio)


def run_backtest(table: SessionTable, program: Program, season: int, scenario: str, nameplate_kw: float,
                 days: list[date] | None = None, forecast_options: ForecastOptions = ForecastOptions(n_samples=1000),
                 telemetry_loss_rate: float = 0.02, strategies: tuple[str, ...] = STRATEGIES, seed: int = 0,
                 allocator_options: AllocatorOptions = AllocatorOptions(), progress=None) -> BacktestResult:
    """The season's events (`days`, default `event_days`), each sized from the history
    strictly before it and dispatched against the history's actual sessions of that day."""
    window = program.window
    days = event_days(season, program, seed=seed) if days is None else days
    profile_of = profile_cache(table, window)
    known = history_days(table, window)
    result = BacktestResult(scenario, program.name, season, tuple(strategies))
    fopts = ForecastOptions(**{**forecast_options.__dict__, "telemetry_loss_rate": telemetry_loss_rate})
    for i, day in enumerate(days):
        fc = forecast(profile_of, known, window, day, fopts)
        for s in strategies:
            q = quantities(s, program, fc, nameplate_kw)
            rng = np.random.default_rng([seed, day.toordinal(), 7])   # same telemetry loss for every strategy
            readings = dispatch_event(table, window, day, q, rng, telemetry_loss_rate, allocator_options)
            result.events.append(settle_and_score(program, window, day, q, readings, s))
        if progress:
            progress(i + 1, len(days), day)
    return result
