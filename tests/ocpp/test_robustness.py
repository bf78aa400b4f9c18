"""Disconnect and reconnect (offline, online, re-sync, nothing counted twice),
rejected and unanswered profiles, OCPP 2.0.1 charge-only, and malformed messages
(each gets its CALLERROR; the connection and the other stations carry on)."""
from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import websockets

from aggregator.chargers.port import (Ack, SessionEnded, SessionStarted, Setpoint, StationOffline, StationOnline)
from sim.station import Behaviour
from tests.ocpp.conftest import start_world


async def test_disconnect_reconnect_resync_counts_nothing_twice(engine, now):
    registry, sink, csms, fleet = await start_world(engine, now, limit=2)
    try:
        await fleet.connect_all(csms.url)
        sid, other = list(fleet.clients)
        client = fleet.clients[sid]
        await client.disconnect()
        await asyncio.sleep(0.2)
        assert sink.of(StationOffline, sid) and not registry.stations[sid].online
        assert (await csms.command(Setpoint(sid, -5.0, now, now + timedelta(minutes=5)))).ack is Ack.OFFLINE
        assert (await csms.command(Setpoint(other, -5.0, now, now + timedelta(minutes=5)))).ack is Ack.ACCEPTED
        fleet.advance(now + timedelta(seconds=20))
        await client.connect(csms.url, boot=False)   # back, without a reboot
        await asyncio.sleep(1.5)                      # CSMS re-sync: TriggerMessage(TransactionEvent)
        await fleet.flush()
        assert len(sink.of(StationOnline, sid)) == 2 and registry.stations[sid].online
        assert len(sink.of(SessionStarted, sid)) == 1          # known to the CSMS: continued ...
        assert len(sink.of(SessionEnded, sid)) == 0            # ... and continued, not a second session
        assert registry.stations[sid].session.vehicle_id == client.station.vehicle.id
        registry.persist()
        from sqlmodel import Session, select
        from aggregator.store.models import PlugSession
        with Session(engine) as db:
            rows = db.exec(select(PlugSession).where(PlugSession.station_id == sid)).all()
        assert len(rows) == 1 and rows[0].left_at is None
        assert (await csms.command(Setpoint(sid, -5.0, now, now + timedelta(minutes=5)))).ack is Ack.ACCEPTED
    finally:
        await fleet.close()
        await csms.stop()


async def test_rejecting_and_silent_stations(engine, now):
    registry, sink, csms, fleet = await start_world(engine, now, limit=3, command_timeout=0.5)
    ids = list(fleet.clients)
    fleet.clients[ids[0]].station.behaviour = Behaviour("reject")
    fleet.clients[ids[1]].station.behaviour = Behaviour("silent")
    try:
        await fleet.connect_all(csms.url)
        until = now + timedelta(minutes=5)
        results = await asyncio.gather(*(csms.command(Setpoint(s, -3.0, now, until)) for s in ids))
        assert [r.ack for r in results] == [Ack.REJECTED, Ack.TIMED_OUT, Ack.ACCEPTED]
        for r in results:
            registry.command_result(r, now)
        assert {live.station.id for live in registry.available(now)} == {ids[2]}
    finally:
        await fleet.close()
        await csms.stop()


async def test_ocpp201_station_is_charge_only(engine, now):
    registry, sink, csms, fleet = await start_world(engine, now, limit=1, charge_only={"school-bus-01"})
    sid = next(iter(fleet.clients))
    try:
        await fleet.connect_all(csms.url)
        assert fleet.clients[sid].version == "2.0.1"
        assert registry.stations[sid].station.max_discharge_kw == 0.0
        assert registry.stations[sid].spec.max_discharge_kw == 0.0
        result = await csms.command(Setpoint(sid, -7.0, now, now + timedelta(minutes=5)))
        assert result.ack is Ack.ACCEPTED
        assert fleet.clients[sid].station.setpoint_kw == 0.0     # a limit of 0, never a discharge
    finally:
        await fleet.close()
        await csms.stop()


