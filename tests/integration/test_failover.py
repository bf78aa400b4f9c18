"""Scale-out on PostgreSQL (aggregator/cluster): leases with fencing tokens, the station
command table, and three real `v2x run --simulated-fleet` instances on one database whose
leaseholder is killed (SIGKILL) in the middle of an event."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from aggregator.chargers.port import (Ack, CommandResult, MeterSample, SessionStarted, Setpoint, StationOnline,
                                      VehicleInfo)
from aggregator.cluster.commands import FENCED, CommandRelay, Gateway
from aggregator.cluster.lease import Fenced, Lease
from aggregator.cluster.relay import RelayReader, RelaySink, decode, encode
from aggregator.event_summary import summarize_event
from aggregator.store.db import make_engine
from aggregator.store.models import MeterReading, PartitionLease, SetpointRecord, StationCommand
from sim.vtn import UtilityVtn
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _expire(engine, partition: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(PartitionLease).where(PartitionLease.partition == partition)
                     .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))


class _Port:
    def __init__(self):
        self.sent: list[Setpoint] = []

    async def command(self, setpoint):
        self.sent.append(setpoint)
        return CommandResult(setpoint.station_id, Ack.ACCEPTED)

    async def request_meter_values(self, station_id):
        pass


def test_lease_is_exclusive_and_a_deposed_holder_is_fenced(postgres_url):
    engine = make_engine(postgres_url)
    partition = f"p-{uuid.uuid4().hex[:6]}"
    try:
        a, b = Lease(engine, partition, "a#1", 30), Lease(engine, partition, "b#1", 30)
        assert a.try_acquire() == 1 and a.held()
        assert b.try_acquire() is None and not b.held()
        assert a.try_acquire() == 1, "a renewal keeps the token"
        _expire(engine, partition)          # a paused holder whose lease ran out
        assert b.try_acquire() == 2, "a takeover raises the token"
        with pytest.raises(Fenced):
            with a.fenced() as db:
                db.add(SetpointRecord(vehicle_id="v", issued_at=datetime.now(timezone.utc), power_kw=-5))
                db.commit()
        assert a.try_acquire() is None and not a.held()
        with b.fenced() as db:
            db.add(SetpointRecord(vehicle_id="v", issued_at=datetime.now(timezone.utc), power_kw=-5))
            db.commit()
        with Session(engine) as db:
            assert len(db.execute(select(SetpointRecord)).all()) == 1, "only the leaseholder's write is in"
        b.release()
        assert Lease(engine, partition, "c#1", 30).try_acquire() == 3, "a released lease is free at once"
    finally:
        engine.dispose()


def test_commands_through_the_table_and_the_gateway_refuses_an_older_token(postgres_url):
    engine = make_engine(postgres_url)
    partition = f"p-{uuid.uuid4().hex[:6]}"

    async def scenario():
        old, new = Lease(engine, partition, "old#1", 30), Lease(engine, partition, "new#1", 30)
        assert old.try_acquire() == 1
        port = _Port()
        gateway = Gateway(engine, "gw-1", port)
        relay = CommandRelay(engine, old, lambda ids: {i: "gw-1" for i in ids if i != "nowhere"}, poll_s=0.1)
        now = datetime.now(timezone.utc)
        pending = [asyncio.create_task(relay.command(Setpoint(s, -7.0, now, now + timedelta(minutes=1))))
                   for s in ("cp-1", "cp-2", "nowhere")]
        await asyncio.sleep(0.05)
        assert await gateway.process() == 2
        results = await asyncio.wait_for(asyncio.gather(*pending), 5)
        assert [r.ack for r in results] == [Ack.ACCEPTED, Ack.ACCEPTED, Ack.OFFLINE]
        assert sorted(s.station_id for s in port.sent) == ["cp-1", "cp-2"]
        # the old holder writes a command, then loses the lease before the gateway reads it
        late = asyncio.create_task(relay.command(Setpoint("cp-1", -11.0, now, now + timedelta(minutes=1))))
        await asyncio.sleep(0.05)
        _expire(engine, partition)
        assert new.try_acquire() == 2
        assert await gateway.process() == 0, "a command with an older token is not carried out"
        assert (await asyncio.wait_for(late, 5)).ack is Ack.REJECTED
        assert gateway.refused == 1 and len(port.sent) == 2
        # and the old holder cannot even write one now
        refused = await asyncio.wait_for(relay.command(Setpoint("cp-2", -11.0, now, now + timedelta(minutes=1))), 5)
        assert refused.ack is Ack.REJECTED and FENCED in refused.detail and relay.refused == 1
        with Session(engine) as db:
            acks = db.execute(select(StationCommand.fencing_token, StationCommand.ack)
                              .order_by(StationCommand.id)).all()
        assert acks == [(1, "accepted"), (1, "accepted"), (1, FENCED)]

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()


def test_station_events_reach_the_leaseholder_through_the_database(postgres_url):
    engine = make_engine(postgres_url)
    try:
        ts = datetime(2025, 7, 1, 16, tzinfo=timezone.utc)
        events = [StationOnline("cp-9", ts),
                  SessionStarted("cp-9", ts, VehicleInfo("ev-9", 60.0, 30.0, ts + timedelta(hours=3), 50.0)),
                  MeterSample("cp-9", ts + timedelta(seconds=5), 1.0, 0.5, -7.2, 51.0)]
        assert [decode(encode(e)) for e in events] == events

        class Sink:
            got: list = []

            def on_station_event(self, event):
                self.got.append(event)

        reader = RelayReader(engine, Sink())
        sink = RelaySink(engine, "gw-2", "acct")
        for event in events:
            sink.on_station_event(event)
        assert reader.read() == 3 and Sink.got == events
        assert reader.read() == 0
        assert sink.connections.gateways(["cp-9", "cp-x"]) == {"cp-9": "gw-2"}
    finally:
        engine.dispose()


# -- three real instances ---------------------------------------------------------------------
LEASE_S = 6.0
INTERVAL = timedelta(seconds=8)
INTERVALS = 5


def _start(name: str, database_url: str, vtn_url: str, log_path) -> subprocess.Popen:
    env = {"PATH": "/usr/bin:/bin", "V2X_VTN_URL": vtn_url, "V2X_DATABASE_URL": database_url,
           "V2X_METRICS_PORT": str(free_port()), "PYTHONUNBUFFERED": "1", "V2X_CLUSTER_ENABLED": "true",
           "V2X_INSTANCE_ID": name, "V2X_LEASE_SECONDS": str(LEASE_S), "V2X_API_PORT": str(free_port())}
    return subprocess.Popen([sys.executable, "-m", "aggregator.cli", "run", "--simulated-fleet"], env=env,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, cwd=REPO)


async def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _lease(engine):
    with Session(engine) as db:
        row = db.execute(select(PartitionLease)).scalars().first()
        return None if row is None else (row.owner, row.fencing_token, row.acquired_at)


def test_leaseholder_killed_mid_event_another_takes_over_without_double_dispatch(postgres_url, tmp_path):
    subprocess.run([sys.executable, "-m", "aggregator.cli", "--database", postgres_url, "migrate"], cwd=REPO,
                   check=True, capture_output=True, timeout=120)
    engine = make_engine(postgres_url)
    logs = {name: tmp_path / f"{name}.log" for name in ("v2x-a", "v2x-b", "v2x-c")}

    async def scenario():
        vtn = UtilityVtn(port=free_port(), report_interval=timedelta(seconds=2))
        await vtn.start()
        processes = {}
        try:
            processes = {name: _start(name, postgres_url, vtn.url, path) for name, path in logs.items()}
            await _wait_until(lambda: vtn.record.registered, 90, "registration")
            (ven_id,) = vtn.record.registered
            owner, token, _ = _lease(engine)
            leader = owner.split("#")[0]
            start = datetime.now(timezone.utc) + timedelta(seconds=4)
            event_id = vtn.dispatch_event(ven_id, start, [(INTERVAL, 200.0)] * INTERVALS)
            await _wait_until(lambda: vtn.record.opt_responses, 30, "the opt response")
            await _wait_until(lambda: datetime.now(timezone.utc) > start + INTERVAL * 1.5, 60, "mid-event")
            assert _lease(engine)[0] == owner, "the lease did not move before the kill"
            processes[leader].send_signal(signal.SIGKILL)
            processes[leader].wait(timeout=10)
            killed_at = datetime.now(timezone.utc)
            await _wait_until(lambda: _lease(engine)[0] != owner, LEASE_S * 3, "a takeover")
            new_owner, new_token, acquired_at = _lease(engine)
            await _wait_until(lambda: datetime.now(timezone.utc) > start + INTERVAL * INTERVALS + timedelta(seconds=2),
                              90, "the event end")
            for name, process in processes.items():
                if name != leader:
                    process.send_signal(signal.SIGTERM)
            codes = {name: p.wait(timeout=40) for name, p in processes.items() if name != leader}
            return (event_id, start, killed_at, (owner, token), (new_owner, new_token, acquired_at), codes,
                    vtn.record)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
            await vtn.stop()

    try:
        event_id, start, killed_at, old, new, codes, record = asyncio.run(scenario())
        text_of = lambda: "\n".join(f"== {n}\n{p.read_text()[-2500:]}" for n, p in logs.items())   # noqa: E731
        assert all(code == 0 for code in codes.values()), (codes, text_of())
        new_owner, new_token, acquired_at = new
        # another instance took over, with the next fencing token, within one lease period of the kill
        assert new_owner.split("#")[0] != old[0].split("#")[0] and new_token == old[1] + 1
        takeover_s = (acquired_at.astimezone(timezone.utc) - killed_at).total_seconds()
        print(f"takeover {takeover_s:.2f} s after SIGKILL (lease {LEASE_S:g} s)")
        assert takeover_s <= LEASE_S + 0.5, (takeover_s, text_of())
        # the VEN's answer stayed optIn across the change of leaseholder
        assert [opt for _, e, opt in record.opt_responses if e == event_id][:1] == ["optIn"]
        assert "optOut" not in [opt for _, e, opt in record.opt_responses if e == event_id]
        with Session(engine) as db:
            commands = db.execute(select(StationCommand)).scalars().all()
            readings = db.execute(select(MeterReading).order_by(MeterReading.source, MeterReading.ts)).scalars().all()
            setpoints = db.execute(select(SetpointRecord)).scalars().all()
        # no double dispatch: each token's commands come from one tenure, and tenures do not overlap
        tenures = {}
        for c in commands:
            first, last = tenures.get(c.fencing_token, (c.created_at, c.created_at))
            tenures[c.fencing_token] = (min(first, c.created_at), max(last, c.created_at))
        assert sorted(tenures) == [old[1], new_token], tenures
        assert tenures[old[1]][1] < tenures[new_token][0]
        assert tenures[old[1]][1] <= killed_at + timedelta(seconds=0.5)
        assert not [c for c in commands if c.ack == FENCED], "nothing was left to refuse after a SIGKILL"
        accepted = [c for c in commands if c.ack == "accepted"]
        assert len(accepted) >= len(setpoints) > 0
        # the ledger: readings from both tenures, each (source, ts) once, registers never going back
        stamps = [r.ts.astimezone(timezone.utc) for r in readings]
        assert any(t < killed_at for t in stamps) and any(t > killed_at for t in stamps)
        assert len({(r.source, r.ts) for r in readings}) == len(readings)
        assert len({(s.vehicle_id, s.issued_at) for s in setpoints}) == len(setpoints)
        for previous, reading in zip(readings, readings[1:]):
            if previous.source == reading.source:
                assert reading.energy_export_kwh >= previous.energy_export_kwh - 1e-9, (previous, reading)
                assert reading.energy_import_kwh >= previous.energy_import_kwh - 1e-9, (previous, reading)
        # the new leaseholder carried the event on: the intervals after the takeover were delivered
        summary = summarize_event(engine, event_id)
        for interval in summary.intervals[3:]:
            assert interval.delivered_export_kw == pytest.approx(200.0, rel=0.15), text_of()
    finally:
        engine.dispose()
