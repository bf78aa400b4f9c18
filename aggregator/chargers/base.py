"""What the dispatcher needs from any charger (simulated or OCPP)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class ChargerUnavailable(RuntimeError):
    """The charger did not answer (offline, vanished, timed out)."""


@dataclass(frozen=True)
class ChargerReading:
    charger_id: str
    ts: datetime
    energy_import_kwh: float   # cumulative register, grid -> vehicle (AC side)
    energy_export_kwh: float   # cumulative register, vehicle -> grid
    power_kw: float            # signed, positive = import
    soc_pct: float
    energy_kwh: float          # energy in the battery


class Charger(Protocol):
    charger_id: str
    vehicle_id: str

    async def apply_setpoint(self, power_kw: float) -> None:
        """Command signed AC power (positive = charge). Raises ChargerUnavailable."""

    async def read(self) -> ChargerReading:
        """Meter and battery state now. Raises ChargerUnavailable."""
