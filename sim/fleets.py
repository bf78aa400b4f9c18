"""Synthetic fleets and targets for tests, demos and the benchmark (seeded, no I/O).

The project's single synthetic fleet generator.  Two kinds of fleet:

random_fleet   one homogeneous population of cars with no site structure
               (the allocator's original benchmark fleet).
site_fleet     fleets shaped like real sites: a school-bus / van depot,
               workplace garages (cars), a municipal van yard, and a share of
               unmanaged EVs (homes on the open feeder: no site limit).  Mixed
               vehicle types (cars, vans, school buses), each site's export
               capped at 15-35 % of its chargers' discharge kW and its import
               at a share of its chargers' charge kW (the interconnection
               agreement and the transformer).  `site_targets` turns a site
               fleet and a fleet commitment into `Targets` with per-site,
               per-interval limits, optionally with derate windows (a feeder
               derated for an hour) and per-site prices.

Commitment shapes: `flat_targets`, `event_targets` (NaN outside the event),
and `max_feasible_level_kw`, which finds the edge of what a fleet can deliver
(the largest flat export level the closed-form bound allows), so that
commitments can be set at, or a given factor beyond, that edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aggregator.allocator.bound import shortfall_from_window_exports, window_exports_kwh
from aggregator.allocator.fleet import FleetArrays
from aggregator.allocator.types import Targets

__all__ = ["random_fleet", "flat_targets", "event_targets", "max_feasible_level_kw",
           "VEHICLE_TYPES", "SITE_KINDS", "SiteFleet", "site_fleet", "site_targets", "fleet_hash"]


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
    unavoidable shortfall; ``targets_for_level(L)`` builds the Targets, which
    may differ between levels only in the commitment values (not in which
    intervals are committed, the durations or the site limits).  L < 0 means
    the best the fleet can promise is an import ceiling of -L kW.

    Used by the benchmark to set commitments at the edge of what the fleet can
    do (where allocation quality matters most).  Bisection on
    `bound.shortfall_lower_bound_kwh` (which applies site limits); its O(N T^2)
    part, the fleet's window exports, does not depend on the level, so it is
    computed once and each step costs O(T^2) (the same level as evaluating the
    whole bound per step, at a 17th of the cost: minutes at 100,000 x 96).
    """
    if hi is None:
        hi = float(np.sum(fleet.max_discharge_kw)) + 1.0
    if lo is None:
        lo = -float(np.sum(fleet.max_charge_kw)) - 1.0
    first = targets_for_level(0.5 * (lo + hi))
    xw = window_exports_kwh(fleet, first)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        tg = targets_for_level(mid)
        if not _same_windows(first, tg):
            raise ValueError("targets_for_level changes more than the commitment values with the level")
        if shortfall_from_window_exports(xw, tg) > 1e-6 * max(abs(mid), 1.0):
            hi = mid
        else:
            lo = mid
    return lo


