"""Export schedule for one export commitment block, planned backward in time.

At the start of a block [a, b) every EV's spare energy -- what it holds above
what it must keep at the block end (reserve floor, or what full-power charging
after the block cannot make up; grid-side kWh) -- is its budget; EVs below
that level charge only what departure safety forces (as late as possible).
The export each interval needs on top of that forced charging is assigned
from the last interval back to the first: EVs still plugged in a later
interval are plugged in every earlier one, so the later intervals are served
first, from the EVs with the most full-power hours of usable budget left
(time-equalising, `split.time_equalized_reduce`), which keeps the most power
for the earlier intervals; no site is asked for more than its export limit of
that interval allows (`split.site_capped_reduce`: the rest goes to the other
sites).  O(N) numpy per interval.
"""

from __future__ import annotations

import numpy as np

from .horizon import Problem, power_band, step_energy
from .split import site_capped_reduce

__all__ = ["block_exports"]


def block_exports(prob: Problem, a: int, b: int, e: np.ndarray, charge_after: np.ndarray) -> np.ndarray:
    """(N, b - a) planned export (kW, >= 0) of every EV in the block's intervals,
    starting from energies `e` at the block start."""
    dur = prob.dur
    end_h = prob.end[b - 1]
    e_req = np.maximum(prob.lb, prob.need - prob.etac * prob.pc * np.maximum(0.0, prob.dep - end_h))
    short = e < e_req
    budget = np.where(short, 0.0, (e - e_req) * prob.etad)
    forced = np.zeros(b - a)
    S = prob.n_sites
    forced_site = np.zeros((S, b - a))
    ee = e.copy()
    for t in range(a, b):
        lo, hi = power_band(prob, t, ee, charge_after=charge_after)
        p = np.where(short, np.clip(0.0, lo, hi), 0.0)
        forced[t - a] = p.sum()
        forced_site[:, t - a] = np.bincount(prob.site, weights=p, minlength=S)
        ee = step_energy(ee, p, dur[t], prob.etac, prob.etad)
    ask = forced - prob.target[a:b]
    X = np.zeros((prob.n, b - a))
    rate = np.maximum(prob.pd, 1e-9)
    for t in range(b - 1, a - 1, -1):
        if ask[t - a] <= 0:
            continue
        # full-power hours the EV can still use from the block start to the end of t
        usable = np.clip(np.minimum(prob.dep, prob.end[t]) - prob.start[a], 0.0, None) * prob.pd
        room = np.where(short, 0.0, np.minimum(prob.pd * prob.frac[:, t], budget / dur[t]))
        # each site exports at most its limit (plus what its forced charging offsets)
        cap = forced_site[:, t - a] + prob.site_exp[:, t]
        x = site_capped_reduce(np.minimum(budget, usable), rate, room, dur[t], ask[t - a], prob.site, cap)
        X[:, t - a] = x
        budget = budget - x * dur[t]
    return X
