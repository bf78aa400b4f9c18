"""The dispatcher: the only place that turns plans into charger commands.

Each `step(now)`:
1. vehicles whose departure has come are unplugged (their energy at departure
   is recorded against what they asked);
2. meters are read (every `meter_interval`, and at every commitment boundary
   so that interval deliveries are measured, not interpolated across events)
   into the ledger and the metrics;
3. the allocator re-plans at every boundary, on every state change (a vehicle
   leaves, a charger drops, a commitment arrives or is withdrawn) and every
   `replan_interval` to correct drift (receding horizon);
4. only the current interval's setpoints are sent.
A charger that fails is dropped from the plan until it answers again; a
database that fails keeps its rows queued for the next write.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from aggregator.allocator import AllocatorOptions, Plan, Targets, allocate, deliverable_export_bound_kw
from aggregator.chargers.base import Charger, ChargerReading, ChargerUnavailable
from aggregator.commitment import CommittedInterval
from aggregator.dispatch.horizon import build_horizon
from aggregator.fleet import MemberState, PlugIn, VehicleSpec, fleet_arrays
from aggregator.metrics import Metrics
from aggregator.store.db import insert_meter_readings
from aggregator.store.models import MeterReading, PlugSession, SetpointRecord, Vehicle

log = logging.getLogger(__name__)
KWH_TO_J = 3.6e6
NEAR = timedelta(minutes=5)   # an event this close to its start is 'near'


@dataclass
class Departure:
    vehicle_id: str
    departed_at: datetime
    energy_kwh: float
    need_kwh: float

    @property
    def missing_kwh(self) -> float:
        return max(0.0, self.need_kwh - self.energy_kwh)


@dataclass
class _Member:
    spec: VehicleSpec
    session: PlugIn
    charger: Charger
    session_row_id: int | None = None
    reading: ChargerReading | None = None
    connected: bool = True


@dataclass
class DispatchStatus:
    """What the VEN reports and the operator sees, refreshed each step."""
    fleet_power_kw: float = 0.0
    available_export_kw: float = 0.0
    stored_energy_kwh: float = 0.0
    plugged_in: int = 0
    last_plan: Plan | None = None
    departures: list[Departure] = field(default_factory=list)


class Dispatcher:
    def __init__(self, engine, metrics: Metrics, *, program_label: str = "default",
                 allocator_options: AllocatorOptions = AllocatorOptions(),
                 meter_interval: timedelta = timedelta(seconds=5),
                 replan_interval: timedelta = timedelta(seconds=30),
                 response_lead: timedelta = timedelta(seconds=3),
                 need_margin_kwh: float = 0.5):
        self.engine = engine
        self.metrics = metrics
        self.program_label = program_label
        self.options = allocator_options
        self.meter_interval = meter_interval
        self.replan_interval = replan_interval
        # Chargers take a second or more to reach a new setpoint: an interval that
        # asks for more export gets its setpoints this much before it starts, so it
        # starts on target; one that asks for less is switched on time (leaving
        # early would lose the end of the interval before it).
        self.response_lead = response_lead
        self.need_margin_kwh = need_margin_kwh
        self.members: dict[str, _Member] = {}
        self.commitments: dict[str, list[CommittedInterval]] = {}
        self.status = DispatchStatus()
        self._pending_rows: list = []
        self._last_step: datetime | None = None
        self._last_meter: datetime | None = None
        self._last_plan_at: datetime | None = None
        self._replan = True
        self._event_energy: dict[str, list[float]] = {}   # event_id -> [committed kWh, delivered kWh]

    # -- fleet and commitments -------------------------------------------------
    def plug_in(self, spec: VehicleSpec, session: PlugIn, charger: Charger, energy_kwh: float) -> None:
        self.plug_in_many([(spec, session, charger, energy_kwh)])

    def plug_in_many(self, arrivals: list[tuple[VehicleSpec, PlugIn, Charger, float]]) -> None:
        """Vehicles plugging in (spec, session, charger, energy now): recorded in one transaction."""
        with Session(self.engine) as db:
            rows = []
            for spec, session, charger, energy_kwh in arrivals:
                db.merge(Vehicle(id=spec.id, kind=spec.kind, capacity_kwh=spec.capacity_kwh, floor_kwh=spec.floor_kwh,
                                 max_charge_kw=spec.max_charge_kw, max_discharge_kw=spec.max_discharge_kw,
                                 eta_charge=spec.eta_charge, eta_discharge=spec.eta_discharge, site=spec.site))
                rows.append(PlugSession(vehicle_id=spec.id, arrived_at=session.arrived_at,
                                        departs_at=session.departs_at, energy_at_arrival_kwh=energy_kwh,
                                        need_kwh=session.need_kwh))
            db.flush()
            db.add_all(rows)
            db.commit()
            for (spec, session, charger, _energy), row in zip(arrivals, rows):
                self.members[spec.id] = _Member(spec, session, charger, session_row_id=row.id)
        self._replan = True

    def commit(self, event_id: str, intervals: list[CommittedInterval]) -> None:
        self.commitments[event_id] = list(intervals)
        self._replan = True

    def withdraw(self, event_id: str) -> None:
        if self.commitments.pop(event_id, None) is not None:
            self._replan = True

    def all_commitments(self) -> list[CommittedInterval]:
        return [c for intervals in self.commitments.values() for c in intervals]

    def committed_at(self, t: datetime) -> CommittedInterval | None:
        covering = [c for c in self.all_commitments() if c.start <= t < c.end and c.import_ceiling_kw == c.import_ceiling_kw]
        return min(covering, key=lambda c: c.import_ceiling_kw) if covering else None

    def export_bound_kw(self, now: datetime, durations_h: np.ndarray) -> np.ndarray:
        """Closed-form most export the plugged-in fleet can give per interval (for opt decisions)."""
        active = self._active_states(now)
        if not active:
            return np.zeros(len(durations_h))
        return deliverable_export_bound_kw(fleet_arrays(active, now), np.asarray(durations_h, dtype=float))

    # -- the loop --------------------------------------------------------------
    async def step(self, now: datetime) -> None:
        switches = self._switch_times()
        last = self._last_step
        at_boundary = last is None or any(last < t <= now for t in switches)             # meters read on it
        switch_due = last is None or any(last < s <= now for s in switches.values())    # setpoints change
        await self._handle_departures(now)
        if at_boundary or self._last_meter is None or now - self._last_meter >= self.meter_interval:
            await self._read_meters(now)
        if (self._replan or switch_due or self._last_plan_at is None
                or now - self._last_plan_at >= self.replan_interval):
            # Inside a boundary's lead window, plan as from that boundary.
            effective = max((t for t, s in switches.items() if s <= now < t), default=now)
            await self._plan_and_apply(now, effective)
        self._update_gauges(now)
        self._flush_ledger()
        self._last_step = now

    def _switch_times(self) -> dict[datetime, datetime]:
        """Each commitment boundary -> when its setpoints go out: `response_lead`
        early before an interval that asks for more export, on time otherwise."""
        out = {}
        for t in {t for c in self.all_commitments() for t in (c.start, c.end)}:
            following = self.committed_at(t)
            more_export = self._ceiling_at(t) < self._ceiling_at(t - timedelta(microseconds=1))
            # never lead by more than a quarter of the interval being led into
            lead = min(self.response_lead, (following.end - following.start) / 4) if following else timedelta(0)
            out[t] = t - lead if more_export else t
        return out

    def _ceiling_at(self, t: datetime) -> float:
        committed = self.committed_at(t)
        return committed.import_ceiling_kw if committed is not None else float("inf")

    async def _handle_departures(self, now: datetime) -> None:
        for vehicle_id, member in list(self.members.items()):
            if member.session.departs_at > now:
                continue
            try:
                await member.charger.apply_setpoint(0.0)
                reading = await member.charger.read()
                self._record_reading(member, reading)
            except ChargerUnavailable as err:
                log.warning("vehicle %s leaves; its charger did not answer: %s", vehicle_id, err)
            energy = self._energy_of(member)
            departure = Departure(vehicle_id, now, energy, member.session.need_kwh)
            self.status.departures.append(departure)
            log.info("vehicle %s departed with %.1f kWh (asked %.1f)", vehicle_id, energy, member.session.need_kwh)
            self._close_session(member, now, energy)
            del self.members[vehicle_id]
            self._replan = True

    async def _read_meters(self, now: datetime) -> None:
        net_export_kwh = 0.0
        for member in self.members.values():
            try:
                reading = await member.charger.read()
            except ChargerUnavailable as err:
                if member.connected:
                    log.warning("charger %s stopped answering: %s", member.charger.charger_id, err)
                    member.connected = False
                    self._replan = True
                continue
            if not member.connected:
                log.info("charger %s answers again", member.charger.charger_id)
                member.connected = True
                self._replan = True
            net_export_kwh += self._record_reading(member, reading)
        if self._last_meter is not None:
            self._count_event_delivery(self._last_meter + (now - self._last_meter) / 2, net_export_kwh)
        self._last_meter = now

    def _record_reading(self, member: _Member, reading: ChargerReading) -> float:
        """Queue the reading for the ledger; returns its net export since the last one, kWh."""
        previous = member.reading
        net_export_kwh = 0.0
        if previous is not None:
            imported = max(0.0, reading.energy_import_kwh - previous.energy_import_kwh)
            exported = max(0.0, reading.energy_export_kwh - previous.energy_export_kwh)
            self.metrics.import_energy.inc(imported * KWH_TO_J)
            self.metrics.export_energy.inc(exported * KWH_TO_J)
            net_export_kwh = exported - imported
        member.reading = reading
        self._pending_rows.append(MeterReading(
            source=reading.charger_id, ts=reading.ts, energy_import_kwh=reading.energy_import_kwh,
            energy_export_kwh=reading.energy_export_kwh, power_kw=reading.power_kw, soc_pct=reading.soc_pct))
        self.metrics.last_telemetry.set(reading.ts.timestamp())
        return net_export_kwh

    def _count_event_delivery(self, middle: datetime, net_export_kwh: float) -> None:
        """Fleet net export since the last read counts for the commitment in force in the
        middle of that span (meters are read on every boundary, so a span does not cross one)."""
        committed = self.committed_at(middle)
        if committed is None:
            return
        self.metrics.delivered_energy.labels(program=self.program_label).inc(max(0.0, net_export_kwh) * KWH_TO_J)
        tally = self._event_energy.setdefault(self._event_of(committed) or "?", [0.0, 0.0])
        tally[1] += net_export_kwh
        self._publish_ratio(tally)

    def _energy_of(self, member: _Member) -> float:
        if member.reading is None:
            return float("nan")
        return member.reading.soc_pct / 100 * member.spec.capacity_kwh

    def _active_states(self, now: datetime) -> list[MemberState]:
        return [MemberState(m.spec, m.session, self._energy_of(m)) for m in self.members.values()
                if m.connected and m.reading is not None and m.session.departs_at > now]

    async def _plan_and_apply(self, now: datetime, effective: datetime) -> None:
        states = self._active_states(effective)
        horizon = build_horizon(effective, self.all_commitments())
        self._last_plan_at = now
        self._replan = False
        if not states:
            self.status.last_plan = None
            return
        targets = Targets(horizon.durations_h, horizon.import_ceiling_kw)
        started = time.perf_counter()
        try:
            plan = allocate(fleet_arrays(states, effective, self.need_margin_kwh), targets, self.options)
        except Exception:  # the allocator must never stop the loop: hold chargers at 0 and retry
            log.exception("allocator failed; holding every charger at 0 kW until the next plan")
            self.metrics.allocator_failures.inc()
            plan = None
        self.metrics.solve_seconds.labels(method=plan.method if plan else "failed").observe(time.perf_counter() - started)
        for error in (plan.errors if plan else ()):
            log.error("vehicle left out of the plan: %s", error)
        if plan is None:
            setpoints = np.zeros(len(states))
        else:  # the command while plugged in (an EV leaving mid-interval averages less over the interval)
            setpoints = (plan.setpoint_kw if plan.setpoint_kw is not None else plan.power_kw)[:, 0]
        rows = []
        for state, kw in zip(states, setpoints):
            member = self.members[state.spec.id]
            try:
                await member.charger.apply_setpoint(float(kw))
            except ChargerUnavailable as err:
                log.warning("setpoint for %s not delivered: %s", state.spec.id, err)
                member.connected = False
                self._replan = True
                continue
            committed = self.committed_at(effective)
            rows.append(SetpointRecord(vehicle_id=state.spec.id, issued_at=now, power_kw=float(kw),
                                       event_id=self._event_of(committed)))
        self._pending_rows.extend(rows)
        self.status.last_plan = plan
        ceiling = horizon.import_ceiling_kw[0]
        if plan is not None:
            planned_export = max(0.0, -float(plan.fleet_kw[0]))
            self.metrics.planned_export_watts.labels(program=self.program_label).set(planned_export * 1e3)
            self.metrics.shortfall_watts.labels(program=self.program_label).set(float(plan.shortfall_kw[0]) * 1e3)
        if ceiling == ceiling:
            log.info("plan: interval ceiling %.1f kW, planned %.1f kW (%s, %.0f ms)", ceiling,
                     float(plan.fleet_kw[0]) if plan else 0.0, plan.method if plan else "failed",
                     (time.perf_counter() - started) * 1e3)

    def _event_of(self, committed: CommittedInterval | None) -> str | None:
        if committed is None:
            return None
        for event_id, intervals in self.commitments.items():
            if committed in intervals:
                return event_id
        return None

    def _update_gauges(self, now: datetime) -> None:
        readings = [m.reading for m in self.members.values() if m.reading is not None and m.connected]
        fleet_kw = sum(r.power_kw for r in readings)
        self.status.fleet_power_kw = fleet_kw
        self.status.plugged_in = len(self.members)
        self.status.stored_energy_kwh = sum(self._energy_of(m) for m in self.members.values() if m.reading)
        self.metrics.fleet_import_watts.set(max(0.0, fleet_kw) * 1e3)
        self.metrics.fleet_export_watts.set(max(0.0, -fleet_kw) * 1e3)
        self.metrics.plugged_in.set(len(self.members))
        self.metrics.stored_energy.set(self.status.stored_energy_kwh * KWH_TO_J)
        self.metrics.set_soc_distribution([r.soc_pct / 100 for r in readings])
        self.metrics.chargers_total.set(len(self.members))
        self.metrics.chargers_connected.set(sum(1 for m in self.members.values() if m.connected))
        committed = self.committed_at(now)
        committed_export = committed.export_kw if committed else 0.0
        self.metrics.committed_export_watts.labels(program=self.program_label).set(committed_export * 1e3)
        available = float(self.export_bound_kw(now, np.array([0.25]))[0])
        self.status.available_export_kw = available
        self.metrics.available_discharge_watts.set(available * 1e3)
        if committed is not None and self._last_step is not None:
            dt = max(0.0, (now - self._last_step).total_seconds())
            self.metrics.committed_energy.labels(program=self.program_label).inc(committed_export * 1e3 * dt)
            tally = self._event_energy.setdefault(self._event_of(committed) or "?", [0.0, 0.0])
            tally[0] += committed_export * dt / 3600
            self._publish_ratio(tally)
        self.metrics.set_event_state(self._event_state(now))

    def _publish_ratio(self, tally: list[float]) -> None:
        """Delivered / committed export energy of the event so far (metered, per read span)."""
        if tally[0] > 0:
            self.metrics.performance_ratio.labels(program=self.program_label).set(tally[1] / tally[0])

    def _event_state(self, now: datetime) -> str:
        """OpenADR-style state of the most urgent commitment: active, near (< 5 min), far, or idle."""
        intervals = self.all_commitments()
        if any(c.start <= now < c.end for c in intervals):
            return "active"
        upcoming = [c.start for c in intervals if c.start > now]
        if not upcoming:
            return "idle"
        return "near" if min(upcoming) - now <= NEAR else "far"

    # -- persistence -----------------------------------------------------------
    def _close_session(self, member: _Member, now: datetime, energy: float) -> None:
        if member.session_row_id is None:
            return
        try:
            with Session(self.engine) as db:
                row = db.get(PlugSession, member.session_row_id)
                if row is not None:
                    row.left_at = now
                    row.energy_at_departure_kwh = energy
                    db.add(row)
                    db.commit()
        except SQLAlchemyError:
            log.exception("could not record the departure of %s", member.spec.id)
            self.metrics.database_errors.inc()

    def _flush_ledger(self) -> None:
        """Write queued readings and setpoints; on failure keep them for the next step."""
        if not self._pending_rows:
            return
        readings = [r for r in self._pending_rows if isinstance(r, MeterReading)]
        others = [r for r in self._pending_rows if not isinstance(r, MeterReading)]
        try:
            with Session(self.engine) as db:
                insert_meter_readings(db, readings)
                db.add_all(others)
                db.commit()
            self._pending_rows = []
        except SQLAlchemyError as err:
            self.metrics.database_errors.inc()
            log.error("ledger write failed (%s); %d rows kept for retry", err.__class__.__name__, len(self._pending_rows))
