"""Payment rules on top of settled performance. Pure.

* ``capacity_payment`` — rate ($/kW) × committed kW × performance factor,
  where the factor is a piecewise-linear function of the performance ratio
  (``PerformanceFactor``; steps are written as two points at the same x).
* ``connected_solutions_season`` — Massachusetts ConnectedSolutions:
  $/kW-summer × the average kW delivered over *all* called events; an event
  missed or opted out counts 0 kW, a partially delivered event counts its
  delivered energy over its whole duration (pro-rated), negative delivery
  counts 0.
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PerformanceFactor:
    """Piecewise-linear factor(ratio) through ``points`` (x ascending), flat
    beyond the ends. At a repeated x (a step) the right-hand value applies."""
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a performance factor needs at least one point")
        xs = [x for x, _ in self.points]
        if xs != sorted(xs):
            raise ValueError("performance factor points must have ascending x")

    def __call__(self, ratio: float) -> float:
        xs = [x for x, _ in self.points]
        i = bisect_right(xs, ratio)
        if i == 0:
            return self.points[0][1]
        if i == len(xs):
            return self.points[-1][1]
        (x0, y0), (x1, y1) = self.points[i - 1], self.points[i]
        return y0 + (ratio - x0) * (y1 - y0) / (x1 - x0)


# Nothing below 50 % performance, linear from 0.5 at 50 % to 1.0 at 100 %, no
# bonus above 100 %. A program's own table replaces it.
DEFAULT_FACTOR = PerformanceFactor(((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 1.0)))


@dataclass(frozen=True)
class CapacityPayment:
    committed_kw: float
    performance_ratio: float
    factor: float
    rate_per_kw: float
    amount: float


def capacity_payment(committed_kw: float, performance_ratio: float | None, rate_per_kw: float,
                     factor: PerformanceFactor = DEFAULT_FACTOR) -> CapacityPayment:
    """Capacity payment for one period; no ratio (nothing committed) pays 0."""
    ratio = performance_ratio if performance_ratio is not None else 0.0
    f = factor(ratio) if committed_kw > 0 else 0.0
    return CapacityPayment(committed_kw, ratio, f, rate_per_kw, rate_per_kw * committed_kw * f)


@dataclass(frozen=True)
class EventParticipation:
    """One called event as ConnectedSolutions counts it."""
    event_id: str
    hours: float                    # the event's full duration
    delivered_kwh: float            # delivered over the event (may be partial)
    opted_out: bool = False
    missed: bool = False            # e.g. not dispatched / no data

    @property
    def credited_kw(self) -> float:
        if self.opted_out or self.missed or self.hours <= 0:
            return 0.0
        return max(0.0, self.delivered_kwh / self.hours)


@dataclass(frozen=True)
class SeasonResult:
    events: tuple[tuple[str, float], ...]   # (event_id, credited kW)
    average_kw: float
    rate_per_kw_season: float
    payment: float


CONNECTED_SOLUTIONS_RESIDENTIAL_RATE = 275.0   # $/kW-summer, 2025 (REFERENCE §5)


def connected_solutions_season(events: Iterable[EventParticipation],
                               rate_per_kw_season: float = CONNECTED_SOLUTIONS_RESIDENTIAL_RATE
                               ) -> SeasonResult:
    rows: Sequence[EventParticipation] = list(events)
    credited = tuple((e.event_id, e.credited_kw) for e in rows)
    average = sum(kw for _, kw in credited) / len(credited) if credited else 0.0
    return SeasonResult(credited, average, rate_per_kw_season, average * rate_per_kw_season)
