"""Site limits: (S,) and (S, T) import/export limits, per-site prices, validation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.allocator import AllocatorOptions, FleetArrays, Targets, allocate, deliverable_export_bound_kw
from aggregator.allocator.split import site_capped_reduce, time_equalized_reduce
from sim.fleets import site_fleet, site_targets

from .helpers import fleet
from .test_properties import SETTINGS, _check_physics

METHODS = ["lp", "cluster", "greedy", "proportional", "llf", "auto"]


def _site_totals(f, plan, S):
    tot = np.zeros((S, plan.power_kw.shape[1]))
    np.add.at(tot, f.site_index(), plan.power_kw)
    return tot


# ---- validation ---------------------------------------------------------------------

def test_time_varying_limits_and_prices_accepted():
    tg = Targets(np.ones(3), np.full(3, -5.0), price=np.ones((2, 3)),
                 site_import_limit_kw=np.array([[1.0, 2.0, 3.0], [np.inf, np.inf, 4.0]]),
                 site_export_limit_kw=np.array([3.0, np.inf]))
    assert tg.n_sites == 2
    imp, exp = tg.site_limits_kw(3)
    assert imp[0].tolist() == [1.0, 2.0, 3.0] and np.all(np.isinf(imp[2]))
    assert exp[0].tolist() == [3.0, 3.0, 3.0]
    assert tg.price_by_site(3).shape == (3, 3)


@pytest.mark.parametrize("kw,fragment", [
    (dict(site_export_limit_kw=np.array([[1.0, 2.0, 3.0], [1.0, np.nan, 1.0]])), "site 1, interval 1"),
    (dict(site_import_limit_kw=np.array([[1.0, 2.0, -3.0]])), "site 0, interval 2"),
    (dict(site_import_limit_kw=np.array([1.0, -1.0])), "site 1"),
    (dict(price=np.array([[0.1, 0.2, 0.3], [0.1, np.inf, 0.3]])), "site 1, interval 1"),
    (dict(price=np.array([0.1, np.nan, 0.3])), "interval 1"),
    (dict(site_export_limit_kw=np.ones((2, 4))), "expected (S,) or (S, 3)"),
    (dict(price=np.ones(4)), "4 values for 3 intervals"),
    (dict(site_export_limit_kw=np.ones(2), site_import_limit_kw=np.ones(3)), "disagree"),
])
def test_bad_site_values_name_site_and_interval(kw, fragment):
    with pytest.raises(ValueError) as err:
        Targets(np.ones(3), np.full(3, -5.0), **kw)
    assert fragment in str(err.value)


# ---- behaviour ----------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_time_varying_export_limit_is_kept_and_other_site_covers(method):
    # site 0 may export 20 kW except 5 kW in hour 1; site 1 (no limit) covers the rest
    f = fleet(4, energy_kwh=50.0, need_kwh=10.0, floor_kwh=0.0, departure_h=10.0, max_discharge_kw=10.0,
              site=np.array([0, 0, 1, 1]))
    tg = Targets(np.ones(3), np.full(3, -30.0), site_export_limit_kw=np.array([[20.0, 5.0, 20.0], [np.inf] * 3]))
    plan = allocate(f, tg, AllocatorOptions(method=method))
    tot = _site_totals(f, plan, 2)
    assert np.all(tot[0] >= np.array([-20.0, -5.0, -20.0]) - 1e-6)
    if method not in ("proportional", "llf"):
        assert plan.shortfall_kw == pytest.approx([0.0, 5.0, 0.0], abs=1e-5)


def test_derated_import_limit_moves_charging():
    # one EV needs 20 kWh within 3 h at 10 kW; its site allows only 2 kW in hour 0
    f = fleet(1, energy_kwh=10.0, need_kwh=30.0, departure_h=3.0, max_charge_kw=10.0, site=np.array([0]))
    tg = Targets(np.ones(3), np.full(3, np.nan), site_import_limit_kw=np.array([[2.0, 100.0, 100.0]]))
    for m in METHODS:
        plan = allocate(f, tg, AllocatorOptions(method=m))
        assert plan.power_kw[0, 0] <= 2.0 + 1e-6, m
        assert plan.departure_shortfall_kwh[0] == pytest.approx(0.0, abs=1e-5), m


def test_per_site_prices_steer_charging():
    # two identical EVs at two sites; site 1 is cheap in hour 0, site 0 in hour 1
    f = fleet(2, energy_kwh=10.0, need_kwh=20.0, departure_h=2.0, max_charge_kw=10.0, site=np.array([0, 1]))
    tg = Targets(np.ones(2), np.full(2, np.nan), price=np.array([[0.5, 0.1], [0.1, 0.5]]))
    plan = allocate(f, tg, AllocatorOptions(method="lp"))
    assert plan.power_kw == pytest.approx(np.array([[0.0, 10.0], [10.0, 0.0]]), abs=1e-5)


def test_bound_respects_import_limit():
    # forced charging of 20 kW at a site limited to 5 kW: the plan imports 5,
    # and no plan goes below the site-limited bound (it used to ignore import limits)
    f = fleet(2, energy_kwh=0.0, need_kwh=20.0, floor_kwh=0.0, departure_h=2.0, max_charge_kw=10.0,
              site=np.array([0, 0]))
    tg = Targets(np.ones(2), np.full(2, -10.0), site_import_limit_kw=np.array([5.0]))
    for m in METHODS:
        plan = allocate(f, tg, AllocatorOptions(method=m))
        assert np.all(plan.fleet_kw <= 5.0 + 1e-6), m
        assert np.all(plan.fleet_kw >= plan.bound_kw - 1e-6), m
    assert plan.bound_kw == pytest.approx([5.0, 5.0])


def test_deliverable_export_bound_with_site_limits():
    f = fleet(3, energy_kwh=50.0, need_kwh=10.0, floor_kwh=0.0, departure_h=10.0, max_discharge_kw=10.0,
              site=np.array([0, 0, 1]))
    d = np.ones(2)
    assert deliverable_export_bound_kw(f, d) == pytest.approx([30.0, 30.0])
    assert deliverable_export_bound_kw(f, d, np.array([5.0, np.inf])) == pytest.approx([15.0, 15.0])
    assert deliverable_export_bound_kw(f, d, np.array([[5.0, 20.0], [0.0, 0.0]])) == pytest.approx([5.0, 20.0])


def test_site_capped_reduce_hands_over_to_uncapped_site():
    spare = np.array([10.0, 10.0, 1.0])
    rate = np.ones(3) * 10.0
    room = np.full(3, 10.0)
    site = np.array([0, 0, 1])
    x = site_capped_reduce(spare, rate, room, 1.0, 12.0, site, np.array([4.0, np.inf]))
    assert x.sum() == pytest.approx(12.0)
    assert x[:2].sum() == pytest.approx(4.0)
    assert x[0] == pytest.approx(x[1])
    # without caps it is the plain rule
    y = site_capped_reduce(spare, rate, room, 1.0, 12.0, site, np.array([np.inf, np.inf]))
    assert y == pytest.approx(time_equalized_reduce(spare, rate, room, 1.0, 12.0))


def test_site_fleet_generator_shapes():
    sf = site_fleet(400, seed=3)
    f = sf.fleet
    assert len(f) == 400 and sf.n_sites == f.site_index().max() + 1
    assert sf.kinds[-1] == "unmanaged" and np.isinf(sf.export_limit_kw[-1])
    share = sf.export_limit_kw[:-1] / sf.discharge_kw[:-1]
    assert np.all((share >= 0.149) & (share <= 0.351))
    tg = site_targets(sf, np.full(8, 0.25), np.full(8, -100.0), derate=[(0, "export", 0.5, 1.0, 0.5)])
    assert tg.site_export_limit_kw.shape == (sf.n_sites, 8)
    assert tg.site_export_limit_kw[0, 2] == pytest.approx(round(sf.export_limit_kw[0] * 0.5, 1))
    assert tg.site_export_limit_kw[0, 0] == sf.export_limit_kw[0]


# ---- properties ---------------------------------------------------------------------

@st.composite
def site_scenarios(draw, binding_export=False):
    """2-3 sites with (S,) or (S, T) limits; some EVs behind no limit (last site)."""
    n = draw(st.integers(2, 7))
    T = draw(st.integers(1, 6))
    S = draw(st.integers(2, 3))
    dt = draw(st.sampled_from([0.25, 0.5, 1.0]))
    fl = lambda lo, hi, k=n: np.array(draw(st.lists(st.floats(lo, hi), min_size=k, max_size=k)))  # noqa: E731
    cap = fl(20, 100)
    e0 = fl(0, 1) * cap
    floor = fl(0, 0.4) * cap
    need = fl(0, 1) * cap
    dep = fl(0.1, 10)
    pc = np.array(draw(st.lists(st.sampled_from([0.0, 7.4, 11.0, 22.0]), min_size=n, max_size=n)))
    pd = np.array(draw(st.lists(st.sampled_from([0.0, 7.4, 11.0]), min_size=n, max_size=n)))
    site = np.array(draw(st.lists(st.integers(0, S - 1), min_size=n, max_size=n)))
    f = FleetArrays(ids=np.array([f"v{i}" for i in range(n)], dtype=object), energy_kwh=e0, capacity_kwh=cap,
                    floor_kwh=floor, need_kwh=need, departure_h=dep, max_charge_kw=pc, max_discharge_kw=pd,
                    eta_charge=fl(0.85, 1.0), eta_discharge=fl(0.85, 1.0), site=site)
    if binding_export:
        tgt = np.array(draw(st.lists(st.one_of(st.just(np.nan), st.floats(-80, -5)), min_size=T, max_size=T)))
    else:
        tgt = np.array(draw(st.lists(st.one_of(st.just(np.nan), st.floats(-60, 30)), min_size=T, max_size=T)))
    varying = draw(st.booleans())
    shape = (S - 1, T) if varying else (S - 1,)
    exp = np.array(draw(st.lists(st.floats(0, 15 if binding_export else 40), min_size=int(np.prod(shape)),
                                 max_size=int(np.prod(shape))))).reshape(shape)
    imp = np.array(draw(st.lists(st.floats(0, 40), min_size=int(np.prod(shape)),
                                 max_size=int(np.prod(shape))))).reshape(shape)
    # the last site is behind no limit
    inf_row = np.full((1, T) if varying else (1,), np.inf)
    return f, Targets(np.full(T, dt), tgt, site_export_limit_kw=np.concatenate([exp, inf_row]),
                      site_import_limit_kw=np.concatenate([imp, inf_row]) if draw(st.booleans()) else None)


@SETTINGS
@given(site_scenarios())
def test_no_site_limit_is_ever_exceeded(case):
    f, tg = case
    S = tg.n_sites
    imp, exp = tg.site_limits_kw(S)
    for m in METHODS:
        plan = allocate(f, tg, AllocatorOptions(method=m))
        _check_physics(f, tg, plan)
        tot = _site_totals(f, plan, S)
        assert np.all(tot <= imp + 1e-5), m
        assert np.all(tot >= -exp - 1e-5), m
        assert np.all(plan.fleet_kw >= plan.bound_kw - 1e-5) or plan.departure_shortfall_kwh.sum() > 0, m


@SETTINGS
@given(site_scenarios(binding_export=True))
def test_shortfall_never_worse_than_site_respecting_proportional_split(case):
    f, tg = case
    d = tg.durations_h
    prop = allocate(f, tg, AllocatorOptions(method="proportional"))
    for m in ("lp", "auto"):
        plan = allocate(f, tg, AllocatorOptions(method=m))
        # the LP may trade wear-cost-sized amounts of shortfall for throughput
        slack = 2e-3 * float(np.sum(np.abs(prop.power_kw) * d)) + 1e-5
        assert plan.departure_shortfall_kwh.sum() <= prop.departure_shortfall_kwh.sum() + 1e-4, m
        if plan.departure_shortfall_kwh.sum() < prop.departure_shortfall_kwh.sum() - 1e-4:
            continue  # it kept a driver whole that the split left short: a better trade
        assert plan.shortfall_kwh(d) <= prop.shortfall_kwh(d) + slack, m


def test_grouped_time_equalized_reduce_matches_bisection():
    """The exact grouped rule (sorted breakpoints) gives the bisection's answer,
    stays within the rooms and meets every group's amount where the room allows."""
    from aggregator.allocator.split import time_equalized_reduce

    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 200))
        ng = int(rng.integers(1, 6))
        g = rng.integers(0, ng, n)
        spare = rng.normal(5, 5, n)
        rate = rng.uniform(0.5, 20, n)
        room = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0, 20, n))
        amount = rng.uniform(-1, 60, ng)
        x = time_equalized_reduce(spare, rate, room, 0.25, amount, g, ng)
        y = time_equalized_reduce(spare, rate, room, 0.25, amount, g, ng, iters=60)
        assert np.all(x >= -1e-12) and np.all(x <= room + 1e-9)
        np.testing.assert_allclose(x, y, atol=1e-7)
        reach = np.minimum(np.maximum(amount, 0.0), np.bincount(g, weights=room, minlength=ng))
        np.testing.assert_allclose(np.bincount(g, weights=x, minlength=ng), reach, atol=1e-7)