async def test_malformed_messages_get_callerrors(engine, now):
    registry, sink, csms, fleet = await start_world(engine, now, limit=1)
    sid = next(iter(fleet.clients))
    try:
        await fleet.connect_all(csms.url)
        async with websockets.connect(csms.url + "cp-school-bus-01x", subprotocols=["ocpp2.1"]) as ws:
            raise AssertionError("an unknown station id must be refused")
    except websockets.InvalidStatus as err:
        assert err.response.status_code == 404
    try:
        await fleet.clients.pop(sid).disconnect()
        async with websockets.connect(csms.url + sid, subprotocols=["ocpp2.1"]) as ws:
            await ws.send("this is not json")
            assert json.loads(await ws.recv())[:3] == [4, "-1", "FormatViolation"]
            await ws.send(json.dumps([2, "a1", "NoSuchAction", {}]))
            assert json.loads(await ws.recv())[:3] == [4, "a1", "NotImplemented"]
            await ws.send(json.dumps([2, "a2", "Heartbeat", {"unexpected": 1}]))
            reply = json.loads(await ws.recv())
            assert reply[0] == 4 and reply[1] == "a2" and reply[2] in ("FormatViolation", "OccurrenceConstraintViolation")
            await ws.send(json.dumps([2, "a3", "BootNotification", {"reason": "PowerUp"}]))   # required field missing
            reply = json.loads(await ws.recv())
            assert reply[:2] == [4, "a3"] and reply[2] in ("ProtocolError", "OccurrenceConstraintViolation")
            await ws.send(json.dumps([2, "a4", "TransactionEvent", {"eventType": "Started", "timestamp": 5,
                                                                     "triggerReason": "x", "seqNo": 0,
                                                                     "transactionInfo": {"transactionId": "t"}}]))
            reply = json.loads(await ws.recv())
            assert reply[:2] == [4, "a4"]
            await ws.send(json.dumps([2, "a5", "Heartbeat", {}]))    # the connection lives on
            reply = json.loads(await ws.recv())
            assert reply[0] == 3 and reply[1] == "a5" and "currentTime" in reply[2]
    finally:
        await fleet.close()
        await csms.stop()


async def _boot_and_answer_resync(ws, *, silent_profile_requests: int) -> int:
    """A hand-written station: boots, then stays silent to the first GetChargingProfiles
    requests (answering them late, just before the next) and answers the rest of the
    re-sync. Returns how many it was asked."""
    await ws.send(json.dumps([2, "b1", "BootNotification",
                              {"chargingStation": {"model": "m", "vendorName": "v"}, "reason": "PowerUp"}]))
    asked, unanswered = 0, []
    while True:
        frame = json.loads(await ws.recv())
        if frame[0] != 2:
            continue
        if frame[2] == "GetChargingProfiles":
            asked += 1
            if asked <= silent_profile_requests:
                unanswered.append(frame[1])
                continue
            for late in unanswered:   # answered after the CSMS gave up on them: dropped
                await ws.send(json.dumps([3, late, {"status": "Accepted"}]))
            await ws.send(json.dumps([3, frame[1], {"status": "NoProfiles"}]))
        elif frame[2] == "TriggerMessage":
            await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
            return asked


async def test_resync_that_times_out_is_retried_then_given_up(engine, now):
    """A reconnect storm can make a re-sync time out: it is tried again with back-off, and a
    station that never answers is counted as given up while its connection lives on."""
    registry, sink, csms, fleet = await start_world(engine, now, limit=2, resync_timeout=0.3, resync_attempts=2)
    first, second = list(fleet.clients)
    try:
        async with websockets.connect(csms.url + first, subprotocols=["ocpp2.1"]) as ws:
            asked = await asyncio.wait_for(_boot_and_answer_resync(ws, silent_profile_requests=1), 10)
            assert asked == 2
            for _ in range(100):
                if csms.resyncs_done:
                    break
                await asyncio.sleep(0.05)
            assert (csms.resyncs_done, csms.resyncs_failed) == (1, 0)
            assert csms.states[first].profile_known and csms.states[first].profile is None
        async with websockets.connect(csms.url + second, subprotocols=["ocpp2.1"]) as ws:
            await ws.send(json.dumps([2, "b2", "BootNotification",
                                      {"chargingStation": {"model": "m", "vendorName": "v"}, "reason": "PowerUp"}]))
            for _ in range(200):
                if csms.resyncs_failed:
                    break
                try:
                    await asyncio.wait_for(ws.recv(), 0.05)   # asked twice; never answers
                except asyncio.TimeoutError:
                    pass
            assert (csms.resyncs_done, csms.resyncs_failed) == (1, 1)
            assert not csms.states[second].profile_known   # the next command installs ours again
            await ws.send(json.dumps([2, "h1", "Heartbeat", {}]))   # the connection lives on
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if reply[0] == 3 and reply[1] == "h1":
                    break
    finally:
        await fleet.close()
        await csms.stop()


async def test_resyncs_queue_beyond_their_concurrency(engine, now):
    """A reconnect storm: re-syncs beyond `resync_concurrency` wait for a slot (none times
    out in the queue) and every station is re-synchronised."""
    registry, sink, csms, fleet = await start_world(engine, now, resync_concurrency=1, resync_timeout=5)
    try:
        await fleet.connect_all(csms.url)
        for _ in range(200):
            if csms.resyncs_done >= len(fleet.clients):
                break
            await asyncio.sleep(0.05)
        assert (csms.resyncs_done, csms.resyncs_failed) == (len(fleet.clients), 0)
        assert len(fleet.clients) > 1
    finally:
        await fleet.close()
        await csms.stop()
