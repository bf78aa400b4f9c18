"""Resolve what an event asked into a per-interval fleet import ceiling (pure).

A commitment is kept as the event asked it (setpoint, delta, level); this
module turns it into the allocator's target: the most the fleet may import in
each interval, kW, negative = export asked.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aggregator.config import ProgramSettings
from ven.event import Event


class UnsupportedSignal(ValueError):
    """The program settings do not say how to act on this signal."""


@dataclass(frozen=True)
class CommittedInterval:
    start: datetime
    end: datetime
    requested: float          # what the VTN asked, in the signal's units (NaN for ramp/recovery steps)
    import_ceiling_kw: float  # fleet import ceiling; negative = export; NaN = no commitment
    kind: str = "event"       # event | ramp | recovery

    @property
    def export_kw(self) -> float:
        """The export this interval commits to (0 if it asks for no export)."""
        return max(0.0, -self.import_ceiling_kw)


def _export_asked(value: float, program: ProgramSettings) -> float:
    """Signed value from the VTN -> export asked in kW (positive = export)."""
    return value if program.export_sign == "positive" else -value


def resolve_commitment(event: Event, program: ProgramSettings, baseline_kw: float = 0.0) -> list[CommittedInterval]:
    """Per-interval import ceilings. `baseline_kw` is the fleet's load without the
    event (needed for `delta` signals)."""
    out = []
    for interval in event.intervals:
        value = interval.value
        if event.signal_name == "LOAD_DISPATCH" and event.signal_type == "setpoint":
            ceiling = -_export_asked(value, program)
        elif event.signal_name == "LOAD_DISPATCH" and event.signal_type == "delta":
            # A delta is a change from the baseline: export-sign "positive" means
            # a positive value asks for that much less load.
            ceiling = baseline_kw - _export_asked(value, program)
        elif event.signal_name == "SIMPLE" and event.signal_type == "level":
            level = int(round(value))
            if level not in (0, 1, 2, 3):
                raise UnsupportedSignal(f"event {event.event_id}: SIMPLE level {value} is not 0–3")
            ceiling = float("nan") if level == 0 else -program.simple_level_export_kw[str(level)]
        else:
            raise UnsupportedSignal(
                f"event {event.event_id}: signal {event.signal_name}/{event.signal_type} is not mapped "
                "by the program settings")
        out.append(CommittedInterval(interval.start, interval.end, value, ceiling))
    return out
