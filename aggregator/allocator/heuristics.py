"""Rule-based plans: event-aware greedy, proportional split, least-laxity-first.

All three walk the extended horizon interval by interval, vectorised over EVs
(O(N) per interval), and respect every EV's band (charger limits, capacity,
reserve floor, departure safety; see `horizon.power_band`) and the site limits.
Outside commitments every EV charges toward its need as early as it can; no
rule ever exports outside a commitment.

greedy        event-aware: inside a commitment the fleet lowers its power from
              "charge toward the need" to the ceiling, spending only energy
              that full-power charging after the event can replace, drawn from
              the EVs that could keep exporting longest first (remaining time
              is equalised, see `split.time_equalized_reduce`; EVs leaving
              before the event ends get priority through LAX).  Before an
              export event EVs pre-charge toward the level at which they stop
              being energy-limited (`_precharge_goal`); inside an export
              block EVs follow the export schedule planned
              backward from the block end (`blockplan.block_exports`), the
              forward rule covering only what that schedule misses.  Inside a
              block of import ceilings EVs follow the charging and export
              schedule planned backward from the block end
              (`ceilingplan.ceiling_plan`), topped up toward their need where
              the ceiling leaves room; elsewhere, over a ceiling, charging is
              cut least-laxity first and EVs with surplus energy export it to
              let the others charge.  This is the solver's fallback and part
              of the cluster portfolio.
proportional  inside a commitment the ceiling is split in proportion to each
              EV's discharge limit (or charging is scaled down pro rata),
              clipped to the band, no redistribution.  A baseline.
llf           least-laxity-first: charging is cut / export taken from the EVs
              with the most laxity first, each down to the myopic limit of its
              band (no spreading over the event, no pre-charge).  A baseline.
"""

from __future__ import annotations

import numpy as np

from .blockplan import block_exports
from .ceilingplan import ceiling_plan
from .horizon import Problem, power_band, step_energy
from .split import band_split, site_capped_reduce, time_equalized_reduce

#: weight of "leaves before the event ends" in the export order.  0 = pure
#: remaining-time equalisation, 1 = full least-laxity; 0.5 was best on the
#: benchmark fleets (flat targets: 0.01-0.05 pp from the bound at 1k-10k EVs,
#: vs 0.6-2 pp at 0 or 1) -- an empirical constant, re-check on real fleets.
LAX = 0.5
#: how fast surplus energy is exported over an import ceiling, in even shares
#: per remaining plugged hour.  2 was best on the T = 96 benchmark fleets when
#: the forward rule alone handled import ceilings; since those blocks follow
#: `ceilingplan` it only acts in blocks mixing export asks and ceilings and
#: where a planned block still runs over its ceiling (no effect on the benchmark)
SURPLUS_PACE = 2.0
__all__ = ["plan_rule", "enforce_site_limits", "commitment_blocks", "ceiling_blocks", "event_lower"]


def commitment_blocks(prob: Problem) -> list[tuple[int, int]]:
    """Runs [a, b) of consecutive committed caller intervals."""
    blocks = []
    t = 0
    while t < prob.T:
        if prob.committed[t]:
            a = t
            while t < prob.T and prob.committed[t]:
                t += 1
            blocks.append((a, t))
        else:
            t += 1
    return blocks


def event_lower(prob: Problem, t: int, e: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                block_end_h: float) -> np.ndarray:
    """Event-aware lowest power in interval t (inside a commitment ending at block_end_h).

    Spend only what full-power charging after the event can replace, and only an
    even share of it per remaining plugged hour of the event.
    """
    e_req = np.maximum(prob.lb, prob.need - prob.etac * prob.pc * np.maximum(0.0, prob.dep - block_end_h))
    spend = e - e_req  # battery kWh
    h = np.clip(np.minimum(prob.dep, block_end_h) - prob.start[t], 1e-9, None)
    frac = prob.frac[:, t]
    lower_spend = -np.minimum(prob.pd * frac, spend * prob.etad / h)
    lower_need = np.minimum(hi, -spend / (prob.etac * h))
    lower = np.where(spend >= 0, lower_spend, lower_need)
    return np.minimum(np.maximum(lo, lower), hi)


