"""Partition leases in PostgreSQL, with fencing tokens (REFERENCE §9).

One row per partition (`partition_lease`). An instance takes the lease with one
`INSERT … ON CONFLICT DO UPDATE … WHERE owner = me OR expires_at < now()`: the
row lock serialises contenders, the database's clock decides expiry (instances'
clocks do not matter), and every change of owner raises `fencing_token` by one.
The holder renews well inside the lease period and considers itself the holder
only until its own (monotonic) deadline, shorter than the database's.

Every write the leaseholder's dispatcher makes goes through `fenced()`: one
transaction that first reads the lease row `FOR SHARE` and refuses (`Fenced`)
unless it still carries our token. A takeover (an UPDATE of that row) waits for
such a transaction to finish, so a write is either before the takeover or
refused; a paused, deposed leader cannot write after its successor started.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from sqlalchemy import case, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session

from aggregator.store.db import as_utc
from aggregator.store.models import PartitionLease

log = logging.getLogger(__name__)
_LEASE = PartitionLease.__table__


class Fenced(RuntimeError):
    """A write carried a fencing token older than the partition's lease: we are not the leaseholder."""


def owner_name(instance_id: str) -> str:
    """Unique per process: a restarted instance with the same id is a new owner (and gets a new token)."""
    return f"{instance_id}#{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(self, engine: Engine, partition: str, owner: str, seconds: float, *,
                 monotonic=time.monotonic):
        self.engine = engine
        self.partition = partition
        self.owner = owner
        self.seconds = float(seconds)
        self.token: int | None = None
        self._valid_until = 0.0          # local monotonic deadline of our tenure
        self._monotonic = monotonic
        self._postgres = engine.dialect.name == "postgresql"

    # -- taking and keeping it ---------------------------------------------------------------
    def try_acquire(self) -> int | None:
        """Take the lease if it is free or expired, or renew ours. Returns the fencing token
        while we hold it, None when someone else does."""
        started = self._monotonic()
        now = func.now() if self._postgres else datetime.now(timezone.utc)
        insert = (postgresql.insert if self._postgres else sqlite.insert)(PartitionLease)
        expires = now + timedelta(seconds=self.seconds)
        same_owner = _LEASE.c.owner == insert.excluded.owner
        statement = insert.values(partition=self.partition, owner=self.owner, fencing_token=1,
                                  acquired_at=now, expires_at=expires).on_conflict_do_update(
            index_elements=["partition"],
            set_={"owner": insert.excluded.owner,
                  "fencing_token": case((same_owner, _LEASE.c.fencing_token), else_=_LEASE.c.fencing_token + 1),
                  "acquired_at": case((same_owner, _LEASE.c.acquired_at), else_=insert.excluded.acquired_at),
                  "expires_at": insert.excluded.expires_at},
            where=or_(same_owner, _LEASE.c.expires_at < now),
        ).returning(_LEASE.c.fencing_token)
        with self.engine.begin() as connection:
            row = connection.execute(statement).first()
        if row is None:
            if self.token is not None:
                log.warning("partition %s: lease lost (token %s)", self.partition, self.token)
            self.token, self._valid_until = None, 0.0
            return None
        if self.token != row[0]:
            log.info("partition %s: lease taken by %s, fencing token %s", self.partition, self.owner, row[0])
        self.token = int(row[0])
        # a margin for the round trip: our tenure ends before the database lets anyone else in
        self._valid_until = started + self.seconds * 0.9
        return self.token

    def held(self) -> bool:
        """Whether we may still act as the leaseholder (local deadline; writes are fenced anyway)."""
        return self.token is not None and self._monotonic() < self._valid_until

    def lose(self) -> None:
        """Forget our tenure (a fenced write found a newer token)."""
        self.token, self._valid_until = None, 0.0

    def release(self) -> None:
        """Give the lease up at shutdown, so a standby need not wait for it to expire."""
        if self.token is None:
            return
        now = func.now() if self._postgres else datetime.now(timezone.utc)
        with self.engine.begin() as connection:
            connection.execute(_LEASE.update().where(_LEASE.c.partition == self.partition,
                                                     _LEASE.c.owner == self.owner)
                               .values(expires_at=now - timedelta(seconds=1)))
        self.lose()

    def current(self) -> tuple[str, int, datetime] | None:
        """(owner, fencing token, expires at) as the database has it."""
        with self.engine.connect() as connection:
            row = connection.execute(select(_LEASE.c.owner, _LEASE.c.fencing_token, _LEASE.c.expires_at)
                                     .where(_LEASE.c.partition == self.partition)).first()
        return None if row is None else (row[0], int(row[1]), as_utc(row[2]))

    def seconds_left(self) -> float | None:
        """How long until the lease as it stands expires, by the database's clock (None: no lease yet)."""
        with self.engine.connect() as connection:
            if self._postgres:
                row = connection.execute(select(func.extract("epoch", _LEASE.c.expires_at - func.now()))
                                         .where(_LEASE.c.partition == self.partition)).first()
                return None if row is None else float(row[0])
            row = connection.execute(select(_LEASE.c.expires_at).where(_LEASE.c.partition == self.partition)).first()
        return None if row is None else (as_utc(row[0]) - datetime.now(timezone.utc)).total_seconds()

    # -- fenced writes -------------------------------------------------------------------------
    @contextmanager
    def fenced(self) -> Iterator[Session]:
        """A session whose transaction holds the lease row (FOR SHARE) with our token; commit
        inside. Raises `Fenced` (nothing written) when the lease has another token."""
        token = self.token
        if token is None:
            raise Fenced(f"partition {self.partition}: not the leaseholder")
        with Session(self.engine) as db:
            query = select(_LEASE.c.fencing_token).where(_LEASE.c.partition == self.partition)
            if self._postgres:
                query = query.with_for_update(read=True)
            current = db.execute(query).scalar()
            if current != token:
                db.rollback()
                self.lose()
                raise Fenced(f"partition {self.partition}: our fencing token {token} is older than "
                             f"the lease's {current}")
            yield db


def current_tokens(session: Session, partitions: set[str]) -> dict[str, int]:
    """The lease token of each partition now (what a gateway compares a command's token with)."""
    if not partitions:
        return {}
    rows = session.execute(select(_LEASE.c.partition, _LEASE.c.fencing_token)
                           .where(_LEASE.c.partition.in_(sorted(partitions)))).all()
    return {p: int(t) for p, t in rows}
