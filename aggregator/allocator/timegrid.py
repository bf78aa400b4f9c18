"""Time-grid aggregation for the cluster LP on long horizons.

Consecutive intervals with no commitment and the same site limits and prices
are merged into one LP period (at most `max_hours` long); committed
intervals always stay single.  On a merged period a unit's power limits are
the duration-weighted means of its per-interval limits (an EV that leaves
part-way through contributes its plugged share), so the period's energy is
exact for each unit; what is lost is only the timing inside the period (and
a site import limit may be met on average but not in every interval, which
the split then enforces interval by interval).  A 24-hour horizon with a
3-hour event shrinks from 96 to about 20 periods.

`coarsen` builds the merged `Problem`; `expand` spreads a (K, P) unit plan
back onto the fine intervals: charging in proportion to each unit's charge
limit per interval, discharging in proportion to its discharge limit, so
every interval stays within the unit's limits and the period's energy is
unchanged.
"""

from __future__ import annotations

import numpy as np

from .fleet import group_totals
from .horizon import Problem

__all__ = ["period_edges", "coarsen", "expand"]


def period_edges(prob: Problem, max_hours: float) -> np.ndarray:
    """(P + 1,) fine-interval indices where the merged periods start (and Tx).
    Computed once per Problem and length (the cluster LP and the per-EV
    re-plans use the same grid)."""
    key = ("period_edges", float(max_hours))
    if key not in prob.cache:
        prob.cache[key] = _period_edges(prob, max_hours)
    return prob.cache[key]


def _period_edges(prob: Problem, max_hours: float) -> np.ndarray:
    Tx, T = prob.Tx, prob.T
    # interval t may join t - 1's period: both uncommitted caller intervals
    # with the same limits and prices (compared for all t at once)
    joins = np.zeros(Tx, dtype=bool)
    if Tx > 1:
        t = np.arange(1, Tx)
        free = np.zeros(Tx, dtype=bool)
        free[:T] = ~prob.committed[:T]
        joins[1:] = ((t < T) & free[1:] & free[:-1]
                     & np.all(prob.site_imp[:, 1:] == prob.site_imp[:, :-1], axis=0)
                     & np.all(prob.site_exp[:, 1:] == prob.site_exp[:, :-1], axis=0)
                     & np.all(prob.price[:, 1:] == prob.price[:, :-1], axis=0))
    edges = [0]
    dur = prob.dur.tolist()
    length = dur[0] if Tx else 0.0
    for t in range(1, Tx):
        if joins[t] and length + dur[t] <= max_hours + 1e-9:
            length += dur[t]
        else:
            edges.append(t)
            length = dur[t]
    edges.append(Tx)
    return np.asarray(edges, dtype=np.int64)


def coarsen(prob: Problem, edges: np.ndarray) -> Problem:
    """The Problem on merged periods [edges[k], edges[k+1])."""
    a, b = edges[:-1], edges[1:]
    P = a.size
    cum = np.concatenate([[0.0], np.cumsum(prob.dur)])
    dur = cum[b] - cum[a]
    end = cum[b]
    start = end - dur
    T = int(np.searchsorted(b, prob.T, side="right")) if prob.T else 0
    # duration-weighted mean plugged fraction per period
    # (running sums over the intervals on the transposed, row-per-interval
    # array: contiguous rows, the result column-major like every (N, Tx) array)
    fd = np.concatenate([np.zeros((1, prob.n)), np.cumsum((prob.frac * prob.dur[None, :]).T, axis=0)], axis=0)
    frac = ((fd[b] - fd[a]) / dur[:, None]).T
    first = a
    return Problem(
        n=prob.n, T=T, Tx=P, dur=dur, start=start, end=end,
        target=prob.target[first[:T]], committed=prob.committed[first[:T]], price=prob.price[:, first],
        has_price=prob.has_price, frac=frac, e0=prob.e0, cap=prob.cap, lb=prob.lb, need=prob.need,
        dep=prob.dep, pc=prob.pc, pd=prob.pd, etac=prob.etac, etad=prob.etad, site=prob.site,
        n_sites=prob.n_sites, site_imp=prob.site_imp[:, first], site_exp=prob.site_exp[:, first],
        over_kw=prob.over_kw, w_short=prob.w_short, w_dep=prob.w_dep, wear=prob.wear,
    )


def expand(prob: Problem, edges: np.ndarray, labels: np.ndarray, K: int, charge: np.ndarray,
           discharge: np.ndarray) -> np.ndarray:
    """(K, Tx) unit powers on the fine intervals from per-period unit charge
    and discharge (K, P): each spread over the period's intervals in
    proportion to the unit's limit there."""
    cmax = group_totals(labels, prob.cmax, K)   # (K, Tx)
    dmax = group_totals(labels, prob.dmax, K)
    period = np.repeat(np.arange(edges.size - 1), np.diff(edges))   # fine interval -> period
    out = np.zeros((K, prob.Tx))
    for lim, amount, sign in ((cmax, charge, 1.0), (dmax, discharge, -1.0)):
        w = lim * prob.dur[None, :]                                   # kWh the unit could move per interval
        wsum = np.add.reduceat(w, edges[:-1], axis=1)                 # (K, P)
        dur_p = np.add.reduceat(prob.dur, edges[:-1])
        energy = amount * dur_p[None, :]                              # (K, P) grid kWh in the period
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(wsum[:, period] > 0, w / np.where(wsum[:, period] > 0, wsum[:, period], 1.0), 0.0)
        out += sign * share * energy[:, period] / prob.dur[None, :]
    return out
