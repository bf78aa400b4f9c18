"""Bid sizing under uncertainty (pure).

Linear rule (REFERENCE §6): paid p per kW delivered up to the commitment Q,
charged k per kW short.  Expected profit  E[p min(C, Q) - k (Q - C)+]  is
maximised at the quantile

    Q* = F_C^-1( p / (p + k) )        (P(C < Q*) = p / (p + k))

so "P90" (the 10th percentile) is right only when k = 9 p.  `newsvendor_quantity`
does it on samples (the smallest Q with F(Q) >= p/(p+k)), `normal_newsvendor` in
closed form.

Piecewise schedules have no closed form: `optimise_quantity` maximises the
sample mean of any `Payoff` over every Q where the expected payoff can change
slope (each sample C and C / x for every breakpoint x of the schedule), so it is
exact for piecewise-linear schedules.  Payoffs provided:

* `LinearPayoff(p, k)`                       the rule above
* `PerformanceFactorPayoff(rate, factor, k)` rate x Q x factor(C / Q) (the
  settlement package's `PerformanceFactor`, e.g. its DEFAULT_FACTOR) minus k per kW short
* `SeasonAveragePayoff(rate, n_events, k)`   ConnectedSolutions: $/kW-season x the
  average kW over all events, so one event is worth rate / n_events per kW
  credited (credit up to what was dispatched, i.e. min(C, Q)), minus the
  aggregator's own shortfall penalty k per kW (CS itself has none: with k = 0
  any Q above every sample is optimal and the smallest such Q is returned).

Telemetry loss: `derate` scales the capacity samples by (1 - loss) before
sizing (the delivery a lost meter does not get credited), for loss the forecast
did not simulate itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np

from aggregator.settlement.payments import DEFAULT_FACTOR, PerformanceFactor

__all__ = ["critical_ratio", "newsvendor_quantity", "normal_newsvendor", "Payoff", "LinearPayoff",
           "PerformanceFactorPayoff", "SeasonAveragePayoff", "expected_payoff", "optimise_quantity",
           "derate", "size_hours"]


def critical_ratio(p: float, k: float) -> float:
    if p < 0 or k < 0 or p + k <= 0:
        raise ValueError(f"payment p={p} and penalty k={k} must be >= 0, not both 0")
    return p / (p + k)


def newsvendor_quantity(samples: np.ndarray, p: float, k: float) -> float:
    """Smallest Q with empirical F(Q) >= p / (p + k) (F(Q) = share of samples <= Q)."""
    x = np.sort(np.asarray(samples, dtype=float).reshape(-1))
    if x.size == 0:
        return 0.0
    r = critical_ratio(p, k)
    i = int(np.ceil(r * x.size - 1e-12)) - 1
    return float(max(0.0, x[min(max(i, 0), x.size - 1)]))


def normal_newsvendor(mean: float, sd: float, p: float, k: float) -> float:
    """Q* for C ~ N(mean, sd^2): mean + sd * Phi^-1(p / (p + k))."""
    r = critical_ratio(p, k)
    if r >= 1.0:
        return float("inf")
    if r <= 0.0:
        return 0.0
    return mean + sd * NormalDist().inv_cdf(r)


class Payoff(Protocol):
    def __call__(self, q: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Payoff per kW-hour-slot for commitments q (M, 1) against capacities c (1, S)."""

    def breakpoints(self) -> tuple[float, ...]:
        """Ratios C / Q where the payoff's slope in Q changes (besides C = Q)."""


@dataclass(frozen=True)
class LinearPayoff:
    p: float   # per kW delivered up to the commitment
    k: float   # per kW short

    def __call__(self, q, c):
        return self.p * np.minimum(c, q) - self.k * np.maximum(0.0, q - c)

    def breakpoints(self):
        return ()


