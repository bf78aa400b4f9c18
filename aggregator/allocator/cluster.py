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

from .heuristics import commitment_blocks, enforce_site_limits, event_lower
from .horizon import Problem, power_band, step_energy
from .lp import Units
from .split import band_split

__all__ = ["exact_groups", "bin_groups", "aggregate", "split_plan", "split_equal"]


def exact_groups(prob: Problem) -> tuple[np.ndarray, int]:
    """(labels, K): EVs with identical planning parameters share a label."""
    if prob.n == 0:
        return np.zeros(0, dtype=np.int64), 0
    cols = np.column_stack([prob.e0, prob.cap, prob.lb, prob.need, prob.dep, prob.pc, prob.pd,
                            prob.etac, prob.etad, prob.site.astype(np.float64)])
    _, labels = np.unique(cols, axis=0, return_inverse=True)
    labels = labels.reshape(-1).astype(np.int64)
    return labels, int(labels.max()) + 1


def _bin_keys(prob: Problem, scale: float) -> np.ndarray:
    pc = np.maximum(prob.pc, 1e-9)
    step = float(np.median(prob.dur[: max(prob.T, 1)])) if prob.Tx else 1.0
    H = prob.end[prob.T - 1] if prob.T else 0.0
    # departure: fine inside the caller's horizon, coarser after it
    dep_in = np.floor(prob.dep / (step * scale))
    dep_out = 10_000 + np.floor((prob.dep - H) / (4 * step * scale))
    dep_bin = np.where(prob.dep <= H, dep_in, dep_out)
    hours = prob.etac * pc
    head = (prob.e0 - prob.need) / hours                          # signed hours of charging
    room = (prob.cap - np.maximum(prob.e0, prob.need)) / hours    # pre-charge room, hours
    spare = (prob.e0 - prob.lb) / hours                           # energy above the floor, hours
    head_bin = np.floor(head / (0.5 * step * scale))
    room_bin = np.floor(room / (2 * step * scale))
    spare_bin = np.floor(np.minimum(spare, 4 * step * 8) / (4 * step * scale))
    ratio_bin = np.round(prob.pd / pc * 4)
    keys = np.column_stack([dep_bin, head_bin, room_bin, spare_bin, ratio_bin, prob.site])
    return keys.astype(np.int64)


def bin_groups(prob: Problem, max_units: int) -> tuple[np.ndarray, int]:
    """(labels, K) with K <= max_units (widening bins geometrically)."""
    if prob.n == 0:
        return np.zeros(0, dtype=np.int64), 0
    scale = 0.5
    for _ in range(40):
        keys = _bin_keys(prob, scale)
        _, labels = np.unique(keys, axis=0, return_inverse=True)
        labels = labels.reshape(-1).astype(np.int64)
        K = int(labels.max()) + 1
        if K <= max_units:
            return labels, K
        scale *= 1.0 + 0.25 * min(4.0, np.log(K / max_units) + 1.0)
    return labels, K


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
    pcs, pds = s(prob.pc), s(prob.pd)
    etac = np.where(pcs > 0, s(prob.pc * prob.etac) / np.where(pcs > 0, pcs, 1), s(prob.etac) / np.maximum(s(np.ones(prob.n)), 1))
    etad = np.where(pds > 0, s(prob.pd * prob.etad) / np.where(pds > 0, pds, 1), s(prob.etad) / np.maximum(s(np.ones(prob.n)), 1))
    site = np.zeros(K, dtype=np.int64)
    site[labels] = prob.site
    return Units(e0=s(prob.e0), cap=s(prob.cap), lb=s(prob.lb), need=s(prob.need), cmax=cmax, dmax=dmax,
                 etac=etac, etad=etad, site=site)


def split_equal(unit_power: np.ndarray, labels: np.ndarray, K: int) -> np.ndarray:
    """Identical members: equal shares."""
    counts = np.bincount(labels, minlength=K).astype(np.float64)
    return unit_power[labels] / counts[labels, None]


def split_plan(prob: Problem, labels: np.ndarray, K: int, unit_power: np.ndarray) -> np.ndarray:
    """(N, Tx) member powers realising the (K, Tx) unit plan as closely as possible."""
    N, Tx, T = prob.n, prob.Tx, prob.T
    P = np.zeros((N, Tx))
    e = prob.e0.copy()
    ca = prob.charge_after()
    block_end = np.full(Tx, np.nan)
    for a, b in commitment_blocks(prob):
        block_end[a:b] = prob.end[b - 1]
    for t in range(Tx):
        lo, hi = power_band(prob, t, e, charge_after=ca)
        base = np.clip(0.0, lo, hi)
        p = band_split(lo, hi, base, unit_power[:, t], labels, K)
        if t < T and prob.committed[t]:
            tgt = prob.target[t]
            if p.sum() > tgt + 1e-9:
                lower = event_lower(prob, t, e, lo, hi, block_end[t])
                p = band_split(np.minimum(lower, p), hi, p, tgt)
        p = enforce_site_limits(prob, p, lo, hi)
        P[:, t] = p
        e = np.clip(step_energy(e, p, prob.dur[t], prob.etac, prob.etad), np.minimum(prob.lb, e), prob.cap)
    return P
