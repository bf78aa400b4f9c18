"""The large-fleet paths (binning, cluster LP, split, portfolio) on mid-size fleets."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.allocator import AllocatorOptions, allocate
from aggregator.allocator.bound import shortfall_lower_bound_kwh
from aggregator.allocator.cluster import _relabel
from sim.fleets import event_targets, flat_targets, random_fleet

from .test_properties import _check_physics


def _unavoidable(f):
    best = np.minimum(f.capacity_kwh, f.energy_kwh + f.eta_charge * f.max_charge_kw * f.departure_h)
    return np.maximum(0.0, f.need_kwh - best)


@pytest.mark.parametrize("targets", [flat_targets(16, 0.25, -900.0), event_targets(16, 0.25, -3000.0, 2, 4),
                                     flat_targets(24, 0.5, 300.0)])
@pytest.mark.parametrize("method", ["auto", "cluster", "greedy"])
def test_large_fleet_paths_keep_invariants(targets, method):
    f = random_fleet(600, seed=5, n_sites=2)
    plan = allocate(f, targets, AllocatorOptions(method=method, cluster_bins=60))
    assert plan.method.startswith("cluster") or plan.method in ("greedy", "split-rule")
    _check_physics(f, targets, plan)
    # drivers are never left short beyond what charging flat out cannot fix
    assert np.all(plan.departure_shortfall_kwh <= _unavoidable(f) + 1e-4)
    prop = allocate(f, targets, AllocatorOptions(method="proportional"))
    d = targets.durations_h
    assert plan.shortfall_kwh(d) <= prop.shortfall_kwh(d) + 1e-6
    assert plan.shortfall_kwh(d) >= shortfall_lower_bound_kwh(f, targets) - 1e-6


def test_cluster_bins_respected_and_units_reported():
    f = random_fleet(800, seed=2)
    plan = allocate(f, flat_targets(16, 0.25, -1500.0), AllocatorOptions(method="cluster", cluster_bins=50))
    assert 1 <= plan.n_clusters <= 80
    assert plan.power_kw.shape == (800, 16)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.0, 0.5, 2.0, 7.4]), st.integers(-2, 2)),
                min_size=1, max_size=40))
def test_relabel_matches_unique_rows(rows):
    a = np.array(rows, dtype=np.float64)
    want, want_inv = np.unique(a, axis=0, return_inverse=True)
    labels, K = _relabel(a[:, 0].astype(np.int64), a[:, 1], a[:, 2])
    assert K == len(want)
    assert np.array_equal(labels, want_inv.reshape(-1))