def test_late_small_event_block_replanned_per_ev(monkeypatch):
    """A pre-charge event at 17-20 h of a day-long horizon, after most EVs have
    left: the few EVs still plugged in are re-planned per EV (repair.py); the
    plan is then never worse than without the re-plan, keeps every limit and
    leaves no driver short when avoidable."""
    import aggregator.allocator.api as api
    from sim.fleets import max_feasible_level_kw

    sf = site_fleet(600, 2)
    T, dt = 96, 0.25
    mid = (np.arange(T) + 0.5) * dt
    win = (mid >= 17.0) & (mid < 20.0)
    dur = np.full(T, dt)

    def make(level):
        return site_targets(sf, dur, np.where(win, -level, np.nan))

    tg = make(max_feasible_level_kw(sf.fleet, make))
    plan = allocate(sf.fleet, tg, AllocatorOptions(method="cluster"))
    monkeypatch.setattr(api, "REPAIR_MAX_SIZE", 0)
    base = allocate(sf.fleet, tg, AllocatorOptions(method="cluster"))
    assert plan.shortfall_kwh(dur) <= base.shortfall_kwh(dur) + 1e-6
    # on this fleet the split alone misses ~5 kWh at the end of the event; the re-plan none
    assert any("re-planned per EV" in x for x in plan.notes)
    assert plan.shortfall_kwh(dur) < base.shortfall_kwh(dur) - 1.0
    assert plan.departure_shortfall_kwh.sum() <= base.departure_shortfall_kwh.sum() + 1e-6
    _check_physics(sf.fleet, tg, plan)


