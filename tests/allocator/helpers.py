"""Small fleet builders for the allocator tests."""

from __future__ import annotations

import numpy as np

from aggregator.allocator import FleetArrays


def fleet(n=1, **overrides) -> FleetArrays:
    base = dict(
        energy_kwh=30.0, capacity_kwh=60.0, floor_kwh=10.0, need_kwh=40.0, departure_h=8.0,
        max_charge_kw=10.0, max_discharge_kw=10.0, eta_charge=1.0, eta_discharge=1.0,
    )
    base.update(overrides)
    arrs = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy() for k, v in base.items() if k != "site"}
    site = overrides.get("site")
    return FleetArrays(ids=np.array([f"ev-{i}" for i in range(n)], dtype=object), site=site, **arrs)
