"""What happens when the VEN hands us events: decide, record, commit.

The VEN's event engine (`ven.engine`) applies the OpenADR rules and calls
this sink, which must be quick and must not dispatch by itself:

- `decide(event)`: the honest opt decision for one event version, against the
  fleet's closed-form export bound (`Dispatcher.export_bound_kw`); signals the
  program settings do not map are an optOut with 460;
- `apply(state, changed)`: arbitrates priority and overlap between every
  executable event (rule 18), adds the ramp-up and recovery steps, gives the
  resulting commitments to the dispatcher (whose loop moves the energy) and
  records the changed events as EventRecord/EventIntervalRecord rows;
- `reevaluate(stored, now)`: whether an opted-in event can still be served
  (EVs left, chargers dropped); the engine sends the opt change (rule 42).

`__call__(event)` stays for callers that hand a single domain Event directly.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, delete

from aggregator.commitment import CommittedInterval, UnsupportedSignal, resolve_commitment
from aggregator.config import ProgramSettings
from aggregator.dispatch.dispatcher import Dispatcher
from aggregator.store.models import EventIntervalRecord, EventRecord
from ven.arbitration import Contender, Piece, arbitrate
from ven.event import Event
from ven.rules import SIGNAL_NOT_SUPPORTED, Decision, StoredEvent
from ven.schedule import effective_start, shifted_intervals
from ven.translate import OPEN_END

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignalMapping:
    """How signals beyond LOAD_DISPATCH and SIMPLE become fleet targets."""
    # ELECTRICITY_PRICE/price: at or above each price threshold, export this many kW (highest met wins).
    price_export_kw: tuple[tuple[float, float], ...] = ((0.30, 100.0), (0.50, 200.0))
    ramp_steps: int = 4                     # steps in a ramp-up or recovery window
    open_end_horizon: timedelta = timedelta(hours=24)   # how far an open-ended interval is committed ahead


class EventIntake:
    def __init__(self, dispatcher: Dispatcher, engine, program: ProgramSettings, clock: Callable[[], datetime],
                 metrics=None, signals: SignalMapping = SignalMapping()):
        self.dispatcher = dispatcher
        self.engine = engine
        self.program = program
        self.clock = clock
        self.metrics = metrics
        self.signals = signals
        self.decisions: dict[str, tuple[str, str]] = {}   # event_id -> (opt, reason)

    # -- the VEN engine's sink ------------------------------------------------------
    def decide(self, event: Event) -> Decision:
        now = self.clock()
        try:
            committed = self.resolve(event)
        except UnsupportedSignal as err:
            return Decision("optOut", SIGNAL_NOT_SUPPORTED, str(err))
        if event.test_event:
            return Decision("optIn", 200, "test event: answered, no energy moved")   # rule 6
        opt, reason = self._opt_decision(event, committed, now)
        return Decision(opt, 200, reason)

    def reevaluate(self, stored: StoredEvent, now: datetime) -> Decision | None:
        """An opted-in event the fleet can no longer serve (per the program's coverage rule) -> optOut."""
        if not stored.executable:
            return None
        event = replace(stored.event, intervals=shifted_intervals(stored.event, stored.timing))
        remaining = tuple(i for i in event.intervals if i.end > now)
        if not remaining:
            return None
        event = replace(event, intervals=remaining)
        try:
            committed = self.resolve(event)
        except UnsupportedSignal:
            return None
        opt, reason = self._opt_decision(event, committed, now)
        if opt == "optOut":
            return Decision("optOut", 200, f"fleet lost capability: {reason}")
        return None

    def apply(self, state: dict[str, StoredEvent], changed: set[str]) -> None:
        now = self.clock()
        contenders = []
        for event_id, stored in state.items():
            if not stored.executable:
                continue
            pieces = self._pieces(stored, now)
            if pieces:
                contenders.append(Contender(event_id, stored.event.priority,
                                            (effective_start(stored.event, stored.timing), stored.received_at,
                                             event_id), tuple(pieces)))
        governed = arbitrate(contenders)
        for event_id, stored in state.items():
            pieces = governed.get(event_id)
            if pieces:
                self.dispatcher.commit(event_id, [replace(p.payload, start=p.start, end=p.end) for p in pieces])
            else:
                self.dispatcher.withdraw(event_id)
        for event_id in changed:
            stored = state.get(event_id)
            if stored is None:
                continue
            try:
                committed = self.resolve(replace(stored.event, intervals=shifted_intervals(stored.event,
                                                                                          stored.timing)))
            except UnsupportedSignal:
                committed = None
            self.decisions[event_id] = (stored.opt_state, stored.reason)
            self._record(stored.event, committed, stored.opt_state, stored.reason, stored.request_id,
                         shifted_intervals(stored.event, stored.timing))

    def _pieces(self, stored: StoredEvent, now: datetime) -> list[Piece[CommittedInterval]]:
        """The event's commitments at executed times, with ramp-up and recovery steps around them."""
        intervals = shifted_intervals(stored.event, stored.timing)
        if not intervals:
            return []
        horizon_end = max(now, intervals[0].start) + self.signals.open_end_horizon
        intervals = tuple(replace(i, end=horizon_end) if i.end == OPEN_END else i for i in intervals)
        try:
            committed = self.resolve(replace(stored.event, intervals=intervals))
        except UnsupportedSignal:
            return []
        pieces = [Piece(c.start, c.end, c) for c in committed]
        base = self.dispatcher.status.fleet_power_kw
        steps = self.signals.ramp_steps
        first, last = committed[0], committed[-1]
        ramp, recovery = stored.event.ramp_up, stored.event.recovery
        if ramp and ramp.total_seconds() > 0 and first.import_ceiling_kw == first.import_ceiling_kw:
            for i in range(steps):   # from the load now toward the first interval's ceiling
                start = first.start - ramp + ramp * i / steps
                ceiling = base + (first.import_ceiling_kw - base) * (i + 1) / (steps + 1)
                pieces.append(Piece(start, start + ramp / steps,
                                    CommittedInterval(start, start + ramp / steps, float("nan"), ceiling)))
        if (recovery and recovery.total_seconds() > 0 and last.end != horizon_end
                and last.import_ceiling_kw == last.import_ceiling_kw):
            for i in range(steps):   # back from the last ceiling toward the load before the event
                start = last.end + recovery * i / steps
                ceiling = last.import_ceiling_kw + (base - last.import_ceiling_kw) * (i + 1) / (steps + 1)
                pieces.append(Piece(start, start + recovery / steps,
                                    CommittedInterval(start, start + recovery / steps, float("nan"), ceiling)))
        return pieces

    # -- signal mapping -------------------------------------------------------------
    def resolve(self, event: Event) -> list[CommittedInterval]:
        """Per-interval fleet import ceilings for every signal the program maps."""
        baseline = self._baseline_kw(self.clock())
        name, kind = event.signal_name, event.signal_type
        if name == "LOAD_CONTROL":
            out = []
            for interval in event.intervals:
                if kind == "x-loadControlSetpoint":
                    ceiling = interval.value if self.program.export_sign == "negative" else -interval.value
                elif kind == "x-loadControlCapacity":       # share of the normal load allowed (0-1)
                    ceiling = baseline * interval.value
                elif kind == "x-loadControlPercentOffset":  # percent less than the normal load
                    ceiling = baseline * (1 - interval.value / 100)
                else:
                    raise UnsupportedSignal(f"event {event.event_id}: LOAD_CONTROL/{kind} is not mapped")
                out.append(CommittedInterval(interval.start, interval.end, interval.value, ceiling))
            return out
        if name == "ELECTRICITY_PRICE" and kind in ("price", "priceRelative", "priceMultiplier"):
            if kind != "price":
                raise UnsupportedSignal(f"event {event.event_id}: ELECTRICITY_PRICE/{kind} is not mapped")
            out = []
            for interval in event.intervals:
                met = [kw for price, kw in self.signals.price_export_kw if interval.value >= price]
                ceiling = -max(met) if met else float("nan")
                out.append(CommittedInterval(interval.start, interval.end, interval.value, ceiling))
            return out
        if name == "simple":    # 2.0a spelling, seen in the wild
            event = replace(event, signal_name="SIMPLE")
        return resolve_commitment(event, self.program, baseline_kw=baseline)

    # -- a single domain event, handed directly ---------------------------------------
    async def __call__(self, event: Event) -> str:
        if event.status == "cancelled":
            self.dispatcher.withdraw(event.event_id)
            self._record(event, None, "optIn", "cancelled by the VTN; acknowledged", event.request_id)
            return "optIn"
        decision = self.decide(event)
        committed = None
        if decision.code != SIGNAL_NOT_SUPPORTED:
            committed = self.resolve(event)
        if decision.opt == "optIn" and not event.test_event and committed is not None:
            self.dispatcher.commit(event.event_id, committed)
        else:
            self.dispatcher.withdraw(event.event_id)
        log.info("event %s (mod %d, %s/%s, %d intervals from %s): %s — %s", event.event_id,
                 event.modification_number, event.signal_name, event.signal_type, len(event.intervals),
                 event.start.isoformat(), decision.opt, decision.reason)
        self.decisions[event.event_id] = (decision.opt, decision.reason)
        self._record(event, committed, decision.opt, decision.reason, event.request_id)
        return decision.opt

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
        if covered <= 0.0:
            return "optOut", "the fleet can deliver none of the export asked"
        if covered < self.program.min_coverage_to_opt_in:
            return "optOut", f"fleet can cover {covered:.0%} of the export asked (< {self.program.min_coverage_to_opt_in:.0%})"
        if shortfall > 0:
            return "optIn", f"best effort: fleet can cover {covered:.0%}, up to {shortfall:.1f} kW short in an interval"
        return "optIn", f"fleet can cover the export asked (bound covers {covered:.0%})"

    def _record(self, event: Event, committed: list[CommittedInterval] | None, opt: str, reason: str,
                request_id: str | None, intervals=None) -> None:
        intervals = event.intervals if intervals is None else intervals
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
                record.request_id, record.note = request_id, reason
                db.add(record)
                db.flush()   # the interval rows reference it
                if committed is not None:
                    db.exec(delete(EventIntervalRecord).where(EventIntervalRecord.event_id == event.event_id))
                    by_uid = {c_uid: c for c_uid, c in zip((i.uid for i in event.intervals), committed)}
                    for interval in intervals:
                        commitment = by_uid.get(interval.uid)
                        ceiling = commitment.import_ceiling_kw if commitment is not None else float("nan")
                        db.add(EventIntervalRecord(
                            event_id=event.event_id, uid=interval.uid, start=interval.start, end=interval.end,
                            requested=interval.value,
                            import_ceiling_kw=None if ceiling != ceiling or event.test_event else ceiling))
                db.commit()
        except SQLAlchemyError:
            log.exception("could not record event %s", event.event_id)
            if self.metrics is not None:
                self.metrics.database_errors.inc()
