"""The narrow port between the VEN and the fleet (the aggregator).

The VEN applies every OpenADR rule itself and hands the fleet side only
*resolved, executable requests*: absolute executed times (after start
randomization and a cancellation's randomized end), an open end resolved to a
horizon, ramp-up and recovery windows as pieces, priority and overlap
arbitration (rule 18) already applied, and no OpenADR response codes. The
fleet side answers with an `Assessment` (opt in or out, why, and whether it
can act on the signal at all); the VEN turns "unsupported" into optOut 460.

What the VEN reports back (TELEMETRY_USAGE, TELEMETRY_STATUS, EiOpt
availability) it reads through one `FleetTelemetry` object given by the
composition root. `aggregator.fleet_state.view.FleetView` satisfies it
structurally; nothing here imports the aggregator.

Units: kW, kWh, UTC datetimes; sign: positive = the fleet imports.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

EVENT, RAMP, RECOVERY = "event", "ramp", "recovery"


@dataclass(frozen=True)
class RequestPiece:
    """One stretch of time the fleet is asked to act in.

    `value` is what the VTN asked for the event interval this piece belongs to
    (in the signal's units: kW for power signals, a level for SIMPLE, a price
    for ELECTRICITY_PRICE). `weight` says how far from the fleet's baseline
    toward that value's target the piece goes: 1 inside the event, the steps
    in between during ramp-up (toward the first interval) and recovery (back
    from the last one).
    """
    start: datetime
    end: datetime
    value: float
    kind: str = EVENT             # event | ramp | recovery
    weight: float = 1.0
    uid: int | None = None        # the event interval's uid
    open_ended: bool = False      # the VTN gave no end: `end` is the VEN's planning horizon


@dataclass(frozen=True)
class ExecutableRequest:
    event_id: str
    modification_number: int
    signal_name: str              # LOAD_DISPATCH | SIMPLE | LOAD_CONTROL | ELECTRICITY_PRICE | ...
    signal_type: str              # setpoint | delta | level | x-loadControlCapacity | price | ...
    pieces: tuple[RequestPiece, ...]
    units: str = ""
    priority: int = 0
    market_context: str = ""

    @property
    def intervals(self) -> tuple[RequestPiece, ...]:
        """The event's own pieces (no ramp-up or recovery steps)."""
        return tuple(p for p in self.pieces if p.kind == EVENT)


@dataclass(frozen=True)
class Assessment:
    opt: str                      # optIn | optOut
    reason: str = ""
    supported: bool = True        # False: the fleet cannot act on this signal at all (the VEN answers 460)


class WriteFailed(RuntimeError):
    """The fleet side could not durably record a request (after its own retries)."""


class FleetPort(Protocol):
    """What the VEN asks of the fleet. Implemented by `aggregator.event_intake.EventIntake`."""

    def assess(self, request: ExecutableRequest, now: datetime) -> Assessment:
        """Can the fleet serve this request (the remaining part of it, for a re-evaluation)?"""

    def execute(self, request: ExecutableRequest) -> None:
        """The request in force for this event from now on (replaces the previous one).
        Raises `WriteFailed` when it could not be recorded; nothing is executed then."""

    def withdraw(self, event_id: str) -> None:
        """Stop acting on this event (cancelled, opted out, or entirely overridden).
        Raises `WriteFailed` when it could not be recorded."""


@runtime_checkable
class FleetTelemetry(Protocol):
    """What the VEN reports to the VTN; read at report time."""

    def fleet_power_kw(self) -> float:
        """Signed fleet power (positive = import): TELEMETRY_USAGE."""

    def available_export_kw(self) -> float:
        """Export the fleet could give now, kW: TELEMETRY_STATUS upRegulationCapacityAvailable."""

    def stored_energy_kwh(self) -> float:
        """Energy in the plugged-in batteries: TELEMETRY_STATUS storedEnergy."""

    def plugged_in(self) -> int:
        """Vehicles plugged in: TELEMETRY_STATUS x-resourceStatus."""

    def availability(self) -> list[tuple[datetime, float]]:
        """(departs_at, max discharge kW) per available vehicle: the EiOpt window."""
