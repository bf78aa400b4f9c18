"""The performance-ratio gauge and delivered-energy counter.

While an event runs, the gauge is a live tally: metered net export against the
commitment, per read span (an operator's running view). Once the event's last
commitment has passed, the gauge is replaced by the settlement package's own
figure for the event (device metering from the ledger), so the number an
operator sees afterwards is the one settlement, the demo summary and reports
give: committed vs delivered is computed in one place."""
from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

log = logging.getLogger(__name__)
KWH_TO_J = 3.6e6


class PerformanceTally:
    def __init__(self, metrics, committed_at, program_label: str, engine=None, book=None):
        self.m = metrics
        self.committed_at = committed_at          # t -> (event_id, CommittedInterval) | None
        self.program = program_label
        self.engine = engine
        self.book = book
        self.energy: dict[str, list[float]] = {}  # event_id -> [committed kWh, delivered kWh] (live)
        self.settled: dict[str, float | None] = {}   # event_id -> settlement's ratio once over
        self._last: dict[str, tuple] = {}         # station -> (ts, import, export)

    def observe(self, report) -> None:
        for sample in report.samples:
            before = self._last.get(sample.station_id)
            self._last[sample.station_id] = (sample.ts, sample.energy_import_kwh, sample.energy_export_kwh)
            if before is None:
                continue
            # The span between two samples of one station counts for the commitment in force in
            # its middle (stations are sampled on every boundary, so a span does not cross one).
            middle = before[0] + (sample.ts - before[0]) / 2
            in_force = self.committed_at(middle)
            if in_force is None:
                continue
            net_export = (sample.energy_export_kwh - before[2]) - (sample.energy_import_kwh - before[1])
            self.m.delivered_energy.labels(program=self.program).inc(max(0.0, net_export) * KWH_TO_J)
            self._tally(in_force[0])[1] += net_export
        if report.committed is not None and report.previous is not None:
            dt_h = max(0.0, (report.at - report.previous).total_seconds()) / 3600
            self._tally(report.committed_event)[0] += report.committed.export_kw * dt_h
        if report.committed_event in self.energy:
            committed, delivered = self.energy[report.committed_event]
            if committed > 0:
                self.m.performance_ratio.labels(program=self.program).set(delivered / committed)
        self._settle_finished(report)

    def _settle_finished(self, report) -> None:
        if self.engine is None or self.book is None:
            return
        ends: dict[str, object] = {}
        for event_id, c in self.book.intervals():
            ends[event_id] = max(ends.get(event_id, c.end), c.end)
        for event_id in self.energy:
            end = ends.get(event_id)
            if event_id in self.settled or end is None or end > report.at:
                continue
            # the boundary sample after the end must be in the ledger first (it is, one step later)
            if report.previous is None or report.previous < end:
                continue
            self.settled[event_id] = self._settlement_ratio(event_id)
            if self.settled[event_id] is not None:
                self.m.performance_ratio.labels(program=self.program).set(self.settled[event_id])

    def _settlement_ratio(self, event_id: str) -> float | None:
        from aggregator.settlement.report import device_settlement   # settlement is the one computation
        try:
            with Session(self.engine) as db:
                return device_settlement(db, event_id).totals.ratio
        except (LookupError, ValueError, SQLAlchemyError) as err:
            log.warning("could not settle %s for the performance gauge: %s", event_id, err)
            return None

    def _tally(self, event_id: str | None) -> list[float]:
        return self.energy.setdefault(event_id or "?", [0.0, 0.0])
