"""Exports moved inside a site to the EVs with energy to spare, so that the
EVs at their floor get energy the export exchange can use.

The export exchange (exchange.py) needs *donors*: EVs at a site with export
headroom that could give more in some interval of a short block, from
energy they never need.  An EV that exports down to its floor by the end of
the block has none, even when another EV of the same site holds energy it
never needs (above its departure need, or charged back after the block) but
cannot give it where the site has headroom (it exports flat out there, or is
not plugged in then).  Moving part of the first EV's export in an earlier
interval to the second (the *giver* charges less or exports more, the
*taker* exports less) leaves the site's total in every interval -- and so
the fleet's power -- unchanged, and turns the giver's spare energy into the
taker's: the taker, now above its floor, can give it in an earlier
interval where its site has headroom.

`untangle` moves up to a given amount this way, latest interval first (the
takers hit their floor at the block end): each giver stays above its floor
and charges back after the block, within its site's import limit, what its
departure need requires; each taker stays within its capacity.  O(N T) per
interval, no solver.
"""

from __future__ import annotations

import numpy as np

from .horizon import Problem

__all__ = ["untangle"]

_EPS = 1e-9


def untangle(prob: Problem, P: np.ndarray, E: np.ndarray, sites: np.ndarray, b: int, rech: np.ndarray,
             amount: float) -> tuple[np.ndarray, float]:
    """(plan, grid kWh moved): at most `amount` grid kWh of exports taken
    off EVs at their floor later on (the *takers*) at the `sites` (bool per
    site) in intervals [0, b), latest first, and given instead by EVs of
    the same site and interval with energy to spare (the *givers*: charging
    less or exporting more), which charge it back in [b, b + rech.shape[1])
    within `rech` (their kWh of charging room there, from
    exchange._recharge_room) where their departure need requires it.  P is
    changed in place; E are its energies (boundaries)."""
    floor = np.minimum(prob.lb, prob.e0)
    room_left = rech.copy()
    nb = rech.shape[1]
    done = 0.0
    site_ok = sites[prob.site]
    E = E.copy()
    for t in range(b - 1, -1, -1):
        if done >= amount - _EPS:
            break
        p = P[:, t]
        dur = prob.dur[t]
        low = np.minimum.accumulate(E[:, ::-1], axis=1)[:, ::-1][:, t + 1] - floor
        high = np.maximum.accumulate(E[:, ::-1], axis=1)[:, ::-1][:, t + 1]
        end_slack = np.maximum(0.0, E[:, -1] - prob.need)
        back = prob.etac * room_left.sum(axis=1) + end_slack
        # givers: battery kWh they may lose from t on
        spare = np.maximum(0.0, np.minimum(low, back))
        giving = site_ok & (spare > _EPS)
        bat_g = np.where(p > 0, prob.etac, 1.0 / prob.etad)       # battery kWh per grid kWh given
        g_room = np.where(p > 0, p, p + prob.pd * prob.frac[:, t]) * dur
        g = np.where(giving, np.minimum(np.maximum(g_room, 0.0), spare / bat_g), 0.0)
        # takers: EVs at their floor after t that export in t, within capacity
        taking = site_ok & (p < -_EPS) & (low <= _EPS * (1.0 + prob.cap))
        d = np.where(taking, np.minimum(-p * dur, np.maximum(0.0, prob.cap - high) * prob.etad), 0.0)
        g_site = np.bincount(prob.site, weights=g, minlength=prob.n_sites)
        d_site = np.bincount(prob.site, weights=d, minlength=prob.n_sites)
        pair = np.minimum(g_site, d_site)
        total = float(pair.sum())
        if total <= _EPS:
            continue
        pair *= min(1.0, (amount - done) / total)
        with np.errstate(divide="ignore", invalid="ignore"):
            fg = np.where(g_site > _EPS, pair / np.where(g_site > _EPS, g_site, 1.0), 0.0)
            fd = np.where(d_site > _EPS, pair / np.where(d_site > _EPS, d_site, 1.0), 0.0)
        xg = g * fg[prob.site]          # grid kWh each giver gives more in t
        xd = d * fd[prob.site]          # grid kWh each taker exports less in t
        lost = xg * bat_g
        # what a giver charges back after the block (grid kWh), earliest first
        need_back = np.maximum(0.0, lost - end_slack) / prob.etac
        before = np.cumsum(room_left, axis=1) - room_left
        fill = np.clip(need_back[:, None] - before, 0.0, room_left)
        room_left -= fill
        P[:, t] += (xd - xg) / dur
        P[:, b:b + nb] += fill / prob.dur[None, b:b + nb]
        E[:, t + 1:] += (xd / prob.etad - lost)[:, None]
        E[:, b + 1:b + 1 + nb] += prob.etac[:, None] * np.cumsum(fill, axis=1)
        E[:, b + 1 + nb:] += (prob.etac * fill.sum(axis=1))[:, None]
        done += float(pair.sum())
    return P, done
