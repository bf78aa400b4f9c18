"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""
from __future__ import annotations

import subprocess
import sys

from alembic.migration import MigrationContext
from alembic.autogenerate import compare_metadata
from sqlalchemy import inspect

from datetime import datetime, timezone

from sqlmodel import Session

from aggregator.store.db import insert_meter_readings, make_engine, meter_readings
from aggregator.store.models import MeterReading
from aggregator.store.schema import metadata


def test_migrations_match_the_models(database_url):
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
            tables = set(inspect(connection).get_table_names())
        assert differences == [], f"models changed without a migration (v2x migrate --new): {differences}"
        assert {"meterreading", "eventrecord", "settlement_run", "ven_event", "alembic_version"} <= tables
    finally:
        engine.dispose()


def test_upgrading_twice_is_harmless_and_keeps_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    with Session(engine) as db:
        insert_meter_readings(db, [MeterReading(source="cp-1", ts=datetime(2026, 7, 1, tzinfo=timezone.utc),
                                                energy_import_kwh=1.0, energy_export_kwh=2.0, power_kw=0.0)])
        db.commit()
    engine.dispose()
    run = subprocess.run([sys.executable, "-m", "aggregator.cli", "--database", url, "migrate"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "schema is current" in run.stdout
    engine = make_engine(url)
    with Session(engine) as db:
        assert [r.energy_export_kwh for r in meter_readings(db, "cp-1")] == [2.0]
    engine.dispose()
