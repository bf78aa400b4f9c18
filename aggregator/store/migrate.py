"""Schema revisions with Alembic: the explicit step (`v2x migrate`) and the start-up check.

Schema changes are made by adding a revision under migrations/versions
(`v2x migrate --new "what changed"` autogenerates one from the models), never by
editing tables by hand.

Opening a database (`aggregator.store.db.make_engine`) does not migrate it: an
empty database is initialised to head (the single-machine default needs no extra
step), a database at head is used as it is, and anything else is refused with
`SchemaOutOfDate`, which names the revisions and the command to run.

Migrating is safe when several processes try at once: `upgrade` runs Alembic
inside one transaction that first takes a lock (PostgreSQL: a transaction-level
advisory lock; SQLite: BEGIN IMMEDIATE, the database's write lock), and the
first-open initialisation takes the same lock and looks again before it creates
anything. Whoever comes second finds the work done.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATE_COMMAND = "v2x migrate"
# pg_advisory_xact_lock key for "someone is migrating this database" (any fixed bigint; b"v2xmigr").
ADVISORY_LOCK_KEY = 0x7632_786D_6967_72


class SchemaOutOfDate(RuntimeError):
    """The database's schema revision is not the one this code expects (behind, unknown,
    or tables without a revision); the message says what to do."""

    def __init__(self, current: str | None, expected: str, message: str):
        super().__init__(message)
        self.current = current
        self.expected = expected


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The revision this code expects (one head; two heads are a developer's merge to make)."""
    return _scripts().get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _is_empty(connection: Connection) -> bool:
    """No tables at all (in the connection's default schema), not even alembic_version."""
    return not inspect(connection).get_table_names()


@contextmanager
def _migration_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction holding the migration lock; committed on success, rolled back otherwise."""
    with engine.connect() as connection:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            with connection.begin():
                # released by the commit or rollback of this same transaction
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
                yield connection
        elif dialect == "sqlite":
            # Batch migrations copy tables; foreign keys are checked once, before commit, instead.
            # (The PRAGMA is a no-op inside a transaction, so it goes first.)
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
            try:
                # pysqlite has not begun a transaction (it only does so before DML), so this BEGIN
                # is the one in force: the write lock is taken now and held until the commit.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield connection
                    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if violations:
                        raise RuntimeError(f"migration left foreign key violations: {violations[:5]}")
                except BaseException:
                    connection.rollback()
                    raise
                connection.commit()
            finally:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
        else:
            with connection.begin():
                yield connection


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Bring the database to head (`v2x migrate`). Returns (revision before, revision after);
    None before means the database had no revision (it was empty)."""
    with _migration_transaction(engine) as connection:
        before = current_revision(connection)
        command.upgrade(_config(connection), "head")
        after = current_revision(connection)
    return before, after


def ensure_schema(engine: Engine) -> str:
    """The start-up check: initialise an empty database to head, accept one at head,
    refuse anything else with `SchemaOutOfDate`. Returns the revision in force."""
    expected = head_revision()
    with engine.connect() as connection:
        empty = _is_empty(connection)
        current = None if empty else current_revision(connection)
    if empty:
        with _migration_transaction(engine) as connection:
            # another process may have initialised it while we waited for the lock
            if _is_empty(connection):
                command.upgrade(_config(connection), "head")
            current = current_revision(connection)
    if current == expected:
        return current
    raise _out_of_date(current, expected)


def _out_of_date(current: str | None, expected: str) -> SchemaOutOfDate:
    known = {script.revision for script in _scripts().walk_revisions()}
    if current is None:
        message = (f"the database has tables but no schema revision (expected {expected}): it was not "
                   f"created by v2x's migrations, and `{MIGRATE_COMMAND}` cannot adopt it; "
                   f"point v2x at an empty database or at one that `{MIGRATE_COMMAND}` manages")
    elif current in known:
        message = (f"the database schema is at revision {current}, this v2x expects {expected}: "
                   f"run `{MIGRATE_COMMAND}` (with the same --config/--database) to upgrade it, then start again")
    else:
        message = (f"the database schema is at revision {current}, which this v2x does not know "
                   f"(it expects {expected}): a newer v2x migrated it; run that version "
                   f"(its `{MIGRATE_COMMAND}` included), not this one")
    return SchemaOutOfDate(current, expected, message)


def new_revision(engine: Engine, message: str) -> None:
    """Autogenerate a revision from the difference between the models and the database."""
    with engine.begin() as connection:
        command.revision(_config(connection), message=message, autogenerate=True)
