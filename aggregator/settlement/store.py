"""Versioned settlement runs in their own table (``settlement_run``).

Every run of ``engine.settle_event`` that produced a *new* version is saved as
one row: the headline totals as columns (easy to query and chart) and the full
result — per-interval rows, baseline details — as JSON. Rows are never
updated: version 1 stays as it was when version 2 arrives. ``(event_id,
version)`` is unique, so two processes racing to save the same next version
cannot both succeed (the loser gets an IntegrityError and can re-settle).

Importing this module registers the table on ``SQLModel.metadata``, so
``aggregator.store.db.make_engine`` creates it (Alembic migrations, aggregator/store/migrations).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, Session, SQLModel, select

from aggregator.settlement.performance import EventSettlement


class SettlementRun(SQLModel, table=True):
    __tablename__ = "settlement_run"
    __table_args__ = (UniqueConstraint("event_id", "version", name="uq_settlement_run_event_version"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(index=True)
    version: int
    supersedes: int | None = None
    computed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    inputs_hash: str
    method: str
    timezone: str
    committed_kwh: float
    delivered_kwh: float
    committed_avg_kw: float | None = None
    delivered_avg_kw: float | None = None
    performance_ratio: float | None = None
    result: dict = Field(sa_column=Column(JSON, nullable=False))   # EventSettlement.to_dict()

    def to_settlement(self) -> EventSettlement:
        return EventSettlement.from_dict(self.result)


def runs_for(session: Session, event_id: str) -> list[SettlementRun]:
    """All saved versions of an event, oldest first."""
    query = select(SettlementRun).where(SettlementRun.event_id == event_id).order_by(SettlementRun.version)
    return list(session.exec(query).all())


def latest_run(session: Session, event_id: str) -> SettlementRun | None:
    query = (select(SettlementRun).where(SettlementRun.event_id == event_id)
             .order_by(SettlementRun.version.desc()).limit(1))  # type: ignore[attr-defined]
    return session.exec(query).first()


def latest_settlement(session: Session, event_id: str) -> EventSettlement | None:
    run = latest_run(session, event_id)
    return run.to_settlement() if run else None


def save_settlement(session: Session, result: EventSettlement) -> SettlementRun:
    """Save a result unless that exact version is already stored (idempotent).

    Saving a version that exists with a *different* inputs hash is refused.
    The caller commits.
    """
    existing = session.exec(select(SettlementRun).where(
        SettlementRun.event_id == result.event_id, SettlementRun.version == result.version)).first()
    if existing is not None:
        if existing.inputs_hash != result.inputs_hash:
            raise ValueError(f"{result.event_id} v{result.version} is already stored with other inputs")
        return existing
    totals = result.totals
    run = SettlementRun(
        event_id=result.event_id, version=result.version, supersedes=result.supersedes,
        computed_at=result.computed_at, inputs_hash=result.inputs_hash, method=result.method,
        timezone=result.timezone, committed_kwh=totals.committed_kwh, delivered_kwh=totals.delivered_kwh,
        committed_avg_kw=totals.committed_avg_kw, delivered_avg_kw=totals.delivered_avg_kw,
        performance_ratio=totals.ratio, result=result.to_dict())
    session.add(run)
    session.flush()
    return run
