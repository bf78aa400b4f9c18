"""The VEN's event engine: the stored events, the rules, and the application's sink.

On each distribute it applies `ven.rules.apply_distribute` to the stored state,
persists what changed in one transaction, logs each change with its full
schedule and hands the new state to the sink (the aggregator's intake), which
only records and commits: dispatch runs in the dispatcher's own loop. It
never raises: an error becomes an optOut for the events concerned.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from ven.event import Event
from ven.rules import Change, Decision, EventResponse, Identity, StoredEvent, apply_distribute, opt_change
from ven.schedule import shifted_intervals
from ven.store import EventStore
from ven.translate import OPEN_END

log = logging.getLogger(__name__)


class EventSink(Protocol):
    def decide(self, event: Event) -> Decision: ...
    def apply(self, state: dict[str, StoredEvent], changed: set[str]) -> None: ...
    def reevaluate(self, stored: StoredEvent, now: datetime) -> Decision | None: ...


def describe(stored: StoredEvent, now: datetime) -> str:
    """One operator-readable line per event plus one per interval (absolute, executed times)."""
    event, timing = stored.event, stored.timing
    head = (f"event {event.event_id} mod {event.modification_number} status {event.status} "
            f"(now {stored.status(now)}) {stored.opt_state} [{stored.response_code}] "
            f"{event.signal_name}/{event.signal_type} priority {event.priority} "
            f"market {event.market_context or '-'}{' TEST' if event.test_event else ''} "
            f"start offset {timing.start_offset.total_seconds():.1f} s; {stored.reason}")
    lines = [head]
    for interval in shifted_intervals(event, timing):
        end = "open" if interval.end == OPEN_END else interval.end.isoformat()
        lines.append(f"  interval {interval.uid}: {interval.start.isoformat()} -> {end} value {interval.value:g}"
                     f"{' ' + event.units if event.units else ''}")
    return "\n".join(lines)


class EventEngine:
    def __init__(self, sink: EventSink, identity: Identity, clock: Callable[[], datetime],
                 store: EventStore | None = None, rng: random.Random | None = None):
        self.sink = sink
        self.identity = identity
        self.clock = clock
        self.store = store
        self.rng = rng or random.Random()
        self.state: dict[str, StoredEvent] = store.load() if store is not None else {}
        self.history: list[Change] = []
        if self.state:
            log.info("restored %d events from the store", len(self.state))
            try:
                self.sink.apply(dict(self.state), set(self.state))
            except Exception:
                log.exception("could not restore the commitments of the stored events")

    def on_distribute(self, request_id: str, raw_events: list[dict]) -> list[EventResponse]:
        now = self.clock()
        outcome = apply_distribute(self.state, request_id, raw_events, self.identity, now, self.rng,
                                   self.sink.decide)
        changed = {eid for eid, stored in outcome.state.items() if stored is not self.state.get(eid)}
        if self.store is not None and changed:
            # Persist before answering: what we tell the VTN is what a restart will find.
            self.store.save([outcome.state[eid] for eid in changed if eid in outcome.state])
        self.state = outcome.state
        self.history.extend(outcome.changes)
        for change in outcome.changes:
            stored = self.state.get(change.event_id)
            if stored is not None and change.kind != "unchanged":
                log.info("%s: %s\n%s", change.kind, change.detail, describe(stored, now))
            elif change.kind in ("lower-mod", "malformed", "unknown-cancelled"):
                log.warning("event %s: %s: %s", change.event_id, change.kind, change.detail)
        if changed:
            self.sink.apply(dict(self.state), changed)
        return outcome.responses

    def opt_changes(self) -> list[EventResponse]:
        """Re-check opted-in events against the fleet; return the later opt changes (rule 42)."""
        now = self.clock()
        responses, updated = [], []
        for event_id, stored in list(self.state.items()):
            if stored.cancelled or stored.response_code != 200 or stored.status(now) in ("completed", "recovery"):
                continue
            try:
                decision = self.sink.reevaluate(stored, now)
            except Exception:
                log.exception("re-evaluating %s failed; keeping its opt state", event_id)
                continue
            if decision is None or decision.opt == stored.opt_state:
                continue
            new, response = opt_change(stored, decision.opt, decision.reason, now)
            self.state[event_id] = new
            updated.append(new)
            responses.append(response)
            log.warning("opt change for %s: %s -> %s (%s), answered with requestID %s", event_id,
                        stored.opt_state, decision.opt, decision.reason, stored.request_id)
        if updated:
            if self.store is not None:
                self.store.save(updated)
            self.sink.apply(dict(self.state), {s.event.event_id for s in updated})
        return responses
