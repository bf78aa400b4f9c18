"""Closed-form bound on what the fleet can deliver, per interval (O(N) each).

For one EV and interval [a, b) the lowest average power any plan can have while
still reaching the departure need (when it is reachable at all) is found by
assuming the EV charged at full power from t = 0 until a (the most energy it
can hold at a), then discharging in [a, b) down to the highest of its reserve
floor and the level from which full-power charging after b still reaches the
need.  Summing over EVs gives the lowest fleet import reachable in each
interval *taken alone* -- no plan can go below it, so it bounds how far from
optimal any plan's shortfall is.
"""

from __future__ import annotations

import numpy as np

from .fleet import FleetArrays, group_totals, validate_fleet

__all__ = ["lowest_import_kw", "deliverable_export_bound_kw", "shortfall_lower_bound_kwh"]


def _per_ev_lowest(e0, cap, lb, need, dep, pc, pd, etac, etad, durations_h) -> np.ndarray:
    dur = np.asarray(durations_h, dtype=np.float64)
    end = np.cumsum(dur)
    start = end - dur
    n, T = e0.size, dur.size
    out = np.empty((n, T), order="F")   # written one interval's column at a time
    for t in range(T):  # loop over intervals; each step is O(N) numpy
        a, b = start[t], end[t]
        plugged_before = np.clip(dep, 0.0, a)
        e_max = np.minimum(cap, e0 + etac * pc * plugged_before)
        frac = np.clip((dep - a) / dur[t], 0.0, 1.0)
        e_req = np.maximum(lb, need - etac * pc * np.maximum(0.0, dep - b))
        gap = e_req - e_max
        out[:, t] = np.where(
            gap > 0,
            np.minimum(pc * frac, gap / (etac * dur[t])),
            -np.minimum(pd * frac, -gap * etad / dur[t]),
        )
    return out


def lowest_import_kw(fleet: FleetArrays, durations_h: np.ndarray, per_ev: bool = False) -> np.ndarray:
    """(T,) lowest fleet import (kW, negative = export) reachable in each interval
    alone; with ``per_ev`` the (N, T) per-EV values.  `fleet` must be valid."""
    lb = np.minimum(fleet.floor_kwh, fleet.energy_kwh)
    per = _per_ev_lowest(fleet.energy_kwh, fleet.capacity_kwh, lb, fleet.need_kwh, fleet.departure_h,
                         fleet.max_charge_kw, fleet.max_discharge_kw, fleet.eta_charge,
                         fleet.eta_discharge, durations_h)
    return per if per_ev else per.sum(axis=0)


def deliverable_export_bound_kw(fleet: FleetArrays, durations_h: np.ndarray,
                                site_export_limit_kw: np.ndarray | None = None) -> np.ndarray:
    """(T,) largest fleet export (kW, positive) per interval if every EV spent all the
    energy it can spare while still reaching its departure need.

    Each interval is taken alone (energy spent in one interval is counted again
    in the next), so this is an upper bound, meant for opt-in decisions and bid
    sizing.  A negative value means even at best the fleet must import that
    much.  Invalid vehicles are ignored.  With ``site_export_limit_kw`` ((S,)
    or (S, T), inf = none, as in `Targets`) no site's export counts above its
    limit; without it site limits are not applied (`Plan.bound_kw` is the
    site-limited figure for a planned fleet).
    """
    dur = np.asarray(durations_h, dtype=np.float64).reshape(-1)
    valid, _ = validate_fleet(fleet)
    if len(valid) == 0:
        return np.zeros(dur.size)
    if site_export_limit_kw is None:
        return -lowest_import_kw(valid, dur)
    exp = _site_rows(site_export_limit_kw, valid, dur.size)
    per = lowest_import_kw(valid, dur, per_ev=True)
    by_site = group_totals(valid.site_index(), per, exp.shape[0])
    return -np.maximum(by_site, -exp).sum(axis=0)


