"""Property tests (hypothesis) of the invariants every plan must keep."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.allocator import AllocatorOptions, FleetArrays, Targets, allocate

METHODS = ["lp", "cluster", "greedy", "proportional", "llf"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenarios(draw, sites=True):
    n = draw(st.integers(1, 6))
    T = draw(st.integers(1, 6))
    dt = draw(st.sampled_from([0.25, 0.5, 1.0]))
    cap = np.array(draw(st.lists(st.floats(10, 100), min_size=n, max_size=n)))
    fr = lambda: np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))  # noqa: E731
    e0 = fr() * cap
    floor = fr() * 0.5 * cap
    need = fr() * cap
    dep = np.array(draw(st.lists(st.floats(0.1, 12), min_size=n, max_size=n)))
    pc = np.array(draw(st.lists(st.sampled_from([0.0, 3.7, 7.4, 11.0, 22.0]), min_size=n, max_size=n)))
    pd = np.array(draw(st.lists(st.sampled_from([0.0, 3.7, 7.4, 11.0]), min_size=n, max_size=n)))
    etac = np.array(draw(st.lists(st.floats(0.8, 1.0), min_size=n, max_size=n)))
    etad = np.array(draw(st.lists(st.floats(0.8, 1.0), min_size=n, max_size=n)))
    tgt = np.array(draw(st.lists(st.one_of(st.just(np.nan), st.floats(-60, 30)), min_size=T, max_size=T)))
    f = FleetArrays(ids=np.array([f"v{i}" for i in range(n)], dtype=object), energy_kwh=e0, capacity_kwh=cap,
                    floor_kwh=floor, need_kwh=need, departure_h=dep, max_charge_kw=pc, max_discharge_kw=pd,
                    eta_charge=etac, eta_discharge=etad,
                    site=np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))) if sites else None)
    kw = {}
    if sites and draw(st.booleans()):
        kw["site_import_limit_kw"] = np.array(draw(st.lists(st.floats(5, 40), min_size=2, max_size=2)))
        kw["site_export_limit_kw"] = np.array(draw(st.lists(st.floats(0, 40), min_size=2, max_size=2)))
    return f, Targets(np.full(T, dt), tgt, **kw)


def _check_physics(f, tg, plan):
    T = tg.n_intervals
    start = np.concatenate([[0.0], np.cumsum(tg.durations_h)[:-1]])
    frac = np.clip((f.departure_h[:, None] - start[None, :]) / tg.durations_h[None, :], 0, 1)
    tol = 1e-6
    p = plan.power_kw
    assert np.all(p <= f.max_charge_kw[:, None] * frac + tol), "above charger limit"
    assert np.all(p >= -f.max_discharge_kw[:, None] * frac - tol), "above discharge limit"
    assert np.all(p[frac == 0] == 0), "power after departure"
    e = f.energy_kwh.copy()
    lb = np.minimum(f.floor_kwh, f.energy_kwh)
    for t in range(T):
        e = e + tg.durations_h[t] * np.where(p[:, t] >= 0, f.eta_charge * p[:, t], p[:, t] / f.eta_discharge)
        assert np.all(e >= lb - 1e-5), "below reserve floor"
        assert np.all(e <= f.capacity_kwh + 1e-5), "above capacity"
    assert np.allclose(plan.fleet_kw, p.sum(axis=0))
    tgt = tg.import_kw
    assert np.allclose(plan.shortfall_kw, np.where(np.isnan(tgt), 0, np.maximum(0, plan.fleet_kw - np.nan_to_num(tgt))), atol=1e-5)


def _check_sites(f, tg, plan):
    site = f.site_index()
    for s in range(2):
        tot = plan.power_kw[site == s].sum(axis=0)
        if tg.site_import_limit_kw is not None:
            # forced charging toward a need may not be cut below zero; LP is exact
            assert np.all(tot <= max(tg.site_import_limit_kw[s], 0) + 1e-5)
        if tg.site_export_limit_kw is not None:
            assert np.all(tot >= -tg.site_export_limit_kw[s] - 1e-5)


@SETTINGS
@given(scenarios())
def test_every_method_respects_limits(sc):
    f, tg = sc
    for m in METHODS:
        plan = allocate(f, tg, AllocatorOptions(method=m))
        _check_physics(f, tg, plan)
        _check_sites(f, tg, plan)


def _feasible_needs(f):
    return np.all(f.energy_kwh + f.eta_charge * f.max_charge_kw * f.departure_h >= f.need_kwh - 1e-9)


@SETTINGS
@given(scenarios(sites=False))
def test_no_driver_left_short_when_feasible(sc):
    f, tg = sc
    if not _feasible_needs(f):
        # an infeasible need: the LP still charges it as far as possible
        plan = allocate(f, tg, AllocatorOptions(method="lp"))
        best = np.maximum(0, f.need_kwh - np.minimum(f.capacity_kwh, f.energy_kwh + f.eta_charge * f.max_charge_kw * f.departure_h))
        assert np.allclose(plan.departure_shortfall_kwh, best, atol=1e-4)
        return
    for m in METHODS:
        plan = allocate(f, tg, AllocatorOptions(method=m))
        assert np.all(plan.departure_shortfall_kwh <= 1e-4), m


@SETTINGS
@given(scenarios(sites=False))
def test_lp_never_worse_than_proportional(sc):
    f, tg = sc
    prop = allocate(f, tg, AllocatorOptions(method="proportional"))
    for m in ("lp", "auto"):
        plan = allocate(f, tg, AllocatorOptions(method=m))
        d = tg.durations_h
        # the LP trades at most wear-cost-sized amounts of shortfall for throughput
        slack = 2e-3 * float(np.sum(np.abs(prop.power_kw) * d)) + 1e-5
        assert plan.shortfall_kwh(d) <= prop.shortfall_kwh(d) + slack
        assert plan.departure_shortfall_kwh.sum() <= prop.departure_shortfall_kwh.sum() + 1e-4


@SETTINGS
@given(scenarios(sites=False))
def test_no_plan_goes_below_bound(sc):
    f, tg = sc
    if not _feasible_needs(f):
        return
    for m in METHODS:
        plan = allocate(f, tg, AllocatorOptions(method=m))
        assert np.all(plan.fleet_kw >= plan.bound_kw - 1e-5), m