@SETTINGS
@given(site_scenarios(binding_export=True))
def test_block_window_bound_never_above_the_lp(case):
    """repair.block_shortfall_bound_kwh (what tells a poor block from an
    over-committed one) is a lower bound: the per-EV LP's shortfall over every
    commitment block is never below it when every driver is served."""
    from aggregator.allocator.heuristics import commitment_blocks
    from aggregator.allocator.horizon import build_problem
    from aggregator.allocator.repair import block_shortfall_bound_kwh

    f, tg = case
    plan = allocate(f, tg, AllocatorOptions(method="lp"))
    if plan.departure_shortfall_kwh.sum() > 1e-6:
        return  # the bound assumes every need is met
    prob = build_problem(f, tg, AllocatorOptions())
    d = tg.durations_h
    for a, b in commitment_blocks(prob):
        got = float(np.sum(plan.shortfall_kw[a:b] * d[a:b]))
        assert block_shortfall_bound_kwh(prob, a, b) <= got + 1e-4 * (1.0 + got)


def test_short_block_replanned_at_the_sites_with_export_headroom(monkeypatch):
    """A 3-hour event over export-limited sites plus 5 % EVs behind no site
    limit, one site's export derated for an hour: the block has too many EVs
    for a per-EV re-plan, but the EVs at the sites with headroom in its short
    intervals are re-planned (repair.py); never worse than without, every limit
    kept, no driver short when avoidable."""
    import aggregator.allocator.api as api
    from sim.fleets import max_feasible_level_kw

    sf = site_fleet(1000, 5)
    T, dt = 16, 0.25
    mid = (np.arange(T) + 0.5) * dt
    win = (mid >= 0.5) & (mid < 3.5)
    dur = np.full(T, dt)
    derate = [(0, "export", 1.5, 2.5, 0.5), (1, "import", 0.0, 1.0, 0.5)]

    def make(level):
        return site_targets(sf, dur, np.where(win, -level, np.nan), derate=derate)

    tg = make(max_feasible_level_kw(sf.fleet, make))
    plan = allocate(sf.fleet, tg, AllocatorOptions())
    monkeypatch.setattr(api, "REPAIR_SITE_MAX_SIZE", 0)
    base = allocate(sf.fleet, tg, AllocatorOptions())
    assert any("re-planned per EV" in x for x in plan.notes)
    # without the re-plan the split misses ~0.2 % of the commitment here (seed 5); with it nothing
    assert plan.shortfall_kwh(dur) < base.shortfall_kwh(dur) - 1.0
    assert plan.shortfall_kwh(dur) <= 1e-6 * float(np.nansum(np.abs(tg.import_kw)) * dt)
    assert plan.departure_shortfall_kwh.sum() <= base.departure_shortfall_kwh.sum() + 1e-6
    S = tg.n_sites
    imp, exp = tg.site_limits_kw(S)
    tot = _site_totals(sf.fleet, plan, S)
    assert np.all(tot <= imp + 1e-5) and np.all(tot >= -exp - 1e-5)
    _check_physics(sf.fleet, tg, plan)


