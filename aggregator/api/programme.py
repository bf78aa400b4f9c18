"""Events with their performance, settlement runs and bids (read-only).

Performance is settlement's device figure: the latest stored settlement run of
the event, or, before one is stored, settlement's preview computed from the
ledger (`device_settlement`) — the one computation of committed vs delivered."""
from __future__ import annotations

import json
import logging
from typing import Annotated, Union

from aiohttp_pydantic.oas.typing import r200
from pydantic import Field
from sqlmodel import Session, select

from aggregator.api import schemas as s
from aggregator.api.http import ApiView, Denied, allow, finite, ok, problem
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
