"""The level search (`sim.fleets.max_feasible_level_kw`) computes the bound's
O(N T^2) window exports once; it must find the level a bisection on the whole
bound finds."""

import numpy as np
import pytest

from aggregator.allocator.bound import shortfall_lower_bound_kwh
from aggregator.allocator import Targets
from sim.fleets import flat_targets, max_feasible_level_kw, random_fleet, site_fleet, site_targets


def _bisection_on_the_bound(fleet, make, iters=16):
    hi = float(np.sum(fleet.max_discharge_kw)) + 1.0
    lo = -float(np.sum(fleet.max_charge_kw)) - 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if shortfall_lower_bound_kwh(fleet, make(mid)) > 1e-6 * max(abs(mid), 1.0):
            hi = mid
        else:
            lo = mid
    return lo


@pytest.mark.parametrize("window", [(0.0, 8.0), (1.0, 4.0), (5.0, 6.5)])
def test_level_of_a_site_fleet_with_derates_is_the_bisection_level(window):
    sf = site_fleet(150, 4)
    T, dt = 32, 0.25
    dur = np.full(T, dt)
    mid = (np.arange(T) + 0.5) * dt
    win = (mid >= window[0]) & (mid < window[1])
    derate = [(0, "export", window[0] + 0.5, window[0] + 1.5, 0.5), (1, "import", 0.0, 1.0, 0.5)]

    def make(level):
        return site_targets(sf, dur, np.where(win, -level, np.nan), derate=derate)

    assert max_feasible_level_kw(sf.fleet, make) == _bisection_on_the_bound(sf.fleet, make)


def test_level_of_a_fleet_without_sites_is_the_bisection_level():
    f = random_fleet(120, 7)

    def make(level):
        return flat_targets(24, 0.25, -level)

    assert max_feasible_level_kw(f, make) == _bisection_on_the_bound(f, make)


def test_targets_that_change_their_windows_with_the_level_are_refused():
    f = random_fleet(20, 1)

    def make(level):  # commits more intervals the higher the level: not a level family
        tgt = np.full(8, -level)
        tgt[: int(level) % 8] = np.nan
        return Targets(np.full(8, 0.25), tgt)

    with pytest.raises(ValueError, match="more than the commitment values"):
        max_feasible_level_kw(f, make)
