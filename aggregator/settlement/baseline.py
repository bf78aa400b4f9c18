"""One parameterised customer-baseline engine (CAISO / PJM / NYISO styles).

Pipeline (REFERENCE §5): eligible days (same day type, no event, no holiday,
complete data, within a lookback; optional low-usage screen) -> pool (the most
recent N eligible days) -> selection (all of them, or the highest X by
event-window load) -> per-slot average -> same-day adjustment over a window
before the event (multiplicative with a cap, or additive) -> adjusted baseline.
The three ISO styles are *presets* of one ``BaselineSpec``; no style has code
of its own.

Time: the premise load is a ``LoadProfile`` of average kW per fixed slot keyed
by UTC slot start. Days are matched by **local wall-clock time** in the program
timezone, so 16:00 on a day after the spring-forward change is compared with
16:00 (not 15:00) on days before it. A wall-clock time that does not exist on a
reference day (the spring-forward gap) makes that day incomplete for windows
needing it; a repeated wall-clock hour (fall-back) on a reference day is
averaged; on the event day each of the two passes gets the baseline of its
wall-clock time.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

from aggregator.settlement.calendar import (
    DayCalendar, local_date, local_day_bounds, require_utc, wall_clock, wall_to_utc)


class InsufficientData(ValueError):
    """Not enough history or event-day data to compute the baseline."""


# ------------------------------------------------------------------ load data

@dataclass(frozen=True)
class LoadProfile:
    """Average premise load (kW, positive = import) per slot, keyed by UTC slot start."""
    slot: timedelta
    values: Mapping[datetime, float]

    def __post_init__(self) -> None:
        if self.slot <= timedelta(0):
            raise ValueError("slot must be positive")
        object.__setattr__(self, "values", {require_utc(k): float(v) for k, v in self.values.items()})

    def slot_starts(self, start: datetime, end: datetime, origin: datetime) -> list[datetime]:
        """Slot starts on the grid through ``origin`` overlapping ``[start, end)``."""
        first = origin + ((start - origin) // self.slot) * self.slot
        out = []
        t = first
        while t < end:
            out.append(t)
            t += self.slot
        return out

    def average(self, start: datetime, end: datetime, origin: datetime,
                clip_negative: bool = False) -> float:
        """Time-weighted average over ``[start, end)``; every overlapped slot must exist."""
        total = 0.0
        for s in self.slot_starts(start, end, origin):
            if s not in self.values:
                raise InsufficientData(f"no premise load for slot starting {s.isoformat()}")
            value = self.values[s]
            if clip_negative:
                value = max(0.0, value)
            overlap = min(end, s + self.slot) - max(start, s)
            total += value * (overlap / (end - start))
        return total


# ---------------------------------------------------------------- the spec

class AdjustmentKind(str, Enum):
    NONE = "none"
    MULTIPLICATIVE = "multiplicative"
    ADDITIVE = "additive"


@dataclass(frozen=True)
class DaySelection:
    """Pool the ``pool_days`` most recent eligible days; keep the ``keep_highest``
    of them by event-window load (None = keep all). Fewer than ``min_days``
    eligible days is an error."""
    pool_days: int
    keep_highest: int | None = None
    min_days: int = 1


@dataclass(frozen=True)
class AdjustmentRule:
    """Same-day adjustment over the window ``[start - gap - window, start - gap)``
    (local wall clock). Caps: multiplicative ratio within ``[1 - cap_down,
    1 + cap_up]``; additive kW within ``± cap × window-mean baseline``.
    None = uncapped."""
    kind: AdjustmentKind = AdjustmentKind.NONE
    window: timedelta = timedelta(hours=3)
    gap: timedelta = timedelta(hours=1)
    cap_up: float | None = None
    cap_down: float | None = None


@dataclass(frozen=True)
class BaselineSpec:
    name: str
    weekday: DaySelection
    weekend: DaySelection
    adjustment: AdjustmentRule = AdjustmentRule()
    lookback_days: int = 45
    # Drop eligible days whose event-window load is below this share of the
    # mean event-window load of all eligible days (None = no screen).
    low_usage_fraction: float | None = None
    # Load-curtailment-only: metered export counts as zero load, so a reduction
    # never exceeds the baseline (REFERENCE §5).
    load_curtailment_only: bool = False


def caiso_10_in_10(cap: float = 0.20, **overrides) -> BaselineSpec:
    """CAISO-style 10-in-10: the 10 most recent eligible weekdays (4 weekend
    days), multiplicative adjustment over the 3 h ending 1 h before the event,
    capped at ±``cap``."""
    spec = BaselineSpec(
        name="caiso-10-in-10",
        weekday=DaySelection(pool_days=10, min_days=5),
        weekend=DaySelection(pool_days=4, min_days=2),
        adjustment=AdjustmentRule(AdjustmentKind.MULTIPLICATIVE, timedelta(hours=3), timedelta(hours=1), cap, cap),
        lookback_days=45)
    return _override(spec, overrides)


def pjm_high_4_of_5(**overrides) -> BaselineSpec:
    """PJM-style High 4 of 5 (weekend: High 2 of 3) with the symmetric additive
    adjustment over the 3 h ending 1 h before the event; low-usage screen 25 %."""
    spec = BaselineSpec(
        name="pjm-high-4-of-5",
        weekday=DaySelection(pool_days=5, keep_highest=4, min_days=4),
        weekend=DaySelection(pool_days=3, keep_highest=2, min_days=2),
        adjustment=AdjustmentRule(AdjustmentKind.ADDITIVE, timedelta(hours=3), timedelta(hours=1)),
        lookback_days=45, low_usage_fraction=0.25)
    return _override(spec, overrides)


def nyiso_5_of_10(cap: float = 0.20, **overrides) -> BaselineSpec:
    """NYISO-style 5 highest of 10 (weekend: 2 of 3), multiplicative
    adjustment over the 2 h beginning 4 h before the event, capped at ±``cap``;
    low-usage screen 25 %."""
    spec = BaselineSpec(
        name="nyiso-5-of-10",
        weekday=DaySelection(pool_days=10, keep_highest=5, min_days=5),
        weekend=DaySelection(pool_days=3, keep_highest=2, min_days=2),
        adjustment=AdjustmentRule(AdjustmentKind.MULTIPLICATIVE, timedelta(hours=2), timedelta(hours=2), cap, cap),
        lookback_days=30, low_usage_fraction=0.25)
    return _override(spec, overrides)


PRESETS = {"caiso": caiso_10_in_10, "pjm": pjm_high_4_of_5, "nyiso": nyiso_5_of_10}


def _override(spec: BaselineSpec, overrides: dict) -> BaselineSpec:
    from dataclasses import replace
    return replace(spec, **overrides) if overrides else spec


# ---------------------------------------------------------------- the result

@dataclass(frozen=True)
class BaselineSlot:
    start: datetime
    end: datetime
    unadjusted_kw: float
    adjusted_kw: float


@dataclass(frozen=True)
class BaselineResult:
    spec_name: str
    event_day: date
    slots: tuple[BaselineSlot, ...]          # the event window, in time order
    adjustment_kind: str
    adjustment: float                        # ratio (multiplicative) or kW (additive); raw
    adjustment_applied: float                # after the cap
    selected_days: tuple[date, ...]
    pool: tuple[date, ...]
    low_usage_days: tuple[date, ...] = field(default=())
    origin: datetime | None = None           # slot grid origin (local midnight of the event day, UTC)

    def kw(self, start: datetime, end: datetime) -> float:
        """Time-weighted adjusted baseline over ``[start, end)`` (within the window)."""
        total = 0.0
        covered = timedelta(0)
        for s in self.slots:
            overlap = min(end, s.end) - max(start, s.start)
            if overlap > timedelta(0):
                total += s.adjusted_kw * (overlap / (end - start))
                covered += overlap
        if covered < end - start:
            raise InsufficientData(f"baseline does not cover {start.isoformat()}–{end.isoformat()}")
        return total


# ---------------------------------------------------------------- the engine

def _offsets(naive_times: list[datetime], day: date) -> list[timedelta]:
    midnight = datetime.combine(day, datetime.min.time())
    out: list[timedelta] = []
    for t in naive_times:
        off = t.replace(fold=0) - midnight
        if off not in out:
            out.append(off)
    return out


def _day_value(profile: LoadProfile, day: date, offset: timedelta, tz: ZoneInfo) -> float | None:
    """Load at a wall-clock offset from a day's local midnight; None if missing."""
    instants = wall_to_utc(datetime.combine(day, datetime.min.time()) + offset, tz)
    values = [profile.values[u] for u in instants if u in profile.values]
    if not instants or len(values) < len(instants):
        return None
    return sum(values) / len(values)