def _window_export(room, h, pc, pd, etac, etad) -> np.ndarray:
    """Most grid kWh an EV can export over a window (negative: least it must import)."""
    return np.where(room >= 0, np.minimum(pd[:, None] * h, room * etad[:, None]),
                    -np.minimum(pc[:, None] * h, -room / etac[:, None]))


def _site_rows(limit: np.ndarray | None, fleet: FleetArrays, T: int, n_sites: int | None = None) -> np.ndarray:
    """(S, T) limits, inf where none is given; S covers every site index in `fleet`."""
    site = fleet.site_index()
    S = int(max(site.max(initial=0) + 1, n_sites or 1))
    out = np.full((S, T), np.inf)
    if limit is not None:
        v = np.asarray(limit, dtype=np.float64)
        if v.ndim == 0:
            v = v.reshape(1)
        k = min(v.shape[0], S)
        out[:k] = v[:k, None] if v.ndim == 1 else v[:k]
    return out


def shortfall_lower_bound_kwh(fleet: FleetArrays, targets) -> float:
    """Commitment shortfall (kWh) that no plan meeting the departure needs can avoid.

    Couples energy across intervals: for every window W of consecutive committed
    intervals each EV can at most export (net, grid side)
        min(discharge limit x plugged hours in W, (E_max(start W) - E_req(end W)) x eta_d)
    where E_max is the most it can hold at the window start (full charging from
    t = 0) and E_req the least it must hold at the window end (reserve floor, or
    full charging after the window still reaching the need); negative = it must
    import.  The fleet's shortfall over W is at least (-sum of those) minus the
    ceiling energy of W; disjoint windows add up (a small dynamic program over
    windows).  Cost O(N T^2) with numpy over N.  Site limits ((S,) or (S, T))
    are applied: a site exports at most its export limit over W, and pre-charges
    before W at most what its import limit lets in (an EV's export over W rises
    by at most one grid kWh per grid kWh charged before it).

    Equals ``shortfall_from_window_exports(window_exports_kwh(fleet, targets),
    targets)``; the split lets a caller that varies only the commitment values
    (a level search) pay the O(N T^2) part once.
    """
    valid, _ = validate_fleet(fleet, n_sites=targets.n_sites)
    if targets.durations_h.size and len(valid) == 0:
        tgt, dur = targets.import_kw, targets.durations_h
        return float(np.sum(np.where(np.isnan(tgt), 0.0, np.maximum(0.0, -np.nan_to_num(tgt))) * dur))
    return shortfall_from_window_exports(window_exports_kwh(valid, targets), targets)


def shortfall_from_window_exports(xw: np.ndarray, targets) -> float:
    """The dynamic program of `shortfall_lower_bound_kwh` over the fleet's window
    exports ``xw`` (from `window_exports_kwh` for targets committed in the same
    intervals, with the same durations and site limits); O(T^2)."""
    tgt = targets.import_kw
    dur = targets.durations_h
    T = dur.size
    if T == 0:
        return 0.0
    cum_t = np.concatenate([[0.0], np.cumsum(np.nan_to_num(tgt) * dur)])
    best = np.zeros(T + 1)
    for b in range(1, T + 1):
        best[b] = best[b - 1]
        if np.isnan(tgt[b - 1]):
            continue
        a = np.arange(_window_start(tgt, b), b)
        gap = np.maximum(0.0, -xw[a, b] - (cum_t[b] - cum_t[a]))
        best[b] = max(best[b], float(np.max(best[a] + gap)))
    return float(best[T])


def _window_start(tgt: np.ndarray, b: int) -> int:
    """First interval of the run of committed intervals that ends at b - 1."""
    a0 = b - 1
    while a0 > 0 and not np.isnan(tgt[a0 - 1]):
        a0 -= 1
    return a0


