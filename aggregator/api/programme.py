"""Programmes (enrolment), events with their performance, settlement runs and bids.

Performance is settlement's device figure: the latest stored settlement run of
the event, or, before one is stored, settlement's preview computed from the
ledger (`device_settlement`) — the one computation of committed vs delivered."""
from __future__ import annotations

import json
import logging
from typing import Annotated, Union

from aiohttp_pydantic.oas.typing import r200
from pydantic import Field
from sqlalchemy import func
from sqlmodel import Session, select

from aggregator.api import schemas as s
from aggregator.api.http import ApiView, Conflict, Denied, allow, finite, ok, problem
from aggregator.api.schemas import FieldError
from aggregator.settlement.performance import EventSettlement
from aggregator.settlement.report import device_settlement
from aggregator.settlement.store import SettlementRun, latest_run
from aggregator.store.db import as_utc
from aggregator.store.models import Bid as BidRow
from ven.store import VenEvent, VenEventInterval

log = logging.getLogger(__name__)
Limit = Annotated[int, Field(ge=1, le=1000)]
EventId = Annotated[str, Field(min_length=1, max_length=256)]


def _intervals_of(settlement: EventSettlement) -> list[s.IntervalPerformance]:
    return [s.IntervalPerformance(uid=r.uid, start=as_utc(r.start), end=as_utc(r.end),
                                  committed_kw=finite(r.committed_kw), delivered_kw=finite(r.delivered_kw),
                                  ratio=finite(r.ratio), coverage=finite(r.coverage) or 0.0)
            for r in settlement.intervals]


def performance(db: Session, event_id: str, started: bool) -> s.Performance | None:
    run = latest_run(db, event_id)
    try:
        if run is not None:
            settlement, source, version = run.to_settlement(), "settlement", run.version
        elif started:
            settlement, source, version = device_settlement(db, event_id), "preview", None
        else:
            return None
    except (LookupError, ValueError, KeyError, TypeError) as err:
        log.info("no performance for %s: %s", event_id, err)
        return None
    t = settlement.totals
    return s.Performance(source=source, version=version, committed_kwh=finite(t.committed_kwh),
                         delivered_kwh=finite(t.delivered_kwh), ratio=finite(t.ratio),
                         intervals=_intervals_of(settlement))


def _event(db: Session, row: VenEvent, now, with_performance: bool) -> s.Event:
    intervals = db.exec(select(VenEventInterval).where(VenEventInterval.event_id == row.event_id)
                        .order_by(VenEventInterval.uid)).all()
    items = [s.EventInterval(uid=i.uid, start=as_utc(i.start), end=as_utc(i.end) if i.end else None,
                             value=finite(i.value) or 0.0) for i in intervals]
    start = min((i.start for i in items), default=None)
    end = None if any(i.end is None for i in items) else max((i.end for i in items), default=None)
    perf = performance(db, row.event_id, start is not None and start <= now) if with_performance else None
    return s.Event(event_id=row.event_id, status=row.status, opt_state=row.opt_state, signal_name=row.signal_name,
                   signal_type=row.signal_type, market_context=row.market_context, priority=row.priority,
                   test_event=row.test_event, received_at=as_utc(row.received_at), start=start, end=end,
                   intervals=items, performance=perf)


class EventsView(ApiView):
    roles = allow(GET="operator utility")

    async def get(self, limit: Limit = 50, performance: bool = True) -> Union[r200[list[s.Event]], Denied]:
        """The events the VEN received, newest first, each with committed vs delivered.

        Tags: events
        Security: bearerAuth
        """
        now = self.core.clock()
        with Session(self.core.engine) as db:
            rows = db.exec(select(VenEvent).order_by(VenEvent.received_at.desc()).limit(limit)).all()
            return ok([_event(db, row, now, performance) for row in rows])


class EventView(ApiView):
    roles = allow(GET="operator utility")

    async def get(self, event_id: EventId, /) -> Union[r200[s.Event], Denied]:
        """One event, its intervals and its performance.

        Tags: events
        Security: bearerAuth
        """
        with Session(self.core.engine) as db:
            row = db.get(VenEvent, event_id)
            if row is None:
                return problem(404, "no such event")
            return ok(_event(db, row, self.core.clock(), True))


def _run(row: SettlementRun) -> dict:
    return dict(id=row.id, event_id=row.event_id, version=row.version, supersedes=row.supersedes,
                computed_at=as_utc(row.computed_at), method=row.method, timezone=row.timezone,
                committed_kwh=finite(row.committed_kwh) or 0.0, delivered_kwh=finite(row.delivered_kwh) or 0.0,
                committed_avg_kw=finite(row.committed_avg_kw), delivered_avg_kw=finite(row.delivered_avg_kw),
                performance_ratio=finite(row.performance_ratio))


