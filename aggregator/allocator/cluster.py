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

from .fleet import group_totals
from .heuristics import LAX, commitment_blocks, enforce_site_limits, event_reduce
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


#: budget weight of EVs at sites without an export limit (see `bin_groups`)
UNCAPPED_WEIGHT = 8.0


def bin_groups(prob: Problem, max_units: int, uncapped_weight: float | None = None) -> tuple[np.ndarray, int]:
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
    emin, emax = prob.own_envelope_at(max(prob.T - 1, 0))
    rate = np.where(prob.pd > 0, prob.pd, np.maximum(prob.pc, 1e-9))
    spare = (prob.e0 - emin) * prob.etad / rate
    room = (emax - prob.e0) / np.maximum(prob.etac * prob.pc, 1e-9)
    ratio = np.round(4 * prob.pd / np.maximum(prob.pc, 1e-9))
    sub_lab, n_sub = _relabel(cls, prob.site, ratio)
    # EVs behind no export limit get a larger share: when other sites sit at
    # their limits these EVs carry the fleet's margin, and the split follows
    # their units one by one (a site with a limit is followed as a whole)
    w = 1.0 if uncapped_weight is None else uncapped_weight
    if uncapped_weight is None and prob.T and np.isfinite(prob.site_exp[:, : prob.T]).any():
        w = UNCAPPED_WEIGHT
    capped = np.isfinite(prob.site_exp[:, : prob.T]).any(axis=1) if prob.T else np.zeros(prob.n_sites, dtype=bool)
    ev_w = np.where(capped[prob.site], 1.0, w)
    size = np.bincount(sub_lab, minlength=n_sub)
    wsize = np.bincount(sub_lab, weights=ev_w, minlength=n_sub)
    budget = np.minimum(size, np.maximum(1, np.floor(max_units * wsize / ev_w.sum()))).astype(np.int64)
    k1 = np.maximum(1, np.ceil(budget / 2)).astype(np.int64)
    b1 = _rank_bins(sub_lab, spare, k1)
    lab1, n1 = _relabel(sub_lab, b1)
    k2_of_sub = np.maximum(1, budget // k1)
    k2 = np.zeros(n1, dtype=np.int64)
    k2[lab1] = k2_of_sub[sub_lab]
    b2 = _rank_bins(lab1, room, k2)
    return _relabel(lab1, b2)


def aggregate(prob: Problem, labels: np.ndarray, K: int) -> Units:
    """Sum members into K LP units."""
    def s(x):
        return np.bincount(labels, weights=x, minlength=K)

    def per_interval(x):  # (N, Tx) -> (K, Tx)
        return group_totals(labels, x, K)
    cmax = per_interval(prob.cmax)
    dmax = per_interval(prob.dmax)
    # efficiencies weighted by the power actually plugged in, per interval
    wc = per_interval(prob.cmax * prob.etac[:, None])
    wd = per_interval(prob.dmax * prob.etad[:, None])
    mean_c = (s(prob.etac) / np.maximum(s(np.ones(prob.n)), 1))[:, None]
    mean_d = (s(prob.etad) / np.maximum(s(np.ones(prob.n)), 1))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        etac = np.where(cmax > 0, wc / np.where(cmax > 0, cmax, 1.0), mean_c)
        etad = np.where(dmax > 0, wd / np.where(dmax > 0, dmax, 1.0), mean_d)
    site = np.zeros(K, dtype=np.int64)
    site[labels] = prob.site
    emin, emax = prob.envelope()
    return Units(e0=s(prob.e0), cap=s(prob.cap), lb=s(prob.lb), need=s(prob.need), cmax=cmax, dmax=dmax,
                 etac=etac, etad=etad, site=site, e_lo=per_interval(emin), e_hi=per_interval(emax))


def split_equal(unit_power: np.ndarray, labels: np.ndarray, K: int) -> np.ndarray:
    """Identical members: equal shares."""
    counts = np.bincount(labels, minlength=K).astype(np.float64)
    return unit_power[labels] / counts[labels, None]


def split_plan(prob: Problem, labels: np.ndarray, K: int, unit_power: np.ndarray,
               follow_units_in_commitments: bool = False, follow_sites: bool = True,
               keep_block_req: bool = True, site_groups_binding_only: bool = True) -> np.ndarray:
    """(N, Tx) member powers realising the (K, Tx) unit plan as closely as possible.

    Outside commitments members follow their unit's plan.  Inside commitments
    either the same (``follow_units_in_commitments``) followed by a fleet-level
    repair, or -- the default -- only forced charging plus the event-aware
    time-equalising rule, starting from the state the unit plan prepared
    (pre-charge).  With ``follow_sites`` (default) the rule inside a
    commitment first aims at the unit plan's totals -- of every site with an
    export limit as a whole, and of every unit at a site without one (units
    never cross sites, so these totals keep the site limits and carry the
    LP's timing across sites: which site exports at its limit early so that
    the EVs behind no limit keep energy for a derated hour) -- using the
    event-aware rule inside each group, then covers what is still missing
    fleet-wide."""
    N, Tx, T = prob.n, prob.Tx, prob.T
    P = np.zeros((N, Tx), order="F")   # filled column by column
    e = prob.e0.copy()
    ca = prob.charge_after()
    block_end = np.full(Tx, np.nan)
    for a, b in commitment_blocks(prob):
        block_end[a:b] = prob.end[b - 1]
    emin, _ = prob.envelope()
    T_end = max(T - 1, 0)
    unit_site = np.zeros(K, dtype=np.int64)
    unit_site[labels] = prob.site
    # groups followed inside commitments: a site with an export limit as a
    # whole (its limit binds: who exports matters less than the total), every
    # unit on its own at a site without one
    capped = np.isfinite(prob.site_exp[:, :T]).any(axis=1) if T else np.zeros(prob.n_sites, dtype=bool)
    grp_of_unit = np.where(capped[unit_site], unit_site, prob.n_sites + np.arange(K))
    _, grp_of_unit = np.unique(grp_of_unit, return_inverse=True)
    grp_of_unit = grp_of_unit.reshape(-1)
    n_grp = int(grp_of_unit.max(initial=-1)) + 1

    def want_chg(t, e, lo, hi):  # charging toward the need, as early as allowed
        return np.clip(np.maximum(0.0, prob.need - e) / (prob.etac * prob.dur[t]), lo, hi)

    blocks = commitment_blocks(prob)
    next_block = np.full(Tx, -1, dtype=np.int64)
    in_block = np.full(Tx, -1, dtype=np.int64)
    for k, (a, b) in enumerate(blocks):
        prev = blocks[k - 1][1] if k else 0
        next_block[prev:a] = k
        in_block[a:b] = k
    # what every EV must hold at each block's end (floor, or what full-power
    # charging after the block cannot make up)
    blk_req = [np.maximum(prob.lb, prob.need - prob.etac * prob.pc * np.maximum(0.0, prob.dep - prob.end[b - 1]))
               for a, b in blocks]
    for t in range(Tx):
        lo, hi = power_band(prob, t, e, charge_after=ca)
        if t < T and not prob.committed[t] and next_block[t] >= 0:
            # before a commitment: no EV is left to charge inside the block
            # what it must hold at the block end -- charged as late as it can
            # be before the block starts, at the latest (a unit plan that
            # meets its summed needs may leave some members short: they would
            # be forced to charge in the block)
            a = blocks[next_block[t]][0]
            h_after = np.clip(np.minimum(prob.dep, prob.start[a]) - prob.end[t], 0.0, None)
            gap = blk_req[next_block[t]] - e - prob.etac * prob.pc * h_after
            lo = np.minimum(hi, np.maximum(lo, gap / (prob.etac * prob.dur[t])))
        # charge what the horizon will force anyway as early as the unit allows
        ref_t = min(T_end, Tx - 1) if t < T else t
        asap = np.maximum(0.0, emin[:, max(ref_t, t)] - e) / (prob.etac * prob.dur[t])
        base = np.clip(asap, lo, hi)
        want = unit_power[:, t]
        if keep_block_req and t < T and in_block[t] >= 0:
            # inside a commitment no EV exports below what it must hold at the
            # block end: it would have to charge it back inside the block
            # (against the commitment) -- the departure-safety band alone
            # allows that for EVs leaving at or just after the block end
            req = blk_req[in_block[t]]
            floor_p = -(e - req) * prob.etad / prob.dur[t]
            # an EV already below it does not export at all: every kWh it gave
            # would be charged back inside the block, plus the round-trip loss
            lo = np.where(e >= req, np.minimum(hi, np.maximum(lo, floor_p)),
                          np.minimum(hi, np.maximum(lo, 0.0)))
        if t < T and prob.committed[t] and not follow_units_in_commitments:
            # inside a commitment: forced charging only, then the event-aware
            # time-equalising rule from the state the unit plan prepared
            p = np.clip(0.0, lo, hi)
            if follow_sites and capped.any():
                g_u, n_g = grp_of_unit, n_grp
                if site_groups_binding_only:
                    # a capped site is followed as a whole only where the unit
                    # plan has it at its export limit; elsewhere unit by unit
                    st = np.bincount(unit_site, weights=unit_power[:, t], minlength=prob.n_sites)
                    tol = 1e-6 * (1.0 + np.abs(st))
                    binding = capped & (st <= -prob.site_exp[:, t] + tol)
                    g_u = np.where(binding[unit_site], unit_site, prob.n_sites + np.arange(K))
                    _, g_u = np.unique(g_u, return_inverse=True)
                    g_u = g_u.reshape(-1)
                    n_g = int(g_u.max(initial=-1)) + 1
                goal = np.bincount(g_u, weights=unit_power[:, t], minlength=n_g)
                p = _follow_group_totals(prob, t, e, p, lo, hi, block_end[t], goal, g_u[labels], want_chg(t, e, lo, hi))
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


def _follow_group_totals(prob: Problem, t: int, e: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                         block_end_h: float, goal: np.ndarray, group: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Move every group's total in interval t toward `goal[g]`: down by the
    event-aware export rule inside the group, up by charging toward the need
    (then toward full charge)."""
    G = goal.size
    tot = np.bincount(group, weights=p, minlength=G)
    down = np.maximum(0.0, tot - goal)
    if np.any(down > 1e-9):
        x = _group_export_reduce(prob, t, e, p, lo, block_end_h, down, group)
        p = p - x
        tot = np.bincount(group, weights=p, minlength=G)
    up = goal - tot
    if np.any(up > 1e-9):
        want_s = np.where(up > 1e-9, goal, np.nan)
        p = band_split(lo, np.maximum(p, want), p, want_s, group, G)
        tot = np.bincount(group, weights=p, minlength=G)
        if np.any(goal - tot > 1e-9):
            want_s = np.where(goal - tot > 1e-9, goal, np.nan)
            p = band_split(lo, hi, p, want_s, group, G)
    return p


def _group_export_reduce(prob: Problem, t: int, e: np.ndarray, p: np.ndarray, lo: np.ndarray,
                         block_end_h: float, amounts: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per-group reductions (kW) summing to `amounts[g]` where possible: the
    event-aware time-equalising rule of `heuristics._export_reduce`, inside
    every group separately."""
    room = np.maximum(0.0, p - np.minimum(lo, p))
    e_req = np.maximum(prob.lb, prob.need - prob.etac * prob.pc * np.maximum(0.0, prob.dep - block_end_h))
    spare = (e - e_req) * prob.etad + np.maximum(p, 0.0) * prob.dur[t]
    rate = prob.pd * prob.frac[:, t] + np.maximum(p, 0.0)
    h = np.clip(np.minimum(prob.dep, block_end_h) - prob.start[t], 0.0, None)
    spare = spare - LAX * rate * np.maximum(0.0, h - prob.dur[t])
    return time_equalized_reduce(spare, rate, room, prob.dur[t], amounts, group, amounts.size)

