"""Fleet input arrays and their validation.

`FleetArrays` is the only view of the fleet the allocator ever sees: one row
per plugged-in EV, plain numpy arrays, no I/O.  `validate_fleet` splits a fleet
into the rows that can be planned and one `FleetValidationError` per bad row
(naming the vehicle and the field), so one broken record never stops the rest
of the fleet from being planned.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["FleetArrays", "FleetValidationError", "validate_fleet", "validity_mask", "group_totals", "NUMERIC_FIELDS"]

#: Numeric per-EV fields, in declaration order.
NUMERIC_FIELDS = (
    "energy_kwh",
    "capacity_kwh",
    "floor_kwh",
    "need_kwh",
    "departure_h",
    "max_charge_kw",
    "max_discharge_kw",
    "eta_charge",
    "eta_discharge",
)

# Defaults used by FleetArrays.from_records for keys a record may omit.
_RECORD_DEFAULTS = {
    "floor_kwh": 0.0,
    "max_discharge_kw": 0.0,
    "eta_charge": 1.0,
    "eta_discharge": 1.0,
}


class FleetValidationError(ValueError):
    """One invalid field of one vehicle.

    ``str(err)`` reads like ``vehicle bus-07: capacity_kwh=-3 must be > 0``.
    """

    def __init__(self, vehicle_id: str, field: str, message: str):
        self.vehicle_id = str(vehicle_id)
        self.field = field
        self.message = message
        super().__init__(f"vehicle {self.vehicle_id}: {message}")

    def __reduce__(self):  # keep picklable with the 3-arg constructor
        return (type(self), (self.vehicle_id, self.field, self.message))


@dataclass(frozen=True)
class FleetArrays:
    """Fleet state, one row per plugged-in EV; every field an array of shape (N,).

    Units: kWh, kW, hours from the plan start (t = 0).  Sign convention of the
    allocator: positive power = the vehicle imports (charges).

    energy_kwh      energy in the battery now
    capacity_kwh    usable capacity (> 0)
    floor_kwh       reserve floor the battery never goes below (by discharging)
    need_kwh        energy the driver wants in the battery at departure
    departure_h     hours from plan start until the EV leaves (> 0)
    max_charge_kw   >= 0, grid side
    max_discharge_kw >= 0 (magnitude), grid side
    eta_charge      (0, 1]; the battery gains eta_charge * grid kWh
    eta_discharge   (0, 1]; the grid gets eta_discharge * battery kWh
    site            int site index per EV (None = all 0)

    The constructor only coerces types and checks shapes; values are checked
    by `validate_fleet` (called by `allocate`).
    """

    ids: np.ndarray
    energy_kwh: np.ndarray
    capacity_kwh: np.ndarray
    floor_kwh: np.ndarray
    need_kwh: np.ndarray
    departure_h: np.ndarray
    max_charge_kw: np.ndarray
    max_discharge_kw: np.ndarray
    eta_charge: np.ndarray
    eta_discharge: np.ndarray
    site: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids, dtype=object).reshape(-1)
        ids = np.array([str(x) for x in ids], dtype=object)
        object.__setattr__(self, "ids", ids)
        n = ids.shape[0]
        for name in NUMERIC_FIELDS:
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.ndim == 0:
                arr = np.full(n, float(arr))
            arr = arr.reshape(-1)
            if arr.shape[0] != n:
                raise ValueError(f"FleetArrays.{name} has {arr.shape[0]} rows, ids has {n}")
            object.__setattr__(self, name, arr)
        if self.site is not None:
            site = np.asarray(self.site)
            if site.ndim == 0:
                site = np.full(n, site)
            site = site.reshape(-1)
            if site.shape[0] != n:
                raise ValueError(f"FleetArrays.site has {site.shape[0]} rows, ids has {n}")
            object.__setattr__(self, "site", site)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n(self) -> int:
        return len(self)

    def site_index(self) -> np.ndarray:
        """Site per EV as int64 (all 0 when `site` is None)."""
        if self.site is None:
            return np.zeros(len(self), dtype=np.int64)
        return np.asarray(self.site, dtype=np.float64).astype(np.int64)

    def subset(self, mask_or_index) -> "FleetArrays":
        """Rows selected by a boolean mask or an index array."""
        kw = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[mask_or_index])
              for f in fields(self)}
        return FleetArrays(**kw)

    @classmethod
    def from_records(cls, records: Sequence[Mapping]) -> "FleetArrays":
        """Build from dict-like records keyed by the field names.

        The id may be given as ``id``, ``vehicle_id`` or ``ids``.  Optional keys
        and their defaults: floor_kwh 0, max_discharge_kw 0, eta_charge 1,
        eta_discharge 1, site 0.  Missing required keys raise KeyError;
        bad values are left for `validate_fleet` to report per vehicle.
        """
        ids = []
        cols: dict[str, list] = {name: [] for name in NUMERIC_FIELDS}
        sites = []
        for i, rec in enumerate(records):
            vid = rec.get("id", rec.get("vehicle_id", rec.get("ids")))
            if vid is None:
                raise KeyError(f"record {i} has no id / vehicle_id")
            ids.append(str(vid))
            for name in NUMERIC_FIELDS:
                if name in rec and rec[name] is not None:
                    val = rec[name]
                elif name in _RECORD_DEFAULTS:
                    val = _RECORD_DEFAULTS[name]
                else:
                    raise KeyError(f"record {vid!r} has no {name}")
                try:
                    cols[name].append(float(val))
                except (TypeError, ValueError):
                    cols[name].append(float("nan"))
            sites.append(rec.get("site", 0))
        kw = {name: np.asarray(cols[name], dtype=np.float64) for name in NUMERIC_FIELDS}
        return cls(ids=np.asarray(ids, dtype=object), site=np.asarray(sites), **kw)

    @classmethod
    def empty(cls) -> "FleetArrays":
        z = np.zeros(0)
        return cls(ids=np.zeros(0, dtype=object), **{name: z for name in NUMERIC_FIELDS})


def group_totals(group: np.ndarray, per_ev: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, ...) sums of the per-EV rows (N, ...) of every group (a
    site, an LP unit).

    A sparse (G, N) indicator product, or for a column-major (N, T) array one
    `np.bincount` per column (no transposing copy): the same sums, in the same
    order, as ``np.add.at`` on the group index, 5-10x faster on large fleets."""
    per_ev = np.asarray(per_ev, dtype=np.float64)
    n = group.size
    if per_ev.ndim == 2 and not per_ev.flags.c_contiguous and per_ev.flags.f_contiguous:
        out = np.empty((n_groups, per_ev.shape[1]))
        for t in range(per_ev.shape[1]):
            out[:, t] = np.bincount(group, weights=per_ev[:, t], minlength=n_groups)
        return out
    M = sp.csr_matrix((np.ones(n), (group, np.arange(n))), shape=(n_groups, n))
    out = M @ per_ev.reshape(n, int(np.prod(per_ev.shape[1:], dtype=np.int64)))
    return np.asarray(out).reshape((n_groups,) + per_ev.shape[1:])


