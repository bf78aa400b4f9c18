"""Test doubles for the VEN's port (`ven.port`): a fleet with fixed, settable
telemetry and export bound, and a recorder of what crosses the fleet port."""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from ven.port import Assessment, ExecutableRequest, FleetPort


@dataclass
class FakeVehicle:
    vehicle_id: str
    departs_at: datetime
    discharge_kw: float
    energy_kwh: float
    connected: bool = True


class FakeFleet:
    """Satisfies `ven.port.FleetTelemetry` and `aggregator.fleet_state.view.FleetView`.

    The export bound of each interval is the discharge power of the connected
    vehicles still there; fleet power is whatever the test sets (non-zero by
    default, so a mapping that ignores the baseline shows)."""

    def __init__(self, now: datetime, vehicles: int = 50, power_kw: float = 37.5, seed: int = 7):
        rng = random.Random(seed)
        self.power_kw = power_kw
        self.vehicles = [FakeVehicle(f"ev-{i:02d}", now + timedelta(hours=rng.uniform(3, 10)),
                                     rng.choice((7.4, 11.0, 20.0)), rng.uniform(20, 80)) for i in range(vehicles)]

    def _connected(self) -> list[FakeVehicle]:
        return [v for v in self.vehicles if v.connected]

    def fleet_power_kw(self) -> float:
        return self.power_kw

    def export_bound_kw(self, now: datetime, durations_h: np.ndarray) -> np.ndarray:
        out, t = [], now
        for hours in np.asarray(durations_h, dtype=float):
            t = t + timedelta(hours=float(hours))
            out.append(sum(v.discharge_kw for v in self._connected() if v.departs_at >= t))
        return np.array(out, dtype=float)

    def available_export_kw(self) -> float:
        return float(sum(v.discharge_kw for v in self._connected()))

    def stored_energy_kwh(self) -> float:
        return float(sum(v.energy_kwh for v in self._connected()))

    def plugged_in(self) -> int:
        return len(self._connected())

    def plugged_vehicle_ids(self) -> set[str]:
        return {v.vehicle_id for v in self._connected()}

    def availability(self) -> list[tuple[datetime, float]]:
        return [(v.departs_at, v.discharge_kw) for v in self._connected()]

    def drop(self, vehicle_ids) -> None:
        ids = set(vehicle_ids)
        for v in self.vehicles:
            if v.vehicle_id in ids:
                v.connected = False


class RecordingPort:
    """A `FleetPort` that records every call crossing the port and passes it on
    (to the aggregator's intake, or answers `optIn` itself without one)."""

    def __init__(self, inner: FleetPort | None = None):
        self.inner = inner
        self.calls: list[tuple] = []
        self.executed: dict[str, ExecutableRequest] = {}   # what is in force, per event
        self.assessed: list[ExecutableRequest] = []

    def assess(self, request: ExecutableRequest, now: datetime) -> Assessment:
        self.calls.append(("assess", request.event_id))
        self.assessed.append(request)
        return self.inner.assess(request, now) if self.inner is not None else Assessment("optIn", "fake")

    def execute(self, request: ExecutableRequest) -> None:
        if self.inner is not None:
            self.inner.execute(request)
        if self.executed.get(request.event_id) != request:
            self.calls.append(("execute", request.event_id))
        self.executed[request.event_id] = request

    def withdraw(self, event_id: str) -> None:
        if self.inner is not None:
            self.inner.withdraw(event_id)
        if self.executed.pop(event_id, None) is not None:
            self.calls.append(("withdraw", event_id))
