"""Migrations are an explicit step: the Alembic revisions build exactly the schema the models
describe; opening a database initialises an empty one but refuses one that is behind (naming
`v2x migrate`); `upgrade` is safe when several processes run it at once. SQLite and PostgreSQL."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import Session

from aggregator.store import migrate
from aggregator.store.db import (SchemaOutOfDate, insert_meter_readings, make_engine, meter_readings,
                                 open_engine)
from aggregator.store.models import MeterReading
from aggregator.store.schema import metadata

REPO = Path(__file__).resolve().parents[2]


def _revision(url: str) -> str | None:
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            return migrate.current_revision(connection)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _schema_differences(url: str) -> list:
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()


def _set_revision(url: str, revision: str) -> None:
    engine = open_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


@pytest.fixture
def one_revision_ahead(tmp_path, monkeypatch) -> str:
    """This code's migrations plus one test revision on top of head (adds table `probe`), so that a
    database at the real head is one revision behind, however many revisions versions/ holds."""
    real_head = migrate.head_revision()
    folder = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / "9999_test_probe.py").write_text(textwrap.dedent(f'''\
        """test only: one revision after head"""
        from alembic import op
        import sqlalchemy as sa

        revision = "test_probe"
        down_revision = {real_head!r}
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
            op.create_table("probe", sa.Column("id", sa.Integer(), primary_key=True))


        def downgrade() -> None:
            op.drop_table("probe")
        '''))
    monkeypatch.setattr(migrate, "MIGRATIONS", folder)
    return real_head


def test_migrations_match_the_models(database_url):
    make_engine(database_url).dispose()
    assert _schema_differences(database_url) == [], \
        "models changed without a migration (v2x migrate --new)"
    assert _tables(database_url) == set(metadata.tables) | {"alembic_version"}


def test_an_empty_database_is_initialised_to_head_on_first_open(database_url):
    assert _revision(database_url) is None
    engine = make_engine(database_url)
    engine.dispose()
    assert _revision(database_url) == migrate.head_revision()
    make_engine(database_url).dispose()   # and a second open just checks
    assert _revision(database_url) == migrate.head_revision()


def test_a_schema_behind_head_is_refused_until_migrated(database_url, one_revision_ahead, capsys):
    from aggregator import cli
    real_head = one_revision_ahead
    engine = open_engine(database_url)
    with engine.begin() as connection:   # a database migrated by the previous release
        config = migrate._config(connection)
        config.set_main_option("script_location", str(REPO / "aggregator" / "store" / "migrations"))
        command.upgrade(config, "head")
    engine.dispose()

    with pytest.raises(SchemaOutOfDate) as refused:
        make_engine(database_url)
    message = str(refused.value)
    assert real_head in message and "test_probe" in message and "v2x migrate" in message
    assert (refused.value.current, refused.value.expected) == (real_head, "test_probe")
    assert "probe" not in _tables(database_url), "opening must not migrate"

    # what a user sees: the command names the fix and exits non-zero
    assert cli.main(["--database", database_url, "events"]) == 1
    assert "v2x migrate" in capsys.readouterr().err

    engine = open_engine(database_url)
    try:
        assert migrate.upgrade(engine) == (real_head, "test_probe")
        assert migrate.upgrade(engine) == ("test_probe", "test_probe")
    finally:
        engine.dispose()
    make_engine(database_url).dispose()
    assert "probe" in _tables(database_url)


def test_v2x_migrate_reports_the_revisions_it_moved_between(database_url, one_revision_ahead, capsys):
    from aggregator import cli
    real_head = one_revision_ahead
    assert cli.main(["--database", database_url, "migrate"]) == 0
    assert "migrated from an empty database to revision test_probe" in capsys.readouterr().out
    _set_revision(database_url, real_head)
    engine = open_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE probe"))
    engine.dispose()
    assert cli.main(["--database", database_url, "migrate"]) == 0
    assert f"migrated from {real_head} to revision test_probe" in capsys.readouterr().out
    assert cli.main(["--database", database_url, "migrate"]) == 0
    assert "schema is current (revision test_probe)" in capsys.readouterr().out


def test_an_unknown_revision_or_an_unmanaged_schema_is_refused(database_url):
    make_engine(database_url).dispose()
    _set_revision(database_url, "f00dfeed")   # migrated by a newer release
    with pytest.raises(SchemaOutOfDate, match="f00dfeed.*does not know.*v2x migrate"):
        make_engine(database_url)
    engine = open_engine(database_url)
    with engine.begin() as connection:       # tables, but nothing says which revision
        connection.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="no schema revision"):
        make_engine(database_url)


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


# Each process imports (slow), says it is ready, waits for the go file, then migrates and
# prints the revisions it moved between.
_RACER = """
import sys, time
from pathlib import Path
from aggregator.store.db import make_engine, open_engine
from aggregator.store.migrate import upgrade
url, how, ready, go = sys.argv[1:5]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
if how == "upgrade":
    engine = open_engine(url)
    print(upgrade(engine))
else:
    engine = make_engine(url)
    print("opened")
engine.dispose()
"""


@pytest.mark.parametrize("how", ["upgrade", "make_engine"])
def test_processes_migrating_one_empty_database_at_once_all_succeed(database_url, tmp_path, how):
    go = tmp_path / "go"
    racers = []
    for n in range(3):
        ready = tmp_path / f"ready-{n}"
        racers.append((ready, subprocess.Popen(
            [sys.executable, "-c", _RACER, database_url, how, str(ready), str(go)], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready, _ in racers):
        assert time.monotonic() < deadline, "racers never got ready"
        assert all(p.poll() is None for _, p in racers), [p.communicate() for _, p in racers]
        time.sleep(0.01)
    go.touch()
    results = [p.communicate(timeout=120) + (p.returncode,) for _, p in racers]
    assert [rc for _, _, rc in results] == [0, 0, 0], [err for _, err, _ in results]
    head = migrate.head_revision()
    if how == "upgrade":   # exactly one of them did the work; the others found it done
        moves = sorted(out.strip() for out, _, _ in results)
        assert moves == sorted([str((None, head))] + [str((head, head))] * 2), moves
    assert _revision(database_url) == head
    assert _schema_differences(database_url) == []
    assert _tables(database_url) == set(metadata.tables) | {"alembic_version"}
    engine = open_engine(database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()
