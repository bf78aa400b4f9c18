"""The live performance tally while an event runs: metered net export against
the commitment, per read span, published as the performance-ratio gauge and
the delivered-energy counter. Settlement (aggregator/settlement) recomputes the
same from the ledger after the fact; this is only the operator's live view."""
from __future__ import annotations

KWH_TO_J = 3.6e6


class PerformanceTally:
    def __init__(self, metrics, committed_at, program_label: str):
        self.m = metrics
        self.committed_at = committed_at          # t -> (event_id, CommittedInterval) | None
        self.program = program_label
        self.energy: dict[str, list[float]] = {}  # event_id -> [committed kWh, delivered kWh]
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

    def _tally(self, event_id: str | None) -> list[float]:
        return self.energy.setdefault(event_id or "?", [0.0, 0.0])
