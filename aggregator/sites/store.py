"""Site records in the database. The configuration's `[[sites]]` seed the sites the database does
not have yet; after that the database (edited through the API) is what counts."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import Column, DateTime, Text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

log = logging.getLogger(__name__)


class SiteRecord(SQLModel, table=True):
    """A site: its number (the `site` of its stations and vehicles), what people call it, its
    local time, and the limits of its grid connection in kW (None: no limit)."""
    __tablename__ = "site"
    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    name: str
    timezone: str
    import_limit_kw: float | None = None     # transformer or supply contract
    export_limit_kw: float | None = None     # interconnection agreement (a magnitude)
    notes: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


def list_sites(engine) -> list[SiteRecord]:
    with Session(engine) as db:
        return list(db.exec(select(SiteRecord).order_by(SiteRecord.id)).all())


def get_site(engine, site_id: int) -> SiteRecord | None:
    with Session(engine) as db:
        return db.get(SiteRecord, site_id)


def delete_site(engine, site_id: int) -> bool:
    with Session(engine) as db:
        row = db.get(SiteRecord, site_id)
        if row is None:
            return False
        db.delete(row)
        db.commit()
        return True


def seed_sites(engine, sites, default_timezone: str, now: datetime | None = None) -> list[int]:
    """Insert the configured sites (`aggregator.config.SiteSettings`) whose id the database does not
    have; returns their ids. Sites already there keep their (possibly API-edited) values."""
    if not sites:
        return []
    now = now or datetime.now(timezone.utc)
    with Session(engine) as db:
        known = set(db.exec(select(SiteRecord.id)).all())
        added = [s for s in sites if s.id not in known]
        for s in added:
            db.add(SiteRecord(id=s.id, name=s.name, timezone=s.timezone or default_timezone,
                              import_limit_kw=s.import_limit_kw, export_limit_kw=s.export_limit_kw,
                              notes=s.notes, updated_at=now))
        try:
            db.commit()
        except IntegrityError:   # another instance seeded them at the same moment
            db.rollback()
            return []
    if added:
        log.info("sites seeded from the configuration: %s", ", ".join(str(s.id) for s in added))
    return [s.id for s in added]
