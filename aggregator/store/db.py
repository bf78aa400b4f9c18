"""Engine creation (with the schema check) and the few writes that need care (idempotent ledger inserts)."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine, select

from aggregator.store.migrate import SchemaOutOfDate, ensure_schema
from aggregator.store.models import MeterReading


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (the driver we ship)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def open_engine(url: str) -> Engine:
    """An engine on the database as it is, without the schema check (what `v2x migrate` uses)."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # WAL: readers don't block the dispatcher
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def make_engine(url: str) -> Engine:
    """An engine on a database whose schema is current. An empty database is initialised to
    head; one whose schema is behind (or unknown) raises `SchemaOutOfDate`, naming `v2x migrate`.
    Opening never migrates an existing schema: that is `v2x migrate`'s job."""
    engine = open_engine(url)
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


__all__ = ["SchemaOutOfDate", "as_utc", "insert_meter_readings", "make_engine", "meter_readings",
           "normalise_url", "open_engine"]


def as_utc(ts: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


_READING_COLUMNS = ("source", "ts", "energy_import_kwh", "energy_export_kwh", "power_kw", "soc_pct")
COPY_MIN_ROWS = 200    # PostgreSQL: from this many rows on, COPY into a temporary table


def insert_meter_readings(session: Session, readings: Iterable[MeterReading]) -> int:
    """Append readings; a (source, ts) already in the ledger is skipped, not doubled.
    Returns how many rows were new.

    Written in the session's transaction without compiling a statement per batch (a
    multi-VALUES statement of thousands of rows costs SQLAlchemy more than the database
    ~1,000 rows/s): PostgreSQL (psycopg) takes a large batch by COPY into a temporary table,
    then one `INSERT ... SELECT ... ON CONFLICT (source, ts) DO NOTHING`; smaller batches and
    SQLite go as one cached `INSERT ... ON CONFLICT DO NOTHING RETURNING id` executed for the
    list of rows (SQLAlchemy's insertmanyvalues). See `v2x bench ingest`."""
    rows = [{c: getattr(r, c) for c in _READING_COLUMNS} for r in readings]
    if not rows:
        return 0
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg" and len(rows) >= COPY_MIN_ROWS:
        return _copy_meter_readings(connection, rows)
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect.name]
    table = MeterReading.__table__
    statement = (insert(table).on_conflict_do_nothing(index_elements=["source", "ts"])
                 .returning(table.c.id))
    return len(connection.execute(statement, rows).all())


def _copy_meter_readings(connection, rows: list[dict]) -> int:
    table = MeterReading.__tablename__
    columns = ", ".join(_READING_COLUMNS)
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS _meter_in (LIKE {table} INCLUDING DEFAULTS) "
                       "ON COMMIT DELETE ROWS")
        cursor.execute("TRUNCATE _meter_in")   # a second batch in the same transaction
        with cursor.copy(f"COPY _meter_in ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(row[c] for c in _READING_COLUMNS))
        cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} "
                       f"FROM _meter_in ON CONFLICT (source, ts) DO NOTHING")
        return max(0, cursor.rowcount)
    finally:
        cursor.close()


def meter_readings(session: Session, source: str | None = None,
                   start: datetime | None = None, end: datetime | None = None) -> list[MeterReading]:
    query = select(MeterReading)
    if source is not None:
        query = query.where(MeterReading.source == source)
    if start is not None:
        query = query.where(MeterReading.ts >= start)
    if end is not None:
        query = query.where(MeterReading.ts <= end)
    rows = session.exec(query.order_by(MeterReading.ts)).all()
    for row in rows:
        row.ts = as_utc(row.ts)
    return list(rows)
