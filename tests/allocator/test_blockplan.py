"""The backward export schedule of one commitment block (blockplan.py)."""

import numpy as np
import pytest
from hypothesis import given

from aggregator.allocator import AllocatorOptions, Targets, allocate
from aggregator.allocator.blockplan import block_exports
from aggregator.allocator.heuristics import commitment_blocks
from aggregator.allocator.horizon import build_problem

from .helpers import fleet
from .test_properties import SETTINGS, scenarios


def test_leaving_ev_serves_the_early_interval_and_staying_ev_the_late_one():
    # 10 kW export for 2 h; ev-0 leaves after 1 h, ev-1 stays; each can spare 10 kWh.
    # Drawing on both evenly in hour 1 would leave hour 2 short.
    f = fleet(2, energy_kwh=20.0, need_kwh=10.0, floor_kwh=0.0, departure_h=np.array([1.0, 6.0]),
              max_charge_kw=0.0)
    tg = Targets.flat(2, 1.0, -10.0)
    prob = build_problem(f, tg, AllocatorOptions())
    X = block_exports(prob, 0, 2, prob.e0, prob.charge_after())
    assert X == pytest.approx(np.array([[10.0, 0.0], [0.0, 10.0]]), abs=1e-6)
    plan = allocate(f, tg, AllocatorOptions(method="greedy"))
    assert np.all(plan.shortfall_kw <= 1e-6)
    assert np.all(plan.departure_shortfall_kwh <= 1e-6)


@SETTINGS
@given(scenarios(sites=False))
def test_schedule_within_limits_budget_and_ask(case):
    f, tg = case
    prob = build_problem(f, tg, AllocatorOptions())
    for a, b in commitment_blocks(prob):
        X = block_exports(prob, a, b, prob.e0, prob.charge_after())
        assert X.shape == (prob.n, b - a)
        assert np.all(X >= -1e-9)
        assert np.all(X <= prob.pd[:, None] * prob.frac[:, a:b] + 1e-9)
        end_h = prob.end[b - 1]
        e_req = np.maximum(prob.lb, prob.need - prob.etac * prob.pc * np.maximum(0.0, prob.dep - end_h))
        spent = (X * prob.dur[None, a:b]).sum(axis=1)
        assert np.all(spent <= np.maximum(0.0, (prob.e0 - e_req) * prob.etad) + 1e-6)
        assert np.all(X.sum(axis=0) <= np.maximum(0.0, -prob.target[a:b]) + np.sum(prob.pc) + 1e-6)
