"""The command path between instances: the leaseholder's dispatcher writes each setpoint
into `station_command` (fenced: stamped with its token, refused once the lease has
another), addressed to the instance that holds the station's socket, and NOTIFYs it;
that instance (the `Gateway`) reads its pending rows, refuses any whose token is
older than the partition's lease token, sends the rest to its stations, writes the
acknowledgements back and NOTIFYs the partition. A gateway that was not listening
(restart, lost connection) reads the rows it missed when it listens again; rows
past their validity window are closed as `expired`, never sent late.

`CommandRelay` is the leaseholder's `ChargerPort`: commands issued in the same
tick (one fan-out) go in one fenced transaction; each resolves when its
acknowledgement row is written (a NOTIFY, with a poll as a fallback).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from aggregator.chargers.port import Ack, ChargerPort, CommandResult, Setpoint
from aggregator.cluster.lease import Fenced, Lease, current_tokens
from aggregator.cluster.notify import channel, notify
from aggregator.dispatch.fanout import fan_out
from aggregator.store.db import as_utc
from aggregator.store.models import StationCommand, StationConnection

log = logging.getLogger(__name__)
FENCED = "fenced"
EXPIRED = "expired"
_ACKS = {a.value: a for a in Ack}


def gateway_channel(instance_id: str) -> str:
    return channel("cmd", instance_id)


def ack_channel(partition: str) -> str:
    return channel("ack", partition)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ConnectionTable:
    """Where each station's socket is: `station_connection`, written by the gateway holding it."""

    def __init__(self, engine, instance_id: str):
        self.engine = engine
        self.instance_id = instance_id

    def connected(self, station_id: str, at: datetime) -> None:
        with Session(self.engine) as db:
            row = db.get(StationConnection, station_id)
            if row is None:
                db.add(StationConnection(station_id=station_id, gateway=self.instance_id, since=at))
            else:
                row.gateway, row.since = self.instance_id, at
            db.commit()

    def disconnected(self, station_id: str) -> None:
        with Session(self.engine) as db:
            row = db.get(StationConnection, station_id)
            if row is not None and row.gateway == self.instance_id:
                db.delete(row)
                db.commit()

    def forget_mine(self) -> None:
        """At start-up and shutdown: this instance holds no socket."""
        with Session(self.engine) as db:
            for row in db.execute(select(StationConnection).where(StationConnection.gateway == self.instance_id)).scalars().all():
                db.delete(row)
            db.commit()

    def gateways(self, station_ids: list[str]) -> dict[str, str]:
        with Session(self.engine) as db:
            rows = db.execute(select(StationConnection.station_id, StationConnection.gateway)
                              .where(StationConnection.station_id.in_(sorted(set(station_ids))))).all()
        return dict(rows)


