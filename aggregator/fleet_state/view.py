"""What the rest of the product reads of the fleet (the VEN's telemetry, opt
decisions, the API): one narrow, read-only view, implemented by the fleet-state
registry. Units: kW, kWh; sign: positive = import."""
from __future__ import annotations

from datetime import datetime
from typing import Protocol

import numpy as np


class FleetView(Protocol):
    def fleet_power_kw(self) -> float:
        """Signed fleet power from the latest meter samples (positive = import)."""

    def export_bound_kw(self, now: datetime, durations_h: np.ndarray) -> np.ndarray:
        """Closed-form most export the available plugged-in fleet can give per interval."""

    def available_export_kw(self) -> float:
        """Export the fleet could give over the next 15 minutes, kW."""

    def stored_energy_kwh(self) -> float:
        """Energy in the plugged-in batteries (conservative estimate where SoC is unknown)."""

    def plugged_in(self) -> int:
        """Vehicles with an open plug-in session."""

    def plugged_vehicle_ids(self) -> set[str]:
        """Ids of the vehicles with an open plug-in session."""

    def availability(self) -> list[tuple[datetime, float]]:
        """(departs_at, max discharge kW) of every available plugged-in vehicle (for EiOpt windows)."""
