"""Behaviour of the plans on small hand-checkable fleets (LP path unless stated)."""

import numpy as np
import pytest

from aggregator.allocator import AllocatorOptions, Targets, allocate, deliverable_export_bound_kw

from .helpers import fleet

LP = AllocatorOptions(method="lp")
ALL = ["lp", "cluster", "greedy", "proportional", "llf"]


@pytest.mark.parametrize("method", ALL)
def test_charges_to_need_without_commitment(method):
    f = fleet(1, energy_kwh=20.0, need_kwh=40.0, departure_h=4.0, max_charge_kw=10.0)
    plan = allocate(f, Targets(np.ones(4), np.full(4, np.nan)), AllocatorOptions(method=method))
    assert plan.departure_shortfall_kwh[0] == pytest.approx(0.0, abs=1e-6)
    assert np.all(plan.power_kw >= -1e-9)  # no pointless export
    assert plan.power_kw.sum() == pytest.approx(20.0, abs=1e-4)
    assert plan.power_kw[0, 0] == pytest.approx(10.0, abs=1e-4)  # as early as possible
    assert np.all(plan.shortfall_kw == 0)


def test_departure_beyond_horizon_is_enforced_by_the_tail():
    # 2 h horizon, must export 10 kW; EV leaves at 6 h needing 60 from 50 at 10 kW:
    # it can export in the horizon only what 4 h of charging can replace.
    f = fleet(1, energy_kwh=50.0, capacity_kwh=80.0, floor_kwh=0.0, need_kwh=60.0, departure_h=6.0)
    plan = allocate(f, Targets.flat(2, 1.0, -10.0), LP)
    assert plan.departure_shortfall_kwh[0] == pytest.approx(0.0, abs=1e-5)
    # energy at 2 h must be >= 60 - 4*10 = 20: it may export 30 kWh but only 10 kW x 2 h
    assert plan.fleet_kw == pytest.approx([-10.0, -10.0], abs=1e-5)
    assert plan.power_kw.shape == (1, 2)


def test_departure_mid_horizon_zero_power_after():
    f = fleet(2, departure_h=np.array([1.5, 8.0]), energy_kwh=np.array([50.0, 50.0]), need_kwh=0.0, floor_kwh=0.0)
    plan = allocate(f, Targets.flat(4, 1.0, -30.0), LP)
    assert plan.power_kw[0, 2] == 0 and plan.power_kw[0, 3] == 0
    assert plan.power_kw[0, 1] >= -5.0 - 1e-6  # half an interval plugged in
    assert plan.setpoint_kw[0, 1] == pytest.approx(plan.power_kw[0, 1] * 2)


def test_headroom_exports_first_and_needy_protected():
    # ev-0 has lots of energy above need and leaves late; ev-1 needs all it has.
    f = fleet(2, energy_kwh=np.array([50.0, 40.0]), need_kwh=np.array([20.0, 40.0]),
              departure_h=np.array([10.0, 2.0]), floor_kwh=0.0)
    plan = allocate(f, Targets.flat(2, 1.0, -8.0), LP)
    assert plan.power_kw[0] == pytest.approx([-8.0, -8.0], abs=1e-5)
    assert plan.power_kw[1] == pytest.approx([0.0, 0.0], abs=1e-5)
    assert np.all(plan.departure_shortfall_kwh == 0)


def test_precharge_before_event():
    # event at hours 2-4 asks 20 kW export; the EV must be pre-charged to deliver it.
    f = fleet(1, energy_kwh=30.0, need_kwh=30.0, capacity_kwh=80.0, floor_kwh=20.0, departure_h=4.0,
              max_charge_kw=20.0, max_discharge_kw=20.0)
    tgt = np.array([np.nan, np.nan, -20.0, -20.0])
    plan = allocate(f, Targets(np.ones(4), tgt), LP)
    assert plan.shortfall_kw == pytest.approx([0, 0, 0, 0], abs=1e-5)
    assert plan.power_kw[0, :2].sum() == pytest.approx(40.0, abs=1e-4)
    assert plan.departure_shortfall_kwh[0] == pytest.approx(0, abs=1e-6)


