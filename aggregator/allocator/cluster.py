"""Clustering EVs into LP units and splitting unit plans back onto EVs.

exact_groups   EVs identical in every planning field form one unit (lossless:
               the identical members get identical, equal shares -- the
               fairness tie-break of the per-EV LP).
bin_groups     EVs with similar (departure, headroom, need/room, discharge
               ratio, site) form one unit; bin widths grow until the number of
               units fits the solver budget.
aggregate      unit parameters as sums over members (energies, power limits
               per interval) and limit-weighted efficiencies.
split_plan     the event-aware split: interval by interval, every member moves
               to the same relative position of its own band (floor, capacity,
               charger, departure safety) so that its unit's total is met; a
               fleet-level pass then covers what a unit could not deliver, using
               only energy members can replace after the event.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .heuristics import commitment_blocks, enforce_site_limits, event_reduce
from .horizon import Problem, power_band, step_energy
from .lp import Units
from .split import band_split, time_equalized_reduce

__all__ = ["exact_groups", "bin_groups", "aggregate", "split_plan", "split_equal"]


def exact_groups(prob: Problem) -> tuple[np.ndarray, int]:
    """(labels, K): EVs with identical planning parameters share a label."""
    if prob.n == 0:
        return np.zeros(0, dtype=np.int64), 0
    return _relabel(prob.e0, prob.cap, prob.lb, prob.need, prob.dep, prob.pc, prob.pd,
                    prob.etac, prob.etad, prob.site)


def _rank_bins(groups: np.ndarray, value: np.ndarray, k_per_group: np.ndarray) -> np.ndarray:
    """Equal-count bins of `value` inside every group (k_per_group[g] bins in group g)."""
    order = np.lexsort((value, groups))
    g_sorted = groups[order]
    counts = np.bincount(groups, minlength=k_per_group.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(groups.size) - starts[g_sorted]
    k = k_per_group[g_sorted]
    b = np.empty(groups.size, dtype=np.int64)
    b[order] = np.minimum(k - 1, (pos * k) // np.maximum(counts[g_sorted], 1))
    return b


def _relabel(*cols: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels, K): one label per distinct row of `cols`, in lexicographic row
    order (what np.unique(axis=0) gives, but 1-D sorts only: ranks of each
    column folded into one compact integer key, column by column)."""
    labels = np.zeros(cols[0].size, dtype=np.int64)
    K = 1
    for c in cols:
        _, rank = np.unique(c, return_inverse=True)
        _, labels = np.unique(labels * (int(rank.max(initial=0)) + 1) + rank.reshape(-1), return_inverse=True)
        labels = labels.reshape(-1).astype(np.int64)
        K = int(labels.max(initial=-1)) + 1
    return labels, K


def bin_groups(prob: Problem, max_units: int) -> tuple[np.ndarray, int]:
    """(labels, K), K close to (and at most about) max_units.

    1. departure class: the caller interval an EV leaves in, or "after the
       horizon" (its later departure only matters through its energy envelope);
    2. each class (x site x discharge/charge ratio) gets a share of the budget
       proportional to its size and is cut into equal-count bins of spare
       time -- energy above what it must keep at the horizon end, in hours of
       full-power discharge -- then of charge room (hours of charging up to the
       most it can hold).  Homogeneous spare time is what lets members follow
       their unit's plan.
    """
    n = prob.n
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    if max_units >= n:
        return exact_groups(prob)
    H = prob.end[prob.T - 1] if prob.T else 0.0
    k = np.searchsorted(prob.end[: prob.T], prob.dep, side="left")
    cls = np.where(prob.dep <= H, k, prob.T).astype(np.int64)
    emin, emax = prob.envelope(sites=False)
    T_last = max(prob.T - 1, 0)
    rate = np.where(prob.pd > 0, prob.pd, np.maximum(prob.pc, 1e-9))
    spare = (prob.e0 - emin[:, T_last]) * prob.etad / rate
    room = (emax[:, T_last] - prob.e0) / np.maximum(prob.etac * prob.pc, 1e-9)
    ratio = np.round(4 * prob.pd / np.maximum(prob.pc, 1e-9))
    sub_lab, n_sub = _relabel(cls, prob.site, ratio)
    size = np.bincount(sub_lab, minlength=n_sub)
    budget = np.maximum(1, np.floor(max_units * size / n)).astype(np.int64)
    k1 = np.maximum(1, np.ceil(budget / 2)).astype(np.int64)
    b1 = _rank_bins(sub_lab, spare, k1)
    lab1, n1 = _relabel(sub_lab, b1)
    k2_of_sub = np.maximum(1, budget // k1)
    k2 = np.zeros(n1, dtype=np.int64)
    k2[lab1] = k2_of_sub[sub_lab]
    b2 = _rank_bins(lab1, room, k2)
    return _relabel(lab1, b2)


def _indicator(labels: np.ndarray, K: int) -> sp.csr_matrix:
    n = labels.size
    return sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(K, n))


