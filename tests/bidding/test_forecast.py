"""Forecast against a synthetic history with a known distribution."""
from datetime import date, timedelta

import numpy as np
import pytest
from scipy.stats import binom

from aggregator.allocator import FleetArrays, deliverable_export_bound_kw
from bidding.forecast import ForecastOptions, day_profile, forecast, history_days, profile_cache
from bidding.history import SessionTable, Window, epoch

WINDOW = Window(16.0, 3, "America/New_York")
N_EV, P_PLUG, KW = 40, 0.6, 10.0


def _known_history(n_days: int, seed: int = 0) -> SessionTable:
    """Identical EVs with plenty of spare energy, each plugged all afternoon with
    probability P_PLUG, i.i.d. across days: per hour C = KW x Binomial(N_EV, P_PLUG)."""
    rng = np.random.default_rng(seed)
    rows = []
    d0 = date(2025, 4, 1)
    for i in range(n_days):
        d = d0 + timedelta(days=i)
        t0 = epoch(WINDOW.start_on(d))
        for v in np.flatnonzero(rng.random(N_EV) < P_PLUG):
            rows.append((f"ev-{v}", t0 - 6 * 3600, t0 + 8 * 3600))
    n = len(rows)
    return SessionTable(vehicle_id=np.array([r[0] for r in rows], dtype=object), kind=np.full(n, "car", dtype=object),
                        site=np.zeros(n), arrived_s=np.array([r[1] for r in rows]), departs_s=np.array([r[2] for r in rows]),
                        left_s=np.array([r[2] for r in rows]), energy_at_arrival_kwh=np.full(n, 60.0),
                        need_kwh=np.full(n, 40.0), capacity_kwh=np.full(n, 80.0), floor_kwh=np.full(n, 10.0),
                        max_charge_kw=np.full(n, 11.0), max_discharge_kw=np.full(n, KW), eta_charge=np.full(n, 0.95),
                        eta_discharge=np.full(n, 0.95))


def test_per_ev_profile_sums_to_the_allocators_bound():
    table = _known_history(1)
    d = date(2025, 4, 1)
    prof = day_profile(table, WINDOW, d)
    t0 = epoch(WINDOW.start_on(d))
    fleet = FleetArrays(ids=np.arange(len(table)).astype(str), energy_kwh=np.minimum(80.0, 60 + 0.95 * 11 * 6),
                        capacity_kwh=table.capacity_kwh, floor_kwh=table.floor_kwh, need_kwh=table.need_kwh,
                        departure_h=(table.departs_s - t0) / 3600, max_charge_kw=table.max_charge_kw,
                        max_discharge_kw=table.max_discharge_kw, eta_charge=table.eta_charge,
                        eta_discharge=table.eta_discharge)
    bound = deliverable_export_bound_kw(fleet, np.full(12, 0.25)).reshape(3, 4).mean(axis=1)
    assert prof.total_kw == pytest.approx(bound)
    assert prof.total_kw == pytest.approx(np.full(3, KW * len(table)))


def test_energy_couples_the_hours_of_one_event():
    """An EV with 12 kWh to spare cannot give 10 kW for 3 hours: the event sum respects its energy."""
    d = date(2025, 4, 1)
    t0 = epoch(WINDOW.start_on(d))
    one = SessionTable(vehicle_id=np.array(["a"], dtype=object), kind=np.array(["car"], dtype=object), site=[0],
                       arrived_s=[t0], departs_s=[t0 + 10 * 3600], left_s=[t0 + 10 * 3600],
                       energy_at_arrival_kwh=[32.0], need_kwh=[20.0], capacity_kwh=[80.0], floor_kwh=[20.0],
                       max_charge_kw=[0.0], max_discharge_kw=[10.0], eta_charge=[1.0], eta_discharge=[1.0])
    prof = day_profile(one, WINDOW, d)
    assert prof.total_kw.sum() == pytest.approx(12.0)      # kWh over the 3 hours = spare energy
    assert prof.total_kw == pytest.approx([4.0, 4.0, 4.0])  # held as a flat level


def test_p90_coverage_within_three_points_over_many_days():
    n_hist, n_target = 60, 600
    table = _known_history(n_hist + n_target, seed=5)
    get = profile_cache(table, WINDOW)
    days = history_days(table, WINDOW)
    opts = ForecastOptions(n_samples=4000, lookback_days=n_hist, same_day_type=False)
    start = date(2025, 4, 1) + timedelta(days=n_hist)
    hits, p90s = [], []
    for i in range(n_target):
        d = start + timedelta(days=i)
        fc = forecast(get, days, WINDOW, d, opts)
        actual = get(d).total_kw
        hits.append(actual >= fc.p90 - 1e-9)
        p90s.append(fc.p90)
    coverage = np.mean(hits)
    assert abs(coverage - 0.90) <= 0.03, coverage
    # and the forecast's P90 sits near the true 10th percentile of KW x Binomial(N, p)
    true_p90 = KW * binom.ppf(0.1, N_EV, P_PLUG)
    assert np.median(p90s) == pytest.approx(true_p90, abs=KW * 1.01)


def test_a_day_level_shock_survives_the_resampling():
    """Whole days are resampled: a history where every EV comes or none does gives a
    two-point forecast, not the narrow binomial an independent-EV model would give."""
    rows = []
    for i in range(40):
        d = date(2025, 5, 1) + timedelta(days=i)
        if i % 2:
            t0 = epoch(WINDOW.start_on(d))
            rows += [(f"ev-{v}", t0 - 3600, t0 + 6 * 3600) for v in range(N_EV)]
    n = len(rows)
    table = SessionTable(vehicle_id=np.array([r[0] for r in rows], dtype=object), kind=np.full(n, "car", dtype=object),
                         site=np.zeros(n), arrived_s=[r[1] for r in rows], departs_s=[r[2] for r in rows],
                         left_s=[r[2] for r in rows], energy_at_arrival_kwh=np.full(n, 60.0), need_kwh=np.full(n, 30.0),
                         capacity_kwh=np.full(n, 80.0), floor_kwh=np.full(n, 10.0), max_charge_kw=np.full(n, 11.0),
                         max_discharge_kw=np.full(n, KW), eta_charge=np.full(n, 1.0), eta_discharge=np.full(n, 1.0))
    fc = forecast(profile_cache(table, WINDOW), history_days(table, WINDOW), WINDOW, date(2025, 6, 15),
                  ForecastOptions(n_samples=2000, lookback_days=60, same_day_type=False))
    assert set(np.unique(fc.samples[:, 0])) == {0.0, KW * N_EV}
    assert fc.p90[0] == 0.0 and fc.quantile(0.9)[0] == KW * N_EV
