"""The event-driven charger port: what the dispatcher needs from any station
(simulated, OCPP 2.1, OCPP 2.0.1), and what stations tell the fleet state.

Commands carry a schedule with a validity window and resolve to an
acknowledgement: real stations answer late, reject or vanish, and the
dispatcher must know which. Stations push events (sessions, meter samples,
offline/online) into the fleet-state registry; nothing here pulls.
Units: kW, kWh; sign: positive = the vehicle imports (charges).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Awaitable, Protocol, Union


class Ack(str, Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"      # the station answered no (e.g. profile not supported)
    TIMED_OUT = "timed_out"    # no answer before the deadline
    OFFLINE = "offline"        # not connected: nothing was sent


@dataclass(frozen=True)
class Setpoint:
    """Hold `power_kw` from `valid_from` until `valid_until` (after it, the station
    falls back to its default: charge-only, no discharge)."""
    station_id: str
    power_kw: float
    valid_from: datetime
    valid_until: datetime


@dataclass(frozen=True)
class CommandResult:
    station_id: str
    ack: Ack
    detail: str = ""


# -- what stations emit ----------------------------------------------------------
@dataclass(frozen=True)
class VehicleInfo:
    """What a station knows about the vehicle in a session (any field may be unknown).
    OCPP gets these from NotifyEVChargingNeeds; a driver's values win over defaults."""
    vehicle_id: str | None = None
    capacity_kwh: float | None = None
    energy_kwh: float | None = None          # energy in the battery now (from SoC)
    departs_at: datetime | None = None
    need_kwh: float | None = None            # energy wanted at departure
    floor_kwh: float | None = None           # reserve the driver keeps
    max_charge_kw: float | None = None
    max_discharge_kw: float | None = None


@dataclass(frozen=True)
class SessionStarted:
    station_id: str
    ts: datetime
    vehicle: VehicleInfo = VehicleInfo()


@dataclass(frozen=True)
class VehicleIdentified:
    """A running session learns more about its vehicle (id, needs, limits)."""
    station_id: str
    ts: datetime
    vehicle: VehicleInfo


@dataclass(frozen=True)
class SessionEnded:
    station_id: str
    ts: datetime


@dataclass(frozen=True)
class MeterSample:
    station_id: str
    ts: datetime
    energy_import_kwh: float   # cumulative register, grid -> vehicle (AC side)
    energy_export_kwh: float   # cumulative register, vehicle -> grid
    power_kw: float            # signed, positive = import
    soc_pct: float | None = None   # most AC stations never report it


@dataclass(frozen=True)
class StationOffline:
    station_id: str
    ts: datetime


@dataclass(frozen=True)
class StationOnline:
    station_id: str
    ts: datetime


StationEvent = Union[SessionStarted, VehicleIdentified, SessionEnded, MeterSample, StationOffline, StationOnline]


class StationEventSink(Protocol):
    def on_station_event(self, event: StationEvent) -> None: ...


class ChargerPort(Protocol):
    """Both methods return an awaitable: a coroutine (`async def`), or a future, which
    lets a driver that answers at once skip a task per station in a 10,000-station fan-out."""

    def command(self, setpoint: Setpoint) -> Awaitable[CommandResult]:
        """Send one station its schedule; resolves when it answers (or never: the
        caller applies the deadline). Must not raise for a station that is offline."""

    def request_meter_values(self, station_id: str) -> Awaitable[None]:
        """Ask for a meter sample now (OCPP TriggerMessage MeterValues); it arrives as an event."""
