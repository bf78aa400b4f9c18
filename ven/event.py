"""The plain domain `Event` the VEN hands to the aggregator.

Pure data, no openleadr objects: the aggregator never needs to know OpenADR.
Times are timezone-aware UTC; values are what the VTN asked, in the units of
the signal (kW for power signals after scaling, a level for SIMPLE).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class EventInterval:
    uid: int
    start: datetime
    end: datetime  # equal to `start` + duration; open-ended intervals use `datetime.max` (UTC)
    value: float   # requested value: kW (already scaled) for power signals, level for SIMPLE

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True)
class Event:
    event_id: str
    modification_number: int
    status: str                   # far | near | active | completed | cancelled
    signal_name: str              # LOAD_DISPATCH | SIMPLE | ...
    signal_type: str              # setpoint | delta | level | ...
    intervals: tuple[EventInterval, ...]
    market_context: str = ""
    priority: int = 0             # 1 is highest, 0 means none (lowest)
    test_event: bool = False
    response_required: str = "always"
    request_id: str | None = None
    units: str = ""               # e.g. "kW" after scaling; "" for levels
    ramp_up: timedelta | None = None
    recovery: timedelta | None = None
    start_after: timedelta | None = None
    targets: tuple[dict, ...] = field(default=())

    @property
    def start(self) -> datetime:
        return self.intervals[0].start

    @property
    def end(self) -> datetime:
        return self.intervals[-1].end

    def interval_at(self, t: datetime) -> EventInterval | None:
        for interval in self.intervals:
            if interval.start <= t < interval.end:
                return interval
        return None
