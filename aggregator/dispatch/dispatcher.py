"""The dispatcher: the only place that turns plans into charger commands.

Each `step(now)` is snapshot -> allocate -> command:
1. at every commitment boundary, stations are asked for a meter sample (so
   interval deliveries are measured, not interpolated across a boundary);
2. the allocator re-plans on a boundary, whenever the fleet state or the
   commitments change (a vehicle arrives or leaves, a station drops or rejects,
   an event arrives or is withdrawn) and every `replan_interval` (receding horizon);
3. the current interval's setpoints fan out to every station concurrently, each
   valid until shortly after the next re-plan; a station that rejects or does not
   answer is re-planned as unavailable and retried with back-off;
4. a `StepReport` of what happened goes to the observers (ledger writer, live
   metrics, performance tally; the ledger rows are written in a worker thread and
   awaited, so the event loop is free meanwhile), and the fleet state is written through.

The fleet comes from the registry's cached plan columns (`FleetRegistry.planned_fleet`),
so a step right after the VEN's opt decision does not walk the fleet again.

On shutdown, `hold_safe(now)` replaces the loop's last step: every station gets a
command with no discharge that keeps charging toward its driver's need (a plan
without commitments, clipped at 0, valid for `safe_validity`), then the meters
are read once more so the ledger shows where the fleet was left.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from aggregator.allocator import AllocatorOptions, Plan, Targets, allocate
from aggregator.chargers.port import ChargerPort, CommandResult, MeterSample, Setpoint
from aggregator.commitment import CommittedInterval
from aggregator.commitment_book import CommitmentBook
from aggregator.dispatch.fanout import fan_out, request_meters
from aggregator.dispatch.horizon import build_horizon
from aggregator.fleet_state.registry import FleetRegistry

log = logging.getLogger(__name__)


@dataclass
class StepReport:
    """What one step saw and did; observers turn it into ledger rows and metrics."""
    at: datetime
    previous: datetime | None
    samples: list[MeterSample]
    committed: CommittedInterval | None          # in force now
    committed_event: str | None
    planned: bool = False
    plan: Plan | None = None
    plan_failed: bool = False
    solve_seconds: float = 0.0
    import_ceiling_kw: float = float("nan")
    commands: list[tuple[Setpoint, CommandResult]] = field(default_factory=list)
    event_of_sample_span: dict = field(default_factory=dict)
    stop: bool = False                           # the shutdown hold (`Dispatcher.hold_safe`)


def balanced_lead(before_scale: float, after_scale: float, tau_s: float) -> float:
    """The lead, in time constants, that makes a first-order response's error the same
    share of both intervals around a step: the earlier interval gains tau*(x - 1 + e^-x)
    per unit step in the lead window, the later one loses tau*e^-x while settling; each
    is divided by that interval's scale (its ask times its length). Bisection on [0, 4]."""
    low, high = 0.0, 4.0
    for _ in range(40):
        x = (low + high) / 2
        gained = (x - 1 + math.exp(-x)) / before_scale
        lost = math.exp(-x) / after_scale
        low, high = (x, high) if gained < lost else (low, x)
    return (low + high) / 2


