"""Shared fixtures: databases (SQLite always, PostgreSQL when V2X_TEST_POSTGRES_URL is set),
fixture paths and a free-port helper."""
from __future__ import annotations

import contextlib
import os
import socket
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "oadr20b-spec-samples"
POSTGRES_URL = os.environ.get("V2X_TEST_POSTGRES_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"OpenADR sample fixtures not found at {FIXTURES}")
    return FIXTURES


def _postgres_schema_url(base: str, schema: str) -> str:
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def postgres_schema():
    """A fresh, empty PostgreSQL schema; yields its URL. In CI (CI=true) a missing
    PostgreSQL fails instead of skipping."""
    if not POSTGRES_URL:
        if os.environ.get("CI") == "true":
            pytest.fail("V2X_TEST_POSTGRES_URL is not set in CI")
        pytest.skip("V2X_TEST_POSTGRES_URL not set")
    from sqlalchemy import create_engine
    from aggregator.store.db import normalise_url
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(POSTGRES_URL))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield _postgres_schema_url(POSTGRES_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL schema only (tests of what only PostgreSQL has: leases, LISTEN/NOTIFY)."""
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """A fresh, empty database per test: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with postgres_schema() as url:
        yield url
