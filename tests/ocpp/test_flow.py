"""The full message flow over real WebSockets on 127.0.0.1: boot, transaction,
charging needs, meter values, setpoints (discharge included), end of session."""
from __future__ import annotations

import asyncio
from datetime import timedelta

from aggregator.chargers.port import (Ack, MeterSample, SessionEnded, SessionStarted, Setpoint, StationOnline,
                                      VehicleIdentified)
from tests.ocpp.conftest import start_world


async def test_full_flow_and_discharge(engine, now):
    registry, sink, csms, fleet = await start_world(engine, now, limit=3)
    try:
        await fleet.connect_all(csms.url)
        await asyncio.sleep(0.3)
        sid = next(iter(fleet.clients))
        client = fleet.clients[sid]
        assert sink.of(StationOnline, sid)
        started = sink.of(SessionStarted, sid)
        assert len(started) == 1 and started[0].vehicle.vehicle_id == client.station.vehicle.id
        needs = sink.of(VehicleIdentified, sid)[-1].vehicle
        assert needs.departs_at == client.departs_at
        assert abs(needs.need_kwh - client.need_kwh) < 0.01
        assert abs(needs.floor_kwh - client.station.vehicle.floor_kwh) < 0.01
        assert needs.max_discharge_kw == client.station.vehicle.max_discharge_kw
        live = registry.stations[sid]
        assert live.session is not None and live.plug.departs_at == client.departs_at
        # a discharge setpoint is honoured by the station and metered back
        result = await csms.command(Setpoint(sid, -7.0, now, now + timedelta(minutes=5)))
        assert result.ack is Ack.ACCEPTED, result
        assert client.station.setpoint_kw == -7.0
        fleet.advance(now + timedelta(seconds=30))
        await fleet.flush()
        samples = sink.of(MeterSample, sid)
        assert samples[-1].power_kw < -6.0 and samples[-1].energy_export_kwh > 0.0
        assert samples[-1].soc_pct is not None
        # meter values on request
        before = len(sink.of(MeterSample, sid))
        await csms.request_meter_values(sid)
        fleet.advance(now + timedelta(seconds=31))
        await asyncio.sleep(0.3)
        assert len(sink.of(MeterSample, sid)) == before + 1
        # the vehicle leaves: the session ends once
        fleet.advance(client.departs_at + timedelta(seconds=1), max_step_s=60)
        await fleet.flush()
        assert len(sink.of(SessionEnded, sid)) == 1
        assert registry.stations[sid].session is None
        assert (await csms.command(Setpoint(sid, 5.0, now, now + timedelta(minutes=5)))).ack is Ack.REJECTED
    finally:
        await fleet.close()
        await csms.stop()