def _fmt(x: float) -> str:
    return f"{x:g}"


def validate_fleet(
    fleet: FleetArrays, now_h: float = 0.0, n_sites: int | None = None
) -> tuple[FleetArrays, list[FleetValidationError]]:
    """Check every row; return (the valid rows, one error per invalid field).

    Checked: finite numbers; capacity > 0; 0 <= energy <= capacity (SoC 0-100 %);
    0 <= floor <= capacity; 0 <= need <= capacity; departure after ``now_h``;
    charge / discharge limits >= 0; efficiencies in (0, 1]; site a
    non-negative integer (and < n_sites when given); unique ids (later
    duplicates are rejected).  A vehicle may have several errors; it is
    excluded once.  Vectorised, O(N).
    """
    ok, errors = validity_mask(fleet, now_h, n_sites)
    return (fleet if ok.all() else fleet.subset(ok)), errors


def validity_mask(
    fleet: FleetArrays, now_h: float = 0.0, n_sites: int | None = None
) -> tuple[np.ndarray, list[FleetValidationError]]:
    """(valid-row mask, errors); see `validate_fleet`."""
    n = len(fleet)
    errors: list[tuple[int, FleetValidationError]] = []
    bad = np.zeros(n, dtype=bool)
    ids = fleet.ids

    def flag(mask: np.ndarray, field: str, make_msg) -> None:
        idx = np.flatnonzero(mask)
        for i in idx:
            errors.append((int(i), FleetValidationError(ids[i], field, make_msg(int(i)))))
        bad[idx] = True

    # 1. non-finite values
    finite = {}
    for name in NUMERIC_FIELDS:
        arr = getattr(fleet, name)
        ok = np.isfinite(arr)
        finite[name] = ok
        flag(~ok, name, lambda i, name=name, arr=arr: f"{name}={arr[i]} must be a finite number")

    def F(name):  # values with non-finite replaced to keep comparisons quiet
        return np.where(finite[name], getattr(fleet, name), 0.0)

    cap, e, floor, need = F("capacity_kwh"), F("energy_kwh"), F("floor_kwh"), F("need_kwh")
    dep, pc, pd = F("departure_h"), F("max_charge_kw"), F("max_discharge_kw")
    etac, etad = F("eta_charge"), F("eta_discharge")
    fin = lambda *names: np.logical_and.reduce([finite[x] for x in names])  # noqa: E731

    flag(fin("capacity_kwh") & (cap <= 0), "capacity_kwh",
         lambda i: f"capacity_kwh={_fmt(cap[i])} must be > 0")
    capok = fin("capacity_kwh") & (cap > 0)
    tol = 1e-9 * np.maximum(cap, 1.0)
    flag(fin("energy_kwh") & (e < -tol), "energy_kwh",
         lambda i: f"energy_kwh={_fmt(e[i])} must be >= 0 (SoC below 0 %)")
    flag(fin("energy_kwh") & capok & (e > cap + tol), "energy_kwh",
         lambda i: f"energy_kwh={_fmt(e[i])} exceeds capacity_kwh={_fmt(cap[i])} (SoC above 100 %)")
    flag(fin("floor_kwh") & (floor < 0), "floor_kwh",
         lambda i: f"floor_kwh={_fmt(floor[i])} must be >= 0")
    flag(fin("floor_kwh") & capok & (floor > cap + tol), "floor_kwh",
         lambda i: f"floor_kwh={_fmt(floor[i])} exceeds capacity_kwh={_fmt(cap[i])}")
    flag(fin("need_kwh") & (need < 0), "need_kwh",
         lambda i: f"need_kwh={_fmt(need[i])} must be >= 0")
    flag(fin("need_kwh") & capok & (need > cap + tol), "need_kwh",
         lambda i: f"need_kwh={_fmt(need[i])} exceeds capacity_kwh={_fmt(cap[i])}")
    flag(fin("departure_h") & (dep <= now_h), "departure_h",
         lambda i: f"departure_h={_fmt(dep[i])} is not after now ({_fmt(now_h)} h): departure in the past")
    flag(fin("max_charge_kw") & (pc < 0), "max_charge_kw",
         lambda i: f"max_charge_kw={_fmt(pc[i])} must be >= 0")
    flag(fin("max_discharge_kw") & (pd < 0), "max_discharge_kw",
         lambda i: f"max_discharge_kw={_fmt(pd[i])} must be >= 0 (a magnitude)")
    flag(fin("eta_charge") & ((etac <= 0) | (etac > 1)), "eta_charge",
         lambda i: f"eta_charge={_fmt(etac[i])} must be in (0, 1]")
    flag(fin("eta_discharge") & ((etad <= 0) | (etad > 1)), "eta_discharge",
         lambda i: f"eta_discharge={_fmt(etad[i])} must be in (0, 1]")

    if fleet.site is not None:
        try:
            s = np.asarray(fleet.site, dtype=np.float64)
        except (TypeError, ValueError):
            s = np.array([_to_float(x) for x in fleet.site], dtype=np.float64)
        ok = np.isfinite(s) & (s >= 0) & (np.floor(s) == s)
        if n_sites is not None:
            ok &= s < n_sites
        flag(~ok, "site", lambda i: f"site={fleet.site[i]!r} must be an integer site index"
             + (f" in [0, {n_sites})" if n_sites is not None else " >= 0"))

    if n:
        _, first = np.unique(ids.astype(str), return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        flag(dup, "ids", lambda i: f"duplicate vehicle id {ids[i]!r}")

    errors.sort(key=lambda ie: ie[0])
    return ~bad, [err for _, err in errors]


def _to_float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")
