"""Station events from the instance holding a station's socket to the partition's
leaseholder: the gateway's CSMS pushes them into a `RelaySink`, which appends them
to `station_event_relay` and NOTIFYs; the leaseholder's `RelayReader` reads them in
id order (from where it started, so a new leaseholder begins with the fleet state
in the database and what arrives from then on) and feeds its fleet registry.

The sink also keeps `station_connection` (which instance holds which socket), the
route the leaseholder's commands take back.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from aggregator.chargers import port as charger_port
from aggregator.chargers.port import StationEvent, StationEventSink, StationOffline, StationOnline, VehicleInfo
from aggregator.cluster.commands import ConnectionTable
from aggregator.cluster.notify import channel, notify
from aggregator.store.models import StationEventRecord

log = logging.getLogger(__name__)
_TYPES = {cls.__name__: cls for cls in (charger_port.SessionStarted, charger_port.VehicleIdentified,
                                        charger_port.SessionEnded, charger_port.MeterSample,
                                        charger_port.StationOffline, charger_port.StationOnline)}


def events_channel(partition: str) -> str:
    return channel("evt", partition)


def encode(event: StationEvent) -> str:
    def plain(value):
        if isinstance(value, datetime):
            return {"$t": value.isoformat()}
        if isinstance(value, VehicleInfo):
            return {"$v": {k: plain(v) for k, v in dataclasses.asdict(value).items()}}
        return value
    fields = {f.name: plain(getattr(event, f.name)) for f in dataclasses.fields(event)}
    return json.dumps({"type": type(event).__name__, **fields})


def decode(text: str) -> StationEvent:
    def typed(value):
        if isinstance(value, dict) and "$t" in value:
            return datetime.fromisoformat(value["$t"])
        if isinstance(value, dict) and "$v" in value:
            return VehicleInfo(**{k: typed(v) for k, v in value["$v"].items()})
        return value
    data = json.loads(text)
    return _TYPES[data.pop("type")](**{k: typed(v) for k, v in data.items()})


class RelaySink:
    """A `StationEventSink` for a gateway: events go to the table, sockets to `station_connection`.
    Writes that fail are kept and retried with the next event (order kept)."""

    def __init__(self, engine, instance_id: str, partition: str):
        self.engine = engine
        self.instance_id = instance_id
        self.partition = partition
        self.connections = ConnectionTable(engine, instance_id)
        self._queued: list[StationEvent] = []

    def on_station_event(self, event: StationEvent) -> None:
        self._queued.append(event)
        self.flush()

    def flush(self) -> bool:
        if not self._queued:
            return True
        events = self._queued
        try:
            with Session(self.engine) as db:
                for event in events:
                    db.add(StationEventRecord(gateway=self.instance_id, station_id=event.station_id,
                                              payload=encode(event), created_at=event.ts))
                notify(db, events_channel(self.partition))
                db.commit()
            for event in events:
                if isinstance(event, StationOnline):
                    self.connections.connected(event.station_id, event.ts)
                elif isinstance(event, StationOffline):
                    self.connections.disconnected(event.station_id)
            self._queued = self._queued[len(events):]
            return True
        except SQLAlchemyError as err:
            log.error("station events not relayed (%s); %d kept", err.__class__.__name__, len(events))
            return False


class RelayReader:
    """The leaseholder's side: every relayed event after `start_after`, in order, into `sink`."""

    def __init__(self, engine, sink: StationEventSink):
        self.engine = engine
        self.sink = sink
        with Session(engine) as db:
            self.last_id = db.execute(select(func.max(StationEventRecord.id))).scalar() or 0

    def on_notify(self, _channel: str = "", _payload: str = "") -> int:
        return self.read()

    def read(self) -> int:
        try:
            with Session(self.engine) as db:
                rows = db.execute(select(StationEventRecord.id, StationEventRecord.payload)
                                  .where(StationEventRecord.id > self.last_id)
                                  .order_by(StationEventRecord.id).limit(10_000)).all()
        except SQLAlchemyError as err:
            log.warning("relayed station events not read (%s)", err.__class__.__name__)
            return 0
        for row_id, payload in rows:
            self.last_id = row_id
            try:
                self.sink.on_station_event(decode(payload))
            except Exception:   # one bad event must not stop the rest
                log.exception("relayed station event %s could not be applied", row_id)
        return len(rows)


def prune_events(engine, older_than: datetime) -> int:
    with Session(engine) as db:
        result = db.execute(StationEventRecord.__table__.delete().where(StationEventRecord.created_at < older_than))
        db.commit()
        return result.rowcount or 0


__all__ = ["RelayReader", "RelaySink", "decode", "encode", "events_channel", "prune_events"]
