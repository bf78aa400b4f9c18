"""Database fixture for settlement tests: SQLite always, PostgreSQL too when
V2X_TEST_POSTGRES_URL is set (each test in its own schema, dropped after); in CI
(CI=true) a missing PostgreSQL fails instead of skipping."""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

import aggregator.settlement.store  # noqa: F401  (registers settlement_run)
from aggregator.store.db import make_engine, normalise_url

POSTGRES_URL = os.environ.get("V2X_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if not POSTGRES_URL:
        if os.environ.get("CI") == "true":   # CI runs PostgreSQL: a missing URL is a failure there
            pytest.fail("V2X_TEST_POSTGRES_URL is not set in CI")
        pytest.skip("V2X_TEST_POSTGRES_URL not set")
    schema = f"settle_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(POSTGRES_URL))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()
