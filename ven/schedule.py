"""When a stored event really runs (pure): start randomization, cancellation
randomization, ramp-up and recovery windows, and the status at a given time.

The VTN sends nominal times. The VEN shifts the whole event by the start
offset it drew once (rule 30, kept across modifications), truncates a
cancelled event at `cancelled_at + end_offset` (rule 65; 0 if it had not
started) and adds the ramp-up window before the (shifted) start and the
recovery window after the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ven.event import Event, EventInterval
from ven.translate import OPEN_END


@dataclass(frozen=True)
class Timing:
    """What the VEN decided about an event's timing; persisted with it."""
    start_offset: timedelta = timedelta(0)           # U(0, startafter), drawn once per event
    cancelled_at: datetime | None = None             # when the VEN learned of a cancellation
    end_offset: timedelta = timedelta(0)             # U(0, startafter) for an active cancelled event


def shifted_intervals(event: Event, timing: Timing) -> tuple[EventInterval, ...]:
    """The event's intervals at the times the VEN executes them (absolute, UTC)."""
    offset = timing.start_offset
    out = []
    end_cut = effective_end_cut(event, timing)
    for interval in event.intervals:
        start = interval.start + offset
        end = interval.end if interval.end == OPEN_END else interval.end + offset
        if end_cut is not None:
            if start >= end_cut:
                break
            end = min(end, end_cut)
        out.append(EventInterval(interval.uid, start, end, interval.value))
    return tuple(out)


def effective_end_cut(event: Event, timing: Timing) -> datetime | None:
    """Where a cancellation cuts the event (None if not cancelled)."""
    if timing.cancelled_at is None:
        return None
    return timing.cancelled_at + timing.end_offset


def effective_start(event: Event, timing: Timing) -> datetime:
    return event.start + timing.start_offset


def effective_end(event: Event, timing: Timing) -> datetime:
    intervals = shifted_intervals(event, timing)
    if not intervals:
        return min(effective_start(event, timing), effective_end_cut(event, timing) or OPEN_END)
    return intervals[-1].end


def status_at(event: Event, timing: Timing, now: datetime) -> str:
    """far | near (ramp-up window) | active | recovery | completed | cancelled (before it ran)."""
    start = effective_start(event, timing)
    end = effective_end(event, timing)
    if timing.cancelled_at is not None and end <= start:
        return "cancelled"
    ramp = event.ramp_up or timedelta(0)
    recovery = event.recovery or timedelta(0)
    if now < start - ramp:
        return "far"
    if now < start:
        return "near"
    if now < end:
        return "active"
    if end != OPEN_END and now < end + recovery:
        return "recovery"
    return "cancelled" if timing.cancelled_at is not None else "completed"


def is_running(event: Event, timing: Timing, now: datetime) -> bool:
    """Has the event started (its shifted start passed) — used to randomize a cancellation's end."""
    return effective_start(event, timing) <= now