def test_impossible_commitment_gives_best_effort_and_shortfall():
    f = fleet(2, energy_kwh=30.0, need_kwh=10.0, floor_kwh=10.0, departure_h=10.0, max_discharge_kw=5.0)
    plan = allocate(f, Targets.flat(3, 1.0, -50.0), LP)
    assert plan.fleet_kw == pytest.approx([-10.0] * 3, abs=1e-5)
    assert plan.shortfall_kw == pytest.approx([40.0] * 3, abs=1e-5)


def test_infeasible_need_reported_and_charges_flat_out():
    f = fleet(1, energy_kwh=10.0, need_kwh=60.0, departure_h=2.0, max_charge_kw=10.0)
    plan = allocate(f, Targets(np.ones(2), np.array([-5.0, -5.0])), LP)
    assert plan.power_kw[0] == pytest.approx([10.0, 10.0], abs=1e-5)
    assert plan.departure_shortfall_kwh[0] == pytest.approx(30.0, abs=1e-4)
    assert plan.shortfall_kw == pytest.approx([15.0, 15.0], abs=1e-5)


def test_efficiencies():
    f = fleet(1, energy_kwh=10.0, need_kwh=19.0, departure_h=2.0, eta_charge=0.9, max_charge_kw=20.0)
    plan = allocate(f, Targets(np.ones(2), np.full(2, np.nan)), LP)
    assert plan.power_kw.sum() == pytest.approx(10.0, abs=1e-4)  # 9 kWh stored / 0.9
    f = fleet(1, energy_kwh=30.0, need_kwh=20.0, floor_kwh=0.0, departure_h=1.0, eta_discharge=0.8, max_discharge_kw=50.0)
    plan = allocate(f, Targets(np.ones(1), np.array([-100.0])), LP)
    assert plan.fleet_kw[0] == pytest.approx(-8.0, abs=1e-4)  # 10 kWh spare x 0.8


def test_site_limits():
    f = fleet(4, energy_kwh=10.0, need_kwh=50.0, departure_h=10.0, site=np.array([0, 0, 1, 1]))
    tg = Targets(np.ones(3), np.full(3, np.nan), site_import_limit_kw=np.array([12.0, 100.0]))
    for m in ALL:
        plan = allocate(f, tg, AllocatorOptions(method=m))
        assert plan.power_kw[:2].sum(axis=0) == pytest.approx([12.0] * 3, abs=1e-4), m
        assert plan.power_kw[2:].sum(axis=0) == pytest.approx([20.0] * 3, abs=1e-4), m
    f = fleet(2, energy_kwh=50.0, need_kwh=10.0, departure_h=10.0, site=np.array([0, 1]))
    tg = Targets(np.ones(2), np.full(2, -100.0), site_export_limit_kw=np.array([3.0, 100.0]))
    for m in ALL:
        plan = allocate(f, tg, AllocatorOptions(method=m))
        assert np.all(plan.power_kw[0] >= -3.0 - 1e-6), m


def test_price_shifts_charging():
    f = fleet(1, energy_kwh=20.0, need_kwh=30.0, departure_h=4.0, max_charge_kw=10.0)
    tg = Targets(np.ones(4), np.full(4, np.nan), price=np.array([0.5, 0.5, 0.1, 0.5]))
    plan = allocate(f, tg, LP)
    assert plan.power_kw[0] == pytest.approx([0, 0, 10.0, 0], abs=1e-5)


def test_identical_evs_get_identical_shares():
    f = fleet(5, energy_kwh=40.0, need_kwh=20.0, departure_h=6.0)
    plan = allocate(f, Targets.flat(4, 0.5, -17.0), LP)
    assert np.allclose(plan.power_kw, plan.power_kw[0], atol=1e-7)
    assert plan.fleet_kw == pytest.approx([-17.0] * 4, abs=1e-5)


