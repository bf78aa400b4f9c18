"""The VEN's own tables (SQLModel): the event store keyed by eventID, its
intervals at their absolute (executed) times, and the VEN's identity.

The event row keeps everything the rules need after a restart: modification
number, status, priority, market context, targets, the randomized start
offset (kept across modifications), the cancellation cut, the opt state and
the requestID to answer later opt changes with. The domain `Event` is kept as
JSON next to the queryable columns so it is rebuilt exactly.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from sqlalchemy import Column, DateTime, Text, UniqueConstraint
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, delete, select

from ven.event import Event, EventInterval
from ven.port import WriteFailed
from ven.rules import StoredEvent
from ven.schedule import Timing, shifted_intervals
from ven.translate import OPEN_END


def _utc(**kwargs) -> Column:
    return Column(DateTime(timezone=True), **kwargs)


class VenEvent(SQLModel, table=True):
    __tablename__ = "ven_event"
    event_id: str = Field(primary_key=True)
    modification_number: int
    status: str                       # as the VTN sent it (far/near/active/completed/cancelled)
    priority: int = 0
    market_context: str = ""
    targets_json: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    signal_name: str = ""
    signal_type: str = ""
    test_event: bool = False
    response_required: str = "always"
    opt_state: str = "optOut"
    response_code: int = 200
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    request_id: str = ""              # the distribute's requestID this version came with (rule 42)
    start_offset_s: float = 0.0       # randomized start, drawn once per event (rule 30)
    cancelled_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    end_offset_s: float = 0.0         # randomized end of a cancelled active event (rule 65)
    received_at: datetime = Field(sa_column=_utc(nullable=False))
    updated_at: datetime = Field(sa_column=_utc(nullable=False))
    event_json: str = Field(sa_column=Column(Text, nullable=False))


class VenEventInterval(SQLModel, table=True):
    __tablename__ = "ven_event_interval"
    __table_args__ = (UniqueConstraint("event_id", "uid"),)
    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(foreign_key="ven_event.event_id", index=True)
    uid: int
    start: datetime = Field(sa_column=_utc(nullable=False))   # absolute, after the start offset
    end: datetime | None = Field(default=None, sa_column=_utc(nullable=True))   # None = open-ended
    value: float                      # as asked (kW for power signals, level for SIMPLE)


class VenReportOutbox(SQLModel, table=True):
    """Reports generated for the VTN and not yet taken by it, in the order they were made
    (`id`). A row is deleted once the VTN answered it, so a restart sends what is owed."""
    __tablename__ = "ven_report_outbox"
    id: int | None = Field(default=None, primary_key=True)
    vtn_url: str = Field(index=True)
    report_request_id: str = ""
    queued_at: datetime = Field(sa_column=_utc(nullable=False))
    report_json: str = Field(sa_column=Column(Text, nullable=False))


class VenIdentity(SQLModel, table=True):
    """venID and registrationID, so they survive restarts."""
    __tablename__ = "ven_identity"
    vtn_url: str = Field(primary_key=True)
    ven_id: str | None = None
    registration_id: str | None = None
    updated_at: datetime = Field(sa_column=_utc(nullable=False))


def _utc_dt(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _td(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def event_to_json(event: Event) -> str:
    return json.dumps({
        "event_id": event.event_id, "modification_number": event.modification_number, "status": event.status,
        "signal_name": event.signal_name, "signal_type": event.signal_type,
        "intervals": [[i.uid, i.start.isoformat(), None if i.end == OPEN_END else i.end.isoformat(), i.value]
                      for i in event.intervals],
        "market_context": event.market_context, "priority": event.priority, "test_event": event.test_event,
        "response_required": event.response_required, "request_id": event.request_id, "units": event.units,
        "ramp_up": _td(event.ramp_up), "recovery": _td(event.recovery), "start_after": _td(event.start_after),
        "targets": list(event.targets)}, default=str)


def event_from_json(text: str) -> Event:
    data = json.loads(text)
    seconds = lambda v: None if v is None else timedelta(seconds=v)  # noqa: E731
    intervals = tuple(EventInterval(uid, datetime.fromisoformat(start),
                                    OPEN_END if end is None else datetime.fromisoformat(end), value)
                      for uid, start, end, value in data.pop("intervals"))
    for key in ("ramp_up", "recovery", "start_after"):
        data[key] = seconds(data[key])
    data["targets"] = tuple(data["targets"])
    return Event(intervals=intervals, **data)


log = logging.getLogger(__name__)


class EventStoreWriteFailed(WriteFailed):
    """The event store could not save, after its retries."""


class EventStore:
    """Load and save `StoredEvent`s; one transaction per distribute.

    A failed save is retried `attempts` times with a short back-off, then
    raises `EventStoreWriteFailed` (never swallowed)."""

    def __init__(self, engine, attempts: int = 3, backoff_s: float = 0.05,
                 sleep: Callable[[float], None] = time.sleep):
        self.engine = engine   # its tables come with the schema (aggregator.store.migrate)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._sleep = sleep

    def load(self) -> dict[str, StoredEvent]:
        with Session(self.engine) as db:
            rows = db.exec(select(VenEvent)).all()
            return {row.event_id: self._stored(row) for row in rows}

    @staticmethod
    def _stored(row: VenEvent) -> StoredEvent:
        timing = Timing(start_offset=timedelta(seconds=row.start_offset_s), cancelled_at=_utc_dt(row.cancelled_at),
                        end_offset=timedelta(seconds=row.end_offset_s))
        return StoredEvent(event_from_json(row.event_json), row.request_id, row.opt_state, row.response_code,
                           row.reason, timing, _utc_dt(row.received_at), _utc_dt(row.updated_at))

    def save(self, events: list[StoredEvent]) -> None:
        if not events:
            return
        for attempt in range(1, self.attempts + 1):
            try:
                self._save(events)
                return
            except SQLAlchemyError as err:
                if attempt == self.attempts:
                    raise EventStoreWriteFailed(f"saving {len(events)} event(s) failed after {attempt} attempts: "
                                                f"{err.__class__.__name__}: {err}") from err
                log.warning("saving events failed (attempt %d/%d), retrying: %s", attempt, self.attempts, err)
                self._sleep(self.backoff_s * 2 ** (attempt - 1))

    def _save(self, events: list[StoredEvent]) -> None:
        with Session(self.engine) as db:
            for stored in events:
                event, timing = stored.event, stored.timing
                row = db.get(VenEvent, event.event_id) or VenEvent(
                    event_id=event.event_id, modification_number=0, status="far", received_at=stored.received_at,
                    updated_at=stored.updated_at, event_json="{}")
                row.modification_number, row.status = event.modification_number, event.status
                row.priority, row.market_context = event.priority, event.market_context
                row.targets_json = json.dumps(list(event.targets), default=str)
                row.signal_name, row.signal_type = event.signal_name, event.signal_type
                row.test_event, row.response_required = event.test_event, event.response_required
                row.opt_state, row.response_code, row.reason = stored.opt_state, stored.response_code, stored.reason
                row.request_id = stored.request_id
                row.start_offset_s = timing.start_offset.total_seconds()
                row.cancelled_at, row.end_offset_s = timing.cancelled_at, timing.end_offset.total_seconds()
                row.received_at, row.updated_at = stored.received_at, stored.updated_at
                row.event_json = event_to_json(event)
                db.add(row)
                db.flush()
                db.exec(delete(VenEventInterval).where(VenEventInterval.event_id == event.event_id))
                for interval in shifted_intervals(event, timing):
                    db.add(VenEventInterval(event_id=event.event_id, uid=interval.uid, start=interval.start,
                                            end=None if interval.end == OPEN_END else interval.end,
                                            value=interval.value))
            db.commit()

    def intervals(self, event_id: str) -> list[VenEventInterval]:
        with Session(self.engine) as db:
            rows = db.exec(select(VenEventInterval).where(VenEventInterval.event_id == event_id)
                           .order_by(VenEventInterval.uid)).all()
            for row in rows:
                row.start, row.end = _utc_dt(row.start), _utc_dt(row.end)
            return list(rows)

    # -- identity ----------------------------------------------------------------
    def identity(self, vtn_url: str) -> tuple[str | None, str | None]:
        with Session(self.engine) as db:
            row = db.get(VenIdentity, vtn_url)
            return (row.ven_id, row.registration_id) if row else (None, None)

    def save_identity(self, vtn_url: str, ven_id: str | None, registration_id: str | None) -> None:
        with Session(self.engine) as db:
            row = db.get(VenIdentity, vtn_url) or VenIdentity(vtn_url=vtn_url, updated_at=datetime.now(timezone.utc))
            row.ven_id, row.registration_id = ven_id, registration_id
            row.updated_at = datetime.now(timezone.utc)
            db.add(row)
            db.commit()
