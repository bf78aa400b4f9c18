"""Per-EV re-plan of a commitment block that few EVs can serve.

A split plan can lose a commitment at the end of a block when the few EVs
still plugged in near its end spent their energy earlier in the block (the
fleet-level rules cannot see who is needed later).  When a block falls
short and few EVs are plugged in during it (EVs x merged LP periods <=
`max_size`: 10,000, i.e. ~430 EVs on a day-long horizon), the block is
re-solved as a per-EV LP (lp.py) over those EVs and the whole extended
horizon (their pre-charge included), every other EV's plan kept:

- every block EV must still reach its need (as in the full LP);
- site limits and later commitments apply to the block EVs' total plus the
  fixed power of the other EVs.

When more EVs are plugged in than that, only those at sites with export
headroom in a short interval are re-planned (the other sites sit at their
export limits there: they cannot give more in that interval, whoever of their
EVs exports), if they are few enough -- typically the EVs behind no site
limit, whose energy the fleet-level rules spend early on what the limited
sites could not give.  The LP's hair of slack on the energy bounds is trimmed
before the feasibility check.

A poor block (short well beyond what no plan avoids) too large even for the
larger poor-block size is typically short at its end only: the few EVs still
plugged in there spent their energy earlier in the block while the many EVs
leaving during it had energy to spare.  Those end EVs are re-planned together
with the block EVs that can give the most in the block's other intervals,
which take over the end EVs' earlier export.

The re-planned block replaces the old one only when the plan's score
(departure shortfall, commitment shortfall, cost) improves.  Typical use: an
event late in a day-long horizon after most EVs have left (95 EVs: 50 ms,
390 EVs: 0.16 s on the benchmark machine).
"""

from __future__ import annotations

import numpy as np

from .bound import _window_export
from .heuristics import commitment_blocks
from .horizon import Problem, energy_at, step_energy
from .lp import Units, solve_units
from .timegrid import coarsen, expand, period_edges

__all__ = ["repair_blocks", "within_limits"]


def _sub_problem(prob: Problem, idx: np.ndarray, a: int, P: np.ndarray) -> Problem:
    """Intervals [a, Tx) for EVs idx; site limits and commitments net of the
    other EVs' fixed power."""
    b = prob.Tx
    others = np.ones(prob.n, dtype=bool)
    others[idx] = False
    fixed = prob.by_site(np.where(others[:, None], P[:, a:b], 0.0))
    # a site already beyond a limit through its fixed EVs: the block EVs may not add to it
    imp = np.maximum(prob.site_imp[:, a:b] - fixed, 0.0)
    exp = np.maximum(prob.site_exp[:, a:b] + fixed, 0.0)
    T = max(prob.T - a, 0)
    tgt = prob.target[a:prob.T] - P[others, a:prob.T].sum(axis=0)
    return Problem(
        n=idx.size, T=T, Tx=b - a, dur=prob.dur[a:b], start=prob.start[a:b], end=prob.end[a:b],
        target=tgt, committed=prob.committed[a:prob.T], price=prob.price[:, a:b], has_price=prob.has_price,
        frac=prob.frac[idx, a:b], e0=prob.e0[idx], cap=prob.cap[idx], lb=prob.lb[idx], need=prob.need[idx],
        dep=prob.dep[idx], pc=prob.pc[idx], pd=prob.pd[idx], etac=prob.etac[idx], etad=prob.etad[idx],
        site=prob.site[idx], n_sites=prob.n_sites, site_imp=imp, site_exp=exp, over_kw=prob.over_kw,
        w_short=prob.w_short, w_dep=prob.w_dep, wear=prob.wear,
    )


def within_limits(prob: Problem, Q: np.ndarray, idx: np.ndarray, tol: float = 1e-6) -> bool:
    """Every site within its limits and the re-planned EVs within floor and
    capacity in every interval (a merged-period plan spread back onto the
    intervals could miss either)."""
    tot = prob.by_site(Q)
    scale = tol * (1.0 + np.abs(tot))
    if np.any(tot > prob.site_imp + scale) or np.any(-tot > prob.site_exp + scale):
        return False
    e = prob.e0[idx].copy()
    lo = np.minimum(prob.lb[idx], e) - 1e-6
    hi = prob.cap[idx] + 1e-6
    for t in range(prob.Tx):
        e = step_energy(e, Q[idx, t], prob.dur[t], prob.etac[idx], prob.etad[idx])
        if np.any(e < lo) or np.any(e > hi):
            return False
    return True


