"""Publishes each step to the Prometheus catalogue (aggregator/metrics.py):
fleet power and energy counters from the meter samples, the plan, the
commitment in force and the event state. Fleet-level labels only."""
from __future__ import annotations

from datetime import datetime, timedelta

from aggregator.metrics import Metrics

KWH_TO_J = 3.6e6
NEAR = timedelta(minutes=5)   # an event this close to its start is 'near'


class LiveMetrics:
    def __init__(self, metrics: Metrics, registry, book, program_label: str):
        self.m = metrics
        self.registry = registry
        self.book = book
        self.program = program_label
        self._registers: dict[str, tuple[float, float]] = {}

    def observe(self, report) -> None:
        m, program = self.m, self.program
        for sample in report.samples:
            before = self._registers.get(sample.station_id)
            if before is not None:
                m.import_energy.inc(max(0.0, sample.energy_import_kwh - before[0]) * KWH_TO_J)
                m.export_energy.inc(max(0.0, sample.energy_export_kwh - before[1]) * KWH_TO_J)
            self._registers[sample.station_id] = (sample.energy_import_kwh, sample.energy_export_kwh)
            m.last_telemetry.set(max(sample.ts.timestamp(), m.last_telemetry._value.get()))
        if report.planned:
            m.solve_seconds.labels(method=report.plan.method if report.plan else "failed").observe(report.solve_seconds)
            if report.plan_failed:
                m.allocator_failures.inc()
            if report.plan is not None:
                m.planned_export_watts.labels(program=program).set(max(0.0, -float(report.plan.fleet_kw[0])) * 1e3)
                m.shortfall_watts.labels(program=program).set(float(report.plan.shortfall_kw[0]) * 1e3)
        fleet_kw = self.registry.fleet_power_kw()
        m.fleet_import_watts.set(max(0.0, fleet_kw) * 1e3)
        m.fleet_export_watts.set(max(0.0, -fleet_kw) * 1e3)
        plugged = self.registry.plugged()
        m.plugged_in.set(len(plugged))
        m.stored_energy.set(self.registry.stored_energy_kwh() * KWH_TO_J)
        socs = [self.registry.energy_kwh(live) / live.spec.capacity_kwh for live in plugged if live.soc_known]
        m.set_soc_distribution(socs)
        m.chargers_total.set(len(self.registry.stations))
        m.chargers_connected.set(sum(1 for live in self.registry.stations.values() if live.online))
        m.available_discharge_watts.set(self.registry.available_export_kw(report.at) * 1e3)
        committed_export = report.committed.export_kw if report.committed else 0.0
        m.committed_export_watts.labels(program=program).set(committed_export * 1e3)
        if report.committed is not None and report.previous is not None:
            dt = max(0.0, (report.at - report.previous).total_seconds())
            m.committed_energy.labels(program=program).inc(committed_export * 1e3 * dt)
        m.set_event_state(event_state([c for _, c in self.book.intervals()], report.at))


def event_state(intervals, now: datetime) -> str:
    """OpenADR-style state of the most urgent commitment: active, near (< 5 min), far, or idle."""
    if any(c.start <= now < c.end for c in intervals):
        return "active"
    upcoming = [c.start for c in intervals if c.start > now]
    if not upcoming:
        return "idle"
    return "near" if min(upcoming) - now <= NEAR else "far"
