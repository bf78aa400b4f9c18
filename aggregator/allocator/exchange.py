"""Export exchange: moving a short interval's missing export to where it can
be given (O(N T) per pair of intervals, no solver).

The fleet-level rules decide interval by interval, so inside an export block
they can spend the energy of the EVs that could still export in a later short
interval (a site at its export limit there, a derated hour) on an interval
where another site, one with export headroom, could have given it instead;
or let a limited site drop below its limit while it holds energy that its
limit then strands at the end of the block.  In both cases the plan is short
in some interval ts while, in another interval te of the block,

- a *shifter* EV could give more in ts (export more, or charge less where
  it charges; its site has export headroom in ts) and take the same battery
  energy back in te (export less where it exports, else charge more), and
- a *donor* EV could give more in te (export more, or charge less; its site
  has headroom in te) energy it never needs: above its floor at every later
  boundary and above its departure need at the end, or charged back after
  the block, in uncommitted intervals, within its site's import limit.

Then the shifter gives q kWh more in ts (its energy after both intervals is
unchanged) and the donors give in te what the shifter takes there: the fleet
total in te is unchanged and the shortfall in ts drops by q.  Shifters and
donors share each move in proportion to what each can take, every site
within its limits.  Before the exchanges (and again while they gain),
exports of EVs at their floor at the block end are moved to EVs of the same
site with energy to spare (untangle.py), which makes donors of them.  The
result is kept by the caller only when the plan's score improves (and every
limit, floor and capacity holds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .heuristics import commitment_blocks
from .horizon import Problem, simulate
from .repair import block_shortfall_bound_kwh
from .untangle import untangle

__all__ = ["exchange_exports"]

_EPS = 1e-9
#: largest EVs x intervals exchanged.  At 10,000 EVs x 16 it brought
#: sites-event / sites-precharge from 0.043 / 0.064 % short to 0.001 / 0.021 %
#: (already within the gap targets there) for +0.14-0.17 s, beyond the 0.5 s
#: time target; at 10,000 x 96 a state refresh alone took ~0.1 s
MAX_SIZE = 100_000
#: same-site round trips undone per kWh a block still misses after the
#: exchange (the exchange then spends the freed energy; some of it sits with
#: exporters that cannot give it where the block is short)
UNTANGLE_FACTOR = 4.0
UNTANGLE_ROUNDS = 4


def _share(cap: np.ndarray, site: np.ndarray, site_cap: np.ndarray, amount: float, n_sites: int) -> np.ndarray:
    """Per-EV kWh, 0 <= x <= cap, at most site_cap per site, summing to
    `amount` (which must not exceed what the caps allow), in proportion to
    cap inside a site and to each site's allowance across sites."""
    full = np.bincount(site, weights=cap, minlength=n_sites)
    by_site = np.minimum(full, site_cap)
    total = float(by_site.sum())
    if total <= _EPS or amount <= 0:
        return np.zeros_like(cap)
    per_site = by_site * min(1.0, amount / total)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(full > _EPS, per_site / np.where(full > _EPS, full, 1.0), 0.0)
    return cap * f[site]


def _recharge_room(prob: Problem, P: np.ndarray, tot: np.ndarray, k0: int, k1: int) -> np.ndarray:
    """(N, k1 - k0) extra charging (kWh) every EV may add in uncommitted
    intervals [k0, k1), all at once within every site's import limit (each
    site's room scaled down to its headroom)."""
    cols = np.arange(k0, k1)
    free = (cols >= prob.T) | ~prob.committed[np.minimum(cols, max(prob.T - 1, 0))] if prob.T else np.ones(cols.size, bool)
    Pw = P[:, k0:k1]
    room = np.where((Pw >= 0) & free[None, :], np.maximum(0.0, prob.pc[:, None] * prob.frac[:, k0:k1] - Pw), 0.0)
    f = _within_head(prob.by_site(room), np.maximum(0.0, prob.site_imp[:, k0:k1] - tot[:, k0:k1]))
    return room * f[prob.site] * prob.dur[None, k0:k1]