def test_energy_stranded_behind_an_export_limit_is_exchanged():
    """The split rule can let an export-limited site drop below its limit
    mid-commitment while the EVs behind no limit run dry; the energy the
    limited site keeps is then stranded behind its limit in the last interval
    (sites-flat 1,000 x 16 seed 3).  The export exchange (exchange.py) has
    the limited site give in the interval where it had headroom and the EVs
    behind no limit give that energy in the short interval instead: the plan
    then falls short no more than the per-EV LP, every limit kept."""
    from aggregator.allocator.exchange import exchange_exports
    from aggregator.allocator.horizon import build_problem, simulate

    # site 0: one EV with energy to spare behind a 10 kW export limit; site 1
    # (no limit): one EV with 30 kWh it may spend; -20 kW asked for 3 hours
    f = fleet(2, energy_kwh=np.array([50.0, 30.0]), capacity_kwh=60.0, floor_kwh=0.0,
              need_kwh=np.array([10.0, 0.0]), departure_h=10.0,
              max_discharge_kw=np.array([10.0, 20.0]), site=np.array([0, 1]))
    tg = Targets(np.ones(3), np.full(3, -20.0), site_export_limit_kw=np.array([10.0, np.inf]))
    prob = build_problem(f, tg, AllocatorOptions())
    # the split's kind of plan: site 0 drops to 5 kW in hour 1, site 1 is dry in hour 2
    P = np.zeros((prob.n, prob.Tx))
    P[0, :3] = [-10.0, -5.0, -10.0]
    P[1, :3] = [-10.0, -15.0, -5.0]
    short = float(np.maximum(0.0, P[:, :3].sum(axis=0) + 20.0).sum())
    assert short == pytest.approx(5.0)
    Q, moves = exchange_exports(prob, P, time_limit_s=1.0)
    lp = allocate(f, tg, AllocatorOptions(method="lp"))
    assert moves
    got = float(np.maximum(0.0, Q[:, :3].sum(axis=0) + 20.0).sum())
    assert got <= lp.shortfall_kwh(tg.durations_h) + 1e-6 < short
    assert np.all(Q[0, :3] >= -10.0 - 1e-9)            # site 0 within its export limit
    E = simulate(prob, Q)
    assert np.all(E >= -1e-9) and np.all(E[:, -1] >= prob.need - 1e-6)   # floor kept, both needs met