def test_over_delivery_bound():
    f = fleet(1, energy_kwh=30.0, need_kwh=10.0, departure_h=10.0, max_charge_kw=10.0)
    tg = Targets(np.ones(2), np.array([5.0, 5.0]), max_over_delivery_kw=2.0)
    plan = allocate(f, tg, LP)
    assert np.all(plan.fleet_kw >= 3.0 - 1e-6) and np.all(plan.fleet_kw <= 5.0 + 1e-6)


def test_positive_ceiling_caps_charging():
    f = fleet(3, energy_kwh=10.0, need_kwh=20.0, departure_h=3.0)
    tg = Targets(np.ones(3), np.array([12.0, np.nan, np.nan]))
    for m in ALL:
        plan = allocate(f, tg, AllocatorOptions(method=m))
        assert plan.fleet_kw[0] <= 12.0 + 1e-6, m
        assert np.all(plan.departure_shortfall_kwh <= 1e-6), m


def test_highs_solver_agrees():
    f = fleet(3, energy_kwh=np.array([40.0, 30.0, 20.0]), need_kwh=25.0, departure_h=np.array([3.0, 5.0, 8.0]))
    tg = Targets.flat(4, 0.5, -12.0)
    a = allocate(f, tg, LP)
    b = allocate(f, tg, AllocatorOptions(method="lp", solver="highs"))
    assert a.shortfall_kw.sum() == pytest.approx(b.shortfall_kw.sum(), abs=1e-5)


def test_time_budget_fallback_to_greedy():
    from sim.fleets import random_fleet
    f = random_fleet(400, seed=3)
    plan = allocate(f, Targets.flat(16, 0.25, -1000.0), AllocatorOptions(method="lp", time_budget_s=0.0))
    assert plan.method == "greedy-fallback" and plan.notes


def test_bound_and_deliverable_export():
    f = fleet(2, energy_kwh=np.array([50.0, 10.0]), need_kwh=np.array([20.0, 40.0]), floor_kwh=0.0,
              departure_h=np.array([10.0, 3.0]))
    tg = Targets.flat(4, 1.0, -100.0)
    plan = allocate(f, tg, LP)
    assert np.all(plan.fleet_kw >= plan.bound_kw - 1e-6)
    exp = deliverable_export_bound_kw(f, tg.durations_h)
    assert exp == pytest.approx(-plan.bound_kw)
    # ev-0 can export 10 kW each hour; ev-1 must charge 10 kW flat out (needs 30 in 3 h)
    assert exp[0] == pytest.approx(0.0) and exp[3] == pytest.approx(10.0)


def test_empty_targets_and_fleet():
    f = fleet(2)
    plan = allocate(f, Targets(np.zeros(0), np.zeros(0)))
    assert plan.power_kw.shape == (2, 0)


def test_greedy_peak_shaving_lets_the_least_laxity_charge():
    # 10 kW import ceiling: ev-0 must charge flat out in hours 0-2, ev-1 can wait until later
    f = fleet(2, energy_kwh=np.array([10.0, 10.0]), need_kwh=np.array([30.0, 30.0]), floor_kwh=0.0,
              departure_h=np.array([2.0, 8.0]), max_discharge_kw=0.0)
    plan = allocate(f, Targets.flat(8, 1.0, 10.0), AllocatorOptions(method="greedy"))
    assert np.all(plan.shortfall_kw <= 1e-6)
    assert np.all(plan.departure_shortfall_kwh <= 1e-6)
    assert plan.power_kw[0, :2] == pytest.approx([10.0, 10.0], abs=1e-6)


def test_greedy_peak_shaving_uses_surplus_to_charge_the_others():
    # zero import ceiling: ev-0 needs 10 kWh by 2 h, ev-1 has 10 kWh to spare and stays 4 h
    f = fleet(2, energy_kwh=np.array([20.0, 40.0]), need_kwh=np.array([30.0, 30.0]), floor_kwh=0.0,
              departure_h=np.array([2.0, 4.0]))
    plan = allocate(f, Targets.flat(4, 1.0, 0.0), AllocatorOptions(method="greedy"))
    assert np.all(plan.shortfall_kw <= 1e-6)
    assert np.all(plan.departure_shortfall_kwh <= 1e-6)
