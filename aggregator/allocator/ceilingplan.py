"""Schedule for one import-ceiling block (peak shaving), planned backward.

At the start of a block [a, b) whose ceilings are all >= 0, every EV either
must add energy before the block end (to its reserve floor, or to what
full-power charging after the block cannot make up: its work) or holds more
than that (its surplus, which it may export to make room for the others).
The ceiling of each interval is handed out from the last interval back to the
first (valley filling from the back): an EV plugged in a later interval is
plugged in every earlier one, so late capacity goes to the EVs that stay,
leaving the early, crowded intervals to the EVs that leave.  Inside an
interval the capacity goes to the EVs with the most full-power hours of work
left (time-equalising, `split.time_equalized_reduce`), which keeps the fewest
hours of work for the earlier intervals.

Exports are planned only when the ceilings alone leave work undone: a first
pass measures that work, a second pass lets surplus EVs export up to that
much, in the intervals where the charging room exceeds the ceiling, drawn
from the EVs with the most hours of surplus left.  If work is still undone, a
third pass also plans round trips: EVs charge in capacity the ceiling leaves
spare late in the block (after the crowded period) and export that energy
earlier, where it lets the others charge -- the EVs with the best round-trip
efficiency first, since that spare capacity is what limits them.  Round-trip
exports go only to the crowded period at the block start (before the first
interval the second pass leaves spare): over a crowded interval later on, an
export only moves charging out of the spare interval before it, which the
recharge then fills -- the round trip spent for nothing while the work undone
at the block start keeps its shortfall.  When the third pass itself opens
spare capacity earlier in that period, it is re-run with exports before
that spare only, kept if it leaves less work undone.  Work that still does
not fit is left for the block start, where departure safety forces it.  At
most four passes of O(N log N) numpy per interval.
"""

from __future__ import annotations

import numpy as np

from .horizon import Problem
from .split import time_equalized_reduce

__all__ = ["ceiling_plan"]

_EPS = 1e-9


def ceiling_plan(prob: Problem, a: int, b: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(req, exports) for the block [a, b) starting from energies `e`.

    req      (N, b - a + 1) least battery kWh each EV must hold at the block's
             interval boundaries (column k = start of interval a + k, last
             column = block end) for its planned later charging and exports.
    exports  (N, b - a) planned export (kW, >= 0).
    """
    end_h = prob.end[b - 1]
    e_end = np.maximum(prob.lb, prob.need - prob.etac * prob.pc * np.maximum(0.0, prob.dep - end_h))
    plugged = np.clip(np.minimum(prob.dep, end_h) - prob.start[a], 0.0, None)
    e_end = np.minimum(e_end, e + prob.etac * prob.pc * plugged)  # reachable work only
    req, exports, left, _ = _backward(prob, a, b, e, e_end, 0.0, 0.0, b)
    if left > _EPS:
        req, exports, left2, crowded_to = _backward(prob, a, b, e, e_end, left, 0.0, b)
        if left2 > _EPS:
            # round trips only where the undone work sits: the leading crowded period
            req, exports, left3, to3 = _backward(prob, a, b, e, e_end, left, left2, crowded_to)
            if to3 < crowded_to and left3 > _EPS:  # its own exports opened spare capacity earlier
                retry = _backward(prob, a, b, e, e_end, left, left2, to3)
                if retry[2] < left3:
                    req, exports = retry[0], retry[1]
    return req, exports


def _backward(prob: Problem, a: int, b: int, e: np.ndarray, e_end: np.ndarray, allowance: float,
              shift_allowance: float, round_trip_to: int) -> tuple[np.ndarray, np.ndarray, float, int]:
    """One backward pass; exports up to `allowance` grid kWh, of which up to
    `shift_allowance` comes from energy recharged in later spare capacity --
    with a shift allowance, exports only before interval `round_trip_to`.
    Returns (req, exports, grid kWh of work left undone, the first interval
    with charging room below its ceiling (b if none))."""
    work = np.maximum(0.0, e_end - e) / prob.etac                    # grid kWh still to charge
    budget = np.maximum(0.0, e - e_end) * prob.etad                   # grid kWh that may be exported
    depth = (np.minimum(e, e_end) - prob.lb) * prob.etad              # more export if recharged later
    c_rate = np.maximum(prob.pc, 1e-9)
    d_rate = np.maximum(prob.pd, 1e-9)
    req = np.empty((prob.n, b - a + 1))
    req[:, -1] = e_end
    exports = np.zeros((prob.n, b - a))
    crowded_to = b
    export_to = round_trip_to if shift_allowance > _EPS else b
    for t in range(b - 1, a - 1, -1):
        dur = prob.dur[t]
        cmax = prob.pc * prob.frac[:, t]
        room = np.minimum(cmax, work / dur)
        ceiling = max(float(prob.target[t]), 0.0)
        excess = float(room.sum()) - ceiling
        y = np.zeros(prob.n)
        z = np.zeros(prob.n)
        if excess < 0:
            crowded_to = t
        if allowance > _EPS and excess > 0 and t < export_to:
            # exports only from EVs that charge no more in the block (no round trips)
            d_room = np.where(work > 0, 0.0, np.minimum(prob.pd * prob.frac[:, t], budget / dur))
            y = time_equalized_reduce(budget, d_rate, d_room, dur, min(excess, allowance / dur))
            budget = np.maximum(0.0, budget - y * dur)
            allowance -= float(y.sum()) * dur
            ceiling += float(y.sum())
        elif shift_allowance > _EPS and excess < 0:
            # spare capacity: charge EVs that could export that much earlier
            z_room = np.minimum(cmax - room, np.maximum(depth, 0.0) / (prob.etac * prob.etad * dur))
            gain = prob.etac * prob.etad * dur
            z = _fill_in_order(-prob.etac * prob.etad, z_room, min(-excess, float(np.sum(z_room))))
            made = z * gain
            scale = min(1.0, shift_allowance / max(float(made.sum()), _EPS))
            z *= scale
            made *= scale
            depth = depth - made
            budget = budget + made
            shift_allowance -= float(made.sum())
        x = time_equalized_reduce(work, c_rate, room, dur, min(ceiling, float(room.sum())))
        work = np.maximum(0.0, work - x * dur)
        exports[:, t - a] = y
        req[:, t - a] = req[:, t - a + 1] - prob.etac * (x + z) * dur + y * dur / prob.etad
    return req, exports, float(work.sum()), crowded_to


def _fill_in_order(key: np.ndarray, room: np.ndarray, amount: float) -> np.ndarray:
    """Amounts 0 <= x <= room summing to `amount`, filled in ascending `key` order."""
    order = np.argsort(key, kind="stable")
    r = room[order]
    before = np.cumsum(r) - r
    x = np.empty_like(room)
    x[order] = np.clip(amount - before, 0.0, r)
    return x