def compute_baseline(profile: LoadProfile, event_start: datetime, event_end: datetime,
                     spec: BaselineSpec, tz: ZoneInfo, calendar: DayCalendar = DayCalendar(),
                     event_days: frozenset[date] = frozenset()) -> BaselineResult:
    """Adjusted baseline for the event window ``[event_start, event_end)``.

    ``profile`` must hold the reference days and the event day's adjustment
    window; ``event_days`` are past event days (never used as reference days).
    """
    event_start, event_end = require_utc(event_start), require_utc(event_end, "event_end")
    if event_end <= event_start:
        raise ValueError("event_end must be after event_start")
    event_day = local_date(event_start, tz)
    origin = local_day_bounds(event_day, tz)[0]

    # Event-window slots (UTC) and their wall-clock offsets.
    window_slots = profile.slot_starts(event_start, event_end, origin)
    midnight = datetime.combine(event_day, datetime.min.time())
    window_offsets = [wall_clock(s, tz) - midnight for s in window_slots]
    window_keys = _offsets([wall_clock(s, tz) for s in window_slots], event_day)

    # Adjustment-window slots on the event day, by wall clock.
    rule = spec.adjustment
    adj_utc: list[datetime] = []
    if rule.kind is not AdjustmentKind.NONE:
        start_wall = wall_clock(event_start, tz).replace(fold=0)
        t = start_wall - rule.gap - rule.window
        while t < start_wall - rule.gap:
            adj_utc.extend(u for u in wall_to_utc(t, tz) if u not in adj_utc)
            t += profile.slot
    adj_keys = _offsets([wall_clock(u, tz) for u in adj_utc], event_day)
    needed = window_keys + [k for k in adj_keys if k not in window_keys]

    # Eligible days, most recent first.
    target_type = calendar.day_type(event_day)
    eligible: list[tuple[date, dict[timedelta, float]]] = []
    for back in range(1, spec.lookback_days + 1):
        day = event_day - timedelta(days=back)
        if day in event_days or calendar.excluded(day) or calendar.day_type(day) != target_type:
            continue
        values = {k: _day_value(profile, day, k, tz) for k in needed}
        if any(v is None for v in values.values()):
            continue
        eligible.append((day, values))  # type: ignore[arg-type]

    def window_mean(values: dict[timedelta, float]) -> float:
        return sum(values[k] for k in window_keys) / len(window_keys)

    low_usage: list[date] = []
    if spec.low_usage_fraction is not None and eligible:
        mean_all = sum(window_mean(v) for _, v in eligible) / len(eligible)
        threshold = spec.low_usage_fraction * mean_all
        low_usage = [d for d, v in eligible if window_mean(v) < threshold]
        eligible = [(d, v) for d, v in eligible if d not in low_usage]

    selection = spec.weekend if target_type == "weekend" else spec.weekday
    pool = eligible[:selection.pool_days]
    if len(pool) < selection.min_days:
        raise InsufficientData(
            f"{spec.name}: {len(pool)} eligible {target_type} days before {event_day} "
            f"(need at least {selection.min_days})")
    selected = pool
    if selection.keep_highest is not None:
        ranked = sorted(enumerate(pool), key=lambda item: (-window_mean(item[1][1]), item[0]))
        selected = [day for _, day in ranked[:selection.keep_highest]]
        selected.sort(key=lambda item: item[0], reverse=True)

    def mean_of(key: timedelta) -> float:
        return sum(v[key] for _, v in selected) / len(selected)

    raw, applied = _adjustment(profile, rule, adj_utc,
                               [mean_of(wall_clock(u, tz) - midnight) for u in adj_utc])

    slots = []
    for s, off in zip(window_slots, window_offsets):
        unadjusted = mean_of(off)
        if rule.kind is AdjustmentKind.MULTIPLICATIVE:
            adjusted = unadjusted * applied
        elif rule.kind is AdjustmentKind.ADDITIVE:
            adjusted = unadjusted + applied
        else:
            adjusted = unadjusted
        slots.append(BaselineSlot(s, s + profile.slot, unadjusted, adjusted))

    return BaselineResult(
        spec_name=spec.name, event_day=event_day, slots=tuple(slots),
        adjustment_kind=rule.kind.value, adjustment=raw, adjustment_applied=applied,
        selected_days=tuple(d for d, _ in selected), pool=tuple(d for d, _ in pool),
        low_usage_days=tuple(low_usage), origin=origin)


