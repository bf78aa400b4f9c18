"""Database fixture for settlement tests: an engine on the project's `database_url`
(SQLite always, PostgreSQL too when V2X_TEST_POSTGRES_URL is set; see tests/conftest.py)."""
from __future__ import annotations

import pytest

import aggregator.settlement.store  # noqa: F401  (registers settlement_run)
from aggregator.store.db import make_engine


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()
