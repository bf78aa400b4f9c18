"""Simulated charger physics: limits, efficiencies, taper, meter registers."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from aggregator.chargers.base import ChargerUnavailable
from aggregator.chargers.simulated import SimulatedCharger
from aggregator.fleet import VehicleSpec

T0 = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)
SPEC = VehicleSpec("car", "car", capacity_kwh=60.0, floor_kwh=9.0, max_charge_kw=11.0, max_discharge_kw=10.0,
                   eta_charge=0.9, eta_discharge=0.8)


def run(coro):
    return asyncio.run(coro)


def test_discharge_follows_setpoint_and_loses_to_efficiency():
    charger = SimulatedCharger(SPEC, 30.0, T0)
    run(charger.apply_setpoint(-8.0))
    charger.advance(T0 + timedelta(hours=1))
    reading = run(charger.read())
    assert reading.power_kw == pytest.approx(-8.0, abs=1e-6)
    # ~8 kWh to the grid over the hour (less the first-second ramp), 1/0.8 of it from the battery
    assert reading.energy_export_kwh == pytest.approx(8.0, abs=0.01)
    assert 30.0 - reading.energy_kwh == pytest.approx(reading.energy_export_kwh / 0.8, rel=1e-6)
    assert reading.energy_import_kwh == 0.0


def test_setpoints_are_clamped_to_charger_limits():
    charger = SimulatedCharger(SPEC, 30.0, T0)
    run(charger.apply_setpoint(-50.0))
    charger.advance(T0 + timedelta(minutes=1))
    assert run(charger.read()).power_kw == pytest.approx(-10.0, abs=1e-3)
    run(charger.apply_setpoint(50.0))
    charger.advance(T0 + timedelta(minutes=2))
    assert run(charger.read()).power_kw == pytest.approx(11.0, abs=1e-3)


def test_charging_tapers_above_80_percent_and_stops_full():
    charger = SimulatedCharger(SPEC, 0.9 * 60.0, T0)
    run(charger.apply_setpoint(11.0))
    charger.advance(T0 + timedelta(seconds=30))
    assert run(charger.read()).power_kw < 0.7 * 11.0
    charger.advance(T0 + timedelta(hours=10))
    reading = run(charger.read())
    assert reading.energy_kwh <= 60.0 + 1e-9
    assert reading.soc_pct == pytest.approx(100.0, abs=0.1)


def test_battery_never_goes_below_empty():
    charger = SimulatedCharger(SPEC, 1.0, T0)
    run(charger.apply_setpoint(-10.0))
    charger.advance(T0 + timedelta(hours=1))
    reading = run(charger.read())
    assert reading.energy_kwh >= 0.0
    assert reading.energy_export_kwh == pytest.approx(0.8, abs=1e-6)


def test_offline_charger_raises():
    charger = SimulatedCharger(SPEC, 30.0, T0)
    charger.online = False
    with pytest.raises(ChargerUnavailable):
        run(charger.read())
    with pytest.raises(ChargerUnavailable):
        run(charger.apply_setpoint(1.0))