class SettlementsView(ApiView):
    roles = allow(GET="operator utility")

    async def get(self, event_id: EventId | None = None, limit: Limit = 100
                  ) -> Union[r200[list[s.SettlementRun]], Denied]:
        """Stored settlement runs (every version), newest first.

        Tags: settlement
        Security: bearerAuth
        """
        query = select(SettlementRun)
        if event_id is not None:
            query = query.where(SettlementRun.event_id == event_id)
        with Session(self.core.engine) as db:
            rows = db.exec(query.order_by(SettlementRun.computed_at.desc(), SettlementRun.id.desc())
                           .limit(limit)).all()
            return ok([s.SettlementRun(**_run(row)) for row in rows])


class SettlementView(ApiView):
    roles = allow(GET="operator utility")

    async def get(self, run_id: Annotated[int, Field(ge=1, le=2**62)], /
                  ) -> Union[r200[s.SettlementRunDetail], Denied]:
        """One settlement run with its intervals.

        Tags: settlement
        Security: bearerAuth
        """
        with Session(self.core.engine) as db:
            row = db.get(SettlementRun, run_id)
            if row is None:
                return problem(404, "no such settlement run")
            return ok(s.SettlementRunDetail(**_run(row), intervals=_intervals_of(row.to_settlement())))


class BidsView(ApiView):
    roles = allow(GET="operator")

    async def get(self, program: Annotated[str, Field(min_length=1, max_length=256)] | None = None,
                  limit: Limit = 100) -> Union[r200[list[s.Bid]], Denied]:
        """Stored DR bids (bidding/), newest first.

        Tags: bids
        Security: bearerAuth
        """
        query = select(BidRow)
        if program is not None:
            query = query.where(BidRow.program == program)
        with Session(self.core.engine) as db:
            rows = db.exec(query.order_by(BidRow.created_at.desc(), BidRow.id.desc()).limit(limit)).all()
            out = []
            for row in rows:
                try:
                    quantity = [finite(q) or 0.0 for q in json.loads(row.quantity_json)]
                except (ValueError, TypeError):
                    quantity = []
                out.append(s.Bid(id=row.id, program=row.program, strategy=row.strategy,
                                 window_start=as_utc(row.window_start), window_end=as_utc(row.window_end),
                                 created_at=as_utc(row.created_at), price_per_kw=finite(row.price_per_kw) or 0.0,
                                 quantity_kw=quantity))
            return ok(out)


# -- programmes ------------------------------------------------------------------------------
BASELINE_METHOD = "device"     # settlement's default: committed vs delivered at the chargers' meters


def _programme_events(db: Session, contexts: list[str], per_programme: int) -> dict[str, list[s.ProgrammeEventSummary]]:
    """The latest events of each programme, with their latest stored settlement (no preview: cheap)."""
    out: dict[str, list[s.ProgrammeEventSummary]] = {c: [] for c in contexts}
    if per_programme == 0:
        return out
    rows = []
    for context in contexts:
        rows += db.exec(select(VenEvent).where(VenEvent.market_context == context)
                        .order_by(VenEvent.received_at.desc()).limit(per_programme)).all()
    ids = [row.event_id for row in rows]
    if not ids:
        return out
    spans = {event_id: (start, end) for event_id, start, end in db.exec(
        select(VenEventInterval.event_id, func.min(VenEventInterval.start), func.max(VenEventInterval.end))
        .where(VenEventInterval.event_id.in_(ids)).group_by(VenEventInterval.event_id)).all()}
    runs = {}
    for event_id, version, committed, delivered, ratio in db.exec(
            select(SettlementRun.event_id, SettlementRun.version, SettlementRun.committed_kwh,
                   SettlementRun.delivered_kwh, SettlementRun.performance_ratio)
            .where(SettlementRun.event_id.in_(ids))).all():
        if event_id not in runs or version > runs[event_id][0]:
            runs[event_id] = (version, committed, delivered, ratio)
    for row in rows:
        start, end = spans.get(row.event_id, (None, None))
        version, committed, delivered, ratio = runs.get(row.event_id, (None, None, None, None))
        out[row.market_context].append(s.ProgrammeEventSummary(
            event_id=row.event_id, status=row.status, opt_state=row.opt_state, test_event=row.test_event,
            received_at=as_utc(row.received_at), start=as_utc(start) if start else None,
            end=as_utc(end) if end else None, settlement_version=version, committed_kwh=finite(committed),
            delivered_kwh=finite(delivered), ratio=finite(ratio)))
    return out


