"""Plain-data inputs and outputs of the allocator: targets, options, plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .fleet import FleetValidationError

__all__ = ["Targets", "AllocatorOptions", "Plan", "METHODS"]

METHODS = ("auto", "lp", "cluster", "greedy", "proportional", "llf")


@dataclass(frozen=True)
class Targets:
    """What the fleet is asked to do, per caller interval (T intervals from t = 0).

    durations_h           (T,) interval lengths in hours, consecutive from t = 0
    import_kw             (T,) fleet import CEILING per interval; negative = export
                          asked; NaN = no commitment in that interval.  A ceiling
                          below what the fleet can reach is not an error: the plan
                          gets as close as it can and reports the rest as
                          `Plan.shortfall_kw`.
    price                 optional $/kWh cost of import (export earns it): (T,) for
                          the whole fleet or (S, T) per site (sites on different
                          tariffs)
    site_import_limit_kw  optional per-site import limit (kW): (S,) constant or
                          (S, T) per interval (a derated feeder, transformer
                          headroom left by the building load); inf = no limit
    site_export_limit_kw  optional per-site export limit (kW, magnitude), (S,) or
                          (S, T) as above; inf = no limit
    max_over_delivery_kw  optional: in committed intervals the fleet should stay
                          within this many kW below the ceiling (soft, penalised
                          like a shortfall)

    Site limits are hard: no plan ever exceeds them (except that an import
    limit below the charging an EV's departure needs force is not enforced
    below zero).  EVs whose site index has no limit (inf, or beyond the
    given S rows) are limited only by their chargers.  Invalid values raise
    ValueError naming the site and the interval.
    """

    durations_h: np.ndarray
    import_kw: np.ndarray
    price: np.ndarray | None = None
    site_import_limit_kw: np.ndarray | None = None
    site_export_limit_kw: np.ndarray | None = None
    max_over_delivery_kw: float | None = None

    def __post_init__(self) -> None:
        d = np.asarray(self.durations_h, dtype=np.float64).reshape(-1)
        t = np.asarray(self.import_kw, dtype=np.float64).reshape(-1)
        if d.shape != t.shape:
            raise ValueError(f"Targets: durations_h has {d.size} intervals, import_kw {t.size}")
        if d.size and not (np.all(np.isfinite(d)) and np.all(d > 0)):
            raise ValueError("Targets.durations_h must be finite and > 0")
        if np.any(np.isinf(t)):
            raise ValueError("Targets.import_kw must be finite or NaN (no commitment)")
        object.__setattr__(self, "durations_h", d)
        object.__setattr__(self, "import_kw", t)
        T = d.size
        if self.price is not None:
            p = np.asarray(self.price, dtype=np.float64)
            if p.ndim <= 1:
                p = p.reshape(-1)
                if p.shape != d.shape:
                    raise ValueError(f"Targets.price has {p.size} values for {T} intervals; "
                                     f"give (T,) or (S, T) = (sites, {T})")
            elif p.ndim != 2 or p.shape[1] != T:
                raise ValueError(f"Targets.price has shape {p.shape}; expected ({T},) or (S, {T})")
            _check_values("price", p, lambda x: np.isfinite(x), "must be finite")
            object.__setattr__(self, "price", p)
        for name in ("site_import_limit_kw", "site_export_limit_kw"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=np.float64)
                if v.ndim == 0:
                    v = v.reshape(1)
                if v.ndim > 2 or (v.ndim == 2 and v.shape[1] != T):
                    raise ValueError(f"Targets.{name} has shape {v.shape}; expected (S,) or (S, {T})")
                _check_values(name, v, lambda x: ~np.isnan(x) & (x >= 0), "must be >= 0 (inf = unlimited)")
                object.__setattr__(self, name, v)
        sizes = {v.shape[0] for v in (self.site_import_limit_kw, self.site_export_limit_kw,
                                      self.price if self.price is not None and self.price.ndim == 2 else None)
                 if v is not None}
        if len(sizes) > 1:
            raise ValueError(f"Targets: site limits and per-site prices disagree on the number of sites {sorted(sizes)}")
        if self.max_over_delivery_kw is not None and not (self.max_over_delivery_kw >= 0):
            raise ValueError("Targets.max_over_delivery_kw must be >= 0")

    @property
    def n_intervals(self) -> int:
        return int(self.durations_h.size)

    @property
    def n_sites(self) -> int | None:
        """S given by the site limits or per-site prices (None if neither)."""
        sizes = [v.shape[0] for v in (self.site_import_limit_kw, self.site_export_limit_kw) if v is not None]
        if self.price is not None and self.price.ndim == 2:
            sizes.append(self.price.shape[0])
        return max(sizes) if sizes else None

    def site_limits_kw(self, n_sites: int) -> tuple[np.ndarray, np.ndarray]:
        """(import, export) limits as (n_sites, T) arrays, inf where none is given."""
        T = self.n_intervals
        out = []
        for v in (self.site_import_limit_kw, self.site_export_limit_kw):
            a = np.full((n_sites, T), np.inf)
            if v is not None:
                k = min(v.shape[0], n_sites)
                a[:k] = v[:k, None] if v.ndim == 1 else v[:k]
            out.append(a)
        return out[0], out[1]

    def price_by_site(self, n_sites: int) -> np.ndarray | None:
        """Prices as an (n_sites, T) array (None without prices); sites beyond
        the given rows pay the mean of the given sites' prices."""
        if self.price is None:
            return None
        if self.price.ndim == 1:
            return np.broadcast_to(self.price[None, :], (n_sites, self.n_intervals)).copy()
        a = np.empty((n_sites, self.n_intervals))
        k = min(self.price.shape[0], n_sites)
        a[:k] = self.price[:k]
        a[k:] = self.price.mean(axis=0)
        return a

    @classmethod
    def flat(cls, n: int, duration_h: float, import_kw: float, **kw) -> "Targets":
        """T equal intervals with the same ceiling (convenience)."""
        return cls(np.full(n, float(duration_h)), np.full(n, float(import_kw)), **kw)