class Dispatcher:
    def __init__(self, registry: FleetRegistry, port: ChargerPort, book: CommitmentBook, *,
                 allocator_options: AllocatorOptions = AllocatorOptions(),
                 replan_interval: timedelta = timedelta(seconds=30),
                 response_time: timedelta = timedelta(seconds=1),
                 entry_lead: timedelta = timedelta(seconds=4),
                 failure_retry: timedelta = timedelta(seconds=2),
                 max_over_delivery_kw: float | None = None,
                 need_margin_kwh: float = 0.5,
                 command_deadline: timedelta = timedelta(seconds=5),
                 command_validity: timedelta = timedelta(seconds=90),
                 observers: list | None = None, site_limits=None):
        self.registry = registry
        self.port = port
        self.book = book
        self.options = allocator_options
        self.replan_interval = replan_interval
        # Chargers reach a new setpoint with a first-order lag (`response_time`, the
        # time constant, about a second). Between two committed intervals the
        # setpoints change a lead before the boundary, in both directions, sized so
        # that the energy the earlier interval gains (or loses) in the lead window
        # and what the later one loses (or gains) while the chargers settle are the
        # same share of each interval's ask (`balanced_lead`), plus the loop's own
        # latency (half its step period). Into an event from no commitment the lead
        # is `entry_lead` (nothing is owed before it, so the first interval starts
        # on target); out of an event the switch is on time.
        self.response_time = response_time
        self.entry_lead = entry_lead
        self.failure_retry = failure_retry     # after a failed plan, try again this soon
        self._step_period = timedelta(0)
        # The programme's bound on export beyond what is asked (soft in the allocator).
        self.max_over_delivery_kw = max_over_delivery_kw
        self.need_margin_kwh = need_margin_kwh
        self.command_deadline = command_deadline
        # A setpoint outlives the next re-plan by a margin; a station cut off from us
        # then falls back to its default (no discharge) instead of discharging blind.
        self.command_validity = command_validity
        self.observers = list(observers or [])
        self.site_limits = site_limits   # aggregator.sites.SiteLimits: per-site grid limits (None: none)
        self.last_plan: Plan | None = None
        self._last_step: datetime | None = None
        self._last_plan_at: datetime | None = None
        self._seen_versions: tuple[int, int] | None = None
        self._started_at: datetime | None = None
        self._plan_failed = False

    # -- commitments -----------------------------------------------------------------
    def commitments(self) -> list[tuple[str, CommittedInterval]]:
        return self.book.intervals()

    def committed_at(self, t: datetime) -> tuple[str, CommittedInterval] | None:
        """The binding commitment at `t` (lowest import ceiling), with its event id."""
        covering = [(e, c) for e, c in self.commitments()
                    if c.start <= t < c.end and c.import_ceiling_kw == c.import_ceiling_kw]
        return min(covering, key=lambda ec: ec[1].import_ceiling_kw) if covering else None

    # -- the loop --------------------------------------------------------------------------
    async def step(self, now: datetime) -> StepReport:
        self._started_at = self._started_at or now
        if self._last_step is not None and now > self._last_step:   # the loop's period (smoothed)
            self._step_period = (self._step_period * 3 + (now - self._last_step)) / 4
        self.registry.reconcile(now, self._started_at)
        self.registry.mark_stale(now)
        switches = self._switch_times()
        last = self._last_step
        at_boundary = last is None or any(last < t <= now for t in switches)            # meters read on it
        switch_due = last is None or any(last < s <= now for s in switches.values())   # setpoints change
        in_force = self.committed_at(now)
        report = StepReport(now, last, [], in_force[1] if in_force else None, in_force[0] if in_force else None)
        versions = (self.registry.version, self.book.version)
        if (versions != self._seen_versions or switch_due or self._last_plan_at is None
                or now - self._last_plan_at >= self.replan_interval
                or (self._plan_failed and now - self._last_plan_at >= self.failure_retry)):
            # Inside a boundary's lead window, plan as from that boundary.
            effective = max((t for t, s in switches.items() if s <= now < t), default=now)
            await self._plan_and_command(now, effective, report)
            self._seen_versions = (self.registry.version, self.book.version)
        await self._retry_unavailable(now, report)
        if at_boundary and last is not None:
            # After the commands, not before: the boundary sample measures the interval that
            # ended (settlement, the tally), while the plan already has each station's latest sample.
            await request_meters(self.port, [live.station.id for live in self.registry.plugged() if live.online])
        report.samples = self.registry.drain_samples()
        await self._tell_observers(report)
        self.registry.persist()
        self._last_step = now
        return report

    async def _tell_observers(self, report: StepReport) -> None:
        """Each observer in turn; one with `observe_async` (the ledger writer: its write runs
        in a worker thread) is awaited, so the loop serves others meanwhile and the step
        still ends with everything written."""
        for observer in self.observers:
            try:
                if hasattr(observer, "observe_async"):
                    await observer.observe_async(report)
                else:
                    observer.observe(report)
            except Exception:   # an observer must never stop the loop
                log.exception("step observer %s failed", observer.__class__.__name__)

    def _switch_times(self) -> dict[datetime, datetime]:
        """Each commitment boundary -> when its setpoints go out: `entry_lead` early into
        an event from no commitment, a balanced lead between two committed
        intervals whose ceilings differ, on time out of an event."""
        out = {}
        for t in {t for _, c in self.commitments() for t in (c.start, c.end)}:
            following = self.committed_at(t)
            before = self.committed_at(t - timedelta(microseconds=1))
            if following is None or self._ceiling_at(t) == self._ceiling_at(t - timedelta(microseconds=1)):
                lead = timedelta(0)
            elif before is None:
                lead = self.entry_lead
            else:
                b, f = before[1], following[1]
                x = balanced_lead(max(1.0, abs(b.import_ceiling_kw)) * (b.end - b.start).total_seconds(),
                                  max(1.0, abs(f.import_ceiling_kw)) * (f.end - f.start).total_seconds(),
                                  self.response_time.total_seconds())
                lead = timedelta(seconds=x * self.response_time.total_seconds()) + self._step_period / 2
            if following is not None:   # never lead by more than a quarter of either interval around it
                lead = min(lead, (following[1].end - following[1].start) / 4)
                if before is not None:
                    lead = min(lead, (before[1].end - before[1].start) / 4)
            out[t] = t - lead
        return out

    def _ceiling_at(self, t: datetime) -> float:
        committed = self.committed_at(t)
        return committed[1].import_ceiling_kw if committed is not None else float("inf")

    async def _plan_and_command(self, now: datetime, effective: datetime, report: StepReport) -> None:
        stations, fleet = self.registry.planned_fleet(effective, self.need_margin_kwh)
        horizon = build_horizon(effective, [c for _, c in self.commitments()])
        self._last_plan_at = now
        report.planned = True
        report.import_ceiling_kw = float(horizon.import_ceiling_kw[0])
        if not stations:
            self.last_plan = None
            return
        started = time.perf_counter()
        try:
            targets = Targets(horizon.durations_h, horizon.import_ceiling_kw,
                              max_over_delivery_kw=self.max_over_delivery_kw,
                              **(self.site_limits.for_fleet(fleet.site, now) if self.site_limits else {}))
            plan = allocate(fleet, targets, self.options)
        except Exception:  # the allocator must never stop the loop: hold chargers at 0 and retry
            log.exception("allocator failed; holding every charger at 0 kW until the next plan")
            plan = None
        report.solve_seconds = time.perf_counter() - started
        report.plan, report.plan_failed = plan, plan is None
        self._plan_failed = plan is None
        for error in (plan.errors if plan else ()):
            log.error("vehicle left out of the plan: %s", error)
        if plan is None:
            power = np.zeros(len(stations))
        else:  # the command while plugged in (an EV leaving mid-interval averages less over the interval)
            power = (plan.setpoint_kw if plan.setpoint_kw is not None else plan.power_kw)[:, 0]
        until = now + self.command_validity
        setpoints = [Setpoint(station_id, kw, now, until) for station_id, kw in zip(stations, power.tolist())]
        for setpoint in setpoints:
            self.registry.set_intended(setpoint.station_id, setpoint.power_kw, now)
        results = await fan_out(self.port, setpoints, deadline_s=self.command_deadline.total_seconds())
        for setpoint, result in zip(setpoints, results):
            self.registry.command_result(result, now)
            report.commands.append((setpoint, result))
        self.last_plan = plan
        if report.import_ceiling_kw == report.import_ceiling_kw:
            log.info("plan: interval ceiling %.1f kW, planned %.1f kW (%s, %.0f ms)", report.import_ceiling_kw,
                     float(plan.fleet_kw[0]) if plan else 0.0, plan.method if plan else "failed",
                     report.solve_seconds * 1e3)

    async def hold_safe(self, now: datetime, settle: timedelta = timedelta(seconds=4),
                        safe_validity: timedelta = timedelta(hours=12)) -> StepReport:
        """The shutdown step: discharge 0 everywhere, charging continues toward each driver's
        need; after `settle` the meters are read and everything goes to the observers."""
        report = StepReport(now, self._last_step, self.registry.drain_samples(), None, None, stop=True)
        stations, fleet = self.registry.planned_fleet(now, self.need_margin_kwh)
        power = np.zeros(len(stations))
        if stations:
            horizon = build_horizon(now, [])   # no commitments: needs only
            try:   # site import limits hold here too
                plan = allocate(fleet, Targets(horizon.durations_h, horizon.import_ceiling_kw,
                                               **(self.site_limits.for_fleet(fleet.site, now) if self.site_limits
                                                  else {})), self.options)
                power = np.maximum(0.0, (plan.setpoint_kw if plan.setpoint_kw is not None else plan.power_kw)[:, 0])
            except Exception:   # still safe: the stations' default after a 0 kW hold is charge-only
                log.exception("allocator failed on shutdown; holding every station at 0 kW")
        planned = dict(zip(stations, power.tolist()))
        for live in self.registry.plugged():   # unavailable ones too: they may hear this one
            if live.online and live.station.id not in planned:
                planned[live.station.id] = max(0.0, live.intended_kw)
        until = now + safe_validity
        setpoints = [Setpoint(sid, kw, now, until) for sid, kw in planned.items()]
        results = await fan_out(self.port, setpoints, deadline_s=self.command_deadline.total_seconds())
        for setpoint, result in zip(setpoints, results):
            self.registry.set_intended(setpoint.station_id, setpoint.power_kw, now)
            self.registry.command_result(result, now)
            report.commands.append((setpoint, result))
        accepted = sum(1 for _, r in report.commands if r.ack.value == "accepted")
        log.warning("shutdown: %d of %d stations hold no discharge (%.1f kW charging toward needs)", accepted,
                    len(setpoints), sum(planned.values()))
        if settle.total_seconds() > 0:
            await asyncio.sleep(settle.total_seconds())
        await request_meters(self.port, [live.station.id for live in self.registry.plugged() if live.online])
        report.samples.extend(self.registry.drain_samples())
        await self._tell_observers(report)
        self.registry.persist()
        self._last_step = now
        return report

    async def _retry_unavailable(self, now: datetime, report: StepReport) -> None:
        due = self.registry.retries_due(now)
        if not due:
            return
        until = now + self.command_validity
        setpoints = [Setpoint(sid, kw, now, until) for sid, kw in due]
        results = await fan_out(self.port, setpoints, deadline_s=self.command_deadline.total_seconds())
        for setpoint, result in zip(setpoints, results):
            self.registry.command_result(result, now)
            report.commands.append((setpoint, result))