def _programme_totals(db: Session) -> dict[str, tuple[int, int, float, float]]:
    """Per market context: (events, settled events, committed kWh, delivered kWh) over the latest
    settlement run of each settled event, in two aggregate queries."""
    counts = dict(db.exec(select(VenEvent.market_context, func.count()).group_by(VenEvent.market_context)).all())
    latest = (select(SettlementRun.event_id, func.max(SettlementRun.version).label("version"))
              .group_by(SettlementRun.event_id).subquery())
    settled = db.exec(
        select(VenEvent.market_context, func.count(), func.sum(SettlementRun.committed_kwh),
               func.sum(SettlementRun.delivered_kwh))
        .join(latest, latest.c.event_id == VenEvent.event_id)
        .join(SettlementRun, (SettlementRun.event_id == latest.c.event_id)
              & (SettlementRun.version == latest.c.version))
        .group_by(VenEvent.market_context)).all()
    out = {context: (count, 0, 0.0, 0.0) for context, count in counts.items()}
    for context, n, committed, delivered in settled:
        out[context] = (counts.get(context, n), n, committed or 0.0, delivered or 0.0)
    return out


def programmes(core, events_per_programme: int) -> list[s.Programme]:
    """The primary programme, then the others the database knows (enrolled or withdrawn)."""
    program = core.settings.program
    enrollment = core.enrollment
    entries = [(program.market_context, True, True, "config", None)]
    entries += [(r.market_context, False, bool(r.enrolled), r.source, as_utc(r.changed_at))
                for r in enrollment.records() if r.market_context != program.market_context]
    signals = s.SignalSettings(price_export_kw=[tuple(p) for p in program.price_export_kw],
                               simple_level_export_kw=dict(program.simple_level_export_kw),
                               max_over_delivery_kw=program.max_over_delivery_kw,
                               min_coverage_to_opt_in=program.min_coverage_to_opt_in)
    with Session(core.engine) as db:
        totals = _programme_totals(db)
        events = _programme_events(db, [e[0] for e in entries], events_per_programme)
    out = []
    for context, primary, enrolled, source, changed_at in entries:
        count, settled, committed, delivered = totals.get(context, (0, 0, 0.0, 0.0))
        out.append(s.Programme(
            market_context=context, primary=primary, enrolled=enrolled, source=source, changed_at=changed_at,
            timezone=program.timezone, export_sign=program.export_sign, baseline_method=BASELINE_METHOD,
            signals=signals, events_total=count, settled_events=settled,
            committed_kwh=finite(committed) if settled else None, delivered_kwh=finite(delivered) if settled else None,
            ratio=finite(delivered / committed) if settled and committed > 0 else None, events=events[context]))
    return out


class ProgrammesView(ApiView):
    roles = allow(GET="operator utility")

    async def get(self, events: Annotated[int, Field(ge=0, le=200)] = 10) -> Union[r200[list[s.Programme]], Denied]:
        """The DR programmes this VEN is enrolled in (the primary one first), and those an operator
        withdrew from: market context, time zone, export sign, baseline method, signal mapping, and
        the latest `events` events of each with their settled performance.

        Only enrolment changes at runtime (PUT /api/v1/programmes/enrollment). The primary market
        context, time zone, export sign and signal mapping are configuration ([program]), read-only
        here: the event intake and settlement resolve events with them, and changing them under
        events already resolved into commitments would change what was committed mid-event; change
        them in the configuration and restart.

        Tags: programmes
        Security: bearerAuth
        """
        return ok(programmes(self.core, events))


class EnrollmentView(ApiView):
    roles = allow(PUT="operator")

    async def put(self, body: s.EnrollmentIn) -> Union[r200[s.Programme], Denied, Conflict]:
        """Enrol in (enrolled: true) or withdraw from (false) a programme besides the primary one
        (operators). Kept in the database (it survives a restart; the configuration's
        additional_market_contexts only seed it) and in force at the VEN's next oadrDistributeEvent:
        events of a programme not enrolled are answered optOut 453; events already answered keep
        their answer until the VTN modifies them. 409 for the primary programme (configuration);
        404 when withdrawing from a programme never enrolled.

        Tags: programmes
        Security: bearerAuth
        """
        core = self.core
        enrollment = core.enrollment
        if body.market_context == enrollment.primary:
            message = "the primary programme is [program] market_context in the configuration"
            return problem(409, message, [FieldError(field="body.market_context", message=message)])
        known = {r.market_context for r in enrollment.records()}
        if not body.enrolled and body.market_context not in known:
            return problem(404, "no such programme")
        enrollment.set(body.market_context, body.enrolled, core.clock())
        [found] = [p for p in programmes(core, 10) if p.market_context == body.market_context]
        return ok(found)
