"""A bidirectional charging station and the battery of the vehicle plugged into it, simulated.

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
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.chargers.port import Ack, MeterSample, Setpoint
from aggregator.fleet import VehicleSpec

TAPER_START_SOC = 0.80
TAPER_END_FRACTION = 0.2     # charge limit at 100 % SoC, as a share of max_charge_kw
RESPONSE_TIME_S = 1.0        # first-order time constant of the power response

BEHAVIOURS = ("accept", "reject", "late", "silent")


@dataclass
class Behaviour:
    """How the station answers commands (test fakes: reject, answer late, never answer)."""
    kind: str = "accept"
    late_s: float = 0.0


class SimulatedStation:
    """One EVSE with its meter; a vehicle's battery while one is plugged in.

    `advance(to)` integrates physics up to `to` (the simulation's clock, not the
    service loop's). A setpoint holds until its `valid_until`; after it the station
    falls back to its default: no discharge (charging as last commanded)."""

    def __init__(self, station_id: str, vehicle: VehicleSpec, energy_kwh: float, now: datetime,
                 *, reports_soc: bool = True, behaviour: Behaviour | None = None):
        self.station_id = station_id
        self.vehicle = vehicle
        self.energy_kwh = energy_kwh
        self.setpoint_kw = 0.0
        self.valid_until: datetime | None = None
        self.power_kw = 0.0
        self.import_kwh = 0.0
        self.export_kwh = 0.0
        self.online = True
        self.plugged = True
        self.reports_soc = reports_soc
        self.behaviour = behaviour or Behaviour()
        self._t = now

    @property
    def now(self) -> datetime:
        return self._t

    # -- physics -------------------------------------------------------------
    def _limits(self) -> tuple[float, float]:
        """(lowest, highest) AC power the vehicle accepts now."""
        soc = self.energy_kwh / self.vehicle.capacity_kwh
        charge = self.vehicle.max_charge_kw
        if soc > TAPER_START_SOC:
            share = 1 - (1 - TAPER_END_FRACTION) * (soc - TAPER_START_SOC) / (1 - TAPER_START_SOC)
            charge *= max(0.0, share)
        if soc >= 1.0:
            charge = 0.0
        discharge = self.vehicle.max_discharge_kw if self.energy_kwh > 0 else 0.0
        return -discharge, charge

    def advance(self, to: datetime, max_step_s: float = 1.0) -> None:
        """Integrate the battery and meter from the last call up to `to`."""
        remaining = (to - self._t).total_seconds()
        while remaining > 1e-9:
            dt = min(max_step_s, remaining)
            low, high = self._limits() if self.plugged else (0.0, 0.0)
            setpoint = self.setpoint_kw
            if self.valid_until is not None and self._t >= self.valid_until:
                setpoint = max(0.0, setpoint)   # the schedule expired: default profile, no discharge
            wanted = min(max(setpoint, low), high)
            self.power_kw += (wanted - self.power_kw) * (1 - math.exp(-dt / RESPONSE_TIME_S))
            hours = dt / 3600
            if self.power_kw >= 0:
                gain = self.power_kw * self.vehicle.eta_charge * hours
                gain = min(gain, self.vehicle.capacity_kwh - self.energy_kwh)
                ac = gain / self.vehicle.eta_charge
                self.energy_kwh += gain
                self.import_kwh += ac
            else:
                loss = -self.power_kw / self.vehicle.eta_discharge * hours
                loss = min(loss, self.energy_kwh)
                ac = loss * self.vehicle.eta_discharge
                self.energy_kwh -= loss
                self.export_kwh += ac
            remaining -= dt
            self._t = self._t + timedelta(seconds=dt)
        self._t = to

    # -- what the station does with a command ---------------------------------------
    def accept(self, setpoint: Setpoint) -> Ack:
        """Apply the command as the station would; returns its answer."""
        if self.behaviour.kind == "reject":
            return Ack.REJECTED
        self.setpoint_kw = float(setpoint.power_kw)
        self.valid_until = setpoint.valid_until
        return Ack.ACCEPTED

    def sample(self) -> MeterSample:
        soc = 100 * self.energy_kwh / self.vehicle.capacity_kwh if (self.reports_soc and self.plugged) else None
        return MeterSample(self.station_id, self._t, self.import_kwh, self.export_kwh, self.power_kw, soc)
