"""Simulated station physics (limits, efficiencies, taper, meter registers) and its
answers behind the charger port (validity windows, rejection, offline)."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from aggregator.chargers.port import Ack, MeterSample, SessionEnded, SessionStarted, Setpoint, StationOnline
from aggregator.fleet import VehicleSpec
from sim.station import Behaviour, SimulatedStation
from sim.stations import SimulatedStations

T0 = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)
SPEC = VehicleSpec("car", "car", capacity_kwh=60.0, floor_kwh=9.0, max_charge_kw=11.0, max_discharge_kw=10.0,
                   eta_charge=0.9, eta_discharge=0.8)


FAR = T0 + timedelta(days=1)


def run(coro):
    return asyncio.run(coro)


def SimulatedCharger(spec, energy, now, **kw):
    return SimulatedStation("cp-1", spec, energy, now, **kw)


def set_power(station, kw, until=FAR):
    assert station.accept(Setpoint(station.station_id, kw, station.now, until)) is Ack.ACCEPTED


def test_discharge_follows_setpoint_and_loses_to_efficiency():
    charger = SimulatedCharger(SPEC, 30.0, T0)
    set_power(charger, -8.0)
    charger.advance(T0 + timedelta(hours=1))
    reading = charger.sample()
    assert reading.power_kw == pytest.approx(-8.0, abs=1e-6)
    # ~8 kWh to the grid over the hour (less the first-second ramp), 1/0.8 of it from the battery
    assert reading.energy_export_kwh == pytest.approx(8.0, abs=0.01)
    assert 30.0 - charger.energy_kwh == pytest.approx(reading.energy_export_kwh / 0.8, rel=1e-6)
    assert reading.energy_import_kwh == 0.0


def test_setpoints_are_clamped_to_charger_limits():
    charger = SimulatedCharger(SPEC, 30.0, T0)
    set_power(charger, -50.0)
    charger.advance(T0 + timedelta(minutes=1))
    assert charger.sample().power_kw == pytest.approx(-10.0, abs=1e-3)
    set_power(charger, 50.0)
    charger.advance(T0 + timedelta(minutes=2))
    assert charger.sample().power_kw == pytest.approx(11.0, abs=1e-3)


def test_charging_tapers_above_80_percent_and_stops_full():
    charger = SimulatedCharger(SPEC, 0.9 * 60.0, T0)
    set_power(charger, 11.0)
    charger.advance(T0 + timedelta(seconds=30))
    assert charger.sample().power_kw < 0.7 * 11.0
    charger.advance(T0 + timedelta(hours=10))
    reading = charger.sample()
    assert charger.energy_kwh <= 60.0 + 1e-9
    assert reading.soc_pct == pytest.approx(100.0, abs=0.1)


def test_battery_never_goes_below_empty():
    charger = SimulatedCharger(SPEC, 1.0, T0)
    set_power(charger, -10.0)
    charger.advance(T0 + timedelta(hours=1))
    reading = charger.sample()
    assert charger.energy_kwh >= 0.0
    assert reading.energy_export_kwh == pytest.approx(0.8, abs=1e-6)


def test_an_expired_schedule_falls_back_to_no_discharge():
    """A station cut off from the aggregator must not go on discharging blind."""
    charger = SimulatedCharger(SPEC, 30.0, T0)
    set_power(charger, -8.0, until=T0 + timedelta(minutes=1))
    charger.advance(T0 + timedelta(minutes=1))
    assert charger.sample().power_kw == pytest.approx(-8.0, abs=1e-3)
    charger.advance(T0 + timedelta(minutes=2))
    assert charger.sample().power_kw == pytest.approx(0.0, abs=1e-3)


def test_soc_is_optional_in_samples():
    charger = SimulatedCharger(SPEC, 30.0, T0, reports_soc=False)
    assert charger.sample().soc_pct is None


class Recorder:
    def __init__(self):
        self.events = []

    def on_station_event(self, event):
        self.events.append(event)


def test_network_answers_per_station_behaviour_and_offline():
    sink = Recorder()
    net = SimulatedStations(sink)
    net.add(SimulatedStation("ok", SPEC, 30.0, T0), T0 + timedelta(hours=1), 40.0)
    net.add(SimulatedStation("no", SPEC, 30.0, T0, behaviour=Behaviour("reject")), T0 + timedelta(hours=1), 40.0)
    net.add(SimulatedStation("off", SPEC, 30.0, T0), T0 + timedelta(hours=1), 40.0)
    net.plug_in_all()
    net.set_online("off", False)
    async def answers():
        return {sid: (await net.command(Setpoint(sid, -5.0, T0, FAR))).ack for sid in ("ok", "no", "off")}
    acks = run(answers())
    assert acks == {"ok": Ack.ACCEPTED, "no": Ack.REJECTED, "off": Ack.OFFLINE}
    assert net.stations["no"].setpoint_kw == 0.0     # a rejected command changes nothing


def test_network_ends_the_session_at_departure_with_a_last_sample():
    sink = Recorder()
    net = SimulatedStations(sink, sample_interval=timedelta(seconds=10))
    net.add(SimulatedStation("cp", SPEC, 30.0, T0), T0 + timedelta(minutes=1), 40.0)
    net.plug_in_all()
    net.advance(T0 + timedelta(minutes=5))
    kinds = [type(e) for e in sink.events]
    assert kinds[:2] == [StationOnline, SessionStarted] and kinds[-1] is SessionEnded   # boots online first
    assert kinds[-2] is MeterSample and sink.events[-2].ts == T0 + timedelta(minutes=1)
    assert not any(isinstance(e, MeterSample) and e.ts > T0 + timedelta(minutes=1) for e in sink.events)