def test_short_interval_covered_by_an_ev_that_charges_back_after_the_event():
    """A site derated to no export in the event's second hour; the EV behind
    no limit spent its energy in the first hour, while the EV at the derated
    site held its energy for its departure need (sites-event 1,000 x 16 seed
    7 in small).  The exchange (exchange.py) has the EV at the derated site
    export in the first hour -- charging it back after the event, its need
    still met -- and the other EV keep that energy for the second hour: the
    plan then falls short no more than the per-EV LP, every limit kept."""
    from aggregator.allocator.exchange import exchange_exports
    from aggregator.allocator.horizon import build_problem, simulate

    f = fleet(2, energy_kwh=20.0, capacity_kwh=60.0, floor_kwh=0.0, need_kwh=np.array([20.0, 0.0]),
              departure_h=10.0, max_charge_kw=10.0, max_discharge_kw=np.array([10.0, 20.0]), site=np.array([0, 1]))
    ask = np.array([-15.0, -15.0, np.nan, np.nan])
    tg = Targets(np.ones(4), ask, site_export_limit_kw=np.array([[10.0, 0.0, 10.0, 10.0], [np.inf] * 4]))
    prob = build_problem(f, tg, AllocatorOptions())
    # the rules' kind of plan: EV 0 keeps what its departure needs, EV 1 runs dry in hour 1
    P = np.zeros((prob.n, prob.Tx))
    P[1, :2] = [-15.0, -5.0]
    short = float(np.nansum(np.maximum(0.0, P[:, :2].sum(axis=0) - ask[:2])))
    assert short == pytest.approx(10.0)
    Q, moves = exchange_exports(prob, P, time_limit_s=1.0)
    lp = allocate(f, tg, AllocatorOptions(method="lp"))
    assert moves
    got = float(np.maximum(0.0, Q[:, :2].sum(axis=0) - ask[:2]).sum())
    assert got <= lp.shortfall_kwh(tg.durations_h) + 1e-6 < short
    assert Q[0, 0] >= -10.0 - 1e-9 and Q[0, 1] >= -1e-9           # site 0 within its limits
    E = simulate(prob, Q)
    assert np.all(E >= -1e-9) and np.all(E[:, -1] >= prob.need - 1e-6)   # floor kept, needs met


