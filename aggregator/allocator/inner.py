"""Inner-approximation clusters: unit plans every member can follow exactly.

Each EV is described in its own scale: x = (energy - energy now) / r, with
r its discharge limit (charge limit if it cannot discharge), so one unit of x
is "one hour at full discharge".  A unit's members share one trajectory x(t);
the unit keeps only what *every* member can do:

    x(t) in [max_i lo_i(t), min_i hi_i(t)]          (envelope intersection)
    dx/dt <= min_i etac_i pc_i f_i(t) / r_i,  -dx/dt <= min_i pd_i f_i(t) / (etad_i r_i)

with lo/hi from `Problem.envelope` (floor, departure safety, capacity, charger).
Grid power is linear in dx with per-unit sums (sum r/etac, sum r*etad), so a
unit plan splits onto members *exactly* (member share r_i/etac_i or r_i*etad_i).
Being an inner approximation it under-uses members whose own envelope is
wider than the unit's; a fleet-level top-up pass then spends that leftover
(time-equalising, replaceable energy only) wherever the plan falls short.

The unit LP covers only the caller's T intervals: the departure-safety bound
at the horizon end already guarantees every need can still be met after it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .heuristics import _desired, commitment_blocks, enforce_site_limits, event_reduce
from .horizon import Problem, power_band, step_energy
from .lp import Units

__all__ = ["inner_bins", "inner_units", "split_inner", "horizon_view"]


def _reduce_by_label(values: np.ndarray, labels: np.ndarray, K: int, fn) -> np.ndarray:
    """Row-wise fn (np.maximum / np.minimum) over members of each label; (K, ...)."""
    order = np.argsort(labels, kind="stable")
    ls = labels[order]
    starts = np.flatnonzero(np.r_[True, ls[1:] != ls[:-1]])
    out = fn.reduceat(values[order], starts, axis=0)
    res = np.empty((K,) + values.shape[1:])
    res[ls[starts]] = out
    return res


def _scale(prob: Problem) -> np.ndarray:
    return np.where(prob.pd > 0, prob.pd, prob.pc)


def normalised(prob: Problem):
    """Per-EV normalised envelope (N, T) lo/hi and rate limits (N, T)."""
    T = prob.T
    r = np.maximum(_scale(prob), 1e-12)
    emin, emax = prob.envelope()
    lo = (emin[:, :T] - prob.e0[:, None]) / r[:, None]
    hi = (emax[:, :T] - prob.e0[:, None]) / r[:, None]
    f = prob.frac[:, :T]
    rc = (prob.etac * prob.pc / r)[:, None] * f
    rd = (prob.pd / (prob.etad * r))[:, None] * f
    return r, lo, hi, rc, rd


def inner_bins(prob: Problem, max_units: int) -> tuple[np.ndarray, int]:
    """Labels for the inner approximation (-1 = EV with no charger power at all).

    Classes: the caller interval the EV leaves in (or "after the horizon"),
    site, and charge/discharge ratio; inside each class equal-count bins of
    spare time at the horizon end, then of charge room.  Budget shares are
    proportional to class sizes.
    """
    from .cluster import _rank_bins, _relabel

    n, T = prob.n, prob.T
    flex = _scale(prob) > 0
    labels = np.full(n, -1, dtype=np.int64)
    if not flex.any() or T == 0:
        return labels, 0
    idx = np.flatnonzero(flex)
    r, lo, hi, rc, rd = normalised(prob)
    H = prob.end[T - 1]
    k = np.searchsorted(prob.end[:T], prob.dep, side="left")
    cls = np.where(prob.dep <= H, k, T)[idx]
    ratio = np.round(8 * prob.pc / np.maximum(_scale(prob), 1e-12))[idx]
    forced = (lo[idx, T - 1] >= hi[idx, T - 1] - 1e-9).astype(np.int64)
    sub, n_sub = _relabel(cls, prob.site[idx], ratio, forced)
    if max_units >= idx.size:
        lab, K = _relabel(sub, np.arange(idx.size))
        labels[idx] = lab
        return labels, K
    size = np.bincount(sub, minlength=n_sub)
    budget = np.maximum(1, np.floor(max_units * size / idx.size)).astype(np.int64)
    spare = -lo[idx, T - 1]
    room = hi[idx, T - 1]
    k1 = np.maximum(1, np.ceil(budget * 0.7)).astype(np.int64)
    b1 = _rank_bins(sub, spare, k1)
    lab1, n1 = _relabel(sub, b1)
    k2 = np.zeros(n1, dtype=np.int64)
    k2[lab1] = np.maximum(1, budget // k1)[sub]
    b2 = _rank_bins(lab1, room, k2)
    lab, K = _relabel(lab1, b2)
    labels[idx] = lab
    return labels, K


def inner_units(prob: Problem, labels: np.ndarray, K: int):
    """(Units over the caller's T intervals, split weights (Gc, Gd), r)."""
    T = prob.T
    r, lo, hi, rc, rd = normalised(prob)
    m = labels >= 0
    lab = labels[m]
    LO = _reduce_by_label(lo[m], lab, K, np.maximum)
    HI = _reduce_by_label(hi[m], lab, K, np.minimum)
    RC = _reduce_by_label(rc[m], lab, K, np.minimum)
    RD = _reduce_by_label(rd[m], lab, K, np.minimum)
    # keep the intersection reachable: U = most x can be at t charging at the
    # unit's (slowest member's) rate; members needing more are caught by their
    # own band in the split and by the top-up.
    dur = prob.dur[:T]
    U = np.empty_like(HI)
    prev = np.zeros(K)
    for t in range(T):
        prev = np.minimum(HI[:, t], prev + RC[:, t] * dur[t])
        U[:, t] = prev
    LO = np.minimum(LO, U)
    HI = np.maximum(HI, LO)

    def s(x):
        return np.bincount(lab, weights=x[m], minlength=K)

    R = s(r)
    Gc = s(r / prob.etac)
    Gd = s(r * prob.etad)
    E0 = s(prob.e0)
    site = np.zeros(K, dtype=np.int64)
    site[lab] = prob.site[m]
    units = Units(
        e0=E0, cap=E0 + R * HI.max(axis=1), lb=E0 + R * LO.min(axis=1), need=np.zeros(K),
        cmax=RC * Gc[:, None], dmax=RD * Gd[:, None], etac=R / Gc, etad=Gd / R, site=site,
        e_lo=E0[:, None] + R[:, None] * LO, e_hi=E0[:, None] + R[:, None] * HI,
    )
    return units, Gc, Gd, r


def horizon_view(prob: Problem) -> Problem:
    """The problem restricted to the caller's T intervals (no tail)."""
    T = prob.T
    return dataclasses.replace(prob, Tx=T, dur=prob.dur[:T], start=prob.start[:T], end=prob.end[:T],
                               price=prob.price[:T], frac=prob.frac[:, :T], cache={})


def split_inner(prob: Problem, labels: np.ndarray, Gc: np.ndarray, Gd: np.ndarray, r: np.ndarray,
                unit_power: np.ndarray, top_up: bool = True) -> np.ndarray:
    """(N, Tx) member powers: exact shares of the unit plan, kept inside each
    member's band, plus the fleet-level top-up in committed intervals."""
    N, Tx, T = prob.n, prob.Tx, prob.T
    P = np.zeros((N, Tx))
    m = labels >= 0
    lab = np.where(m, labels, 0)
    wc = np.where(m, r / prob.etac / np.where(m, Gc[lab], 1.0), 0.0)
    wd = np.where(m, r * prob.etad / np.where(m, Gd[lab], 1.0), 0.0)
    e = prob.e0.copy()
    ca = prob.charge_after()
    block_end = np.full(Tx, np.nan)
    for a, b in commitment_blocks(prob):
        block_end[a:b] = prob.end[b - 1]
    for t in range(Tx):
        lo, hi = power_band(prob, t, e, charge_after=ca)
        if t < T:
            up = np.where(m, unit_power[lab, t], 0.0)
            p = np.where(up >= 0, up * wc, up * wd)
            p = np.clip(p, lo, hi)
            if top_up and prob.committed[t]:
                excess = p.sum() - prob.target[t]
                if excess > 1e-9:
                    p = p - event_reduce(prob, t, e, p, lo, hi, block_end[t], excess)
        else:
            p = _desired(prob, t, e, prob.need, lo, hi)
        p = enforce_site_limits(prob, p, lo, hi)
        P[:, t] = p
        e = np.clip(step_energy(e, p, prob.dur[t], prob.etac, prob.etad), np.minimum(prob.lb, e), prob.cap)
    return P
