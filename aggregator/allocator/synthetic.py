"""Synthetic fleets and targets for tests, demos and the benchmark (seeded, no I/O)."""

from __future__ import annotations

import numpy as np

from .fleet import FleetArrays
from .types import Targets

__all__ = ["random_fleet", "flat_targets", "event_targets"]


def random_fleet(n: int, seed: int = 0, *, horizon_h: float = 4.0, max_departure_h: float = 14.0,
                 n_sites: int = 1, quantize: bool = True) -> FleetArrays:
    """A plausible workplace/depot fleet of n plugged-in EVs.

    Capacities 40-100 kWh, SoC 20-90 %, reserve floor 15-25 %, need 50-90 %,
    chargers 7.4 / 11 / 22 kW (discharge the same or lower), efficiencies 0.88-0.96,
    departures 0.5 h to `max_departure_h`.  With ``quantize`` values are rounded
    the way telemetry reports them (1 % SoC, 15-min departures), which is what
    makes real fleets clusterable.
    """
    rng = np.random.default_rng(seed)
    cap = rng.choice([40.0, 58.0, 64.0, 77.0, 100.0], size=n)
    soc = rng.uniform(0.2, 0.9, size=n)
    floor_frac = rng.choice([0.15, 0.2, 0.25], size=n)
    need_frac = rng.uniform(0.5, 0.9, size=n)
    dep = rng.uniform(0.5, max_departure_h, size=n)
    if quantize:
        soc = np.round(soc, 2)
        need_frac = np.round(need_frac * 20) / 20
        dep = np.maximum(0.25, np.round(dep * 4) / 4)
    pc = rng.choice([7.4, 11.0, 22.0], size=n, p=[0.4, 0.4, 0.2])
    pd = pc * rng.choice([1.0, 0.5], size=n, p=[0.7, 0.3])
    eta_c = rng.choice([0.9, 0.93, 0.95], size=n)
    eta_d = rng.choice([0.9, 0.93, 0.95], size=n)
    return FleetArrays(
        ids=np.array([f"ev-{i:06d}" for i in range(n)], dtype=object),
        energy_kwh=soc * cap, capacity_kwh=cap, floor_kwh=floor_frac * cap,
        need_kwh=need_frac * cap, departure_h=dep, max_charge_kw=pc, max_discharge_kw=pd,
        eta_charge=eta_c, eta_discharge=eta_d,
        site=rng.integers(0, n_sites, size=n) if n_sites > 1 else None,
    )


def flat_targets(T: int, dt_h: float, import_kw: float, **kw) -> Targets:
    """The same ceiling in every interval."""
    return Targets(np.full(T, dt_h), np.full(T, float(import_kw)), **kw)


def event_targets(T: int, dt_h: float, import_kw: float, start_h: float, end_h: float, **kw) -> Targets:
    """Ceiling `import_kw` during [start_h, end_h), no commitment (NaN) elsewhere."""
    mid = (np.arange(T) + 0.5) * dt_h
    tgt = np.where((mid >= start_h) & (mid < end_h), float(import_kw), np.nan)
    return Targets(np.full(T, dt_h), tgt, **kw)


def max_feasible_level_kw(fleet: FleetArrays, targets_for_level, lo: float | None = None, hi: float | None = None,
                          iters: int = 16) -> float:
    """Largest export level L (kW) for which the closed-form bound shows no
    unavoidable shortfall; ``targets_for_level(L)`` builds the Targets.  L < 0
    means the best the fleet can promise is an import ceiling of -L kW.

    Used by the benchmark to set commitments at the edge of what the fleet can
    do (where allocation quality matters most).  Bisection on
    `bound.shortfall_lower_bound_kwh`.
    """
    from .bound import shortfall_lower_bound_kwh

    if hi is None:
        hi = float(np.sum(fleet.max_discharge_kw)) + 1.0
    if lo is None:
        lo = -float(np.sum(fleet.max_charge_kw)) - 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if shortfall_lower_bound_kwh(fleet, targets_for_level(mid)) > 1e-6 * max(abs(mid), 1.0):
            hi = mid
        else:
            lo = mid
    return lo