def _same_windows(a: Targets, b: Targets) -> bool:
    """Whether two targets commit the same intervals with the same durations and site limits."""
    def same(x, y):
        return (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
    return (np.array_equal(np.isnan(a.import_kw), np.isnan(b.import_kw)) and np.array_equal(a.durations_h, b.durations_h)
            and same(a.site_import_limit_kw, b.site_import_limit_kw) and same(a.site_export_limit_kw, b.site_export_limit_kw)
            and a.n_sites == b.n_sites)


# ---- realistic site fleets ---------------------------------------------------------------

#: vehicle types: usable capacities (kWh), charger kW (charge) and the share of
#: the charge kW available for discharge, efficiencies
VEHICLE_TYPES = {
    "car": dict(cap=[40.0, 58.0, 64.0, 77.0, 100.0], pc=[7.4, 11.0, 22.0], pc_p=[0.45, 0.4, 0.15],
                pd_share=[1.0, 0.5], pd_p=[0.7, 0.3], eta=[0.88, 0.9, 0.93, 0.95]),
    "van": dict(cap=[60.0, 75.0, 90.0, 110.0], pc=[11.0, 22.0], pc_p=[0.6, 0.4],
                pd_share=[1.0, 0.5], pd_p=[0.8, 0.2], eta=[0.9, 0.92, 0.94]),
    "bus": dict(cap=[150.0, 210.0, 250.0, 300.0], pc=[19.2, 60.0], pc_p=[0.3, 0.7],
                pd_share=[1.0], pd_p=[1.0], eta=[0.92, 0.94, 0.96]),
}

#: site kinds: vehicle mix, departure window (hours from plan start; two
#: populations for depots whose buses run an afternoon route or stay overnight),
#: SoC on plug-in, need at departure, import limit as a share of the chargers'
#: charge kW
SITE_KINDS = {
    "depot": dict(mix={"bus": 0.6, "van": 0.4}, dep=[(1.5, 4.0, 0.4), (8.0, 20.0, 0.6)], soc=(0.3, 0.85),
                  need=(0.7, 0.95), imp=(0.5, 0.8)),
    "workplace": dict(mix={"car": 1.0}, dep=[(2.0, 10.0, 1.0)], soc=(0.3, 0.9), need=(0.5, 0.9), imp=(0.4, 0.7)),
    "municipal": dict(mix={"van": 0.8, "car": 0.2}, dep=[(0.5, 14.0, 1.0)], soc=(0.25, 0.85), need=(0.6, 0.9),
                      imp=(0.5, 0.8)),
    "residential": dict(mix={"car": 1.0}, dep=[(4.0, 16.0, 1.0)], soc=(0.2, 0.9), need=(0.6, 0.9), imp=None),
}


@dataclass(frozen=True)
class SiteFleet:
    """A site fleet: the EVs and, per site, its kind and its base limits (kW)."""

    fleet: FleetArrays
    kinds: tuple[str, ...]          # per site; "unmanaged" = behind no site limit
    import_limit_kw: np.ndarray     # (S,) inf = none
    export_limit_kw: np.ndarray     # (S,) inf = none
    discharge_kw: np.ndarray        # (S,) sum of the site's chargers' discharge kW
    charge_kw: np.ndarray           # (S,)

    @property
    def n_sites(self) -> int:
        return len(self.kinds)


def site_fleet(n: int, seed: int = 0, *, kinds: tuple[str, ...] | None = None, unmanaged: float = 0.05,
               export_cap: tuple[float, float] = (0.15, 0.35), limit_import: bool = True,
               quantize: bool = True) -> SiteFleet:
    """A multi-site fleet of n EVs.

    kinds      the managed sites' kinds (see SITE_KINDS); default 2-4 sites drawn
               from depot / workplace / municipal (at least one depot).  A kind
               whose entry has no import share ("residential") gets no limits.
    unmanaged  share of EVs behind no site limit (cars at homes on the open
               feeder); they form the last site, with infinite limits.
    export_cap each managed site's export limit, as a share of its chargers'
               discharge kW, drawn uniformly from this range.
    """
    rng = np.random.default_rng(seed)
    if kinds is None:
        k = int(rng.integers(2, 5))
        kinds = ("depot",) + tuple(rng.choice(["workplace", "municipal", "depot"], size=k - 1, p=[0.5, 0.35, 0.15]))
    kinds = tuple(str(x) for x in kinds)
    n_un = int(round(unmanaged * n)) if unmanaged > 0 else 0
    n_man = n - n_un
    weights = rng.uniform(0.5, 1.5, size=len(kinds))
    counts = np.floor(n_man * weights / weights.sum()).astype(int)
    counts[: n_man - counts.sum()] += 1
    site_kinds = list(kinds) + (["unmanaged"] if n_un else [])
    counts = list(counts) + ([n_un] if n_un else [])
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("cap", "soc", "floor", "need", "dep", "pc", "pd", "etac",
                                                           "etad", "site")}
    for s, (kind, m) in enumerate(zip(site_kinds, counts)):
        spec = SITE_KINDS["residential" if kind == "unmanaged" else kind]
        types = rng.choice(list(spec["mix"]), size=m, p=list(spec["mix"].values()))
        cap = np.empty(m)
        pc = np.empty(m)
        pd = np.empty(m)
        etac = np.empty(m)
        etad = np.empty(m)
        for vt in sorted(set(types)):  # sorted: set order of str varies per process
            idx = np.flatnonzero(types == vt)
            v = VEHICLE_TYPES[vt]
            cap[idx] = rng.choice(v["cap"], size=idx.size)
            pc[idx] = rng.choice(v["pc"], size=idx.size, p=v["pc_p"])
            pd[idx] = pc[idx] * rng.choice(v["pd_share"], size=idx.size, p=v["pd_p"])
            etac[idx] = rng.choice(v["eta"], size=idx.size)
            etad[idx] = rng.choice(v["eta"], size=idx.size)
        windows = spec["dep"]
        w = np.array([x[2] for x in windows])
        which = rng.choice(len(windows), size=m, p=w / w.sum())
        lo = np.array([x[0] for x in windows])[which]
        hi = np.array([x[1] for x in windows])[which]
        dep = rng.uniform(lo, hi)
        soc = rng.uniform(*spec["soc"], size=m)
        need = rng.uniform(*spec["need"], size=m)
        floor = rng.choice([0.15, 0.2, 0.25], size=m)
        if quantize:
            soc = np.round(soc, 2)
            need = np.round(need * 20) / 20
            dep = np.maximum(0.25, np.round(dep * 4) / 4)
        for key, val in (("cap", cap), ("soc", soc), ("floor", floor), ("need", need), ("dep", dep), ("pc", pc),
                         ("pd", pd), ("etac", etac), ("etad", etad), ("site", np.full(m, s))):
            cols[key].append(val)
    c = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    site = c["site"].astype(np.int64)
    S = len(site_kinds)
    dis = np.bincount(site, weights=c["pd"], minlength=S)
    chg = np.bincount(site, weights=c["pc"], minlength=S)
    exp = np.full(S, np.inf)
    imp = np.full(S, np.inf)
    for s, kind in enumerate(site_kinds):
        if kind in ("unmanaged", "residential"):
            continue
        exp[s] = np.round(dis[s] * rng.uniform(*export_cap), 1)
        if limit_import and SITE_KINDS[kind]["imp"] is not None:
            imp[s] = np.round(chg[s] * rng.uniform(*SITE_KINDS[kind]["imp"]), 1)
    fleet = FleetArrays(
        ids=np.array([f"{site_kinds[s][:3]}{s}-{i:06d}" for i, s in enumerate(site)], dtype=object),
        energy_kwh=c["soc"] * c["cap"], capacity_kwh=c["cap"], floor_kwh=c["floor"] * c["cap"],
        need_kwh=c["need"] * c["cap"], departure_h=c["dep"], max_charge_kw=c["pc"], max_discharge_kw=c["pd"],
        eta_charge=c["etac"], eta_discharge=c["etad"], site=site,
    )
    return SiteFleet(fleet=fleet, kinds=tuple(site_kinds), import_limit_kw=imp, export_limit_kw=exp,
                     discharge_kw=dis, charge_kw=chg)


