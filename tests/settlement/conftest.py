"""Database fixture for settlement tests: SQLite always, PostgreSQL too when
V2X_TEST_POSTGRES_URL is set (each test in its own schema, dropped after); in CI
(CI=true) a missing PostgreSQL fails instead of skipping."""
from __future__ import annotations

import pytest

import aggregator.settlement.store  # noqa: F401  (registers settlement_run)
from aggregator.store.db import make_engine
from tests.conftest import postgres_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()