def window_exports_kwh(fleet: FleetArrays, targets) -> np.ndarray:
    """(T+1, T+1) most net grid kWh the fleet can export over each window [a, b)
    of consecutive committed intervals (see `shortfall_lower_bound_kwh`; site
    limits applied), NaN for the pairs that are no such window.  Depends on the
    targets only through which intervals are committed, the durations and the
    site limits -- not on the commitment values.  Invalid vehicles are ignored.
    """
    valid, _ = validate_fleet(fleet, n_sites=targets.n_sites)
    tgt = targets.import_kw
    dur = targets.durations_h
    T = dur.size
    xw = np.full((T + 1, T + 1), np.nan)
    end = np.cumsum(dur)
    start = end - dur
    e0, cap = valid.energy_kwh, valid.capacity_kwh
    lb = np.minimum(valid.floor_kwh, e0)
    need, dep, pc, pd = valid.need_kwh, valid.departure_h, valid.max_charge_kw, valid.max_discharge_kw
    etac, etad = valid.eta_charge, valid.eta_discharge
    site = valid.site_index()
    site_exp = _site_rows(targets.site_export_limit_kw, valid, T, targets.n_sites)   # (S, T)
    S = site_exp.shape[0]
    site_imp = _site_rows(targets.site_import_limit_kw, valid, T, S)                 # (S, T)
    imp_limited = np.isfinite(site_imp).any()
    if imp_limited:
        # grid kWh a site can import before each interval starts (inf if unlimited)
        fin_i = np.isfinite(site_imp)
        pre_imp = np.concatenate([np.zeros((S, 1)), np.cumsum(np.where(fin_i, site_imp, 0.0) * dur, axis=1)], axis=1)
        pre_imp = np.where(np.concatenate([np.zeros((S, 1), dtype=bool), np.cumsum(~fin_i, axis=1) > 0], axis=1),
                           np.inf, pre_imp)
    limited = np.isfinite(site_exp).any() or imp_limited
    if np.isfinite(site_exp).any():
        # per-site export energy over [a, b) = cum[b] - cum[a]; windows with an
        # unlimited interval are unlimited (counted separately: inf - inf is nan)
        fin = np.isfinite(site_exp)
        cum_x = np.concatenate([np.zeros((S, 1)), np.cumsum(np.where(fin, site_exp, 0.0) * dur, axis=1)], axis=1)
        cum_inf = np.concatenate([np.zeros((S, 1), dtype=np.int64), np.cumsum(~fin, axis=1)], axis=1)
    # (N, T) most energy each EV can hold at the start of each interval
    e_max = np.minimum(cap[:, None], e0[:, None] + (etac * pc)[:, None] * np.minimum(dep[:, None], start[None, :]))
    for b in range(1, T + 1):
        if np.isnan(tgt[b - 1]):
            continue
        a = np.arange(_window_start(tgt, b), b)
        e_req = np.maximum(lb, need - etac * pc * np.maximum(0.0, dep - end[b - 1]))       # (N,)
        h = np.clip(np.minimum(dep, end[b - 1])[:, None] - start[None, a], 0.0, None)       # (N, A)
        room = e_max[:, a] - e_req[:, None]
        x = _window_export(room, h, pc, pd, etac, etad)                                       # (N, A)
        if limited:
            xs = group_totals(site, x, S)
            if imp_limited:
                # pre-charging before the window is limited by the site's import limit:
                # x rises by at most 1/eta_c per battery kWh = 1 per grid kWh charged
                x0 = _window_export(e0[:, None] - e_req[:, None], h, pc, pd, etac, etad)
                xs0 = group_totals(site, x0, S)
                xs = np.minimum(xs, xs0 + pre_imp[:, a])
            if np.isfinite(site_exp).any():
                cap_w = np.where(cum_inf[:, [b]] - cum_inf[:, a] > 0, np.inf, cum_x[:, [b]] - cum_x[:, a])   # (S, A) kWh
                xs = np.minimum(xs, cap_w)
            xsum = xs.sum(axis=0)
        else:
            xsum = x.sum(axis=0)
        xw[a, b] = xsum
    return xw
