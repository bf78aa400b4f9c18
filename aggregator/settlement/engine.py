"""Settle one event: inputs in, a versioned ``EventSettlement`` out. Pure.

Two measurement methods share everything after "delivered kW per interval":

* ``DeviceMetering`` — the chargers' own meters: delivered export =
  Δexport − Δimport of every charger over the interval (``delivery.py``).
* ``PremiseBaseline`` — a premise meter and a customer baseline
  (``baseline.py``): delivered = adjusted baseline − metered load.

Versioning: ``settle_event(inputs, computed_at, previous)`` returns
``previous`` itself when the inputs that matter are unchanged (same
``inputs_hash``), otherwise a new result with ``version = previous.version + 1``.
Nothing is ever modified in place, so every version stays available.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

from aggregator.settlement.baseline import BaselineSpec, LoadProfile, compute_baseline
from aggregator.settlement.calendar import DayCalendar, LabelConvention, interval_label, require_utc
from aggregator.settlement.delivery import RegisterReading, RegisterSeries, fleet_energy
from aggregator.settlement.performance import (
    EventInterval, EventSettlement, interval_result, summarise)


@dataclass(frozen=True)
class DeviceMetering:
    """Cumulative register readings per charger (source id -> readings)."""
    readings: Mapping[str, Sequence[RegisterReading]]


@dataclass(frozen=True)
class PremiseBaseline:
    """A premise load profile (history and event day) and the baseline rule."""
    spec: BaselineSpec
    profile: LoadProfile
    calendar: DayCalendar = DayCalendar()
    event_days: frozenset[date] = frozenset()   # past event days, never reference days


@dataclass(frozen=True)
class SettlementInputs:
    event_id: str
    intervals: tuple[EventInterval, ...]
    method: DeviceMetering | PremiseBaseline
    timezone: str = "America/New_York"
    # Credit at most this multiple of the commitment per interval (None = uncapped).
    max_credit_ratio: float | None = None

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.intervals, key=lambda i: i.start))
        if not ordered:
            raise ValueError(f"event {self.event_id}: no intervals to settle")
        for a, b in zip(ordered, ordered[1:]):
            if b.start < a.end:
                raise ValueError(f"event {self.event_id}: intervals {a.uid} and {b.uid} overlap")
        object.__setattr__(self, "intervals", ordered)
        ZoneInfo(self.timezone)  # fail early on an unknown zone


# ------------------------------------------------------------------ hashing

def _relevant(series: RegisterSeries, intervals: Sequence[EventInterval]) -> list[RegisterReading]:
    """The readings that can change the result: those strictly inside the
    event plus the last one at or before its start and the first one at or
    after its end (the interpolation anchors)."""
    start, end = intervals[0].start, intervals[-1].end
    rows = series.readings
    inside = [r for r in rows if start < r.ts < end]
    before = [r for r in rows if r.ts <= start][-1:]
    after = [r for r in rows if r.ts >= end][:1]
    return before + inside + after


def _jsonable(value):
    if isinstance(value, datetime):
        return require_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple, frozenset, set)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    return value


def inputs_hash(inputs: SettlementInputs) -> str:
    """sha256 over a canonical form of everything the result depends on."""
    head = {
        "event_id": inputs.event_id,
        "intervals": [asdict(i) for i in inputs.intervals],
        "timezone": inputs.timezone,
        "max_credit_ratio": inputs.max_credit_ratio,
    }
    method = inputs.method
    if isinstance(method, DeviceMetering):
        body = {"device": {source: [(r.ts, r.import_kwh, r.export_kwh)
                                    for r in _relevant(RegisterSeries(rows, source), inputs.intervals)]
                           for source, rows in method.readings.items()}}
    else:
        body = {"baseline": {"spec": asdict(method.spec), "slot": method.profile.slot,
                             "profile": dict(method.profile.values),
                             "holidays": method.calendar.holidays,
                             "holidays_as_weekend": method.calendar.holidays_as_weekend,
                             "event_days": method.event_days}}
    text = json.dumps(_jsonable({**head, **body}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------ settling

def _labels(interval: EventInterval, tz: ZoneInfo) -> tuple[str, str]:
    return (interval_label(interval.start, interval.end, tz, LabelConvention.HOUR_BEGINNING),
            interval_label(interval.start, interval.end, tz, LabelConvention.HOUR_ENDING))


def _compute(inputs: SettlementInputs, computed_at: datetime, digest: str) -> EventSettlement:
    tz = ZoneInfo(inputs.timezone)
    method = inputs.method
    rows = []
    details: dict = {}
    if isinstance(method, DeviceMetering):
        series = {s: RegisterSeries(r, s) for s, r in method.readings.items()}
        for interval in inputs.intervals:
            energy = fleet_energy(series, interval.start, interval.end)
            rows.append(interval_result(
                interval, _labels(interval, tz), delivered_kw=energy.net_export_kwh / interval.hours,
                coverage=energy.coverage, max_credit_ratio=inputs.max_credit_ratio))
        name = "device"
        details["sources"] = sorted(series)
    else:
        spec = method.spec
        baseline = compute_baseline(method.profile, inputs.intervals[0].start, inputs.intervals[-1].end,
                                    spec, tz, method.calendar, method.event_days)
        for interval in inputs.intervals:
            base = baseline.kw(interval.start, interval.end)
            metered = method.profile.average(interval.start, interval.end, baseline.origin,
                                             clip_negative=spec.load_curtailment_only)
            rows.append(interval_result(
                interval, _labels(interval, tz), delivered_kw=base - metered, coverage=1.0,
                max_credit_ratio=inputs.max_credit_ratio, baseline_kw=base, metered_kw=metered))
        name = spec.name + ("+lco" if spec.load_curtailment_only else "")
        details.update(
            selected_days=[d.isoformat() for d in baseline.selected_days],
            pool=[d.isoformat() for d in baseline.pool],
            low_usage_days=[d.isoformat() for d in baseline.low_usage_days],
            adjustment_kind=baseline.adjustment_kind, adjustment=baseline.adjustment,
            adjustment_applied=baseline.adjustment_applied)
    return EventSettlement(
        event_id=inputs.event_id, version=1, inputs_hash=digest, computed_at=require_utc(computed_at),
        method=name, timezone=inputs.timezone, intervals=tuple(rows), totals=summarise(rows),
        details=details)


def settle_event(inputs: SettlementInputs, computed_at: datetime,
                 previous: EventSettlement | None = None) -> EventSettlement:
    """Settle an event; with ``previous``, re-settle it (see module doc)."""
    digest = inputs_hash(inputs)
    if previous is not None:
        if previous.event_id != inputs.event_id:
            raise ValueError(f"previous settlement is for {previous.event_id}, not {inputs.event_id}")
        if previous.inputs_hash == digest:
            return previous
    fresh = _compute(inputs, computed_at, digest)
    if previous is None:
        return fresh
    return replace(fresh, version=previous.version + 1, supersedes=previous.version)


def resettle(previous: EventSettlement, inputs: SettlementInputs, computed_at: datetime) -> EventSettlement:
    """Re-settle after late or corrected data; ``previous`` is returned unchanged
    when nothing that matters changed."""
    return settle_event(inputs, computed_at, previous)


__all__ = ["DeviceMetering", "PremiseBaseline", "SettlementInputs", "inputs_hash",
           "settle_event", "resettle"]