def aggregate(prob: Problem, labels: np.ndarray, K: int) -> Units:
    """Sum members into K LP units."""
    def s(x):
        return np.bincount(labels, weights=x, minlength=K)
    M = _indicator(labels, K)
    cmax = np.asarray(M @ prob.cmax)
    dmax = np.asarray(M @ prob.dmax)
    # efficiencies weighted by the power actually plugged in, per interval
    wc = np.asarray(M @ (prob.cmax * prob.etac[:, None]))
    wd = np.asarray(M @ (prob.dmax * prob.etad[:, None]))
    mean_c = (s(prob.etac) / np.maximum(s(np.ones(prob.n)), 1))[:, None]
    mean_d = (s(prob.etad) / np.maximum(s(np.ones(prob.n)), 1))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        etac = np.where(cmax > 0, wc / np.where(cmax > 0, cmax, 1.0), mean_c)
        etad = np.where(dmax > 0, wd / np.where(dmax > 0, dmax, 1.0), mean_d)
    site = np.zeros(K, dtype=np.int64)
    site[labels] = prob.site
    emin, emax = prob.envelope()
    return Units(e0=s(prob.e0), cap=s(prob.cap), lb=s(prob.lb), need=s(prob.need), cmax=cmax, dmax=dmax,
                 etac=etac, etad=etad, site=site, e_lo=np.asarray(M @ emin), e_hi=np.asarray(M @ emax))


def split_equal(unit_power: np.ndarray, labels: np.ndarray, K: int) -> np.ndarray:
    """Identical members: equal shares."""
    counts = np.bincount(labels, minlength=K).astype(np.float64)
    return unit_power[labels] / counts[labels, None]


def split_plan(prob: Problem, labels: np.ndarray, K: int, unit_power: np.ndarray,
               follow_units_in_commitments: bool = False) -> np.ndarray:
    """(N, Tx) member powers realising the (K, Tx) unit plan as closely as possible.

    Outside commitments members follow their unit's plan.  Inside commitments
    either the same (``follow_units_in_commitments``) followed by a fleet-level
    repair, or -- the default -- only forced charging plus the event-aware
    time-equalising rule, starting from the state the unit plan prepared
    (pre-charge)."""
    N, Tx, T = prob.n, prob.Tx, prob.T
    P = np.zeros((N, Tx))
    e = prob.e0.copy()
    ca = prob.charge_after()
    block_end = np.full(Tx, np.nan)
    for a, b in commitment_blocks(prob):
        block_end[a:b] = prob.end[b - 1]
    emin, _ = prob.envelope()
    T_end = max(T - 1, 0)
    for t in range(Tx):
        lo, hi = power_band(prob, t, e, charge_after=ca)
        # charge what the horizon will force anyway as early as the unit allows
        ref_t = min(T_end, Tx - 1) if t < T else t
        asap = np.maximum(0.0, emin[:, max(ref_t, t)] - e) / (prob.etac * prob.dur[t])
        base = np.clip(asap, lo, hi)
        want = unit_power[:, t]
        if t < T and prob.committed[t] and not follow_units_in_commitments:
            # inside a commitment: forced charging only, then the event-aware
            # time-equalising rule from the state the unit plan prepared
            p = np.clip(0.0, lo, hi)
            excess = p.sum() - prob.target[t]
            if excess > 1e-9:
                p = p - event_reduce(prob, t, e, p, lo, hi, block_end[t], excess)
        else:
            # charging side: proportional to room
            up = np.where(want > np.bincount(labels, weights=base, minlength=K), want, np.nan)
            p = band_split(lo, hi, base, up, labels, K)
            # export side: equalise remaining discharge time inside each unit
            bsum = np.bincount(labels, weights=base, minlength=K)
            amount = np.maximum(0.0, bsum - want)
            if np.any(amount > 0):
                ref = emin[:, T_end] if t < T else emin[:, t]
                spare = (e - ref) * prob.etad
                room = np.where(amount[labels] > 0, base - lo, 0.0)
                x = time_equalized_reduce(spare, prob.pd * prob.frac[:, t], room, prob.dur[t], amount, labels, K)
                p = np.where(amount[labels] > 0, base - x, p)
            if t < T and prob.committed[t]:
                excess = p.sum() - prob.target[t]
                if excess > 1e-9:
                    p = p - event_reduce(prob, t, e, p, lo, hi, block_end[t], excess)
        p = enforce_site_limits(prob, t, p, lo, hi)
        P[:, t] = p
        e = np.clip(step_energy(e, p, prob.dur[t], prob.etac, prob.etad), np.minimum(prob.lb, e), prob.cap)
    return P
