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

from .fleet import FleetArrays, validate_fleet

__all__ = ["lowest_import_kw", "deliverable_export_bound_kw", "shortfall_lower_bound_kwh"]


def _per_ev_lowest(e0, cap, lb, need, dep, pc, pd, etac, etad, durations_h) -> np.ndarray:
    dur = np.asarray(durations_h, dtype=np.float64)
    end = np.cumsum(dur)
    start = end - dur
    n, T = e0.size, dur.size
    out = np.empty((n, T))
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


def deliverable_export_bound_kw(fleet: FleetArrays, durations_h: np.ndarray) -> np.ndarray:
    """(T,) largest fleet export (kW, positive) per interval if every EV spent all the
    energy it can spare while still reaching its departure need.

    Each interval is taken alone (energy spent in one interval is counted again
    in the next), so this is an upper bound, meant for opt-in decisions and bid
    sizing.  A negative value means even at best the fleet must import that
    much.  Invalid vehicles are ignored; site limits are not applied (see
    `Plan.bound_kw` for the site-limited figure).
    """
    valid, _ = validate_fleet(fleet)
    if len(valid) == 0:
        return np.zeros(np.asarray(durations_h).size)
    return -lowest_import_kw(valid, durations_h)


def shortfall_lower_bound_kwh(bound_kw: np.ndarray, import_kw: np.ndarray, durations_h: np.ndarray) -> float:
    """Commitment shortfall (kWh) no plan can avoid, from the per-interval bound."""
    tgt = np.asarray(import_kw, dtype=np.float64)
    gap = np.where(np.isnan(tgt), 0.0, np.maximum(0.0, np.asarray(bound_kw) - np.nan_to_num(tgt)))
    return float(np.sum(gap * np.asarray(durations_h, dtype=np.float64)))
