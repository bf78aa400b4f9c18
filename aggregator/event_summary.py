"""The demo's per-event summary: committed vs delivered per interval and each driver's
energy at departure, from the ledger and the VEN's event store.

Delivered is metered: the settlement engine's device metering (the chargers' export
minus import registers over each interval), never the plan. Also renders the table,
CSV, PNG and JSON the demo prints and writes.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, select

from aggregator.settlement.report import device_settlement
from aggregator.store.db import as_utc
from aggregator.store.models import PlugSession, Vehicle
from ven.store import VenEvent


DRIVER_TOLERANCE_KWH = 0.1   # metering and taper noise below this is not counted as short


@dataclass
class IntervalResult:
    uid: int
    start: str
    end: str
    committed_export_kw: float
    delivered_export_kw: float
    coverage: float   # share of the interval the meters covered

    @property
    def ratio(self) -> float | None:
        return self.delivered_export_kw / self.committed_export_kw if self.committed_export_kw > 0 else None


@dataclass
class DriverResult:
    vehicle_id: str
    need_kwh: float
    energy_at_departure_kwh: float | None
    achievable_kwh: float   # the most the battery could hold at departure, charging flat out from plug-in

    @property
    def missing_kwh(self) -> float:
        if self.energy_at_departure_kwh is None:
            return 0.0
        return max(0.0, self.need_kwh - self.energy_at_departure_kwh)


@dataclass
class EventSummary:
    event_id: str
    opt_state: str
    note: str
    intervals: list[IntervalResult]
    drivers: list[DriverResult] = field(default_factory=list)

    @property
    def committed_kwh(self) -> float:
        return sum(i.committed_export_kw * _hours(i) for i in self.intervals)

    @property
    def delivered_kwh(self) -> float:
        return sum(i.delivered_export_kw * _hours(i) for i in self.intervals)

    @property
    def performance_ratio(self) -> float | None:
        committed = self.committed_kwh
        return self.delivered_kwh / committed if committed > 0 else None

    @property
    def drivers_short(self) -> list[DriverResult]:
        """Drivers left below what they asked although it was reachable: stranded by us."""
        return [d for d in self.drivers if d.missing_kwh > DRIVER_TOLERANCE_KWH
                and d.achievable_kwh >= d.need_kwh]

    @property
    def drivers_unreachable(self) -> list[DriverResult]:
        """Drivers who asked for more than their charger could give in the time they stayed."""
        return [d for d in self.drivers if d.achievable_kwh < d.need_kwh]

    def to_dict(self) -> dict:
        return {
            "event_id": self.event_id, "opt_state": self.opt_state, "note": self.note,
            "committed_kwh": self.committed_kwh, "delivered_kwh": self.delivered_kwh,
            "performance_ratio": self.performance_ratio,
            "intervals": [asdict(i) | {"ratio": i.ratio} for i in self.intervals],
            "drivers": [asdict(d) | {"missing_kwh": d.missing_kwh} for d in self.drivers],
            "drivers_stranded": [d.vehicle_id for d in self.drivers_short],
            "drivers_unreachable": [d.vehicle_id for d in self.drivers_unreachable],
        }


def _hours(interval: IntervalResult) -> float:
    return (datetime.fromisoformat(interval.end) - datetime.fromisoformat(interval.start)).total_seconds() / 3600


def summarize_event(engine, event_id: str) -> EventSummary:
    with Session(engine) as db:
        record = db.get(VenEvent, event_id)   # the VEN's event store is the record of events
        if record is None:
            raise LookupError(f"no event {event_id!r} in the event store")
        settled = device_settlement(db, event_id)
        intervals = [IntervalResult(r.uid, r.start.isoformat(), r.end.isoformat(), r.committed_kw or 0.0,
                                    r.delivered_kw, r.coverage) for r in settled.intervals]
        start, end = settled.intervals[0].start, settled.intervals[-1].end
        # The drivers whose plug-in overlapped the event.
        sessions = [row for row in db.exec(select(PlugSession).order_by(PlugSession.vehicle_id)).all()
                    if as_utc(row.arrived_at) <= end and (row.left_at is None or as_utc(row.left_at) >= start)]
        vehicles = {v.id: v for v in db.exec(select(Vehicle)).all()}
        drivers = [DriverResult(s.vehicle_id, s.need_kwh, s.energy_at_departure_kwh, _achievable(s, vehicles[s.vehicle_id]))
                   for s in sessions]
        return EventSummary(event_id, record.opt_state, record.reason, intervals, drivers)


def _achievable(session: PlugSession, vehicle: Vehicle) -> float:
    hours = (as_utc(session.departs_at) - as_utc(session.arrived_at)).total_seconds() / 3600
    return min(vehicle.capacity_kwh,
               session.energy_at_arrival_kwh + vehicle.max_charge_kw * vehicle.eta_charge * hours)


def format_table(summary: EventSummary) -> str:
    lines = [f"Event {summary.event_id}: {summary.opt_state} ({summary.note})",
             f"{'#':>3} {'start (UTC)':<12} {'committed kW':>13} {'delivered kW':>13} {'ratio':>7} {'metered':>8}"]
    for i in summary.intervals:
        ratio = f"{i.ratio:7.3f}" if i.ratio is not None else "      -"
        lines.append(f"{i.uid:>3} {i.start[11:23]:<12} {i.committed_export_kw:13.1f} {i.delivered_export_kw:13.1f} "
                     f"{ratio} {i.coverage:8.0%}")
    ratio = summary.performance_ratio
    lines.append(f"committed {summary.committed_kwh:.3f} kWh, delivered {summary.delivered_kwh:.3f} kWh (metered); "
                 f"performance ratio {ratio:.3f}" if ratio is not None else "no export committed")
    return "\n".join(lines)


def format_drivers(summary: EventSummary) -> str:
    lines = [f"{'vehicle':<18} {'asked kWh':>10} {'at departure':>13} {'missing':>8} {'reachable':>10}"]
    for d in summary.drivers:
        at = f"{d.energy_at_departure_kwh:13.1f}" if d.energy_at_departure_kwh is not None else "    (plugged)"
        lines.append(f"{d.vehicle_id:<18} {d.need_kwh:10.1f} {at} {d.missing_kwh:8.2f} {d.achievable_kwh:10.1f}")
    short, unreachable = summary.drivers_short, summary.drivers_unreachable
    served = sum(1 for d in summary.drivers if d.missing_kwh <= DRIVER_TOLERANCE_KWH)
    lines.append(f"{served} of {len(summary.drivers)} drivers left with what they asked"
                 + (f"; asked more than their charger could give: {', '.join(d.vehicle_id for d in unreachable)}"
                    if unreachable else "")
                 + (f"; STRANDED: {', '.join(d.vehicle_id for d in short)}" if short else ""))
    return "\n".join(lines)


def write_csv(summary: EventSummary, path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["event_id", "uid", "start", "end", "committed_export_kw", "delivered_export_kw", "ratio",
                         "meter_coverage"])
        for i in summary.intervals:
            writer.writerow([summary.event_id, i.uid, i.start, i.end, f"{i.committed_export_kw:.3f}",
                             f"{i.delivered_export_kw:.3f}", "" if i.ratio is None else f"{i.ratio:.4f}",
                             f"{i.coverage:.3f}"])


def write_png(summary: EventSummary, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    x = [i.uid for i in summary.intervals]
    ax.step(x, [i.committed_export_kw for i in summary.intervals], where="mid", label="committed export", color="tab:gray")
    ax.bar(x, [i.delivered_export_kw for i in summary.intervals], alpha=0.6, label="delivered export (metered)",
           color="tab:green")
    ax.set_xlabel("interval")
    ax.set_ylabel("kW")
    ratio = summary.performance_ratio
    ax.set_title(f"Event {summary.event_id}: performance ratio {ratio:.3f}" if ratio is not None else summary.event_id)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(summary: EventSummary, path: Path) -> None:
    Path(path).write_text(json.dumps(summary.to_dict(), indent=2))
