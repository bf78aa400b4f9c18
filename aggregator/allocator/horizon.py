"""The planning horizon and per-EV battery physics shared by every method.

`Problem` holds the validated fleet and targets on the *extended* horizon: the
caller's T intervals plus coarse tail interval(s) up to the latest departure,
so that departure needs beyond the caller's horizon are enforced.  Power values
are interval averages (kW); an EV plugged in for a fraction f of an interval is
limited to f times its charger limit.

Its per-EV (N, Tx) arrays (plugged fraction, charger limits, envelope,
charge-after) and the plans built on it are column-major: every method walks
the horizon interval by interval, so one interval's column of N values is
contiguous (a strided column cost 7-15x as much at 10,000-100,000 EVs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fleet import FleetArrays, group_totals
from .types import AllocatorOptions, Targets

__all__ = ["Problem", "build_problem", "step_energy", "power_band", "simulate", "energy_at"]


@dataclass
class Problem:
    n: int
    T: int                 # caller's intervals
    Tx: int                # caller's + tail intervals
    dur: np.ndarray        # (Tx,) hours
    start: np.ndarray      # (Tx,) start time, hours
    end: np.ndarray        # (Tx,)
    target: np.ndarray     # (T,) fleet import ceiling, NaN = none
    committed: np.ndarray  # (T,) bool
    price: np.ndarray      # (n_sites, Tx) $/kWh per site (tail: mean of the caller's prices)
    has_price: bool
    frac: np.ndarray       # (N, Tx) plugged fraction of each interval
    e0: np.ndarray
    cap: np.ndarray
    lb: np.ndarray         # min(floor, e0): the battery never goes below this
    need: np.ndarray
    dep: np.ndarray
    pc: np.ndarray
    pd: np.ndarray
    etac: np.ndarray
    etad: np.ndarray
    site: np.ndarray       # (N,) int
    n_sites: int
    site_imp: np.ndarray   # (n_sites, Tx) kW, inf = none (tail: the last caller interval's)
    site_exp: np.ndarray   # (n_sites, Tx) kW magnitude, inf = none
    over_kw: float | None
    w_short: float         # objective weight per kWh of commitment shortfall
    w_dep: float           # per kWh of departure shortfall
    wear: float            # per grid kWh throughput
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def cmax(self) -> np.ndarray:  # (N, Tx); computed once (pc and frac never change)
        if "cmax" not in self.cache:
            self.cache["cmax"] = self.pc[:, None] * self.frac
        return self.cache["cmax"]

    @property
    def dmax(self) -> np.ndarray:
        if "dmax" not in self.cache:
            self.cache["dmax"] = self.pd[:, None] * self.frac
        return self.cache["dmax"]

    def by_site(self, per_ev: np.ndarray) -> np.ndarray:
        """(n_sites, ...) sums of per-EV rows over each site's EVs."""
        return group_totals(self.site, per_ev, self.n_sites)

    def envelope(self, sites: bool = True) -> tuple[np.ndarray, np.ndarray]:
        key = "envelope" if sites else "envelope/nosite"
        if key not in self.cache:
            self.cache[key] = self._envelope(sites)
        return self.cache[key]

    def _envelope(self, sites: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(emin, emax), each (N, Tx): bounds on the energy at the end of each interval.

        emax: full-power charging from t = 0 (and capacity).  emin: departure
        safety -- the level from which full-power charging still reaches the
        need -- or the floor, never above emax.  Every plan that meets the
        departure needs stays inside.  For EVs at sites with a finite import
        limit emin is just the floor (forced charging might not fit the site),
        unless ``sites`` is False (the EV's own departure safety, used to
        describe how much an EV can spare, not as a hard bound).
        """
        plugged = np.minimum(self.dep[None, :], self.end[:, None]).T   # column-major (N, Tx)
        emin, emax = self._own_bounds(plugged, self.charge_after(), lambda x: x[:, None])
        if sites and np.isfinite(self.site_imp).any():
            # the forced charging this envelope implies (every EV idle until it
            # must charge) has to fit every site's import limit; where it does
            # not, that site's EVs keep only their floor as a hard bound
            path = np.maximum(self.e0[:, None], emin)
            prev = np.empty_like(path)   # column-major like path (no concatenate)
            prev[:, 0] = self.e0
            prev[:, 1:] = path[:, :-1]
            forced = (path - prev) / (self.etac[:, None] * self.dur[None, :])
            by_site = self.by_site(forced)
            bad = np.any(by_site > self.site_imp * (1 + 1e-9) + 1e-9, axis=1)
            limited = bad[self.site]
            if limited.any():
                # whole columns, not a row selection (strided in column-major)
                emin = np.where(limited[:, None], np.minimum(self.lb[:, None], emax), emin)
        return emin, np.maximum(emax, self.lb[:, None])

    def own_envelope_at(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(emin, emax) at the end of interval t, each (N,): the column t of
        ``envelope(sites=False)`` without building the whole (N, Tx) arrays."""
        emin, emax = self._own_bounds(np.minimum(self.dep, self.end[t]), self.charge_after()[:, t], lambda x: x)
        return emin, np.maximum(emax, self.lb)

    def _own_bounds(self, plugged, after, per_ev) -> tuple[np.ndarray, np.ndarray]:
        """(emin, emax) from the EV's own limits: full-power charging for the
        `plugged` hours from t = 0 (capacity-capped), and departure safety given
        the kWh `after` that charging can still add (never above emax).  One
        interval's column or all of them: `per_ev` shapes the (N,) fields to
        broadcast against `plugged`."""
        emax = np.minimum(per_ev(self.cap), per_ev(self.e0) + per_ev(self.etac * self.pc) * plugged)
        emin = np.minimum(np.maximum(per_ev(self.lb), per_ev(self.need) - after), emax)
        return emin, emax

    def charge_after(self) -> np.ndarray:
        """(N, Tx) battery kWh that max charging can still add after each interval ends."""
        if "charge_after" in self.cache:
            return self.cache["charge_after"]
        plugged_after = np.maximum(0.0, self.dep[None, :] - self.end[:, None]).T   # column-major (N, Tx)
        out = self.etac[:, None] * self.pc[:, None] * plugged_after
        self.cache["charge_after"] = out
        return out


def tail_edges(horizon_end: float, last_departure: float, max_tail: int, typical: float) -> np.ndarray:
    """Coarse interval lengths from the caller's horizon end to the last departure."""
    length = last_departure - horizon_end
    if length <= 1e-9 or max_tail <= 0:
        return np.zeros(0)
    k = int(min(max_tail, max(1, np.ceil(length / max(typical, 1e-9) / 8))))
    return np.full(k, length / k)


def build_problem(fleet: FleetArrays, targets: Targets, options: AllocatorOptions) -> Problem:
    """Problem on the extended horizon for an already validated fleet."""
    n = len(fleet)
    T = targets.n_intervals
    dur_c = targets.durations_h
    H = float(dur_c.sum())
    last_dep = float(fleet.departure_h.max()) if n else 0.0
    typical = float(dur_c.mean()) if T else 1.0
    tail = tail_edges(H, last_dep, options.tail_intervals, typical)
    dur = np.concatenate([dur_c, tail])
    end = np.cumsum(dur)
    start = end - dur
    Tx = dur.size

    # column-major (see the module docstring)
    frac = np.clip((fleet.departure_h[None, :] - start[:, None]) / dur[:, None], 0.0, 1.0).T

    committed = ~np.isnan(targets.import_kw)
    site = fleet.site_index()
    ns_t = targets.n_sites or 0
    n_sites = max(ns_t, int(site.max()) + 1 if n else 1, 1)

    def extend(a: np.ndarray, tail_value: np.ndarray) -> np.ndarray:  # (S, T) -> (S, Tx)
        return np.concatenate([a, np.repeat(tail_value[:, None], tail.size, axis=1)], axis=1)

    price_st = targets.price_by_site(n_sites)
    if price_st is not None:
        price = extend(price_st, price_st.mean(axis=1) if T else np.zeros(n_sites))
        has_price = True
    else:
        price = np.zeros((n_sites, Tx))
        has_price = False
    imp, exp = targets.site_limits_kw(n_sites)
    # after the caller's horizon the last interval's limits are assumed to persist
    site_imp = extend(imp, imp[:, -1] if T else np.full(n_sites, np.inf))
    site_exp = extend(exp, exp[:, -1] if T else np.full(n_sites, np.inf))

    etac = fleet.eta_charge
    etad = fleet.eta_discharge
    pmax = float(np.max(np.abs(price))) if Tx else 0.0
    wear = float(options.wear_cost_per_kwh)
    w_short = options.shortfall_weight
    if w_short is None:
        w_short = max(1.0, 10.0 * pmax, 100.0 * wear)
    w_dep = options.departure_weight
    if w_dep is None:
        min_eta = float(min(etac.min(), etad.min())) if n else 1.0
        w_dep = 10.0 * w_short / max(min_eta, 1e-3)

    return Problem(
        n=n, T=T, Tx=Tx, dur=dur, start=start, end=end,
        target=targets.import_kw.copy(), committed=committed, price=price, has_price=has_price,
        frac=frac, e0=fleet.energy_kwh.copy(), cap=fleet.capacity_kwh.copy(),
        lb=np.minimum(fleet.floor_kwh, fleet.energy_kwh), need=fleet.need_kwh.copy(),
        dep=fleet.departure_h.copy(), pc=fleet.max_charge_kw.copy(), pd=fleet.max_discharge_kw.copy(),
        etac=etac.copy(), etad=etad.copy(), site=site, n_sites=n_sites,
        site_imp=site_imp, site_exp=site_exp, over_kw=targets.max_over_delivery_kw,
        w_short=float(w_short), w_dep=float(w_dep), wear=wear,
    )


def step_energy(e: np.ndarray, p: np.ndarray, dur: float | np.ndarray, etac: np.ndarray, etad: np.ndarray) -> np.ndarray:
    """Battery energy after applying average grid power p for dur hours."""
    return e + dur * np.where(p >= 0, etac * p, p / etad)


def power_band(prob: Problem, t: int, e: np.ndarray, idx: np.ndarray | slice = slice(None),
               charge_after: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) average power in interval t for EVs `idx` at energy e.

    hi: charger limit and capacity.  lo: discharge limit, reserve floor and
    *departure safety* -- after the interval, full-power charging until
    departure must still reach the need (when it still can; otherwise lo is
    the charge that gets closest).  lo <= hi always.
    """
    dur = prob.dur[t]
    cmax = prob.pc[idx] * prob.frac[idx, t]
    dmax = prob.pd[idx] * prob.frac[idx, t]
    etac, etad = prob.etac[idx], prob.etad[idx]
    if charge_after is None:
        r_after = etac * prob.pc[idx] * np.maximum(0.0, prob.dep[idx] - prob.end[t])
    else:
        r_after = charge_after[idx, t]
    hi = np.minimum(cmax, np.maximum(0.0, prob.cap[idx] - e) / (etac * dur))
    e_req = np.maximum(prob.lb[idx], prob.need[idx] - r_after)
    gap = e_req - e
    lo = np.where(gap > 0, np.minimum(cmax, gap / (etac * dur)), -np.minimum(dmax, -gap * etad / dur))
    lo = np.minimum(lo, hi)
    return lo, hi


def simulate(prob: Problem, power: np.ndarray) -> np.ndarray:
    """(N, Tx+1) energy at interval boundaries under average powers (N, Tx)."""
    e = np.empty((prob.n, power.shape[1] + 1), order="F")
    e[:, 0] = prob.e0
    for t in range(power.shape[1]):
        e[:, t + 1] = step_energy(e[:, t], power[:, t], prob.dur[t], prob.etac, prob.etad)
    return e


def energy_at(prob: Problem, power: np.ndarray, t_end: int, idx: np.ndarray | slice = slice(None),
              within_chargers: bool = False) -> np.ndarray:
    """Energy of EVs `idx` at boundary t_end under the plan `power` (all EVs'
    rows): the column t_end of `simulate` without building the others.  With
    ``within_chargers`` each power is first clipped to the chargers' limits
    (interval by interval: no clipped copy of the whole plan)."""
    e = prob.e0[idx]
    etac, etad = prob.etac[idx], prob.etad[idx]
    for t in range(t_end):
        p = power[idx, t]
        if within_chargers:
            p = np.clip(p, -prob.dmax[idx, t], prob.cmax[idx, t])
        e = step_energy(e, p, prob.dur[t], etac, etad)
    return e
