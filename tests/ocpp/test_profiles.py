"""Profiles over real WebSockets: a Dynamic TxProfile once, then UpdateDynamicSchedule
(and Absolute profiles for a station that does not take Dynamic ones);
ClearChargingProfile once no commitment is in force; re-sync after a reconnect
(the profile is re-read, offline and replayed meter values are not counted twice)."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlmodel import Session, select

from aggregator.chargers.port import Ack, MeterSample, SessionStarted, Setpoint
from aggregator.dispatch.ledger_writer import LedgerWriter
from aggregator.store.db import as_utc
from aggregator.store.models import MeterReading
from tests.ocpp.conftest import start_world


@pytest.mark.parametrize("validate_outgoing", [False, True], ids=["fast-path", "schema-validated"])
async def test_dynamic_profile_once_then_updates_and_absolute_fallback(engine, now, validate_outgoing):
    registry, sink, csms, fleet = await start_world(engine, now, limit=2, validate_outgoing=validate_outgoing)
    dyn_id, abs_id = list(fleet.clients)
    fleet.clients[abs_id].dynamic = False
    until = now + timedelta(minutes=5)
    try:
        await fleet.connect_all(csms.url)
        for kw in (-7.0, -3.0, 4.0):
            results = await asyncio.gather(*(csms.command(Setpoint(s, kw, now, until)) for s in (dyn_id, abs_id)))
            assert all(r.ack is Ack.ACCEPTED for r in results), results
            assert fleet.clients[dyn_id].station.setpoint_kw == kw
            assert fleet.clients[abs_id].station.setpoint_kw == kw
        assert fleet.clients[dyn_id].commands == [("Dynamic", -7.0), ("Update", -3.0), ("Update", 4.0)]
        assert fleet.clients[abs_id].commands == [("Absolute", -7.0), ("Absolute", -3.0), ("Absolute", 4.0)]
        assert csms.states[dyn_id].dynamic is True and csms.states[abs_id].dynamic is False
        # the dynamic profile carries the validity window: a station cut off from us drops it
        profile = fleet.clients[dyn_id].profile
        assert profile["charging_profile_kind"] == "Dynamic" and profile["invalid_after_offline_duration"] is True
        assert profile["max_offline_duration"] == 300 and profile["dyn_update_interval"] == 300
        # a new transaction needs a new profile: a Dynamic one again, not an update
        client = fleet.clients[dyn_id]
        fleet.advance(client.departs_at + timedelta(seconds=1), max_step_s=60)
        await fleet.flush()
        client.station.plugged = True
        client.departs_at = client.departs_at + timedelta(hours=8)
        client.start_transaction()
        await fleet.flush()
        result = await csms.command(Setpoint(dyn_id, -2.0, now, until))
        assert result.ack is Ack.ACCEPTED and client.commands[-1] == ("Dynamic", -2.0)
    finally:
        await fleet.close()
        await csms.stop()


async def test_clear_when_no_commitment_is_in_force(engine, now):
    book = {"in_force": True}
    registry, sink, csms, fleet = await start_world(
        engine, now, limit=1, commitment_in_force=lambda start, end: book["in_force"])
    sid = next(iter(fleet.clients))
    client = fleet.clients[sid]
    until = now + timedelta(minutes=5)
    try:
        await fleet.connect_all(csms.url)
        assert (await csms.command(Setpoint(sid, 3.0, now, until))).ack is Ack.ACCEPTED
        assert client.commands == [("Dynamic", 3.0)] and client.station.setpoint_kw == 3.0
        book["in_force"] = False   # the event is over: plain charging
        assert (await csms.command(Setpoint(sid, 2.0, now, until))).ack is Ack.ACCEPTED
        assert client.commands[-1] == ("Clear", None) and client.profile is None
        assert client.station.setpoint_kw == client.station.vehicle.max_charge_kw
        # nothing of ours left on the station: the next plain-charging setpoint sends nothing
        assert (await csms.command(Setpoint(sid, 2.0, now, until))).ack is Ack.ACCEPTED
        assert len(client.commands) == 2
        # a discharge is always an ask, in force or not
        assert (await csms.command(Setpoint(sid, -4.0, now, until))).ack is Ack.ACCEPTED
        assert client.commands[-1] == ("Dynamic", -4.0)
        book["in_force"] = True
        assert (await csms.command(Setpoint(sid, -5.0, now, until))).ack is Ack.ACCEPTED
        assert client.commands[-1] == ("Update", -5.0)
    finally:
        await fleet.close()
        await csms.stop()


async def test_commitment_rule_follows_the_setpoint_window(engine, now):
    """The rule uses the setpoint's validity window: a setpoint sent before an event starts
    but valid into it is an ask (entry lead, pre-positioning)."""
    from aggregator.ocpp.csms import Csms
    from aggregator.ocpp.credentials import StationDirectory
    start, end = now + timedelta(seconds=60), now + timedelta(minutes=10)
    csms = Csms(None, StationDirectory(), commitment_in_force=lambda a, b: a < end and start < b)
    assert csms.managed(Setpoint("x", 5.0, now, now + timedelta(seconds=90)))
    assert not csms.managed(Setpoint("x", 5.0, now, now + timedelta(seconds=30)))
    assert not csms.managed(Setpoint("x", 5.0, end, end + timedelta(seconds=90)))
    assert csms.managed(Setpoint("x", -1.0, end, end + timedelta(seconds=90)))


def _ledger(engine, registry, writer):
    writer.observe(SimpleNamespace(samples=registry.drain_samples(), commands=[], committed_event=None))
    with Session(engine) as db:
        return db.exec(select(MeterReading).order_by(MeterReading.ts)).all()


async def test_reconnect_resync_rereads_profile_and_counts_replays_once(engine, now):
    registry, sink, csms, fleet = await start_world(engine, now, limit=1)
    sid = next(iter(fleet.clients))
    client = fleet.clients[sid]
    writer = LedgerWriter(engine)
    until = now + timedelta(minutes=10)
    try:
        await fleet.connect_all(csms.url)
        await asyncio.sleep(1.2)   # the first re-sync (nothing to re-read yet)
        assert (await csms.command(Setpoint(sid, -7.0, now, until))).ack is Ack.ACCEPTED
        for s in range(5, 31, 5):
            fleet.advance(now + timedelta(seconds=s))
        await fleet.flush()
        delivered = list(client.sent_transaction_events)
        assert len(delivered) >= 7
        # cut off: the CSMS forgets what it knew of the profile; the station meters on, queueing offline
        await client.disconnect()
        await asyncio.sleep(0.2)
        csms.states[sid].profile_known, csms.states[sid].profile = False, None
        for s in range(35, 61, 5):
            fleet.advance(now + timedelta(seconds=s))
        assert len(client.offline_queue) == 6
        await client.connect(csms.url, boot=False)
        client.replay(delivered)      # and it resends everything it had sent before (no answers seen)
        await asyncio.sleep(1.5)
        await fleet.flush()
        for _ in range(40):
            if csms.resyncs_done >= 2:
                break
            await asyncio.sleep(0.1)
        assert csms.resyncs_done >= 2
        state = csms.states[sid]
        assert state.profile_known and state.profile.kind == "Dynamic" and state.profile.setpoint_w == -7000.0
        assert len(sink.of(SessionStarted, sid)) == 1   # the same session continues
        # each metered instant reached the fleet state and the ledger exactly once
        stamps = [s.ts for s in sink.of(MeterSample, sid)]
        assert len(stamps) == len(set(stamps)) and stamps == sorted(stamps)
        rows = _ledger(engine, registry, writer)
        assert len(rows) == len(stamps)
        exported = sum(max(0.0, b.energy_export_kwh - a.energy_export_kwh) for a, b in zip(rows, rows[1:]))
        assert abs(exported - (rows[-1].energy_export_kwh - rows[0].energy_export_kwh)) < 1e-9
        assert abs(rows[-1].energy_export_kwh - client.station.export_kwh) < 1e-3   # the register, not doubled
        assert any(as_utc(r.ts) > now + timedelta(seconds=31) for r in rows)                # offline samples arrived
        # the re-read profile is updated in place, not installed again
        assert (await csms.command(Setpoint(sid, -5.0, now, until))).ack is Ack.ACCEPTED
        assert client.commands[-1] == ("Update", -5.0)
    finally:
        await fleet.close()
        await csms.stop()