def _within_head(by_site: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Per site, the fraction of what its EVs want (`by_site`) that fits its
    headroom `head`: 1 where it all fits."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(by_site > head, head / np.where(by_site > 0, by_site, 1.0), 1.0)


def _fill_early(room_kwh: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """(N, W) kWh per interval, earliest first, summing to `amount` per EV
    (at most each interval's room)."""
    before = np.cumsum(room_kwh, axis=1) - room_kwh
    return np.clip(amount[:, None] - before, 0.0, room_kwh)


@dataclass
class _State:
    """The plan being improved and what every move reads from it, refreshed
    after each move: energies, site totals, the lowest energy from each
    boundary on, and the charging room after the current block."""
    P: np.ndarray
    E: np.ndarray
    tot: np.ndarray
    low_after: np.ndarray      # (N, Tx + 1): min of E over boundaries k.. end
    rech: np.ndarray           # (N, k1 - b) kWh of charging room after the block
    rech_kwh: np.ndarray       # (N,) its sum
    end_slack: np.ndarray      # (N,) kWh above the departure need at the end
    b: int
    k1: int

    @classmethod
    def of(cls, prob: Problem, P: np.ndarray, b: int, k1: int, E: np.ndarray | None = None) -> "_State":
        E = simulate(prob, P) if E is None else E
        tot = prob.by_site(P)
        low_after = np.minimum.accumulate(E[:, ::-1], axis=1)[:, ::-1]
        rech = _recharge_room(prob, P, tot, b, k1) if k1 > b else np.zeros((prob.n, 0))
        return cls(P, E, tot, low_after, rech, rech.sum(axis=1), np.maximum(0.0, E[:, -1] - prob.need), b, k1)


def exchange_exports(prob: Problem, P: np.ndarray, time_limit_s: float = 0.05) -> tuple[np.ndarray, int]:
    """(plan, moves made): the exchanges above over every short interval of
    every block asking for export, largest shortfall first, within
    `time_limit_s`.  A donor's energy may come from charging it makes up
    after the block, in uncommitted intervals before the next block (within
    its site's import limit), where its departure need would otherwise not
    leave it any; what the shifters take back in te needs no donor as far as
    the fleet stays within the commitment there.  A block already at its
    closed-form shortfall bound (over-committed) and a block of import
    ceilings alone are skipped."""
    t0 = time.perf_counter()
    blocks = commitment_blocks(prob)
    if prob.n * prob.Tx > MAX_SIZE or not any(np.any(prob.target[a:b] < 0) for a, b in blocks):
        return P, 0
    P = P.copy(order="K")   # keeps the plan's column-major layout
    floor = np.minimum(prob.lb, prob.e0)
    moves = 0
    for i, (a, b) in enumerate(blocks):
        if not np.any(prob.target[a:b] < 0):
            # import ceilings alone: the moves found there gained <= 0.04 pp
            # (sites-flat 1,000 x 96) for up to 0.1 s at T = 96
            continue
        tgt = prob.target[a:b]
        tol = 1e-6 * max(1.0, float(np.abs(tgt).max()))
        short = P[:, a:b].sum(axis=0) - tgt
        if not np.any(short > tol) or \
                float(np.sum(np.maximum(short, 0.0) * prob.dur[a:b])) <= block_shortfall_bound_kwh(prob, a, b) + tol:
            continue  # met, or over-committed: nothing left to gain (sites-over: 50 ms for nothing)
        k1 = blocks[i + 1][0] if i + 1 < len(blocks) else prob.Tx
        st = _State.of(prob, P, b, k1)
        left = _short_kwh(prob, st, a, b, tol)
        for rnd in range(1 + UNTANGLE_ROUNDS):
            if rnd and (left <= tol or time.perf_counter() - t0 > time_limit_s):
                break
            # exports of EVs at their floor later on first moved to same-site
            # EVs with energy to spare (untangle.py): more donors for the
            # exchange (sites-event 1,000 x 16 seed 18: 0.232 -> 0.123 pp)
            Q, done = (untangle(prob, st.P.copy(order="K"), st.E, _sites_with_headroom(prob, st, a, b, tol), b, st.rech,
                                 UNTANGLE_FACTOR * left) if k1 > b else (st.P, 0.0))
            if rnd and done <= tol:
                break
            st2 = _State.of(prob, Q, b, k1) if done > tol else st
            n2 = _exchange_block(prob, st2, floor, a, b, k1, tol, t0, time_limit_s)
            left2 = _short_kwh(prob, st2, a, b, tol)
            if rnd and (not n2 or left2 >= left - tol):
                break
            st, moves, left = st2, moves + n2, left2
        P = st.P
    return P, moves


def _sites_with_headroom(prob: Problem, st: "_State", a: int, b: int, tol: float) -> np.ndarray:
    """(n_sites,) bool: the site has export headroom in some interval of [a, b)."""
    return (st.tot[:, a:b] + prob.site_exp[:, a:b] > tol).any(axis=1)


def _short_kwh(prob: Problem, st: "_State", a: int, b: int, tol: float) -> float:
    """kWh the block [a, b) still misses under the state's plan."""
    short = st.tot[:, a:b].sum(axis=0) - prob.target[a:b]
    return float(np.sum(np.where(short > tol, short, 0.0) * prob.dur[a:b]))


def _exchange_block(prob: Problem, st: "_State", floor: np.ndarray, a: int, b: int, k1: int, tol: float,
                    t0: float, time_limit_s: float) -> int:
    """The exchanges of one block, largest shortfall first, applied to the
    state in place (st.P and what is derived from it); the moves made."""
    moves = 0
    short = st.tot[:, a:b].sum(axis=0) - prob.target[a:b]
    for ts in a + np.flatnonzero(short > tol)[np.argsort(-short[short > tol], kind="stable")]:
        span = None
        for te in range(a, b):
            gap = float(st.tot[:, ts].sum() - prob.target[ts])
            if gap <= tol or time.perf_counter() - t0 > time_limit_s:
                break
            if te == ts:
                continue
            if span is None:
                span = _spans(st.E, ts)
            cols = np.unique(np.concatenate([[ts, te], np.arange(b, k1)]))
            before = st.P[:, cols].copy()
            if _move(prob, st, span, floor, ts, te, gap, tol):
                new = _State.of(prob, st.P, b, k1, _energy_after(prob, st.E, cols, before, st.P[:, cols]))
                st.E, st.tot, st.low_after, st.rech = new.E, new.tot, new.low_after, new.rech
                st.rech_kwh, st.end_slack = new.rech_kwh, new.end_slack
                span = None
                moves += 1
    return moves


def _energy_after(prob: Problem, E: np.ndarray, cols: np.ndarray, before: np.ndarray,
                  after: np.ndarray) -> np.ndarray:
    """Energies E updated for the intervals `cols` changed from powers
    `before` to `after` (each step recomputed from its new power)."""
    def gain(p):
        return prob.dur[None, cols] * np.where(p >= 0, prob.etac[:, None] * p, p / prob.etad[:, None])
    step = np.zeros((E.shape[0], E.shape[1] - 1))
    step[:, cols] = gain(after) - gain(before)
    out = E.copy()
    out[:, 1:] += np.cumsum(step, axis=1)
    return out


def _spans(E: np.ndarray, ts: int) -> tuple[np.ndarray, np.ndarray]:
    """(highest E over boundaries te+1..ts for every te < ts, in column te;
    lowest E over boundaries ts+1..te+1 for every te >= ts, in column te - ts)."""
    high = np.maximum.accumulate(E[:, ts:0:-1], axis=1)[:, ::-1] if ts else np.zeros((E.shape[0], 0))
    low = np.minimum.accumulate(E[:, ts + 1:], axis=1)
    return high, low


def _move(prob: Problem, st: _State, span: tuple[np.ndarray, np.ndarray], floor: np.ndarray, ts: int, te: int,
          gap: float, tol: float) -> bool:
    """One exchange between intervals ts (short) and te of the current block,
    applied to st.P in place; False when none is possible.

    A shifter gives x kWh more in ts (exporting more, or charging less where
    it charges) and takes back the same battery energy in te (exporting less
    where it exports, else charging more): its energy after both intervals is
    unchanged.  Donors give in te what the shifters take there beyond what
    the commitment of te leaves free (exporting more, or charging less where
    they charge)."""
    P, tot = st.P, st.tot
    S = prob.n_sites
    site = prob.site
    dur_s, dur_e = prob.dur[ts], prob.dur[te]
    head_s = np.maximum(0.0, tot[:, ts] + prob.site_exp[:, ts]) * dur_s
    if head_s.sum() <= _EPS:
        return False
    head_e = np.maximum(0.0, tot[:, te] + prob.site_exp[:, te]) * dur_e
    # donors first (most pairs have none, and then no move): room to give
    # more in te, energy above the floor until the end and, beyond what the
    # EV holds above its need at the end, charged back after the block
    bat_d = np.where(P[:, te] > 0, prob.etac, 1.0 / prob.etad)
    q_d = np.where(P[:, te] > 0, P[:, te], P[:, te] + prob.pd * prob.frac[:, te]) * dur_e
    spare = np.minimum(st.low_after[:, te + 1] - floor, st.end_slack + prob.etac * st.rech_kwh)
    q_d = np.minimum(np.maximum(q_d, 0.0), np.maximum(0.0, spare) / bat_d)
    cap_d = float(np.minimum(np.bincount(site, weights=q_d, minlength=S), head_e).sum())
    # what te can take with the fleet still within its commitment there
    free = max(0.0, float(prob.target[te] - tot[:, te].sum())) * dur_e
    if cap_d + free <= tol * dur_e:
        return False
    # shifters: battery kWh per kWh given in ts, and grid kWh in te per battery kWh
    chg_s, chg_e = P[:, ts] > 0, P[:, te] >= 0
    bat_s = np.where(chg_s, prob.etac, 1.0 / prob.etad)
    ratio = bat_s * np.where(chg_e, 1.0 / prob.etac, prob.etad)   # kWh taken in te per kWh given in ts
    x = np.where(chg_s, P[:, ts], P[:, ts] + prob.pd * prob.frac[:, ts]) * dur_s
    room_e = np.maximum(0.0, np.where(chg_e, prob.pc * prob.frac[:, te] - P[:, te], -P[:, te]) * dur_e)
    # a site's total rises in te by what its shifters take: within its import limit
    imp_head = np.maximum(0.0, prob.site_imp[:, te] - tot[:, te]) * dur_e
    f = _within_head(np.bincount(site, weights=room_e, minlength=S), imp_head)
    x = np.minimum(np.maximum(x, 0.0), room_e * f[site] / ratio)
    if te < ts:   # energy raised between te and ts: capacity
        x = np.minimum(x, np.maximum(0.0, prob.cap - span[0][:, te]) / bat_s)
    else:         # energy lowered between ts and te: floor
        x = np.minimum(x, np.maximum(0.0, span[1][:, te - ts - 1] - floor) / bat_s)
    cap_s = np.minimum(np.bincount(site, weights=x, minlength=S), head_s)
    if cap_s.sum() <= tol * dur_s:
        return False
    xs = _share(x, site, head_s, min(gap * dur_s, float(cap_s.sum())), S)
    cost = xs * ratio
    if cost.sum() > cap_d + free:
        xs *= (cap_d + free) / float(cost.sum())
        cost = xs * ratio
    if xs.sum() <= tol * dur_s:
        return False
    xd = _share(q_d, site, head_e, max(0.0, float(cost.sum()) - free), S)
    # what the donors charge back after the block (grid kWh), earliest first
    back = _fill_early(st.rech, np.maximum(0.0, xd * bat_d - st.end_slack) / prob.etac)
    P[:, te] += (cost - xd) / dur_e
    P[:, ts] -= xs / dur_s
    P[:, st.b:st.k1] += back / prob.dur[None, st.b:st.k1]
    return True
