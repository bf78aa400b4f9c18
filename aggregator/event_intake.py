"""What happens when the VEN hands us an event: decide, record, commit.

Called from the VEN's handler, so it must be quick and must not do the
dispatching itself: it records the event and its intervals, resolves the
commitment, decides optIn/optOut honestly (against the fleet's closed-form
export bound) and gives the commitment to the dispatcher, whose loop moves
the energy.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, delete

from aggregator.commitment import CommittedInterval, UnsupportedSignal, resolve_commitment
from aggregator.config import ProgramSettings
from aggregator.dispatch.dispatcher import Dispatcher
from aggregator.store.models import EventIntervalRecord, EventRecord
from ven.event import Event
from ven.translate import OPEN_END

log = logging.getLogger(__name__)


class EventIntake:
    def __init__(self, dispatcher: Dispatcher, engine, program: ProgramSettings, clock: Callable[[], datetime],
                 metrics=None):
        self.dispatcher = dispatcher
        self.engine = engine
        self.program = program
        self.clock = clock
        self.metrics = metrics
        self.decisions: dict[str, tuple[str, str]] = {}   # event_id -> (opt, reason)

    async def __call__(self, event: Event) -> str:
        now = self.clock()
        if event.status == "cancelled":
            self.dispatcher.withdraw(event.event_id)
            self._record(event, None, "optIn", "cancelled by the VTN; acknowledged")
            return "optIn"
        try:
            committed = resolve_commitment(event, self.program, baseline_kw=self._baseline_kw(now))
        except UnsupportedSignal as err:
            return self._decide(event, None, "optOut", str(err))
        if event.test_event:
            # Rule 6: answer a test event, move no energy.
            return self._decide(event, committed, "optIn", "test event: answered, no energy moved")
        opt, reason = self._opt_decision(event, committed, now)
        if opt == "optIn":
            self.dispatcher.commit(event.event_id, committed)
        else:
            self.dispatcher.withdraw(event.event_id)
        return self._decide(event, committed, opt, reason)

    def _baseline_kw(self, now: datetime) -> float:
        """Fleet load without the event: what it draws now (device baseline for delta signals)."""
        return self.dispatcher.status.fleet_power_kw

    def _opt_decision(self, event: Event, committed: list[CommittedInterval], now: datetime) -> tuple[str, str]:
        asked = np.array([c.export_kw for c in committed])
        if asked.sum() == 0:
            return "optIn", "asks for no export"
        finite = [c for c in committed if c.end != OPEN_END]
        durations = np.array([(c.end - c.start).total_seconds() / 3600 for c in finite] or [0.25])
        bound = self.dispatcher.export_bound_kw(now, durations)
        if len(bound) < len(asked):   # an open-ended last interval: assume the last bound holds
            bound = np.concatenate([bound, np.repeat(bound[-1:] if len(bound) else [0.0], len(asked) - len(bound))])
        covered = float(np.minimum(asked, bound).sum() / asked.sum())
        shortfall = float(np.maximum(0.0, asked - bound).max())
        if covered < self.program.min_coverage_to_opt_in:
            return "optOut", f"fleet can cover {covered:.0%} of the export asked (< {self.program.min_coverage_to_opt_in:.0%})"
        if shortfall > 0:
            return "optIn", f"best effort: fleet can cover {covered:.0%}, up to {shortfall:.1f} kW short in an interval"
        return "optIn", f"fleet can cover the export asked (bound covers {covered:.0%})"

    def _decide(self, event: Event, committed: list[CommittedInterval] | None, opt: str, reason: str) -> str:
        log.info("event %s (mod %d, %s/%s, %d intervals from %s): %s — %s", event.event_id,
                 event.modification_number, event.signal_name, event.signal_type, len(event.intervals),
                 event.start.isoformat(), opt, reason)
        self._record(event, committed, opt, reason)
        return opt

    def _record(self, event: Event, committed: list[CommittedInterval] | None, opt: str, reason: str) -> None:
        self.decisions[event.event_id] = (opt, reason)
        try:
            with Session(self.engine) as db:
                record = db.get(EventRecord, event.event_id) or EventRecord(
                    event_id=event.event_id, received_at=self.clock(), modification_number=0, status="far",
                    signal_name=event.signal_name, signal_type=event.signal_type)
                record.modification_number = event.modification_number
                record.status = event.status
                record.signal_name, record.signal_type = event.signal_name, event.signal_type
                record.market_context, record.priority = event.market_context, event.priority
                record.test_event, record.opt_state = event.test_event, opt
                record.request_id, record.note = event.request_id, reason
                db.add(record)
                db.flush()   # the interval rows reference it
                if committed is not None:
                    db.exec(delete(EventIntervalRecord).where(EventIntervalRecord.event_id == event.event_id))
                    for interval, commitment in zip(event.intervals, committed):
                        ceiling = commitment.import_ceiling_kw
                        db.add(EventIntervalRecord(
                            event_id=event.event_id, uid=interval.uid, start=interval.start, end=interval.end,
                            requested=interval.value,
                            import_ceiling_kw=None if ceiling != ceiling or event.test_event else ceiling))
                db.commit()
        except SQLAlchemyError:
            log.exception("could not record event %s", event.event_id)
            if self.metrics is not None:
                self.metrics.database_errors.inc()
