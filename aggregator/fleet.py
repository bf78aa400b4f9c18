"""Fleet domain model: vehicles, plug-in sessions, and the allocator's view of them (pure)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from aggregator.allocator import FleetArrays


@dataclass(frozen=True)
class VehicleSpec:
    id: str
    kind: str
    capacity_kwh: float
    floor_kwh: float          # reserve floor: the aggregator never discharges below it
    max_charge_kw: float      # charger/vehicle limit, AC side, >= 0
    max_discharge_kw: float   # magnitude, >= 0
    eta_charge: float
    eta_discharge: float
    site: int = 0


@dataclass(frozen=True)
class PlugIn:
    """A vehicle's current plug-in session: when it leaves and what it needs then."""
    vehicle_id: str
    arrived_at: datetime
    departs_at: datetime
    need_kwh: float


@dataclass(frozen=True)
class MemberState:
    spec: VehicleSpec
    session: PlugIn
    energy_kwh: float
    station_id: str = ""


def fleet_arrays(members: list[MemberState], now: datetime, need_margin_kwh: float = 0.0) -> FleetArrays:
    """Columns for the allocator; departure is hours from `now`. `need_margin_kwh`
    is planned on top of each driver's need (capped at capacity) so that what the
    chargers lose to their response time does not leave a driver short."""
    def column(values, dtype=float):
        return np.array(values, dtype=dtype)
    return FleetArrays(
        ids=column([m.spec.id for m in members], dtype=object),
        energy_kwh=column([m.energy_kwh for m in members]),
        capacity_kwh=column([m.spec.capacity_kwh for m in members]),
        floor_kwh=column([m.spec.floor_kwh for m in members]),
        need_kwh=column([min(m.session.need_kwh + need_margin_kwh, m.spec.capacity_kwh) for m in members]),
        departure_h=column([(m.session.departs_at - now).total_seconds() / 3600 for m in members]),
        max_charge_kw=column([m.spec.max_charge_kw for m in members]),
        max_discharge_kw=column([m.spec.max_discharge_kw for m in members]),
        eta_charge=column([m.spec.eta_charge for m in members]),
        eta_discharge=column([m.spec.eta_discharge for m in members]),
        site=column([m.spec.site for m in members], dtype=int),
    )
