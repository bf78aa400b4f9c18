"""Energy over an interval from cumulative meter registers.

A meter (a charger's, or a premise meter) reports cumulative ``import`` and
``export`` registers in kWh at irregular UTC instants. The energy over any
interval ``[start, end)`` is the register difference between the two
boundaries, each boundary read by linear interpolation between the samples
around it. Boundaries outside the sampled span are clipped to it, so an
interval only partly covered by readings counts the measured part only (the
rest is *not measured*, reported through ``coverage``) — late data then raises
coverage and the energy, and triggers a re-settlement.

Sign convention (project-wide): positive = import. The *delivered export* of a
device over an interval is ``Δexport − Δimport`` (kWh), positive when the
device fed the grid on balance.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from aggregator.settlement.calendar import require_utc


class MeterDataError(ValueError):
    """Meter samples that cannot be settled (e.g. a register going backwards)."""


@dataclass(frozen=True)
class RegisterReading:
    ts: datetime            # UTC, aware
    import_kwh: float       # cumulative, grid -> device
    export_kwh: float       # cumulative, device -> grid


@dataclass(frozen=True)
class MeteredEnergy:
    """Register deltas over one interval for one meter (or summed over many)."""
    import_kwh: float
    export_kwh: float
    coverage: float          # 0..1, share of the interval inside the sampled span

    @property
    def net_import_kwh(self) -> float:
        return self.import_kwh - self.export_kwh

    @property
    def net_export_kwh(self) -> float:
        return self.export_kwh - self.import_kwh


class RegisterSeries:
    """The readings of one meter, sorted and checked once, queried many times."""

    def __init__(self, readings: Iterable[RegisterReading], source: str = "meter"):
        by_ts: dict[datetime, RegisterReading] = {}
        for reading in readings:
            ts = require_utc(reading.ts, f"{source} reading ts")
            by_ts[ts] = RegisterReading(ts, float(reading.import_kwh), float(reading.export_kwh))
        self.source = source
        self.readings: list[RegisterReading] = [by_ts[ts] for ts in sorted(by_ts)]
        self._ts = [r.ts for r in self.readings]
        for before, after in zip(self.readings, self.readings[1:]):
            if after.import_kwh < before.import_kwh - 1e-9 or after.export_kwh < before.export_kwh - 1e-9:
                raise MeterDataError(
                    f"{source}: cumulative register decreased between {before.ts.isoformat()} "
                    f"and {after.ts.isoformat()}")

    def __len__(self) -> int:
        return len(self.readings)

    def register_at(self, ts: datetime) -> tuple[float, float] | None:
        """(import, export) kWh at ``ts`` by linear interpolation; None outside the span."""
        ts = require_utc(ts)
        if not self.readings or ts < self._ts[0] or ts > self._ts[-1]:
            return None
        i = bisect_left(self._ts, ts)
        if self._ts[i] == ts:
            r = self.readings[i]
            return r.import_kwh, r.export_kwh
        a, b = self.readings[i - 1], self.readings[i]
        w = (ts - a.ts) / (b.ts - a.ts)
        return (a.import_kwh + w * (b.import_kwh - a.import_kwh),
                a.export_kwh + w * (b.export_kwh - a.export_kwh))

    def energy(self, start: datetime, end: datetime) -> MeteredEnergy:
        """Register deltas over ``[start, end)``, clipped to the sampled span."""
        start, end = require_utc(start), require_utc(end)
        if end <= start:
            raise ValueError(f"interval end {end} is not after start {start}")
        if len(self.readings) < 2:
            return MeteredEnergy(0.0, 0.0, 0.0)
        lo, hi = max(start, self._ts[0]), min(end, self._ts[-1])
        if hi <= lo:
            return MeteredEnergy(0.0, 0.0, 0.0)
        a, b = self.register_at(lo), self.register_at(hi)
        assert a is not None and b is not None
        return MeteredEnergy(b[0] - a[0], b[1] - a[1], (hi - lo) / (end - start))


def fleet_energy(series: Mapping[str, RegisterSeries], start: datetime, end: datetime) -> MeteredEnergy:
    """Sum of every device meter over one interval.

    A device whose sampled span does not touch the interval contributes zero
    (it was not metering, e.g. unplugged). ``coverage`` is the lowest coverage
    among the devices that do touch it, 0.0 when none does — a value below 1
    flags meter data still missing for part of the interval.
    """
    imp = exp = 0.0
    coverages: list[float] = []
    for meter in series.values():
        energy = meter.energy(start, end)
        imp += energy.import_kwh
        exp += energy.export_kwh
        if energy.coverage > 0:
            coverages.append(energy.coverage)
    coverage = min(coverages) if coverages else 0.0
    return MeteredEnergy(imp, exp, coverage)


def interval_loads(series: RegisterSeries, slots: Sequence[tuple[datetime, datetime]],
                   min_coverage: float = 1.0) -> dict[datetime, float]:
    """Average net *import* kW per slot (a premise load profile), keyed by slot start.

    Slots covered less than ``min_coverage`` are left out (missing data, not zero).
    """
    out: dict[datetime, float] = {}
    for start, end in slots:
        energy = series.energy(start, end)
        if energy.coverage + 1e-12 >= min_coverage and energy.coverage > 0:
            hours = (end - start).total_seconds() / 3600 * energy.coverage
            out[require_utc(start)] = energy.net_import_kwh / hours
    return out