def _adjustment(profile: LoadProfile, rule: AdjustmentRule, adj_utc: list[datetime],
                baseline_at_adj: list[float]) -> tuple[float, float]:
    """(raw, capped) adjustment from event-day actuals in the adjustment window."""
    if rule.kind is AdjustmentKind.NONE:
        return 1.0, 1.0
    missing = [u for u in adj_utc if u not in profile.values]
    if missing or not adj_utc:
        raise InsufficientData(
            f"no event-day load for the adjustment window slot(s) {[u.isoformat() for u in missing]}")
    actual = [profile.values[u] for u in adj_utc]
    if rule.kind is AdjustmentKind.MULTIPLICATIVE:
        base = sum(baseline_at_adj)
        raw = sum(actual) / base if base > 0 else 1.0
        low = 1.0 - rule.cap_down if rule.cap_down is not None else float("-inf")
        high = 1.0 + rule.cap_up if rule.cap_up is not None else float("inf")
        return raw, min(max(raw, low), high)
    raw = sum(a - b for a, b in zip(actual, baseline_at_adj)) / len(actual)
    mean_base = sum(baseline_at_adj) / len(baseline_at_adj)
    low = -rule.cap_down * mean_base if rule.cap_down is not None else float("-inf")
    high = rule.cap_up * mean_base if rule.cap_up is not None else float("inf")
    return raw, min(max(raw, low), high)
