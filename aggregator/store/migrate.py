"""Bring a database to the current schema with Alembic (also `v2x migrate`).

Schema changes are made by adding a revision under migrations/versions
(`v2x migrate --new "what changed"` autogenerates one from the models), never by
editing tables by hand; every engine the product opens is upgraded first.
"""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    with engine.begin() as connection:
        command.upgrade(_config(connection), "head")


def new_revision(engine: Engine, message: str) -> None:
    """Autogenerate a revision from the difference between the models and the database."""
    with engine.begin() as connection:
        command.revision(_config(connection), message=message, autogenerate=True)
