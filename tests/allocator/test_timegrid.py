"""Time-grid aggregation of the cluster LP (timegrid.py) and the site-following split."""

import numpy as np
import pytest

from aggregator.allocator import AllocatorOptions, Targets, allocate
from aggregator.allocator.cluster import bin_groups
from aggregator.allocator.horizon import build_problem
from aggregator.allocator.timegrid import coarsen, expand, period_edges
from sim.fleets import site_fleet, site_targets

from .test_properties import _check_physics


def _case(T=96, n=300, seed=4):
    sf = site_fleet(n, seed)
    mid = (np.arange(T) + 0.5) * 0.25
    tgt = np.where((mid >= 1.0) & (mid < 4.0), -50.0, np.nan)
    tg = site_targets(sf, np.full(T, 0.25), tgt, derate=[(0, "export", 2.0, 3.0, 0.5), (1, "import", 0.0, 1.0, 0.5)])
    return sf.fleet, tg


def test_period_edges_keep_commitments_and_limit_changes_single():
    f, tg = _case()
    prob = build_problem(f, tg, AllocatorOptions())
    edges = period_edges(prob, 2.0)
    assert edges[0] == 0 and edges[-1] == prob.Tx
    lengths = np.diff(edges)
    period = np.repeat(np.arange(lengths.size), lengths)
    for t in np.flatnonzero(prob.committed):
        assert lengths[period[t]] == 1                      # committed intervals are never merged
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        assert prob.dur[a:b].sum() <= 2.0 + 1e-9
        assert np.all(prob.site_imp[:, a:b] == prob.site_imp[:, [a]])   # same limits inside a period
        assert np.all(prob.site_exp[:, a:b] == prob.site_exp[:, [a]])
    assert lengths.size < 40


def test_expand_keeps_period_energy_and_unit_limits():
    f, tg = _case()
    prob = build_problem(f, tg, AllocatorOptions())
    edges = period_edges(prob, 2.0)
    cp = coarsen(prob, edges)
    labels, K = bin_groups(cp, 60)
    rng = np.random.default_rng(0)
    cmax_u = np.zeros((K, cp.Tx))
    dmax_u = np.zeros((K, cp.Tx))
    np.add.at(cmax_u, labels, cp.cmax)
    np.add.at(dmax_u, labels, cp.dmax)
    c = rng.uniform(0, 1, (K, cp.Tx)) * cmax_u
    d = rng.uniform(0, 1, (K, cp.Tx)) * dmax_u
    fine = expand(prob, edges, labels, K, c, d)
    energy_fine = np.add.reduceat(fine * prob.dur[None, :], edges[:-1], axis=1)
    assert energy_fine == pytest.approx((c - d) * cp.dur[None, :], abs=1e-6)
    cmax_f = np.zeros((K, prob.Tx))
    dmax_f = np.zeros((K, prob.Tx))
    np.add.at(cmax_f, labels, prob.cmax)
    np.add.at(dmax_f, labels, prob.dmax)
    assert np.all(fine <= cmax_f + 1e-6) and np.all(fine >= -dmax_f - 1e-6)


@pytest.mark.parametrize("method", ["auto", "cluster"])
def test_merged_grid_plan_keeps_invariants(method):
    f, tg = _case()
    plan = allocate(f, tg, AllocatorOptions(method=method, lp_max_evs=10))
    _check_physics(f, tg, plan)
    site = f.site_index()
    S = site.max() + 1
    imp, exp = tg.site_limits_kw(S)
    tot = np.zeros((S, tg.n_intervals))
    np.add.at(tot, site, plan.power_kw)
    assert np.all(tot <= imp + 1e-5) and np.all(tot >= -exp - 1e-5)
    best = np.minimum(f.capacity_kwh, f.energy_kwh + f.eta_charge * f.max_charge_kw * f.departure_h)
    assert np.all(plan.departure_shortfall_kwh <= np.maximum(0, f.need_kwh - best) + 1e-4)