@dataclass(frozen=True)
class PerformanceFactorPayoff:
    rate: float                                   # per kW committed at factor 1
    factor: PerformanceFactor = DEFAULT_FACTOR
    k: float = 0.0                                # per kW short

    def __call__(self, q, c):
        q = np.asarray(q, dtype=float)
        ratio = np.divide(c, q, out=np.zeros(np.broadcast(q, c).shape), where=q > 0)
        xs = np.array([x for x, _ in self.factor.points])
        ys = np.array([y for _, y in self.factor.points])
        f = _piecewise(ratio, xs, ys)
        return self.rate * q * f - self.k * np.maximum(0.0, q - c)

    def breakpoints(self):
        return tuple(sorted({x for x, _ in self.factor.points if x > 0}))


def _piecewise(r: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """`PerformanceFactor.__call__` vectorised: linear between points, flat beyond the
    ends, the right-hand value at a step."""
    i = np.searchsorted(xs, r, side="right")
    out = np.empty_like(r, dtype=float)
    lo, hi = i == 0, i == xs.size
    out[lo] = ys[0]
    out[hi] = ys[-1]
    mid = ~lo & ~hi
    j = i[mid]
    x0, x1, y0, y1 = xs[j - 1], xs[j], ys[j - 1], ys[j]
    out[mid] = y0 + (r[mid] - x0) * (y1 - y0) / (x1 - x0)
    return out


@dataclass(frozen=True)
class SeasonAveragePayoff:
    rate_per_kw_season: float
    n_events: int
    k: float = 0.0

    def __call__(self, q, c):
        p = self.rate_per_kw_season / max(self.n_events, 1)
        return p * np.maximum(0.0, np.minimum(c, q)) - self.k * np.maximum(0.0, q - c)

    def breakpoints(self):
        return ()


def expected_payoff(payoff: Payoff, q: float | np.ndarray, samples: np.ndarray) -> np.ndarray:
    q = np.atleast_1d(np.asarray(q, dtype=float))[:, None]
    return payoff(q, np.asarray(samples, dtype=float).reshape(1, -1)).mean(axis=1)


def optimise_quantity(samples: np.ndarray, payoff: Payoff, max_candidates: int = 4000) -> float:
    """Q >= 0 maximising the sample-mean payoff; ties go to the smallest Q."""
    c = np.asarray(samples, dtype=float).reshape(-1)
    if c.size == 0:
        return 0.0
    pos = c[c > 0]
    cand = [np.zeros(1), pos]
    for x in payoff.breakpoints():
        cand.append(pos / x)
    q = np.unique(np.concatenate(cand))
    if q.size > max_candidates:   # keep the extremes, thin the middle evenly
        q = np.unique(np.concatenate([q[:: max(1, q.size // max_candidates)], q[-1:]]))
    best, best_q = -np.inf, 0.0
    for chunk in np.array_split(q, max(1, q.size * c.size // 4_000_000 + 1)):
        v = expected_payoff(payoff, chunk, c)
        i = int(np.argmax(v))
        if best == -np.inf or v[i] > best + 1e-9 * max(1.0, abs(best)):
            best, best_q = float(v[i]), float(chunk[i])
    return best_q


def derate(samples: np.ndarray, telemetry_loss: float) -> np.ndarray:
    if not 0.0 <= telemetry_loss < 1.0:
        raise ValueError(f"telemetry loss {telemetry_loss} must be in [0, 1)")
    return np.asarray(samples, dtype=float) * (1.0 - telemetry_loss)


def size_hours(samples: np.ndarray, payoff: Payoff, telemetry_loss: float = 0.0) -> np.ndarray:
    """Per-hour quantities (H,) for (S, H) samples (each hour settled on its own)."""
    x = derate(samples, telemetry_loss)
    if isinstance(payoff, LinearPayoff):
        return np.array([newsvendor_quantity(x[:, h], payoff.p, payoff.k) for h in range(x.shape[1])])
    return np.array([optimise_quantity(x[:, h], payoff) for h in range(x.shape[1])])
