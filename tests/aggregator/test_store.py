"""The store on SQLite and PostgreSQL: idempotent ledger, events, sessions."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlmodel import Session, select

from aggregator.store.db import insert_meter_readings, make_engine, meter_readings
from aggregator.store.models import Commitment, MeterReading, PlugSession, Vehicle
from ven.store import VenEvent

T0 = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)


def reading(source, seconds, export):
    return MeterReading(source=source, ts=T0 + timedelta(seconds=seconds), energy_import_kwh=1.0,
                        energy_export_kwh=export, power_kw=-5.0, soc_pct=50.0)


def test_ledger_is_append_only_and_idempotent(database_url):
    engine = make_engine(database_url)
    with Session(engine) as db:
        assert insert_meter_readings(db, [reading("cp-1", 0, 0.0), reading("cp-1", 5, 0.1)]) == 2
        db.commit()
    with Session(engine) as db:
        # the same readings again (a retry after a crash) plus one new: only the new one lands
        assert insert_meter_readings(db, [reading("cp-1", 5, 0.1), reading("cp-1", 10, 0.2)]) == 1
        db.commit()
        rows = meter_readings(db, "cp-1")
    assert [r.energy_export_kwh for r in rows] == [0.0, 0.1, 0.2]
    assert all(r.ts.tzinfo is not None for r in rows)
    assert rows[1].ts == T0 + timedelta(seconds=5)
    engine.dispose()


def test_events_sessions_and_intervals_round_trip(database_url):
    engine = make_engine(database_url)
    with Session(engine) as db:
        db.add(Vehicle(id="bus-1", kind="school_bus", capacity_kwh=200, floor_kwh=40, max_charge_kw=60,
                       max_discharge_kw=60, eta_charge=0.94, eta_discharge=0.94))
        db.add(VenEvent(event_id="e1", modification_number=3, status="active", signal_name="LOAD_DISPATCH",
                        signal_type="setpoint", opt_state="optIn", received_at=T0, updated_at=T0, event_json="{}"))
        db.flush()   # the commitment references the VEN's event record
        db.add(Commitment(event_id="e1", start=T0, end=T0 + timedelta(minutes=15), requested=300,
                          import_ceiling_kw=-300, baseline_kw=12.5, kind="event"))
        db.add(PlugSession(vehicle_id="bus-1", arrived_at=T0, departs_at=T0 + timedelta(hours=3),
                           energy_at_arrival_kwh=150, need_kwh=160))
        db.commit()
    with Session(engine) as db:
        event = db.get(VenEvent, "e1")
        assert (event.modification_number, event.opt_state) == (3, "optIn")
        committed = db.exec(select(Commitment)).one()
        assert (committed.import_ceiling_kw, committed.baseline_kw, committed.kind) == (-300, 12.5, "event")
        session = db.exec(select(PlugSession)).one()
        assert session.need_kwh == 160 and session.left_at is None
    engine.dispose()


def test_a_large_ledger_batch_is_idempotent_too(database_url):
    """The bulk path (PostgreSQL: COPY into a temporary table; SQLite: executemany) skips rows
    already in the ledger and repeats inside the batch, and counts only the new ones; two large
    batches in one transaction work too."""
    from aggregator.store import db as store_db
    engine = make_engine(database_url)
    first = [reading(f"cp-{i}", 0, 0.1) for i in range(store_db.COPY_MIN_ROWS + 50)]
    with Session(engine) as db:
        assert insert_meter_readings(db, first) == len(first)
        db.commit()
    again = first[:100] + [reading(f"cp-{i}", 10, 0.2) for i in range(300)] + [reading("cp-0", 10, 9.9)]
    later = [reading(f"cp-{i}", 20, 0.3) for i in range(store_db.COPY_MIN_ROWS)]
    with Session(engine) as db:
        assert insert_meter_readings(db, again) == 300
        assert insert_meter_readings(db, later) == len(later)
        db.commit()
        rows = meter_readings(db, "cp-0")
    assert [(r.ts - T0).total_seconds() for r in rows] == [0, 10, 20]
    assert rows[1].energy_export_kwh == 0.2          # the first of a repeated (source, ts) stays
    with Session(engine) as db:
        assert len(db.exec(select(MeterReading)).all()) == len(first) + 300 + len(later)
    engine.dispose()
