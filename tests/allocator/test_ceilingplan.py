"""The backward charging schedule of one import-ceiling block (ceilingplan.py)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.allocator import AllocatorOptions, Targets, allocate
from aggregator.allocator.ceilingplan import ceiling_plan
from aggregator.allocator.heuristics import commitment_blocks, plan_rule
from aggregator.allocator.horizon import build_problem

from .helpers import fleet
from .test_properties import SETTINGS, _check_physics, _feasible_needs, scenarios

GREEDY = AllocatorOptions(method="greedy")


def test_late_capacity_goes_to_the_ev_that_stays():
    # 10 kW ceiling for 4 h; ev-0 leaves after 2 h, ev-1 stays; each needs 20 kWh.
    f = fleet(2, energy_kwh=10.0, need_kwh=30.0, floor_kwh=0.0, departure_h=np.array([2.0, 4.0]),
              max_discharge_kw=0.0)
    tg = Targets.flat(4, 1.0, 10.0)
    prob = build_problem(f, tg, AllocatorOptions())
    req, exports = ceiling_plan(prob, 0, 4, prob.e0)
    assert req[1] == pytest.approx([10.0, 10.0, 10.0, 20.0, 30.0])   # ev-1 charges in hours 2-3
    assert req[0] == pytest.approx([10.0, 20.0, 30.0, 30.0, 30.0])   # ev-0 in hours 0-1
    assert np.all(exports == 0)
    plan = allocate(f, tg, GREEDY)
    assert plan.power_kw == pytest.approx(np.array([[10.0, 10.0, 0.0, 0.0], [0.0, 0.0, 10.0, 10.0]]), abs=1e-6)
    assert np.all(plan.shortfall_kw <= 1e-6)
    assert np.all(plan.departure_shortfall_kwh <= 1e-6)


def test_surplus_is_exported_only_as_far_as_needed():
    # 10 kW ceiling; ev-0 needs 15 kWh in its one hour; ev-1 has 20 kWh to spare
    f = fleet(2, energy_kwh=np.array([15.0, 50.0]), need_kwh=30.0, floor_kwh=0.0,
              departure_h=np.array([1.0, 3.0]), max_charge_kw=20.0)
    tg = Targets.flat(3, 1.0, 10.0)
    prob = build_problem(f, tg, AllocatorOptions())
    _, exports = ceiling_plan(prob, 0, 3, prob.e0)
    assert exports.sum(axis=1) == pytest.approx([0.0, 5.0])
    plan = allocate(f, tg, GREEDY)
    assert np.all(plan.shortfall_kw <= 1e-6)
    assert np.all(plan.departure_shortfall_kwh <= 1e-6)
    assert plan.power_kw[:, 0] == pytest.approx([15.0, -5.0], abs=1e-6)


def test_ev_without_surplus_exports_early_and_recharges_in_spare_capacity():
    # 10 kW ceiling; ev-0 needs 20 kWh in its one hour; ev-1 already holds its
    # need but stays 4 h: it exports 10 kWh in hour 0 and recharges afterwards.
    f = fleet(2, energy_kwh=np.array([10.0, 30.0]), need_kwh=30.0, floor_kwh=10.0,
              departure_h=np.array([1.0, 4.0]), max_charge_kw=np.array([20.0, 10.0]))
    tg = Targets.flat(4, 1.0, 10.0)
    plan = allocate(f, tg, GREEDY)
    assert np.all(plan.shortfall_kw <= 1e-6)
    assert np.all(plan.departure_shortfall_kwh <= 1e-6)
    assert plan.power_kw[:, 0] == pytest.approx([20.0, -10.0], abs=1e-6)


def test_round_trip_goes_to_the_most_efficient_ev():
    # as above, but two EVs could make the round trip: the lossless one does it
    f = fleet(3, energy_kwh=np.array([10.0, 30.0, 30.0]), need_kwh=30.0, floor_kwh=10.0,
              departure_h=np.array([1.0, 4.0, 4.0]), max_charge_kw=np.array([20.0, 10.0, 10.0]),
              eta_charge=np.array([1.0, 0.9, 1.0]), eta_discharge=np.array([1.0, 0.9, 1.0]))
    plan = allocate(f, Targets.flat(4, 1.0, 10.0), GREEDY)
    assert np.all(plan.shortfall_kw <= 1e-6)
    assert np.all(plan.departure_shortfall_kwh <= 1e-6)
    assert plan.power_kw[:, 0] == pytest.approx([20.0, 0.0, -10.0], abs=1e-6)


@st.composite
def ceiling_scenarios(draw):
    """Fleets under import ceilings only (>= 0, or no commitment)."""
    f, tg = draw(scenarios(sites=False))
    return f, Targets(tg.durations_h, np.where(np.isnan(tg.import_kw), np.nan, np.abs(tg.import_kw)))


@SETTINGS
@given(ceiling_scenarios())
def test_plan_within_limits_and_consistent(case):
    f, tg = case
    prob = build_problem(f, tg, AllocatorOptions())
    for a, b in commitment_blocks(prob):
        req, X = ceiling_plan(prob, a, b, prob.e0)
        assert req.shape == (prob.n, b - a + 1) and X.shape == (prob.n, b - a)
        assert np.all(X >= -1e-9)
        assert np.all(X <= prob.pd[:, None] * prob.frac[:, a:b] + 1e-9)
        # between boundaries an EV charges at most its charger limit
        step = req[:, 1:] - req[:, :-1] + X * prob.dur[None, a:b] / prob.etad[:, None]
        assert np.all(step <= prob.etac[:, None] * prob.pc[:, None] * prob.frac[:, a:b] * prob.dur[None, a:b] + 1e-6)
        assert np.all(req >= np.minimum(prob.lb, prob.e0)[:, None] - 1e-6)


@SETTINGS
@given(ceiling_scenarios())
def test_greedy_under_ceilings_keeps_limits_and_drivers_and_beats_proportional(case):
    f, tg = case
    plan = allocate(f, tg, GREEDY)
    _check_physics(f, tg, plan)
    if _feasible_needs(f):
        assert np.all(plan.departure_shortfall_kwh <= 1e-4)
    prop = allocate(f, tg, AllocatorOptions(method="proportional"))
    d = tg.durations_h
    assert plan.shortfall_kwh(d) <= prop.shortfall_kwh(d) + 1e-5
    assert plan.departure_shortfall_kwh.sum() <= prop.departure_shortfall_kwh.sum() + 1e-4


@SETTINGS
@given(ceiling_scenarios())
def test_greedy_never_worse_than_the_forward_rule_alone(case):
    f, tg = case
    prob = build_problem(f, tg, AllocatorOptions())
    forward = np.clip(plan_rule(prob, "greedy", plan_ceilings=False), -prob.dmax, prob.cmax)[:, : prob.T]
    plan = allocate(f, tg, GREEDY)
    d = tg.durations_h
    fwd_short = float(np.sum(np.where(np.isnan(tg.import_kw), 0.0,
                                      np.maximum(0.0, forward.sum(axis=0) - np.nan_to_num(tg.import_kw))) * d))
    if _feasible_needs(f):
        assert plan.shortfall_kwh(d) <= fwd_short + 1e-4


def test_round_trip_export_relieves_the_crowded_first_hour_not_a_later_one():
    # 5 kW ceiling for 8 h.  ev-0 leaves after hour 0 needing 10 kWh (5 over
    # the ceiling); ev-1 holds just its need but stays all day: it can export
    # 5 kWh and recharge them in the empty last hours; ev-2 needs 12 kWh by
    # hour 5, more than the ceiling in hour 4 but with room to spare in hour 2.
    # An export in hour 4 only moves ev-2's charging out of hour 2: the round
    # trip belongs in hour 0, where the per-EV LP puts it (no shortfall).
    f = fleet(3, energy_kwh=np.array([20.0, 30.0, 0.0]), need_kwh=np.array([30.0, 30.0, 12.0]), floor_kwh=0.0,
              departure_h=np.array([1.0, 8.0, 5.0]))
    tg = Targets.flat(8, 1.0, 5.0)
    lp = allocate(f, tg, AllocatorOptions(method="lp"))
    assert lp.shortfall_kwh(tg.durations_h) == pytest.approx(0.0, abs=1e-6)
    plan = allocate(f, tg, GREEDY)
    assert plan.shortfall_kwh(tg.durations_h) == pytest.approx(lp.shortfall_kwh(tg.durations_h), abs=1e-6)
    assert np.all(plan.departure_shortfall_kwh <= 1e-6)
    assert plan.power_kw[:, 0] == pytest.approx([10.0, -5.0, 0.0], abs=1e-6)
