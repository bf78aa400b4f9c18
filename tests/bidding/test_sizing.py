"""Sizing against analytic cases: normal and empirical distributions, piecewise schedules."""
from statistics import NormalDist

import numpy as np
import pytest

from aggregator.settlement.payments import PerformanceFactor
from bidding.sizing import (LinearPayoff, PerformanceFactorPayoff, derate, expected_payoff, newsvendor_quantity,
                            normal_newsvendor, optimise_quantity, size_hours)


@pytest.mark.parametrize("p,k", [(1.0, 9.0), (2.0, 6.0), (1.0, 1.0), (3.0, 1.0)])
def test_normal_newsvendor_matches_the_closed_form_and_the_samples(p, k):
    mu, sd = 356.0, 30.0
    expected = mu + sd * NormalDist().inv_cdf(p / (p + k))
    assert normal_newsvendor(mu, sd, p, k) == pytest.approx(expected)
    samples = np.random.default_rng(1).normal(mu, sd, 200_000)
    assert newsvendor_quantity(samples, p, k) == pytest.approx(expected, abs=0.6)
    # the numerical optimiser finds the same quantity on the same samples
    assert optimise_quantity(samples[:20_000], LinearPayoff(p, k)) == pytest.approx(expected, abs=2.0)


def test_p90_is_the_tenth_percentile_when_k_is_nine_p():
    samples = np.random.default_rng(2).normal(100, 10, 100_000)
    assert newsvendor_quantity(samples, 1, 9) == pytest.approx(100 - 1.2816 * 10, abs=0.3)


def test_empirical_quantile_is_the_smallest_q_reaching_the_critical_ratio():
    c = np.array([10.0, 20.0, 30.0, 40.0])
    assert newsvendor_quantity(c, 1, 1) == 20.0          # F(20) = 0.5 >= 0.5
    assert newsvendor_quantity(c, 3, 1) == 30.0          # ratio 0.75
    assert newsvendor_quantity(c, 1, 3) == 10.0          # ratio 0.25
    # expected profit is flat on [20, 30] at ratio 0.5 and the optimiser takes the smallest
    q = optimise_quantity(c, LinearPayoff(1, 1))
    assert q == 20.0
    grid = np.linspace(0, 50, 501)
    assert expected_payoff(LinearPayoff(1, 1), q, c)[0] >= expected_payoff(LinearPayoff(1, 1), grid, c).max() - 1e-9


def test_performance_factor_step_deterministic_capacity():
    """Full pay at >= 90 % performance, nothing below: with C known, bid C / 0.9."""
    step = PerformanceFactor(((0.0, 0.0), (0.9, 0.0), (0.9, 1.0), (1.0, 1.0)))
    q = optimise_quantity(np.full(50, 180.0), PerformanceFactorPayoff(rate=1.0, factor=step))
    assert q == pytest.approx(200.0)


def test_piecewise_optimum_beats_every_grid_point_on_random_capacity():
    rng = np.random.default_rng(3)
    c = np.maximum(0, rng.normal(300, 60, 3000))
    pay = PerformanceFactorPayoff(rate=2.0, k=1.0)
    q = optimise_quantity(c, pay)
    grid = np.linspace(0, 700, 1401)
    assert expected_payoff(pay, q, c)[0] >= expected_payoff(pay, grid, c).max() - 1e-6
    assert 0 < q < 700


def test_telemetry_derate_scales_the_quantity():
    s = np.random.default_rng(4).normal(200, 20, (5000, 3))
    full = size_hours(s, LinearPayoff(1, 3))
    derated = size_hours(s, LinearPayoff(1, 3), telemetry_loss=0.1)
    assert derated == pytest.approx(0.9 * full, rel=1e-9)
    with pytest.raises(ValueError):
        derate(s, 1.0)