def event_reduce(prob: Problem, t: int, e: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 block_end_h: float, amount: float) -> np.ndarray:
    """How much each EV lowers its power in interval t of a commitment (sums to
    `amount` where possible): only energy replaceable after the event, drawn
    from the EVs that could keep exporting longest first (time-equalising).

    Under an import ceiling (peak shaving) charging is cut instead, least
    laxity first: the cut equalises every charging EV's laxity -- hours to
    departure minus hours of full-power charging its need still takes -- so
    the EVs that can wait longest wait.  EVs with energy above what their
    departure needs first export SURPLUS_PACE times an even share of that
    surplus per hour they stay, which lets the others charge more under the
    same ceiling."""
    if prob.target[t] < 0:
        return _export_reduce(prob, t, e, p, lo, block_end_h, amount)
    floor = np.maximum(np.minimum(lo, p), 0.0)
    stay = np.maximum(prob.dep - prob.start[t], prob.dur[t])
    surplus = np.maximum(0.0, e - np.maximum(prob.lb, prob.need)) * prob.etad
    swap = np.clip(np.minimum(np.minimum(p, floor) - lo, SURPLUS_PACE * surplus / stay), 0.0, None)
    if swap.sum() > amount:
        swap *= amount / swap.sum()
    amount -= float(swap.sum())
    c_room = np.maximum(0.0, p - floor)
    pc = np.maximum(prob.pc, 1e-9)
    lax = np.maximum(0.0, prob.dep - prob.start[t]) - np.maximum(0.0, prob.need - e) / (prob.etac * pc)
    cut = time_equalized_reduce(lax * pc, pc, c_room, prob.dur[t], min(amount, float(c_room.sum())))
    amount -= float(cut.sum())
    x = swap + cut
    if amount > 1e-12:
        x = x + _export_reduce(prob, t, e, p - x, lo, block_end_h, amount)
    return x


def _export_reduce(prob: Problem, t: int, e: np.ndarray, p: np.ndarray, lo: np.ndarray,
                   block_end_h: float, amount: float) -> np.ndarray:
    room = np.maximum(0.0, p - np.minimum(lo, p))
    e_req = np.maximum(prob.lb, prob.need - prob.etac * prob.pc * np.maximum(0.0, prob.dep - block_end_h))
    spare = (e - e_req) * prob.etad + np.maximum(p, 0.0) * prob.dur[t]
    rate = prob.pd * prob.frac[:, t] + np.maximum(p, 0.0)
    # least laxity first: an EV that leaves before the event ends must spend its share sooner
    h = np.clip(np.minimum(prob.dep, block_end_h) - prob.start[t], 0.0, None)
    spare = spare - LAX * rate * np.maximum(0.0, h - prob.dur[t])
    # a site at its export limit cannot go lower: its share goes to the other sites
    cap = np.bincount(prob.site, weights=p, minlength=prob.n_sites) + prob.site_exp[:, t]
    return site_capped_reduce(spare, rate, room, prob.dur[t], amount, prob.site, cap)


PRECHARGE_MARGIN = 1.2


def _precharge_goal(prob: Problem, block: tuple[int, int], e: np.ndarray, t_now: int) -> np.ndarray:
    """Battery level to reach before an export block (0 = no pre-charge).

    An EV can export over the block at most min(power x plugged hours,
    spare energy); pre-charging helps only the energy-limited ones.  Every EV
    gets the same fraction phi of its potential (what it could export if it
    arrived at the block as full as charging until then allows), phi being
    the least that covers the block's ask (with a small margin).
    """
    a, b = block
    start_h, end_h = prob.start[a], prob.end[b - 1]
    asked = PRECHARGE_MARGIN * float(np.sum(np.maximum(0.0, -prob.target[a:b]) * prob.dur[a:b]))  # grid kWh
    if asked <= 0:
        return np.zeros(prob.n)
    h = np.clip(np.minimum(prob.dep, end_h) - start_h, 0.0, None)
    e_req = np.maximum(prob.lb, prob.need - prob.etac * prob.pc * np.maximum(0.0, prob.dep - end_h))
    before = np.clip(np.minimum(prob.dep, start_h) - prob.start[t_now], 0.0, None)
    reach = np.minimum(prob.cap, e + prob.etac * prob.pc * before)
    pot = np.clip(np.minimum(prob.pd * h, (reach - e_req) * prob.etad), 0.0, None)   # grid kWh
    cur = np.clip(np.minimum(prob.pd * h, (e - e_req) * prob.etad), 0.0, None)
    if np.sum(np.maximum(cur, pot)) <= asked:
        phi = 1.0
    else:
        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            if np.sum(np.maximum(cur, mid * pot)) >= asked:
                hi = mid
            else:
                lo = mid
        phi = hi
    return np.where(h > 0, e_req + phi * pot / prob.etad, 0.0)


