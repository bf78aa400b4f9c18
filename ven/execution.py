"""Stored events -> the executable requests handed across the fleet port (pure).

Times are the executed ones (`ven.schedule`: start offset, cancellation cut);
an open-ended last interval is planned up to `Planning.open_end_horizon`
after its start (or after now, once running); ramp-up and recovery windows
become `Planning.ramp_steps` pieces each; priority and overlap arbitration
(rule 18, `ven.arbitration`) decides which parts of which event govern.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ven.arbitration import Contender, Piece, arbitrate
from ven.event import Event
from ven.port import EVENT, RAMP, RECOVERY, ExecutableRequest, RequestPiece
from ven.rules import StoredEvent
from ven.schedule import Timing, effective_start, shifted_intervals
from ven.translate import OPEN_END


@dataclass(frozen=True)
class Planning:
    ramp_steps: int = 4                                  # steps in a ramp-up or recovery window
    open_end_horizon: timedelta = timedelta(hours=24)   # how far an open-ended interval is planned ahead


def request_of(event: Event, pieces: tuple[RequestPiece, ...]) -> ExecutableRequest:
    return ExecutableRequest(event.event_id, event.modification_number, event.signal_name, event.signal_type,
                             tuple(sorted(pieces, key=lambda p: p.start)), units=event.units,
                             priority=event.priority, market_context=event.market_context)


def event_pieces(event: Event, timing: Timing, now: datetime, planning: Planning = Planning(),
                 steps: bool = True) -> tuple[RequestPiece, ...]:
    """The event's intervals at executed times, with (if `steps`) its ramp-up and recovery pieces."""
    intervals = shifted_intervals(event, timing)
    if not intervals:
        return ()
    horizon_end = max(now, intervals[0].start) + planning.open_end_horizon
    pieces = [RequestPiece(i.start, horizon_end if i.end == OPEN_END else i.end, i.value, EVENT, 1.0, i.uid,
                           open_ended=i.end == OPEN_END) for i in intervals]
    if not steps or planning.ramp_steps <= 0:
        return tuple(pieces)
    n = planning.ramp_steps
    first, last = pieces[0], pieces[-1]
    ramp, recovery = event.ramp_up, event.recovery
    if ramp and ramp.total_seconds() > 0:        # from the baseline toward the first interval's target
        for i in range(n):
            start = first.start - ramp + ramp * i / n
            pieces.append(RequestPiece(start, start + ramp / n, first.value, RAMP, (i + 1) / (n + 1), first.uid))
    if recovery and recovery.total_seconds() > 0 and not last.open_ended:   # back toward the baseline
        for i in range(n):
            start = last.end + recovery * i / n
            pieces.append(RequestPiece(start, start + recovery / n, last.value, RECOVERY, 1 - (i + 1) / (n + 1),
                                       last.uid))
    return tuple(pieces)


def assessment_request(event: Event, timing: Timing, now: datetime, planning: Planning = Planning(),
                       remaining_only: bool = False) -> ExecutableRequest:
    """What the fleet is asked about when deciding (the whole event) or re-evaluating (what is left)."""
    pieces = event_pieces(event, timing, now, planning, steps=False)
    if remaining_only:
        pieces = tuple(p for p in pieces if p.open_ended or p.end > now)
    return request_of(event, pieces)


def executable_requests(state: dict[str, StoredEvent], now: datetime,
                        planning: Planning = Planning()) -> dict[str, ExecutableRequest]:
    """Every executable event's request after arbitration; events governing nothing are left out."""
    contenders = []
    for event_id, stored in state.items():
        if not stored.executable:
            continue
        pieces = event_pieces(stored.event, stored.timing, now, planning)
        if pieces:
            contenders.append(Contender(event_id, stored.event.priority,
                                        (effective_start(stored.event, stored.timing), stored.received_at, event_id),
                                        tuple(Piece(p.start, p.end, p) for p in pieces)))
    governed = arbitrate(contenders)
    out = {}
    for event_id, kept in governed.items():
        if kept:
            out[event_id] = request_of(state[event_id].event,
                                       tuple(replace(p.payload, start=p.start, end=p.end) for p in kept))
    return out
