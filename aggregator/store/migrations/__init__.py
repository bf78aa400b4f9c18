"""Alembic migrations of the database schema (`aggregator/store/migrate.py` runs them)."""
