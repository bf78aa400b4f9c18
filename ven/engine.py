"""The VEN's event engine: the stored events, the rules, and the fleet port.

On each distribute it applies `ven.rules.apply_distribute` to the stored state
(asking the fleet, through `ven.port.FleetPort.assess`, about each new or
modified event at its executed times), persists what changed in one
transaction, logs each change with its full schedule and hands the fleet the
executable requests (`ven.execution`: arbitration applied, open ends and ramps
resolved). Dispatch runs in the fleet's own loop.

It never raises. A failed decision becomes an optOut. A write that fails
(the event store, or the fleet recording a request: `WriteFailed`, after
their own retries) is never swallowed: the event is answered optOut with the
reason, logged, and counted in `v2x_database_errors_total`; when the failure
comes outside a distribute, the optOut goes to the VTN as a later opt change.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from ven.event import Event
from ven.execution import Planning, assessment_request, executable_requests
from ven.port import FleetPort, WriteFailed
from ven.rules import (OK, SIGNAL_NOT_SUPPORTED, Change, Decision, EventResponse, Identity, StoredEvent,
                       apply_distribute, opt_change)
from ven.schedule import Timing, shifted_intervals
from ven.store import EventStore
from ven.translate import OPEN_END

log = logging.getLogger(__name__)

TEST_EVENT_REASON = "test event: answered, no energy moved"


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
    def __init__(self, port: FleetPort, identity: Identity, clock: Callable[[], datetime],
                 store: EventStore | None = None, rng: random.Random | None = None,
                 planning: Planning = Planning(), metrics=None):
        self.port = port
        self.identity = identity
        self.clock = clock
        self.store = store
        self.rng = rng or random.Random()
        self.planning = planning
        self.metrics = metrics
        self.state: dict[str, StoredEvent] = store.load() if store is not None else {}
        self.history: list[Change] = []
        self._pending: list[EventResponse] = []    # opt changes to send with the next opt-change check
        if self.state:
            log.info("restored %d events from the store", len(self.state))
            self._execute(set(self.state), answered={})

    # -- the fleet's decision -------------------------------------------------------
    def decide(self, event: Event, timing: Timing) -> Decision:
        request = assessment_request(event, timing, self.clock(), self.planning)
        assessment = self.port.assess(request, self.clock())
        if not assessment.supported:
            return Decision("optOut", SIGNAL_NOT_SUPPORTED, assessment.reason)
        if event.test_event:
            return Decision("optIn", OK, TEST_EVENT_REASON)                       # rule 6
        return Decision(assessment.opt, OK, assessment.reason)

    def reevaluate(self, stored: StoredEvent, now: datetime) -> Decision | None:
        """An opted-in event the fleet can no longer serve -> optOut (rule 42)."""
        if not stored.executable:
            return None
        request = assessment_request(stored.event, stored.timing, now, self.planning, remaining_only=True)
        if not request.pieces:
            return None
        assessment = self.port.assess(request, now)
        if assessment.supported and assessment.opt == "optOut":
            return Decision("optOut", OK, f"fleet lost capability: {assessment.reason}")
        return None

    # -- OpenADR ------------------------------------------------------------------------
    def on_distribute(self, request_id: str, raw_events: list[dict]) -> list[EventResponse]:
        now = self.clock()
        outcome = apply_distribute(self.state, request_id, raw_events, self.identity, now, self.rng, self.decide)
        changed = {eid for eid, stored in outcome.state.items() if stored is not self.state.get(eid)}
        self.state = outcome.state
        responses = {r.event_id: r for r in outcome.responses}
        if self.store is not None and changed:
            # Persist before answering: what we tell the VTN is what a restart will find.
            try:
                self.store.save([self.state[eid] for eid in changed if eid in self.state])
            except Exception as err:
                self._write_failed(changed, f"could not store the event: {err.__class__.__name__}: {err}",
                                   responses, database=True)
        self.history.extend(outcome.changes)
        for change in outcome.changes:
            stored = self.state.get(change.event_id)
            if stored is not None and change.kind != "unchanged":
                log.info("%s: %s\n%s", change.kind, change.detail, describe(stored, now))
            elif change.kind in ("lower-mod", "malformed", "unknown-cancelled"):
                log.warning("event %s: %s: %s", change.event_id, change.kind, change.detail)
        if changed:
            self._execute(changed, responses)
        return [responses.get(r.event_id, r) for r in outcome.responses]

    def opt_changes(self) -> list[EventResponse]:
        """Re-check opted-in events against the fleet; return the later opt changes (rule 42),
        with those left by a failed write first."""
        now = self.clock()
        responses, self._pending = self._pending, []
        updated = []
        for event_id, stored in list(self.state.items()):
            if stored.cancelled or stored.response_code != OK or stored.status(now) in ("completed", "recovery"):
                continue
            try:
                decision = self.reevaluate(stored, now)
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
                try:
                    self.store.save(updated)
                except Exception:
                    log.exception("could not store the opt change of %s", [s.event.event_id for s in updated])
                    self._count_database_error()
            self._execute({s.event.event_id for s in updated}, answered=None)
        responses.extend(self._pending)
        self._pending = []
        return responses

    # -- handing requests to the fleet ----------------------------------------------------
    def _execute(self, changed: set[str], answered: dict[str, EventResponse] | None) -> None:
        """Hand the fleet every executable request (and withdraw the rest). An event whose
        request cannot be recorded is opted out; the others are arbitrated again without it.
        `answered`: this distribute's responses (updated in place), or None outside one."""
        for _ in range(len(self.state) + 1):
            requests = executable_requests(self.state, self.clock(), self.planning)
            failed: dict[str, str] = {}
            database = False
            for event_id in self.state:
                request = requests.get(event_id)
                try:
                    if request is not None:
                        self.port.execute(request)
                    else:
                        self.port.withdraw(event_id)
                except WriteFailed as err:
                    database = True
                    failed[event_id] = f"could not record the commitment: {err}"
                except Exception as err:
                    failed[event_id] = f"could not hand the event to the fleet: {err.__class__.__name__}: {err}"
            if not failed:
                return
            opted_out = {eid for eid in failed if self.state[eid].executable}
            for event_id, reason in failed.items():
                log.error("event %s: %s", event_id, reason)
            if database:
                self._count_database_error()
            if not opted_out:
                return       # only withdrawals failed: nothing more to opt out of
            for event_id in opted_out:
                self._opt_out(event_id, failed[event_id], answered)
            if self.store is not None:
                try:
                    self.store.save([self.state[eid] for eid in opted_out])
                except Exception:
                    log.exception("could not store the optOut of %s", sorted(opted_out))
                    self._count_database_error()
        log.error("giving up re-arbitrating after repeated failures")

    def _write_failed(self, event_ids: set[str], reason: str, answered: dict[str, EventResponse],
                      database: bool) -> None:
        log.error("%s (events %s)", reason, ", ".join(sorted(event_ids)))
        if database:
            self._count_database_error()
        for event_id in event_ids:   # a cancellation is still acknowledged (and stops in memory)
            stored = self.state.get(event_id)
            if stored is not None and stored.executable and not stored.cancelled:
                self._opt_out(event_id, reason, answered)

    def _opt_out(self, event_id: str, reason: str, answered: dict[str, EventResponse] | None) -> None:
        stored = self.state[event_id]
        new, change = opt_change(stored, "optOut", reason, self.clock())
        self.state[event_id] = new
        if answered is not None and event_id in answered:
            answered[event_id] = replace(answered[event_id], opt_type="optOut", response_code=OK,
                                         response_description="OK")
        elif answered is None or stored.event.response_required != "never":
            self._pending.append(change)

    def _count_database_error(self) -> None:
        if self.metrics is not None:
            self.metrics.database_errors.inc()