def test_export_moved_inside_a_site_makes_a_donor_for_the_exchange(monkeypatch):
    """The EV behind no limit ran dry in the event's first hour and falls
    short in the second, where the other site is derated to no export; that
    site had headroom in the first hour, but its EV that could give there (A)
    exports down to its floor in the third hour and the one with energy to
    spare (G, charged back after the event) exports flat out in the first
    hour (sites-event 1,000 x 16 seeds 7 and 18 in small).  No two-party
    exchange helps; once A's third-hour export is moved to G (G charging
    less there, the site's total unchanged; untangle.py), A can give in the
    first hour and the exchange covers the second: nothing short, as in the
    per-EV LP, every limit kept."""
    import aggregator.allocator.exchange as exchange
    from aggregator.allocator.horizon import build_problem, simulate

    # A, G at site 0 (export limit 20 / 0 / 0 kW), C behind no limit
    f = fleet(3, energy_kwh=np.array([10.0, 25.0, 25.0]), capacity_kwh=60.0, floor_kwh=0.0,
              need_kwh=np.array([0.0, 30.0, 0.0]), departure_h=10.0, max_charge_kw=10.0,
              max_discharge_kw=np.array([10.0, 5.0, 20.0]), site=np.array([0, 0, 1]))
    ask = np.array([-20.0, -20.0, 0.0, np.nan])
    tg = Targets(np.ones(4), ask, site_export_limit_kw=np.array([[20.0, 0.0, 0.0, 20.0], [np.inf] * 4]))
    prob = build_problem(f, tg, AllocatorOptions())
    # the rules' kind of plan: A keeps its energy for hour 2, G charges its need there, C runs dry in hour 1
    P = np.zeros((prob.n, prob.Tx))
    P[0, :3] = [0.0, 0.0, -10.0]
    P[1, :3] = [-5.0, 0.0, 10.0]
    P[2, :3] = [-15.0, -10.0, 0.0]

    def short(Q):
        return float(np.maximum(0.0, Q[:, :3].sum(axis=0) - ask[:3]).sum())

    assert short(P) == pytest.approx(10.0)
    monkeypatch.setattr(exchange, "untangle", lambda prob, P, *args: (P, 0.0))
    assert short(exchange.exchange_exports(prob, P, time_limit_s=1.0)[0]) == pytest.approx(10.0)
    monkeypatch.undo()
    Q, moves = exchange.exchange_exports(prob, P, time_limit_s=1.0)
    lp = allocate(f, tg, AllocatorOptions(method="lp"))
    assert moves
    assert short(Q) <= lp.shortfall_kwh(tg.durations_h) + 1e-6 < short(P)
    tot = np.stack([Q[:2, :4].sum(axis=0), Q[2, :4]])
    assert np.all(-tot <= tg.site_export_limit_kw + 1e-9)   # every site within its export limit
    E = simulate(prob, Q)
    assert np.all(E >= -1e-9) and np.all(E <= 60.0 + 1e-9) and np.all(E[:, -1] >= prob.need - 1e-6)


