"""Scenario files: the shipped fleet is realistic; malformed files name vehicle and field."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from sim.scenario import ScenarioError, load_scenario

NOW = datetime(2026, 7, 15, 17, tzinfo=timezone.utc)
GOOD = """
[[vehicles]]
id = "car-1"
capacity_kwh = 60.0
soc_pct = 70.0
reserve_pct = 15.0
need_pct = 80.0
departure_in_h = 3.0
max_charge_kw = 11.0
max_discharge_kw = 11.0
eta_charge = 0.92
eta_discharge = 0.92
"""


def test_default_scenario_is_a_realistic_mix():
    scenario = load_scenario("default", NOW)
    assert 40 <= len(scenario.vehicles) <= 60
    kinds = {v.spec.kind for v in scenario.vehicles}
    assert {"school_bus", "fleet_van", "workplace_car", "home_car"} <= kinds
    buses = [v for v in scenario.vehicles if v.spec.kind == "school_bus"]
    cars = [v for v in scenario.vehicles if v.spec.kind == "home_car"]
    assert min(b.spec.capacity_kwh for b in buses) > max(c.spec.capacity_kwh for c in cars)
    assert len({v.session.departs_at for v in scenario.vehicles}) > 10
    for v in scenario.vehicles:
        assert v.spec.floor_kwh <= v.energy_kwh <= v.spec.capacity_kwh
        assert v.session.departs_at > NOW


def test_relative_departure_and_percentages_become_absolute(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    vehicle = load_scenario(str(path), NOW).vehicles[0]
    assert vehicle.energy_kwh == pytest.approx(42.0)
    assert vehicle.spec.floor_kwh == pytest.approx(9.0)
    assert vehicle.session.need_kwh == pytest.approx(48.0)
    assert (vehicle.session.departs_at - NOW).total_seconds() == pytest.approx(3 * 3600)


@pytest.mark.parametrize("change, message", [
    (("capacity_kwh = 60.0", "capacity_kwh = -60.0"), "vehicle car-1: capacity_kwh"),
    (("soc_pct = 70.0", "soc_pct = 170.0"), "vehicle car-1: soc_pct"),
    (("eta_charge = 0.92", "eta_charge = 1.5"), "vehicle car-1: eta_charge"),
    (("departure_in_h = 3.0", "departure_in_h = -1.0"), "vehicle car-1: departure_in_h"),
    (("need_pct = 80.0", "need_pct = 10.0"), "below reserve_pct"),
    (("max_charge_kw = 11.0", "max_charge_kw = 11.0\ncolour = 'red'"), "vehicle car-1: colour: unknown key"),
    (("eta_discharge = 0.92", ""), "vehicle car-1: eta_discharge: Field required"),
    (("soc_pct = 70.0", "soc_pct = 'full'"), "vehicle car-1: soc_pct"),
])
def test_malformed_vehicle_is_named(tmp_path, change, message):
    path = tmp_path / "s.toml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(ScenarioError, match=message):
        load_scenario(str(path), NOW)


def test_duplicate_ids_bad_toml_and_unknown_names(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD + GOOD)
    with pytest.raises(ScenarioError, match="appears twice"):
        load_scenario(str(path), NOW)
    path.write_text("[[vehicles]\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(str(path), NOW)
    with pytest.raises(ScenarioError, match="no scenario named"):
        load_scenario("no-such-scenario", NOW)


def test_demo_with_a_malformed_scenario_exits_non_zero(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD.replace("capacity_kwh = 60.0", "capacity_kwh = 0"))
    run = subprocess.run([sys.executable, "-m", "aggregator.cli", "demo", "--out", str(tmp_path / "out")],
                         env={"V2X_SCENARIO": str(path), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "vehicle car-1: capacity_kwh" in run.stderr


@pytest.mark.parametrize("archetype", ["school_bus_depot", "workplace", "residential_evenings"])
def test_the_library_archetypes_are_demo_fleets_too(archetype):
    """`fleet.scenario = "workplace"` (or `v2x demo` with V2X_SCENARIO) plugs in the archetype's
    fleet at the busiest moment of a generated day: valid vehicles, future departures."""
    now = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)
    scenario = load_scenario(archetype, now)
    assert len(scenario.vehicles) >= 5
    for v in scenario.vehicles:
        assert v.session.departs_at > now + timedelta(minutes=29)
        assert v.spec.floor_kwh <= v.energy_kwh <= v.spec.capacity_kwh
        assert 0 <= v.session.need_kwh <= v.spec.capacity_kwh
    assert len({v.spec.id for v in scenario.vehicles}) == len(scenario.vehicles)
