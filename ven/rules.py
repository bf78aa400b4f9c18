"""The OpenADR 2.0b event rules, as a pure function of (stored state, one
oadrDistributeEvent) -> (new state, the oadrCreatedEvent responses, what changed).

No I/O, no clock, no global random: `now`, a `random.Random` and a `decide`
callback (the fleet's opt decision for an event that passed every check) are
passed in. Rule numbers as quoted in public conformance test suites:

- 2/8/47 interval uids, durations, open-ended: `ven.translate` (malformed -> 454, optOut)
- 21    an unknown cancelled event is acknowledged, not an error
- 22/48 target and market-context checks -> optOut with 462 / 453
- 30/65 start offset U(0, startafter) drawn once and kept across modifications;
        an active cancelled event ends at cancel + U(0, startafter)
- 36/59/60 cancellation acknowledged with optIn; the event stops being executed
- 57/58 higher modificationNumber replaces, equal repeats the stored answer,
        lower is an error (450) in any state and changes nothing
- 61    an event missing from a full distribute (also an empty one) is cancelled
- 12/62/64 responseRequired=always -> one eventResponse per such event, never -> none

`decide(event, timing)` gets the event as the VTN sent it and the timing the
VEN decided for it (the start offset drawn once), so the fleet is asked about
the executed times.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from ven.event import Event
from ven.schedule import Timing, is_running, status_at
from ven.translate import MalformedEvent, translate_event

OK = 200
OUT_OF_SEQUENCE = 450     # lower modificationNumber than the one we hold
NOT_RECOGNIZED = 453      # market context we are not enrolled in
INVALID_DATA = 454        # malformed event (uids, durations, payloads)
SIGNAL_NOT_SUPPORTED = 460
TARGET_MISMATCH = 462


@dataclass(frozen=True)
class Decision:
    opt: str           # optIn | optOut
    code: int = OK
    reason: str = ""


Decide = Callable[[Event, Timing], Decision]


@dataclass(frozen=True)
class Identity:
    """Who this VEN is, for target matching (rule 22), and what it is enrolled in (rule 48)."""
    ven_id: str | None = None
    resource_ids: frozenset[str] = frozenset()
    party_ids: frozenset[str] = frozenset()
    group_ids: frozenset[str] = frozenset()
    market_contexts: frozenset[str] = frozenset()   # empty: accept any market context


@dataclass(frozen=True)
class StoredEvent:
    event: Event                 # as last accepted (nominal times from the VTN)
    request_id: str              # the requestID of the distribute that brought this version (rule 42)
    opt_state: str               # optIn | optOut
    response_code: int
    reason: str
    timing: Timing
    received_at: datetime
    updated_at: datetime

    @property
    def cancelled(self) -> bool:
        return self.timing.cancelled_at is not None

    @property
    def executable(self) -> bool:
        """Opted in with a 200 and not a test event: the fleet acts on it."""
        return self.opt_state == "optIn" and self.response_code == OK and not self.event.test_event

    def status(self, now: datetime) -> str:
        return status_at(self.event, self.timing, now)


@dataclass(frozen=True)
class EventResponse:
    event_id: str
    modification_number: int
    request_id: str
    response_code: int
    response_description: str
    opt_type: str

    def as_openleadr(self) -> dict:
        return {"event_id": self.event_id, "modification_number": self.modification_number,
                "request_id": self.request_id, "response_code": self.response_code,
                "response_description": self.response_description, "opt_type": self.opt_type}


@dataclass(frozen=True)
class Change:
    event_id: str
    kind: str      # new | modified | unchanged | cancelled | implied-cancel | unknown-cancelled | lower-mod | malformed | completed
    detail: str = ""


@dataclass
class Outcome:
    state: dict[str, StoredEvent]
    responses: list[EventResponse] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    def changed_ids(self) -> set[str]:
        return {c.event_id for c in self.changes if c.kind not in ("unchanged", "lower-mod", "malformed",
                                                                    "unknown-cancelled")}


def targets_match(targets: tuple[dict, ...] | list[dict], identity: Identity) -> bool:
    """No target elements means "you" (rule 22); otherwise any matching element is enough."""
    if not targets:
        return True
    for target in targets:
        for key, value in target.items():
            if key == "ven_id" and value == identity.ven_id:
                return True
            if key == "resource_id" and value in identity.resource_ids:
                return True
            if key == "party_id" and value in identity.party_ids:
                return True
            if key == "group_id" and value in identity.group_ids:
                return True
    return False


def _draw(rng: random.Random, upper: timedelta | None) -> timedelta:
    if not upper or upper.total_seconds() <= 0:
        return timedelta(0)
    return timedelta(seconds=rng.uniform(0, upper.total_seconds()))


def _cancel(stored: StoredEvent, now: datetime, rng: random.Random) -> StoredEvent:
    timing = stored.timing
    end_offset = _draw(rng, stored.event.start_after) if is_running(stored.event, timing, now) else timedelta(0)
    return replace(stored, event=replace(stored.event, status="cancelled"), updated_at=now,
                   timing=replace(timing, cancelled_at=now, end_offset=end_offset))


def apply_distribute(state: dict[str, StoredEvent], request_id: str, raw_events: list[dict], identity: Identity,
                     now: datetime, rng: random.Random, decide: Decide) -> Outcome:
    """Apply one full oadrDistributeEvent to the stored events."""
    new_state = dict(state)
    out = Outcome(new_state)
    seen: set[str] = set()

    def respond(event_id, mod, code, description, opt, required):
        if required != "never":
            out.responses.append(EventResponse(event_id, mod, request_id, code, description, opt))

    for raw in raw_events:
        descriptor = raw.get("event_descriptor") or {}
        event_id = str(descriptor.get("event_id") or "?")
        required = str(raw.get("response_required") or "always")
        try:
            mod = int(descriptor.get("modification_number") or 0)
        except (TypeError, ValueError):
            mod = -1
        seen.add(event_id)
        known = state.get(event_id)
        status = descriptor.get("event_status")

        if known is not None and mod < known.event.modification_number:   # rule 58, in any state
            detail = f"modificationNumber {mod} is lower than the {known.event.modification_number} we hold"
            out.changes.append(Change(event_id, "lower-mod", detail))
            respond(event_id, mod, OUT_OF_SEQUENCE, detail, known.opt_state, required)
            continue

        if status == "cancelled":
            if known is None:                                              # rule 21
                out.changes.append(Change(event_id, "unknown-cancelled", "cancellation of an event we never had"))
                respond(event_id, mod, OK, "OK", "optIn", required)
            elif known.cancelled:
                out.changes.append(Change(event_id, "unchanged", "already cancelled"))
                respond(event_id, mod, OK, "OK", "optIn", required)
            else:                                                          # rules 36/59/60/65
                cancelled = _cancel(known, now, rng)
                cancelled = replace(cancelled, event=replace(cancelled.event, modification_number=mod),
                                    opt_state="optIn", response_code=OK, reason="cancelled by the VTN; acknowledged")
                new_state[event_id] = cancelled
                out.changes.append(Change(event_id, "cancelled",
                                          f"ends at cancel + {cancelled.timing.end_offset.total_seconds():.1f} s"))
                respond(event_id, mod, OK, "OK", "optIn", required)
            continue

        if known is not None and mod == known.event.modification_number:  # rule 57: same version again
            if status and status != known.event.status and not known.cancelled:
                new_state[event_id] = replace(known, event=replace(known.event, status=str(status)), updated_at=now)
            out.changes.append(Change(event_id, "unchanged"))
            respond(event_id, mod, known.response_code,
                    "OK" if known.response_code == OK else known.reason, known.opt_state, required)
            continue

        try:
            event = translate_event(raw, request_id=request_id)
        except MalformedEvent as err:
            out.changes.append(Change(event_id, "malformed", str(err)))
            respond(event_id, mod, INVALID_DATA, str(err)[:200], known.opt_state if known else "optOut", required)
            continue

        if known is not None:
            timing = known.timing                                          # rule 30: keep the offset
            kind = "modified"
            received_at = known.received_at
        else:
            timing = Timing(start_offset=_draw(rng, event.start_after))
            kind = "new"
            received_at = now

        if not targets_match(event.targets, identity):
            decision = Decision("optOut", TARGET_MISMATCH, "event is not targeted at this VEN")
        elif identity.market_contexts and event.market_context not in identity.market_contexts:
            decision = Decision("optOut", NOT_RECOGNIZED,
                                f"market context {event.market_context!r} is not a program we are enrolled in")
        else:
            try:
                decision = decide(event, timing)
            except Exception as err:  # the decision must never break the answer to the VTN
                decision = Decision("optOut", OK, f"opt decision failed: {err.__class__.__name__}: {err}")
        new_state[event_id] = StoredEvent(event, request_id, decision.opt, decision.code, decision.reason, timing,
                                          received_at, now)
        out.changes.append(Change(event_id, kind, f"{decision.opt} ({decision.code}): {decision.reason}"))
        respond(event_id, mod, decision.code, "OK" if decision.code == OK else decision.reason[:200],
                decision.opt, required)

    for event_id, stored in state.items():                                # rule 61: implied cancellation
        if event_id in seen or stored.cancelled:
            continue
        if stored.status(now) == "completed":
            continue
        new_state[event_id] = replace(_cancel(stored, now, rng), reason="missing from the VTN's distribute: cancelled")
        out.changes.append(Change(event_id, "implied-cancel", "missing from a full distribute"))
    return out


def opt_change(stored: StoredEvent, opt: str, reason: str, now: datetime) -> tuple[StoredEvent, EventResponse]:
    """A later opt change for a stored event, answered with its original requestID (rule 42)."""
    updated = replace(stored, opt_state=opt, reason=reason, updated_at=now)
    return updated, EventResponse(stored.event.event_id, stored.event.modification_number, stored.request_id,
                                  OK, "OK", opt)