def _check_values(name: str, v: np.ndarray, ok_fn, what: str) -> None:
    """Raise ValueError naming the first bad site / interval of `v`."""
    ok = ok_fn(v)
    if np.all(ok):
        return
    bad = np.argwhere(~ok)[0]
    val = v[tuple(bad)]
    if v.ndim == 2:
        where = f"site {bad[0]}, interval {bad[1]}"
    elif name == "price":
        where = f"interval {bad[0]}"
    else:
        where = f"site {bad[0]}"
    raise ValueError(f"Targets.{name}: {where} is {val!r}; {what}")


@dataclass(frozen=True)
class AllocatorOptions:
    """How to plan.

    method           "auto" | "lp" | "cluster" | "greedy" | "proportional" | "llf".
                     "auto": per-EV LP for fleets up to `lp_max_evs`, else the
                     cluster LP; greedy when the solver runs out of its budget.
    time_budget_s    wall-clock budget for the LP solve; past it the event-aware
                     greedy plan is returned (method "greedy-fallback").
    wear_cost_per_kwh  throughput cost per grid kWh charged or discharged.
    solver           "glop" (default) or "highs" (bundled with OR-Tools).
    solver_params    solver-specific parameters handed to the LP solver as is
                     (e.g. "solver=ipm" for HiGHS's interior point); None = defaults.
    lp_max_evs       "auto" uses the per-EV LP up to this many distinct EVs.
    cluster_bins     (departure, headroom, need) bins per axis for "cluster".
    tail_intervals   max coarse intervals appended after the caller's horizon
                     up to the latest departure.
    shortfall_weight / departure_weight  objective weights (per kWh); None = derived
                     from prices and efficiencies so that
                     departure >> commitment >> price >> wear >> fairness.
    """

    method: str = "auto"
    time_budget_s: float = 2.0
    wear_cost_per_kwh: float = 1e-3
    solver: str = "glop"
    solver_params: str | None = None
    lp_max_evs: int = 200
    cluster_bins: int | None = None
    tail_intervals: int = 2
    shortfall_weight: float | None = None
    departure_weight: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"AllocatorOptions.method={self.method!r}; expected one of {METHODS}")
        if self.solver not in ("glop", "highs"):
            raise ValueError("AllocatorOptions.solver must be 'glop' or 'highs'")


@dataclass(frozen=True)
class Plan:
    """The allocator's answer (caller's T intervals only).

    power_kw      (N, T) signed interval-average kW per EV (+ = charge).  An EV
                  that leaves part-way through an interval is limited to
                  plugged_fraction * its charger limit; 0 after departure.
    fleet_kw      (T,) sum of power_kw over EVs.
    shortfall_kw  (T,) max(0, fleet_kw - import_kw); 0 where import_kw is NaN.
    departure_shortfall_kwh (N,) need not reached at departure under this plan
                  (the plan including the allocator's tail to the last departure).
    bound_kw      (T,) closed-form bound: the lowest fleet import reachable in each
                  interval taken alone (see `bound.py`); no plan can go below it.
    method        the method actually used ("lp", "cluster", "greedy",
                  "greedy-fallback", "proportional", "llf", "empty").
    setpoint_kw   (N, T) the power to command while the EV is plugged in
                  (power_kw / plugged fraction; equals power_kw for full intervals).
    """

    power_kw: np.ndarray
    fleet_kw: np.ndarray
    shortfall_kw: np.ndarray
    departure_shortfall_kwh: np.ndarray
    bound_kw: np.ndarray
    method: str
    build_seconds: float
    solve_seconds: float
    infeasible_ids: tuple[str, ...] = ()
    errors: tuple["FleetValidationError", ...] = ()
    setpoint_kw: np.ndarray | None = None
    ids: np.ndarray | None = None
    energy_kwh: np.ndarray | None = None  # (N, T+1) planned energy at interval boundaries
    split_seconds: float = 0.0
    solver_status: str = ""
    n_clusters: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def total_seconds(self) -> float:
        return self.build_seconds + self.solve_seconds + self.split_seconds

    def shortfall_kwh(self, durations_h: np.ndarray) -> float:
        """Commitment shortfall in kWh over the caller's intervals."""
        return float(np.sum(self.shortfall_kw * np.asarray(durations_h, dtype=np.float64)))
