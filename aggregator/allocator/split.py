"""Splitting a total power among EVs inside their per-interval bands (O(N)).

`band_split` moves every EV from its base power toward one end of its band by
the same fraction theta (per group), chosen so the group total matches the
request.  Keeping every member at the same relative position of its own band
is what makes a cluster plan realisable by its members, and it shares export
in proportion to what each EV can spare (its band already includes the
reserve floor and departure safety).
"""

from __future__ import annotations

import numpy as np

__all__ = ["band_split", "group_sum"]


def group_sum(values: np.ndarray, groups: np.ndarray | None, n_groups: int) -> np.ndarray:
    if groups is None:
        return np.array([values.sum()])
    return np.bincount(groups, weights=values, minlength=n_groups)


def band_split(lo: np.ndarray, hi: np.ndarray, base: np.ndarray, total: np.ndarray | float,
               groups: np.ndarray | None = None, n_groups: int = 1) -> np.ndarray:
    """Powers p with lo <= p <= hi whose (group) sums approach `total`.

    base must lie in [lo, hi].  Where the requested total is above the base sum
    each p moves toward hi by theta*(hi - base); below it toward lo.  theta is
    clipped to [0, 1], so an unreachable total gives the closest reachable one.
    `total` is a scalar or one value per group; NaN leaves the group at base.
    """
    total = np.broadcast_to(np.asarray(total, dtype=np.float64), (n_groups if groups is not None else 1,))
    gidx = groups if groups is not None else np.zeros(base.size, dtype=np.int64)
    ng = total.size
    bsum = np.bincount(gidx, weights=base, minlength=ng)
    up_room = hi - base
    dn_room = base - lo
    up = np.bincount(gidx, weights=up_room, minlength=ng)
    dn = np.bincount(gidx, weights=dn_room, minlength=ng)
    delta = np.where(np.isnan(total), 0.0, total - bsum)
    with np.errstate(divide="ignore", invalid="ignore"):
        th_up = np.where(delta > 0, np.clip(delta / np.where(up > 0, up, 1.0), 0.0, 1.0), 0.0)
        th_dn = np.where(delta < 0, np.clip(-delta / np.where(dn > 0, dn, 1.0), 0.0, 1.0), 0.0)
    th_up = np.where(up > 0, th_up, 0.0)
    th_dn = np.where(dn > 0, th_dn, 0.0)
    return base + th_up[gidx] * up_room - th_dn[gidx] * dn_room


def time_equalized_reduce(spare: np.ndarray, rate: np.ndarray, room: np.ndarray, dur: float,
                          amount: np.ndarray | float, groups: np.ndarray | None = None, n_groups: int = 1,
                          iters: int = 30) -> np.ndarray:
    """Reductions x (kW), 0 <= x <= room, summing to `amount` per group, that
    equalise what is left: every EV ends the interval with the same remaining
    time (spare - x dur) / rate, as far as its room allows.

    spare  grid kWh the EV can give over the rest of the event (may be < 0)
    rate   its full discharge rate (kW, > 0 where room > 0)
    This is the classic rule for sustaining a long export: drawing hardest on
    the EVs that could keep going longest keeps the most of the fleet's power
    available for later intervals.  Bisection on the common level per group.
    """
    gidx = groups if groups is not None else np.zeros(spare.size, dtype=np.int64)
    ng = n_groups if groups is not None else 1
    amount = np.broadcast_to(np.asarray(amount, dtype=np.float64), (ng,))
    rate = np.maximum(rate, 1e-9)
    act = room > 0
    tau_hi_i = np.where(act, spare / rate, -np.inf)
    tau_lo_i = np.where(act, (spare - room * dur) / rate, np.inf)
    hi = np.full(ng, -np.inf)
    lo = np.full(ng, np.inf)
    np.maximum.at(hi, gidx, tau_hi_i)
    np.minimum.at(lo, gidx, tau_lo_i)
    ok = np.isfinite(hi) & np.isfinite(lo) & (amount > 0)
    hi = np.where(ok, hi, 0.0)
    lo = np.where(ok, lo, 0.0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        x = np.clip((spare - mid[gidx] * rate) / dur, 0.0, room)
        s = np.bincount(gidx, weights=x, minlength=ng)
        too_much = s > amount
        lo = np.where(too_much, mid, lo)
        hi = np.where(too_much, hi, mid)
    x = np.clip((spare - hi[gidx] * rate) / dur, 0.0, room)
    x = np.where(ok[gidx], x, 0.0)
    # exact totals: scale the last bit within the rooms
    s = np.bincount(gidx, weights=x, minlength=ng)
    rest = np.where(ok, amount - s, 0.0)
    free = np.bincount(gidx, weights=room - x, minlength=ng)
    with np.errstate(divide="ignore", invalid="ignore"):
        th = np.where(free > 0, np.clip(rest / np.where(free > 0, free, 1.0), 0.0, 1.0), 0.0)
    return x + th[gidx] * (room - x)
