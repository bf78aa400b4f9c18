"""Enrolment in DR programmes: which market contexts the VEN accepts events for (OpenADR rule 48;
an event of any other programme is answered optOut 453 by ven/rules.py).

The configuration's `[program] market_context` is the primary programme: the one the VEN announces
availability for and whose settings (time zone, export sign, signal mapping) resolve events; it
only changes in the configuration. `additional_market_contexts` seed the other enrolments; after
that the database holds them, so an operator's enrolment or withdrawal (through the API) survives a
restart, and a context the configuration lists that an operator withdrew stays withdrawn. A change
takes effect at the VEN's next oadrDistributeEvent: events already answered keep their answer
until the VTN modifies them."""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone

from sqlalchemy import Column, DateTime, Text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

log = logging.getLogger(__name__)


class EnrollmentRecord(SQLModel, table=True):
    """An additional programme's enrolment (the primary one is configuration, never stored)."""
    __tablename__ = "programme_enrollment"
    market_context: str = Field(sa_column=Column(Text, primary_key=True))
    enrolled: bool = True
    source: str = "config"                  # config (seeded) | api (an operator's change)
    changed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PrimaryProgramme(ValueError):
    """The primary programme's enrolment is configuration."""


class Enrollment:
    """The enrolments, kept in the database and applied to the running VEN."""

    def __init__(self, engine, primary: str, seed: list[str] | tuple[str, ...] = ()):
        self.engine = engine
        self.primary = primary
        self.seed = tuple(seed)
        self.ven = None                     # the VenClient the enrolments apply to (`attach`)

    def load(self, now: datetime | None = None) -> frozenset[str]:
        """Seed the configured contexts the database has never seen; the enrolled market contexts."""
        now = now or datetime.now(timezone.utc)
        with Session(self.engine) as db:
            known = set(db.exec(select(EnrollmentRecord.market_context)).all())
            for context in dict.fromkeys(self.seed):
                if context not in known and context != self.primary:
                    db.add(EnrollmentRecord(market_context=context, enrolled=True, source="config", changed_at=now))
            try:
                db.commit()
            except IntegrityError:         # another instance seeded at the same moment
                db.rollback()
        return self.market_contexts()

    def records(self) -> list[EnrollmentRecord]:
        with Session(self.engine) as db:
            return list(db.exec(select(EnrollmentRecord).order_by(EnrollmentRecord.market_context)).all())

    def market_contexts(self) -> frozenset[str]:
        return frozenset([self.primary, *(r.market_context for r in self.records() if r.enrolled)])

    def attach(self, ven) -> None:
        """Apply the enrolments to `ven` (a ven.client.VenClient) now and after every change."""
        self.ven = ven
        self._apply(self.market_contexts())

    def set(self, market_context: str, enrolled: bool, now: datetime | None = None) -> EnrollmentRecord:
        """Enrol in or withdraw from a programme; the VEN checks the next distribute against it."""
        if market_context == self.primary:
            raise PrimaryProgramme("the primary programme is [program] market_context in the configuration")
        now = now or datetime.now(timezone.utc)
        with Session(self.engine, expire_on_commit=False) as db:
            row = db.get(EnrollmentRecord, market_context)
            if row is None:
                row = EnrollmentRecord(market_context=market_context, enrolled=enrolled, source="api", changed_at=now)
            else:
                row.enrolled, row.source, row.changed_at = enrolled, "api", now
            db.add(row)
            db.commit()
        self._apply(self.market_contexts())
        log.warning("programme %s %s by an operator", market_context, "enrolled" if enrolled else "withdrawn")
        return row

    def _apply(self, contexts: frozenset[str]) -> None:
        ven = self.ven
        if ven is None:
            return
        # The VEN's rules read its event engine's identity at every distribute; the client keeps
        # the same identity (it re-derives the engine's from it on registration).
        ven.identity = replace(ven.identity, market_contexts=contexts)
        ven.engine.identity = replace(ven.engine.identity, market_contexts=contexts)