def block_shortfall_bound_kwh(prob: Problem, a: int, b: int) -> float:
    """Commitment shortfall (kWh) over block [a, b) that no plan meeting the
    departure needs avoids: the block as one window of
    `bound.shortfall_lower_bound_kwh` (every EV exports at most its discharge
    limit x plugged hours, and at most what it can hold at the block start --
    full charging from t = 0 -- above what it must hold at the block end;
    every site at most its export limit over the block, and its EVs pre-charge
    at most what its import limit lets in).  O(N)."""
    d = prob.dur[a:b]
    a_h, b_h = prob.start[a], prob.end[b - 1]
    e_req = np.maximum(prob.lb, prob.need - prob.etac * prob.pc * np.maximum(0.0, prob.dep - b_h))
    h = np.clip(np.minimum(prob.dep, b_h) - a_h, 0.0, None)[:, None]
    e_max = np.minimum(prob.cap, prob.e0 + prob.etac * prob.pc * np.minimum(prob.dep, a_h))
    x = _window_export((e_max - e_req)[:, None], h, prob.pc, prob.pd, prob.etac, prob.etad)[:, 0]
    S = prob.n_sites
    xs = np.bincount(prob.site, weights=x, minlength=S)
    imp = prob.site_imp[:, :a]
    if a and np.isfinite(imp).any():
        x0 = _window_export((prob.e0 - e_req)[:, None], h, prob.pc, prob.pd, prob.etac, prob.etad)[:, 0]
        pre = np.where(np.isfinite(imp).all(axis=1), (np.where(np.isfinite(imp), imp, 0.0) * prob.dur[None, :a]).sum(axis=1),
                       np.inf)
        xs = np.minimum(xs, np.bincount(prob.site, weights=x0, minlength=S) + pre)
    exp = prob.site_exp[:, a:b]
    cap_w = np.where(np.isfinite(exp).all(axis=1), (np.where(np.isfinite(exp), exp, 0.0) * d[None, :]).sum(axis=1), np.inf)
    xsum = float(np.minimum(xs, cap_w).sum())
    return max(0.0, -xsum - float(np.sum(prob.target[a:b] * d)))


def _within_energy(sub: Problem, Q: np.ndarray) -> np.ndarray:
    """Q with the solver's hair of slack on the energy bounds removed: an
    export that would take an EV below its floor, or charging above its
    capacity, trimmed to the bound (micro-kWh)."""
    Q = Q.copy()
    e = sub.e0.copy()
    lb = np.minimum(sub.lb, e)
    for t in range(Q.shape[1]):
        d = sub.dur[t]
        Q[:, t] = np.minimum(np.maximum(Q[:, t], -np.maximum(e - lb, 0.0) * sub.etad / d),
                             np.maximum(sub.cap - e, 0.0) / (sub.etac * d))
        e = step_energy(e, Q[:, t], d, sub.etac, sub.etad)
    return Q


def _poor_block_evs(prob: Problem, P: np.ndarray, a: int, b: int, short: np.ndarray, idx: np.ndarray,
                    lim: int, poor_lim: int) -> np.ndarray:
    """Some of the block EVs idx: first those plugged in during a short
    interval (typically the few still there at the block end, energy limited
    because the plan spent their energy earlier in the block), then those
    that can give the most export in the block's other intervals (kWh: the
    lesser of their discharge headroom there and the energy they hold at the
    block end above what they must hold), who take over that earlier export;
    `lim` EVs in all, or up to `poor_lim` when those plugged in during the
    short intervals alone reach `lim` (none when they reach `poor_lim`).
    A few hundred donors suffice where the block's own EVs hold far more
    than the missing energy, and the LP's time grows faster than its size
    (sites-precharge 100,000 x 96: 555 EVs 0.46 s, 1,666 EVs 2.0 s)."""
    is_short = short > 1e-6 * max(1.0, float(np.abs(prob.target[a:b]).max()))
    tail = prob.frac[idx][:, a:b][:, is_short].max(axis=1) > 0
    n_tail = int(tail.sum())
    if n_tail >= poor_lim:
        return idx[:0]
    if n_tail >= lim:
        lim = poor_lim
    d = prob.dur[a:b]
    room = ((P[idx, a:b] + prob.dmax[idx, a:b]) * d)[:, ~is_short].sum(axis=1)
    e_end = energy_at(prob, P, b, idx)
    e_req = np.maximum(prob.lb[idx], prob.need[idx] - prob.charge_after()[idx, b - 1])
    give = np.minimum(room, np.maximum(e_end - e_req, 0.0) * prob.etad[idx])
    give[tail] = np.inf
    order = np.argsort(-give, kind="stable")[:lim]
    order = order[give[order] > 0]
    return np.sort(idx[order])


