"""Committed vs delivered per interval and per event; the settlement result types.

Delivered is export (kW, positive = fed to the grid) measured at the devices,
or the load reduction against a premise baseline. Committed is the export the
fleet committed for the interval (``None`` = no commitment, excluded from the
ratio). Averages over several intervals are **time-weighted** (energy over
hours), so a short partial interval weighs what it lasted.

    ratio(interval) = delivered_kw / committed_kw            (committed > 0)
    ratio(event)    = Σ credited delivered kWh / Σ committed kWh   over committed intervals
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from aggregator.settlement.calendar import LabelConvention, require_utc


@dataclass(frozen=True)
class EventInterval:
    uid: int
    start: datetime                  # UTC
    end: datetime                    # UTC
    committed_kw: float | None       # export committed (>= 0); None = no commitment

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", require_utc(self.start, "interval start"))
        object.__setattr__(self, "end", require_utc(self.end, "interval end"))
        if self.end <= self.start:
            raise ValueError(f"interval {self.uid}: end is not after start")
        if self.committed_kw is not None and self.committed_kw < 0:
            raise ValueError(f"interval {self.uid}: committed export must be >= 0 kW")

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600.0


def committed_export_kw(import_ceiling_kw: float | None) -> float | None:
    """Ledger convention -> committed export: a negative import ceiling is an
    export commitment; a ceiling >= 0 commits no export; None = no commitment."""
    if import_ceiling_kw is None:
        return None
    return max(0.0, -float(import_ceiling_kw))


@dataclass(frozen=True)
class IntervalResult:
    uid: int
    start: datetime
    end: datetime
    label_hb: str                    # local hour-beginning label, e.g. "HB 16:00"
    label_he: str                    # local hour-ending label, e.g. "HE 17:00"
    committed_kw: float | None
    delivered_kw: float              # average over the interval (signed: < 0 = net import)
    credited_kw: float               # delivered after the program's over-delivery cap
    coverage: float                  # 0..1 share of the interval with meter data
    ratio: float | None              # credited / committed; None when nothing committed
    baseline_kw: float | None = None  # premise baseline methods only
    metered_kw: float | None = None   # premise load (positive = import), baseline methods only

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600.0

    def label(self, convention: LabelConvention | str = LabelConvention.HOUR_BEGINNING) -> str:
        return self.label_he if LabelConvention(convention) is LabelConvention.HOUR_ENDING else self.label_hb

    @property
    def committed_kwh(self) -> float:
        return (self.committed_kw or 0.0) * self.hours

    @property
    def delivered_kwh(self) -> float:
        return self.delivered_kw * self.hours


def interval_result(interval: EventInterval, labels: tuple[str, str], delivered_kw: float, coverage: float,
                    max_credit_ratio: float | None = None, baseline_kw: float | None = None,
                    metered_kw: float | None = None) -> IntervalResult:
    committed = interval.committed_kw
    credited = delivered_kw
    if max_credit_ratio is not None and committed is not None:
        credited = min(credited, max_credit_ratio * committed)
    ratio = credited / committed if committed else None
    return IntervalResult(interval.uid, interval.start, interval.end, labels[0], labels[1], committed, delivered_kw,
                          credited, coverage, ratio, baseline_kw, metered_kw)


@dataclass(frozen=True)
class EventTotals:
    hours: float                     # all intervals
    committed_hours: float           # intervals with committed > 0
    committed_kwh: float
    delivered_kwh: float             # all intervals
    credited_kwh: float              # committed intervals, after the credit cap
    committed_avg_kw: float | None   # over committed intervals
    delivered_avg_kw: float | None   # credited, over committed intervals
    event_avg_kw: float              # delivered over the whole event (pro-rates partial delivery)
    ratio: float | None
    min_coverage: float


def summarise(intervals: list[IntervalResult] | tuple[IntervalResult, ...]) -> EventTotals:
    hours = sum(r.hours for r in intervals)
    committed = [r for r in intervals if r.committed_kw]
    committed_hours = sum(r.hours for r in committed)
    committed_kwh = sum(r.committed_kwh for r in committed)
    credited_kwh = sum(r.credited_kw * r.hours for r in committed)
    delivered_kwh = sum(r.delivered_kwh for r in intervals)
    return EventTotals(
        hours=hours, committed_hours=committed_hours, committed_kwh=committed_kwh,
        delivered_kwh=delivered_kwh, credited_kwh=credited_kwh,
        committed_avg_kw=committed_kwh / committed_hours if committed_hours else None,
        delivered_avg_kw=credited_kwh / committed_hours if committed_hours else None,
        event_avg_kw=delivered_kwh / hours if hours else 0.0,
        ratio=credited_kwh / committed_kwh if committed_kwh else None,
        min_coverage=min((r.coverage for r in intervals), default=0.0))


@dataclass(frozen=True)
class EventSettlement:
    """One versioned settlement of one event (what the store saves)."""
    event_id: str
    version: int
    inputs_hash: str
    computed_at: datetime
    method: str                      # "device" or a baseline spec name
    timezone: str
    intervals: tuple[IntervalResult, ...]
    totals: EventTotals
    supersedes: int | None = None    # the version this one replaced
    details: dict = field(default_factory=dict)   # e.g. baseline days and adjustment

    def to_dict(self) -> dict:
        data = asdict(self)
        data["computed_at"] = self.computed_at.isoformat()
        for row in data["intervals"]:
            row["start"] = row["start"].isoformat()
            row["end"] = row["end"].isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "EventSettlement":
        rows = []
        for row in data["intervals"]:
            row = dict(row)
            row["start"] = datetime.fromisoformat(row["start"])
            row["end"] = datetime.fromisoformat(row["end"])
            rows.append(IntervalResult(**row))
        return cls(
            event_id=data["event_id"], version=int(data["version"]), inputs_hash=data["inputs_hash"],
            computed_at=datetime.fromisoformat(data["computed_at"]), method=data["method"],
            timezone=data["timezone"], intervals=tuple(rows), totals=EventTotals(**data["totals"]),
            supersedes=data.get("supersedes"), details=dict(data.get("details") or {}))