def test_poor_block_too_large_replanned_on_its_end_evs_and_donors(monkeypatch):
    """A pre-charge event at 17-20 h whose block has more EVs than the poor-block
    re-plan takes (sites-precharge 100,000 x 96 seed 1: ~9,700 EVs, 2.8 % short,
    all in the last interval, where the ~440 EVs still plugged in had spent
    their energy earlier in the block): the EVs plugged in during the short
    interval are re-planned with the block EVs that can give the most earlier
    in the block (repair.py).  Here the same shape at 1,000 EVs with the size
    limits scaled down so that the block is too large: nothing short, against
    11 kWh with the site-headroom re-plan alone; every limit kept."""
    import aggregator.allocator.api as api
    from aggregator.allocator.heuristics import commitment_blocks
    from aggregator.allocator.horizon import build_problem
    from aggregator.allocator.timegrid import period_edges
    from benchmarks.allocator import build_case

    f, tg, _ = build_case("sites-precharge", 1000, 2, 96)
    prob = build_problem(f, tg, AllocatorOptions())
    periods = period_edges(prob, api.REPAIR_MERGE_HOURS).size - 1
    (a, b), = commitment_blocks(prob)
    n_block = int((prob.frac[:, a:b].max(axis=1) > 0).sum())
    n_end = int((prob.frac[:, b - 1] > 0).sum())
    assert 0 < n_end and n_end + 5 < n_block - 1
    monkeypatch.setattr(api, "REPAIR_MAX_SIZE", periods * (n_end + 5))
    monkeypatch.setattr(api, "REPAIR_POOR_MAX_SIZE", periods * (n_block - 1))
    plan = allocate(f, tg, AllocatorOptions())
    monkeypatch.setattr(api, "REPAIR_POOR_MAX_SIZE", 0)
    base = allocate(f, tg, AllocatorOptions())
    d = tg.durations_h
    assert base.shortfall_kwh(d) > 5.0
    assert plan.shortfall_kwh(d) <= 1e-6 * float(np.nansum(np.abs(tg.import_kw) * d))
    assert plan.departure_shortfall_kwh.sum() <= base.departure_shortfall_kwh.sum() + 1e-6
    S = tg.n_sites
    imp, exp = tg.site_limits_kw(S)
    tot = _site_totals(f, plan, S)
    assert np.all(tot <= imp + 1e-5) and np.all(tot >= -exp - 1e-5)
    _check_physics(f, tg, plan)
