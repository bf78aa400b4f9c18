"""A bidirectional charger and its vehicle's battery, simulated with simple physics.

- AC power follows the setpoint with a first-order lag (the power electronics
  and the vehicle's BMS do not step instantly);
- charging power tapers above 80 % state of charge (constant-voltage phase);
- the battery gains `eta_charge` of the AC energy when charging and loses
  1/`eta_discharge` of the AC energy when discharging;
- the BMS stops at 0 and at full usable capacity whatever the setpoint;
- the meter integrates AC energy into import and export registers.
Time is passed in (`advance(to)`), so a simulation can run faster than real time.
"""
from __future__ import annotations

import math
from datetime import datetime

from aggregator.chargers.base import ChargerReading, ChargerUnavailable
from aggregator.fleet import VehicleSpec

TAPER_START_SOC = 0.80
TAPER_END_FRACTION = 0.2     # charge limit at 100 % SoC, as a share of max_charge_kw
RESPONSE_TIME_S = 1.0        # first-order time constant of the power response


class SimulatedCharger:
    def __init__(self, spec: VehicleSpec, energy_kwh: float, now: datetime, charger_id: str | None = None):
        self.spec = spec
        self.vehicle_id = spec.id
        self.charger_id = charger_id or f"cp-{spec.id}"
        self.energy_kwh = energy_kwh
        self.setpoint_kw = 0.0
        self.power_kw = 0.0
        self.import_kwh = 0.0
        self.export_kwh = 0.0
        self.online = True
        self._t = now

    # -- physics -------------------------------------------------------------
    def _limits(self) -> tuple[float, float]:
        """(lowest, highest) AC power the vehicle accepts now."""
        soc = self.energy_kwh / self.spec.capacity_kwh
        charge = self.spec.max_charge_kw
        if soc > TAPER_START_SOC:
            share = 1 - (1 - TAPER_END_FRACTION) * (soc - TAPER_START_SOC) / (1 - TAPER_START_SOC)
            charge *= max(0.0, share)
        if soc >= 1.0:
            charge = 0.0
        discharge = self.spec.max_discharge_kw if self.energy_kwh > 0 else 0.0
        return -discharge, charge

    def advance(self, to: datetime, max_step_s: float = 1.0) -> None:
        """Integrate the battery and meter from the last call up to `to`."""
        remaining = (to - self._t).total_seconds()
        while remaining > 1e-9:
            dt = min(max_step_s, remaining)
            low, high = self._limits()
            wanted = min(max(self.setpoint_kw, low), high)
            self.power_kw += (wanted - self.power_kw) * (1 - math.exp(-dt / RESPONSE_TIME_S))
            hours = dt / 3600
            if self.power_kw >= 0:
                gain = self.power_kw * self.spec.eta_charge * hours
                gain = min(gain, self.spec.capacity_kwh - self.energy_kwh)
                ac = gain / self.spec.eta_charge
                self.energy_kwh += gain
                self.import_kwh += ac
            else:
                loss = -self.power_kw / self.spec.eta_discharge * hours
                loss = min(loss, self.energy_kwh)
                ac = loss * self.spec.eta_discharge
                self.energy_kwh -= loss
                self.export_kwh += ac
            remaining -= dt
        self._t = to

    # -- Charger protocol ------------------------------------------------------
    async def apply_setpoint(self, power_kw: float) -> None:
        if not self.online:
            raise ChargerUnavailable(f"charger {self.charger_id} is offline")
        self.setpoint_kw = float(power_kw)

    async def read(self) -> ChargerReading:
        if not self.online:
            raise ChargerUnavailable(f"charger {self.charger_id} is offline")
        return ChargerReading(self.charger_id, self._t, self.import_kwh, self.export_kwh,
                              self.power_kw, 100 * self.energy_kwh / self.spec.capacity_kwh, self.energy_kwh)