def site_targets(sf: SiteFleet, durations_h: np.ndarray, import_kw: np.ndarray, *,
                 derate: list[tuple[int, str, float, float, float]] | None = None,
                 price: np.ndarray | None = None) -> Targets:
    """Targets with (S, T) site limits built from the site fleet's base limits.

    derate   windows (site, "import" | "export", start_h, end_h, factor): the
             site's limit is multiplied by `factor` in the intervals whose
             midpoint lies in [start_h, end_h) (a derated feeder, a building
             load peak eating the transformer's headroom).
    price    (T,) or (S, T) $/kWh.
    """
    dur = np.asarray(durations_h, dtype=np.float64)
    T = dur.size
    mid = np.cumsum(dur) - dur / 2
    imp = np.repeat(sf.import_limit_kw[:, None], T, axis=1)
    exp = np.repeat(sf.export_limit_kw[:, None], T, axis=1)
    for s, which, a, b, factor in derate or ():
        win = (mid >= a) & (mid < b)
        arr = imp if which == "import" else exp
        arr[s, win] = np.round(arr[s, win] * factor, 1)
    return Targets(dur, np.asarray(import_kw, dtype=np.float64), price=price,
                   site_import_limit_kw=imp, site_export_limit_kw=exp)


def fleet_hash(fleet: FleetArrays, targets: Targets | None = None) -> str:
    """Short content hash of a fleet (and targets): a cache key for reference solutions."""
    import hashlib

    h = hashlib.sha256()
    for name in ("energy_kwh", "capacity_kwh", "floor_kwh", "need_kwh", "departure_h", "max_charge_kw",
                 "max_discharge_kw", "eta_charge", "eta_discharge"):
        h.update(np.ascontiguousarray(getattr(fleet, name), dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(fleet.site_index()).tobytes())
    if targets is not None:
        for v in (targets.durations_h, targets.import_kw, targets.price, targets.site_import_limit_kw,
                  targets.site_export_limit_kw):
            h.update(b"|" if v is None else np.ascontiguousarray(v, dtype=np.float64).tobytes())
        h.update(repr(targets.max_over_delivery_kw).encode())
    return h.hexdigest()[:16]