def enforce_site_limits(prob: Problem, t: int, p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Bring every site within its import/export limit of interval t (first
    within bands, then by idling forced charging, never by discharging below a
    band)."""
    imp_lim = prob.site_imp[:, t]
    exp_lim = -prob.site_exp[:, t]
    if not (np.isfinite(imp_lim).any() or np.isfinite(exp_lim).any()):
        return p
    S = prob.n_sites
    site = prob.site
    tot = np.bincount(site, weights=p, minlength=S)
    if np.any(tot > imp_lim + 1e-9):
        want = np.where(tot > imp_lim, imp_lim, np.nan)
        p = band_split(np.minimum(lo, p), hi, p, want, site, S)
        tot = np.bincount(site, weights=p, minlength=S)
        if np.any(tot > imp_lim + 1e-9):
            want = np.where(tot > imp_lim, imp_lim, np.nan)
            p = band_split(np.minimum(np.minimum(lo, 0.0), p), hi, p, want, site, S)
            tot = np.bincount(site, weights=p, minlength=S)
    if np.any(tot < exp_lim - 1e-9):
        want = np.where(tot < exp_lim, exp_lim, np.nan)
        p = band_split(lo, np.maximum(hi, p), p, want, site, S)
    return p


def _desired(prob: Problem, t: int, e: np.ndarray, goal: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Charge toward `goal` as fast as allowed; never export voluntarily."""
    want = np.maximum(0.0, goal - e) / (prob.etac * prob.dur[t])
    return np.minimum(hi, np.maximum(lo, want))


def ceiling_blocks(prob: Problem) -> list[tuple[int, int]]:
    """Commitment blocks whose ceilings are all >= 0 (peak shaving)."""
    return [(a, b) for a, b in commitment_blocks(prob) if np.all(prob.target[a:b] >= 0)]


def plan_rule(prob: Problem, rule: str = "greedy", plan_ceilings: bool = True) -> np.ndarray:
    """(N, Tx) average powers under `rule` in {"greedy", "proportional", "llf"}.

    Under "greedy" every block asking for export follows the schedule
    `blockplan.block_exports` plans at its start, and (with ``plan_ceilings``)
    every block of import ceilings the one `ceilingplan.ceiling_plan` plans at
    its start; without it those blocks use the forward least-laxity rule.
    """
    if rule not in ("greedy", "proportional", "llf"):
        raise ValueError(f"unknown rule {rule!r}")
    N, Tx, T = prob.n, prob.Tx, prob.T
    P = np.zeros((N, Tx), order="F")   # filled column by column
    e = prob.e0.copy()
    ca = prob.charge_after()
    blocks = commitment_blocks(prob)
    block_end = np.full(Tx, np.nan)
    for a, b in blocks:
        block_end[a:b] = prob.end[b - 1]
    next_block: list = [None] * Tx
    for t in range(min(T, Tx)):
        if not prob.committed[t]:
            next_block[t] = next(((a, b) for a, b in blocks if a > t), None)
    goals_cache: dict = {}
    block_start = {a: (a, b) for a, b in blocks if np.any(prob.target[a:b] < 0)}
    ceiling_start = {a: (a, b) for a, b in ceiling_blocks(prob)} if plan_ceilings else {}
    sched, sched_from = None, 0
    keep_floor, blk_req = False, None
    req, req_exp, req_from = None, None, 0
    for t in range(Tx):
        lo, hi = power_band(prob, t, e, charge_after=ca)
        goal = prob.need
        if rule == "greedy" and next_block[t] is not None:
            blk = next_block[t]
            if blk not in goals_cache:
                goals_cache[blk] = _precharge_goal(prob, blk, e, t)
            goal = np.maximum(goal, goals_cache[blk])
        if rule == "greedy" and t in block_start:
            a, b = block_start[t]
            sched = block_exports(prob, a, b, e, ca)
            sched_from = a
            # over-committed block (the schedule cannot cover every interval's
            # ask): energy drawn below what the block end requires would have
            # to be recharged inside the block, where every kWh counts against
            # the commitment -- so the forward rule keeps the block-end floor
            ask_e = float(np.sum(np.maximum(0.0, -prob.target[a:b]) * prob.dur[a:b]))
            got_e = float(np.sum(sched * prob.dur[None, a:b]))
            keep_floor = got_e < ask_e * (1.0 - 1e-6)
            blk_req = np.maximum(prob.lb, prob.need - prob.etac * prob.pc * np.maximum(0.0, prob.dep - prob.end[b - 1]))
        if rule == "greedy" and t in ceiling_start:
            a, b = ceiling_start[t]
            req, req_exp = ceiling_plan(prob, a, b, e)
            req_from = a
        cut_lo = None
        if sched is not None and keep_floor and t < T and prob.committed[t] and t - sched_from < sched.shape[1]:
            # lowest power that keeps the EV at or above its block-end floor (no export below it)
            cut_lo = np.maximum(lo, np.minimum(hi, np.where(
                e >= blk_req, -np.minimum(prob.pd * prob.frac[:, t], (e - blk_req) * prob.etad / prob.dur[t]), 0.0)))
        if sched is not None and t < T and prob.committed[t] and t - sched_from < sched.shape[1]:
            p = np.where(sched[:, t - sched_from] > 0, -sched[:, t - sched_from], np.clip(0.0, lo, hi))
            p = np.clip(p, lo if cut_lo is None else cut_lo, hi)
            if p.sum() < prob.target[t]:
                p = band_split(lo, np.maximum(p, _desired(prob, t, e, prob.need, lo, hi)), p, prob.target[t])
        elif req is not None and t < T and prob.committed[t] and t - req_from < req.shape[1] - 1:
            # least charging that keeps the backward ceiling plan on track, then
            # whatever the ceiling leaves toward the need
            gap = req[:, t - req_from + 1] - e
            must = gap / (prob.etac * prob.dur[t])
            p = np.clip(np.maximum(must, 0.0) - req_exp[:, t - req_from], lo, hi)
            # over the ceiling: cut only what the plan does not need later
            cut_lo = np.minimum(p, np.maximum(lo, np.where(gap > 0, must, gap * prob.etad / prob.dur[t])))
            if p.sum() < prob.target[t]:
                p = band_split(p, np.maximum(p, _desired(prob, t, e, goal, lo, hi)), p, prob.target[t])
        else:
            p = _desired(prob, t, e, goal, lo, hi)
        if t < T and prob.committed[t] and p.sum() > prob.target[t]:
            tgt = prob.target[t]
            if rule == "greedy":
                p = p - event_reduce(prob, t, e, p, lo if cut_lo is None else cut_lo, hi, block_end[t], p.sum() - tgt)
            elif rule == "proportional":
                if tgt >= 0:
                    p = np.clip(p * (tgt / p.sum()), lo, hi)
                else:
                    w = prob.pd * prob.frac[:, t]
                    ws = w.sum()
                    p = np.clip(tgt * w / ws, lo, hi) if ws > 0 else np.clip(np.zeros(N), lo, hi)
            else:  # llf
                slack = np.where(prob.pc > 0,
                                 (prob.dep - prob.start[t]) - np.maximum(0.0, prob.need - e) / (prob.etac * np.maximum(prob.pc, 1e-12)),
                                 -np.inf)
                order = np.argsort(-slack, kind="stable")
                room = (p - lo)[order]
                before = np.cumsum(room) - room
                cut = np.clip(p.sum() - tgt - before, 0.0, room)
                q = p.copy()
                q[order] -= cut
                p = q
        p = enforce_site_limits(prob, t, p, lo, hi)
        P[:, t] = p
        e = np.clip(step_energy(e, p, prob.dur[t], prob.etac, prob.etad), np.minimum(prob.lb, e), prob.cap)
    return P