def repair_blocks(prob: Problem, P: np.ndarray, score, max_size: int = 10_000,
                  time_limit_s: float = 0.5, merge_hours: float = 2.0,
                  site_max_size: int = 2_000, poor_max_size: int = 0,
                  poor_gap: float = 0.02) -> tuple[np.ndarray, int]:
    """(plan, blocks re-planned): every short commitment block whose EVs times
    the LP periods (merged grid) number at most `max_size` re-planned per EV;
    in a block with more EVs, those at sites with export headroom in its short
    intervals, if they times the periods number at most `site_max_size` (the
    case is common on large fleets, where the rules alone are already close
    and a larger LP would cost more than the plan's time target allows) (see
    the module docstring).  A block whose shortfall exceeds what no plan can
    avoid (`block_shortfall_bound_kwh`) by more than `poor_gap` of its
    committed energy -- a poor plan, not an over-commitment -- and served by
    at most a quarter of the fleet may use up to `poor_max_size` EV-periods
    (the one-window bound is loose on long blocks: a block of the whole fleet
    would otherwise pay a full per-EV LP for nothing, e.g. 2 s at 1,000 EVs);
    when it has more EVs than that, its EVs plugged in during its short
    intervals and the donors of `_poor_block_evs` are re-planned instead."""
    blocks = commitment_blocks(prob)
    if not blocks:
        return P, 0
    edges = period_edges(prob, merge_hours)
    max_evs = max_size // max(edges.size - 1, 1)
    done = 0
    best = score(prob, P)
    for a, b in blocks:
        fleet = P[:, a:b].sum(axis=0)
        short = np.maximum(0.0, fleet - prob.target[a:b])
        if not np.any(short > 1e-6 * max(1.0, float(np.abs(prob.target[a:b]).max()))):
            continue
        idx = np.flatnonzero(prob.frac[:, a:b].max(axis=1) > 0)
        lim = max_evs
        poor = False
        if poor_max_size > max_size and max_evs < idx.size <= prob.n // 4:
            d = prob.dur[a:b]
            asked = float(np.sum(np.abs(prob.target[a:b]) * d))
            if float(np.sum(short * d)) - block_shortfall_bound_kwh(prob, a, b) > poor_gap * asked:
                lim = poor_max_size // max(edges.size - 1, 1)
                poor = True
        if idx.size > lim and poor:
            # a poor block too large to re-plan whole: the EVs plugged in
            # during its short intervals and the block EVs with the most to give
            idx = _poor_block_evs(prob, P, a, b, short, idx, max_evs, lim)
        elif idx.size > lim:
            # too many: only the EVs at sites with export headroom in a short
            # interval (the others' sites are at their limits there and could
            # only help by shifting energy between EVs of the same site)
            tot = prob.by_site(P[:, a:b])
            is_short = short > 1e-6 * max(1.0, float(np.abs(prob.target[a:b]).max()))
            room = tot[:, is_short] > -prob.site_exp[:, a:b][:, is_short] + 1e-6 * (1.0 + np.abs(tot[:, is_short]))
            # the sites with headroom, fewest EVs first, as many as fit
            cnt = np.bincount(prob.site[idx], minlength=prob.n_sites)
            cand = np.flatnonzero(room.any(axis=1) & (cnt > 0))
            cand = cand[np.argsort(cnt[cand], kind="stable")]
            fit = np.cumsum(cnt[cand]) * max(edges.size - 1, 1) <= site_max_size
            if not fit.any():
                continue
            take = np.zeros(prob.n_sites, dtype=bool)
            take[cand[fit]] = True
            idx = idx[take[prob.site[idx]]]
        if idx.size == 0 or idx.size > lim:
            continue
        # from t = 0: the pre-charge before the block is part of what is re-planned
        e0 = prob.e0[idx]
        sub = _sub_problem(prob, idx, 0, P)
        units = Units(e0=e0, cap=sub.cap, lb=np.minimum(sub.lb, e0), need=sub.need,
                      cmax=sub.cmax, dmax=sub.dmax, etac=sub.etac, etad=sub.etad, site=sub.site,
                      e_lo=np.broadcast_to(np.minimum(sub.lb, e0)[:, None], (idx.size, sub.Tx)),
                      e_hi=np.broadcast_to(np.maximum(sub.cap, np.minimum(sub.lb, e0))[:, None], (idx.size, sub.Tx)))
        # merged periods where the original limits and prices allow (the net
        # limits vary with the other EVs' power: the tightest one in a period)
        lp_sub = sub if edges.size - 1 == sub.Tx else coarsen(sub, edges)
        if lp_sub is not sub:
            lp_sub.site_imp = np.minimum.reduceat(sub.site_imp, edges[:-1], axis=1)
            lp_sub.site_exp = np.minimum.reduceat(sub.site_exp, edges[:-1], axis=1)
        if lp_sub is not sub:
            units = Units(e0=e0, cap=sub.cap, lb=units.lb, need=sub.need, cmax=lp_sub.cmax, dmax=lp_sub.dmax,
                          etac=sub.etac, etad=sub.etad, site=sub.site,
                          e_lo=units.e_lo[:, : lp_sub.Tx], e_hi=units.e_hi[:, : lp_sub.Tx])
        res = solve_units(units, lp_sub, "glop", time_limit_s)
        if not res.ok:
            continue
        power = res.power if lp_sub is sub else expand(sub, edges, np.arange(idx.size), idx.size, res.charge,
                                                       res.discharge)
        Q = P.copy(order="K")   # keeps the plan's column-major layout
        Q[idx, :] = _within_energy(sub, np.clip(power, -sub.dmax, sub.cmax))
        if not within_limits(prob, Q, idx):
            continue
        sc = score(prob, Q)
        if sc < best:
            P, best = Q, sc
            done += 1
    return P, done