class CommandRelay:
    """The leaseholder's charger port: commands through the table to whichever instance
    holds each station (`route(station_ids) -> {station: instance}`; a station with no
    instance is offline)."""

    def __init__(self, engine, lease: Lease, route: Callable[[list[str]], dict[str, str]], *,
                 poll_s: float = 1.0, clock=_utc_now, on_fenced: Callable[[], None] = lambda: None):
        self.engine = engine
        self.lease = lease
        self.route = route
        self.poll_s = poll_s
        self.clock = clock
        self.on_fenced = on_fenced
        self._batch: list[tuple[Setpoint, asyncio.Future]] = []
        self._flushing: asyncio.Task | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._poller: asyncio.Task | None = None
        self.refused = 0            # commands refused by the fence (we were deposed)

    @property
    def channel(self) -> str:
        return ack_channel(self.lease.partition)

    # -- ChargerPort ---------------------------------------------------------------------------
    async def command(self, setpoint: Setpoint) -> CommandResult:
        future = asyncio.get_running_loop().create_future()
        self._batch.append((setpoint, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        return await future

    async def request_meter_values(self, station_id: str) -> None:
        """Best effort, as on one instance: a NOTIFY to the station's gateway (no row)."""
        gateway = self.route([station_id]).get(station_id)
        if gateway is None:
            return
        try:
            with Session(self.engine) as db:
                notify(db, gateway_channel(gateway), f"meter {station_id}")
                db.commit()
        except SQLAlchemyError as err:
            log.warning("meter request for %s not sent (%s)", station_id, err.__class__.__name__)

    # -- the table -----------------------------------------------------------------------------
    async def _flush(self) -> None:
        await asyncio.sleep(0)      # let the rest of this fan-out join the batch
        batch, self._batch = self._batch, []
        if not batch:
            return
        now = self.clock()
        try:
            routes = self.route([s.station_id for s, _ in batch])
            rows = []
            with self.lease.fenced() as db:
                for setpoint, future in batch:
                    gateway = routes.get(setpoint.station_id)
                    if gateway is None:
                        future.set_result(CommandResult(setpoint.station_id, Ack.OFFLINE, "no instance holds its socket"))
                        continue
                    row = StationCommand(partition=self.lease.partition, fencing_token=self.lease.token,
                                         gateway=gateway, station_id=setpoint.station_id, power_kw=setpoint.power_kw,
                                         valid_from=setpoint.valid_from, valid_until=setpoint.valid_until,
                                         created_at=now)
                    db.add(row)
                    rows.append((row, future))
                db.flush()
                for gateway in {row.gateway for row, _ in rows}:
                    notify(db, gateway_channel(gateway))
                db.commit()
                for row, future in rows:
                    self._waiting[row.id] = future
        except Fenced as err:
            self.refused += len(batch)
            log.error("commands refused: %s", err)
            for setpoint, future in batch:
                if not future.done():
                    future.set_result(CommandResult(setpoint.station_id, Ack.REJECTED, f"{FENCED}: {err}"))
            self.on_fenced()
        except SQLAlchemyError as err:
            log.error("commands not written (%s)", err.__class__.__name__)
            for setpoint, future in batch:
                if not future.done():
                    future.set_result(CommandResult(setpoint.station_id, Ack.OFFLINE, "database unavailable"))

    def on_notify(self, _channel: str, _payload: str) -> None:
        self.collect()

    def collect(self) -> None:
        """Resolve the commands whose acknowledgement is in the table."""
        for command_id, future in list(self._waiting.items()):
            if future.done():          # the dispatcher's deadline gave up on it
                del self._waiting[command_id]
        if not self._waiting:
            return
        try:
            with Session(self.engine) as db:
                rows = db.execute(select(StationCommand.id, StationCommand.station_id, StationCommand.ack,
                                         StationCommand.detail)
                                  .where(StationCommand.id.in_(sorted(self._waiting)),
                                         StationCommand.done_at.is_not(None))).all()
        except SQLAlchemyError as err:
            log.warning("acknowledgements not read (%s)", err.__class__.__name__)
            return
        for command_id, station_id, ack, detail in rows:
            future = self._waiting.pop(command_id, None)
            if future is not None and not future.done():
                result_ack = _ACKS.get(ack, Ack.REJECTED)   # fenced / expired: not carried out
                future.set_result(CommandResult(station_id, result_ack, detail or ack or ""))

    async def _poll(self) -> None:
        """The fallback when a NOTIFY is missed (the listener reconnecting)."""
        while self._waiting or self._batch:
            await asyncio.sleep(self.poll_s)
            self.collect()


class Gateway:
    """Carries out the commands addressed to this instance on the stations whose sockets it
    holds (`port`: the CSMS, or the simulation), refusing any with a stale fencing token."""

    def __init__(self, engine, instance_id: str, port: ChargerPort, *, poll_s: float = 2.0,
                 deadline_s: float = 5.0, clock=_utc_now):
        self.engine = engine
        self.instance_id = instance_id
        self.port = port
        self.poll_s = poll_s
        self.deadline_s = deadline_s
        self.clock = clock
        self.highest: dict[str, int] = {}      # highest token seen per partition (never goes back)
        self._wake = asyncio.Event()
        self._meter_requests: set[str] = set()
        self.refused = 0

    @property
    def channel(self) -> str:
        return gateway_channel(self.instance_id)

    def on_notify(self, _channel: str, payload: str) -> None:
        if payload.startswith("meter "):
            self._meter_requests.add(payload[len("meter "):])
        self._wake.set()

    def on_connect(self) -> None:
        self._wake.set()      # read what arrived while we were not listening

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            requests, self._meter_requests = self._meter_requests, set()
            for station_id in requests:
                await self.port.request_meter_values(station_id)
            try:
                await self.process()
            except SQLAlchemyError as err:
                log.warning("gateway %s: commands not read (%s)", self.instance_id, err.__class__.__name__)

    async def process(self) -> int:
        """Carry out every pending command for us; returns how many were sent to stations."""
        now = self.clock()
        with Session(self.engine) as db:
            pending = db.execute(select(StationCommand).where(StationCommand.gateway == self.instance_id,
                                                           StationCommand.done_at.is_(None))
                              .order_by(StationCommand.id)).scalars().all()
            if not pending:
                return 0
            tokens = current_tokens(db, {row.partition for row in pending})
            for partition, token in tokens.items():
                self.highest[partition] = max(self.highest.get(partition, 0), token)
            db.expunge_all()
        closed: dict[int, tuple[str, str]] = {}
        latest: dict[str, StationCommand] = {}
        for row in pending:
            if row.fencing_token < self.highest.get(row.partition, 0):
                closed[row.id] = (FENCED, f"token {row.fencing_token} < lease token {self.highest[row.partition]}")
                self.refused += 1
                log.warning("refused a command for %s with fencing token %s (lease is at %s)", row.station_id,
                            row.fencing_token, self.highest[row.partition])
            elif as_utc(row.valid_until) <= now:
                closed[row.id] = (EXPIRED, "validity window passed before delivery")
            else:
                previous = latest.get(row.station_id)
                if previous is not None:    # only the newest command per station is carried out
                    closed[previous.id] = (EXPIRED, "superseded before delivery")
                latest[row.station_id] = row
        rows = list(latest.values())
        results = await fan_out(self.port, [Setpoint(r.station_id, r.power_kw, as_utc(r.valid_from),
                                                     as_utc(r.valid_until)) for r in rows],
                                deadline_s=self.deadline_s)
        for row, result in zip(rows, results):
            closed[row.id] = (result.ack.value, result.detail)
        done_at = self.clock()
        with Session(self.engine) as db:
            for command_id, (ack, detail) in closed.items():
                db.execute(update(StationCommand).where(StationCommand.id == command_id)
                           .values(ack=ack, detail=detail[:500], done_at=done_at))
            for partition in {row.partition for row in pending}:
                notify(db, ack_channel(partition))
            db.commit()
        return len(rows)


def prune_commands(engine, older_than: datetime) -> int:
    """Delete answered commands older than `older_than` (the table is a queue, not a record)."""
    with Session(engine) as db:
        result = db.execute(StationCommand.__table__.delete().where(StationCommand.done_at.is_not(None),
                                                                     StationCommand.created_at < older_than))
        db.commit()
        return result.rowcount or 0


__all__ = ["CommandRelay", "ConnectionTable", "Gateway", "FENCED", "EXPIRED", "prune_commands"]
