"""Sites: the `[[sites]]` configuration is checked like the rest, site records become the
allocator's per-site limits (cached, re-read on a change or after `refresh`), and migration 0010
upgrades and downgrades cleanly (SQLite and PostgreSQL)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
from alembic import command
from sqlalchemy import inspect
from sqlmodel import Session

from aggregator.config import load_settings
from aggregator.sites import SiteLimits, SiteRecord, seed_sites, site_limit_arrays
from aggregator.store import migrate
from aggregator.store.db import make_engine, open_engine

T0 = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)


def test_configured_sites_load(tmp_path):
    path = tmp_path / "v2x.toml"
    path.write_text('[[sites]]\nid = 0\nname = "Depot"\nimport_limit_kw = 400\nexport_limit_kw = 150.5\n'
                    '[[sites]]\nid = 2\nname = "Homes"\ntimezone = "Europe/Paris"\nnotes = "no limits"\n')
    sites = load_settings(path, environ={}).sites
    assert [(s.id, s.import_limit_kw, s.export_limit_kw, s.timezone) for s in sites] == [
        (0, 400.0, 150.5, None), (2, None, None, "Europe/Paris")]


def test_limits_cover_every_ev_site_with_inf_where_none_is_set():
    site = np.array([0, 3, 3, 1])
    out = site_limit_arrays({1: (None, 20.0), 3: (100.0, None), 9: (5.0, 5.0)}, site)
    assert out["site_import_limit_kw"].tolist() == [np.inf, np.inf, np.inf, 100.0]
    assert out["site_export_limit_kw"].tolist() == [np.inf, 20.0, np.inf, np.inf]
    assert site_limit_arrays({9: (5.0, 5.0), 2: (None, None)}, site) == {}     # no EV's site is limited
    assert site_limit_arrays({1: (1.0, 1.0)}, np.array([], dtype=int)) == {}


def test_the_allocator_keeps_each_site_within_its_limits():
    from aggregator.allocator import Targets, allocate
    from aggregator.fleet import MemberState, PlugIn, VehicleSpec, fleet_arrays
    members = [MemberState(VehicleSpec(f"v{i}", "car", 60, 10, 11, 11, 0.95, 0.95, site=i % 3),
                           PlugIn(f"v{i}", T0, T0 + timedelta(hours=6), 20), 40) for i in range(12)]
    fleet = fleet_arrays(members, T0)
    limits = site_limit_arrays({1: (None, 5.0), 2: (3.0, 0.0)}, fleet.site)
    plan = allocate(fleet, Targets(np.full(4, 0.25), np.full(4, -200.0), **limits))
    by_site = np.array([plan.power_kw[fleet.site == s].sum(axis=0) for s in range(3)])
    assert (by_site[1] >= -5 - 1e-6).all() and (by_site[2] >= -1e-6).all() and (by_site[2] <= 3 + 1e-6).all()
    assert by_site[0].min() < -30                                   # site 0 has no limit and exports


def test_the_limits_are_cached_and_read_again_on_a_change_or_after_refresh(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    try:
        limits = SiteLimits(engine, refresh=timedelta(seconds=60))
        assert limits.current(T0) == {}

        def write(export_kw):
            with Session(engine) as db:
                db.merge(SiteRecord(id=4, name="d", timezone="UTC", export_limit_kw=export_kw, updated_at=T0))
                db.commit()
        write(10.0)
        assert limits.current(T0 + timedelta(seconds=1)) == {}                   # cached
        assert limits.current(T0 + timedelta(seconds=60)) == {4: (None, 10.0)}   # refreshed
        write(20.0)
        limits.changed()                                                        # written through the API
        assert limits.current(T0 + timedelta(seconds=61)) == {4: (None, 20.0)}
        engine.dispose()
        limits.engine = open_engine("sqlite:////nonexistent-dir/x.db")          # the database is away
        assert limits.current(T0 + timedelta(seconds=200)) == {4: (None, 20.0)}  # the last known limits
    finally:
        engine.dispose()


def test_seeding_keeps_what_the_database_has(tmp_path):
    from aggregator.config import SiteSettings
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    try:
        assert seed_sites(engine, [SiteSettings(id=1, name="a", export_limit_kw=5)], "UTC") == [1]
        assert seed_sites(engine, [SiteSettings(id=1, name="b"), SiteSettings(id=2, name="c")], "UTC") == [2]
        with Session(engine) as db:
            assert (db.get(SiteRecord, 1).name, db.get(SiteRecord, 1).export_limit_kw) == ("a", 5)
    finally:
        engine.dispose()


def test_migration_0010_upgrades_and_downgrades(database_url):
    engine = open_engine(database_url)
    try:
        with engine.begin() as connection:
            config = migrate._config(connection)
            command.upgrade(config, "0009")
            assert not {"site", "programme_enrollment"} & set(inspect(connection).get_table_names())
            command.upgrade(config, "0010")
            assert {"site", "programme_enrollment"} <= set(inspect(connection).get_table_names())
            command.downgrade(config, "0009")
            assert not {"site", "programme_enrollment"} & set(inspect(connection).get_table_names())
            assert migrate.current_revision(connection) == "0009"
            command.upgrade(config, "head")
            assert migrate.current_revision(connection) == migrate.head_revision() == "0010"
    finally:
        engine.dispose()
    engine = make_engine(database_url)     # at head: opens, and site rows round-trip
    try:
        with Session(engine) as db:
            db.add(SiteRecord(id=7, name="Depot", timezone="UTC", import_limit_kw=400.0, updated_at=T0))
            db.commit()
        with Session(engine) as db:
            row = db.get(SiteRecord, 7)
            assert (row.import_limit_kw, row.export_limit_kw, row.notes) == (400.0, None, "")
    finally:
        engine.dispose()
