"""Load a fleet scenario file (TOML): the vehicles plugged in and their needs.

A malformed file raises `ScenarioError` naming the vehicle and the field.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aggregator.fleet import PlugIn, VehicleSpec


class ScenarioError(ValueError):
    """The scenario file cannot be used; the message says where and why."""


class VehicleEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    kind: str = "car"
    capacity_kwh: float = Field(gt=0)
    soc_pct: float = Field(ge=0, le=100)
    reserve_pct: float = Field(ge=0, le=100)
    need_pct: float = Field(ge=0, le=100)
    departure_in_h: float = Field(gt=0)
    max_charge_kw: float = Field(ge=0)
    max_discharge_kw: float = Field(ge=0)
    eta_charge: float = Field(gt=0, le=1)
    eta_discharge: float = Field(gt=0, le=1)
    site: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "VehicleEntry":
        if self.need_pct < self.reserve_pct:
            raise ValueError(f"need_pct={self.need_pct} is below reserve_pct={self.reserve_pct}")
        return self


class ScenarioFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "unnamed"
    vehicles: list[VehicleEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "ScenarioFile":
        seen = set()
        for vehicle in self.vehicles:
            if vehicle.id in seen:
                raise ValueError(f"vehicle id {vehicle.id!r} appears twice")
            seen.add(vehicle.id)
        return self


@dataclass(frozen=True)
class ScenarioVehicle:
    spec: VehicleSpec
    session: PlugIn
    energy_kwh: float


@dataclass(frozen=True)
class Scenario:
    name: str
    vehicles: tuple[ScenarioVehicle, ...]


def _read(name_or_path: str) -> tuple[str, str]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            return str(path), path.read_text()
        except OSError as err:
            raise ScenarioError(f"scenario file {path}: {err.strerror}") from None
    shipped = resources.files("sim.scenarios").joinpath(f"{name_or_path}.toml")
    if not shipped.is_file():
        raise ScenarioError(f"no scenario named {name_or_path!r} (and no such file)")
    return f"scenario {name_or_path}", shipped.read_text()


def load_scenario(name_or_path: str, now: datetime) -> Scenario:
    """Vehicles with sessions anchored at `now` (departures are relative in the file).

    A scenario archetype of the library (`archetype = …`, e.g. `workplace`) gives the
    fleet as it stands at the busiest moment of one generated weekday, moved to `now`."""
    where, text = _read(name_or_path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{where} is not valid TOML: {err}") from None
    if "archetype" in raw:
        return _from_archetype(name_or_path, now)
    try:
        parsed = ScenarioFile.model_validate(raw)
    except ValidationError as err:
        raise ScenarioError(f"{where}: " + "; ".join(_describe(error, raw) for error in err.errors())) from None
    vehicles = []
    for v in parsed.vehicles:
        spec = VehicleSpec(id=v.id, kind=v.kind, capacity_kwh=v.capacity_kwh,
                           floor_kwh=v.capacity_kwh * v.reserve_pct / 100,
                           max_charge_kw=v.max_charge_kw, max_discharge_kw=v.max_discharge_kw,
                           eta_charge=v.eta_charge, eta_discharge=v.eta_discharge, site=v.site)
        session = PlugIn(vehicle_id=v.id, arrived_at=now,
                         departs_at=now + timedelta(hours=v.departure_in_h),
                         need_kwh=v.capacity_kwh * v.need_pct / 100)
        vehicles.append(ScenarioVehicle(spec, session, v.capacity_kwh * v.soc_pct / 100))
    return Scenario(parsed.name, tuple(vehicles))


def _from_archetype(name_or_path: str, now: datetime, seed: int = 0) -> Scenario:
    """One generated weekday of the archetype (sim/history.py, its documented distributions):
    the vehicles plugged in at that day's busiest moment, with their remaining dwell and
    their energy then (charged at full power since arrival, as the bound assumes)."""
    from datetime import date

    import numpy as np

    from sim.history import generate_history, load_archetype
    arch = load_archetype(name_or_path)
    day = date(2025, 7, 16)   # a summer Wednesday: school-bus depots have their summer pattern
    table = generate_history(arch, day, day, seed=seed)
    if len(table) == 0:
        raise ScenarioError(f"scenario {name_or_path}: the generated day has no sessions")
    moments = np.unique(table.arrived_s)
    present = [(np.sum((table.arrived_s <= t) & (table.departs_s > t + 1800)), t) for t in moments]
    _count, t = max(present)
    here = np.flatnonzero((table.arrived_s <= t) & (table.departs_s > t + 1800))
    vehicles = []
    for i in here:
        vid = str(table.vehicle_id[i])
        capacity = float(table.capacity_kwh[i])
        charged = float(table.eta_charge[i] * table.max_charge_kw[i] * (t - table.arrived_s[i]) / 3600)
        energy = min(capacity, float(table.energy_at_arrival_kwh[i]) + charged)
        spec = VehicleSpec(id=vid, kind=str(table.kind[i]), capacity_kwh=capacity,
                           floor_kwh=float(table.floor_kwh[i]), max_charge_kw=float(table.max_charge_kw[i]),
                           max_discharge_kw=float(table.max_discharge_kw[i]), eta_charge=float(table.eta_charge[i]),
                           eta_discharge=float(table.eta_discharge[i]), site=int(table.site[i]))
        departs = now + timedelta(seconds=float(table.departs_s[i] - t))
        vehicles.append(ScenarioVehicle(spec, PlugIn(vid, now, departs, float(table.need_kwh[i])), energy))
    return Scenario(arch.name, tuple(vehicles))


def _describe(error: dict, raw: dict) -> str:
    loc = list(error["loc"])
    if len(loc) >= 2 and loc[0] == "vehicles" and isinstance(loc[1], int):
        entries = raw.get("vehicles") or []
        vid = entries[loc[1]].get("id", f"#{loc[1] + 1}") if loc[1] < len(entries) else f"#{loc[1] + 1}"
        field = ".".join(str(p) for p in loc[2:]) or "entry"
        prefix = f"vehicle {vid}: {field}"
    else:
        prefix = ".".join(str(p) for p in loc) or "file"
    if error["type"] == "extra_forbidden":
        return f"{prefix}: unknown key"
    return f"{prefix}: {error['msg']}" + (f" (got {error['input']!r})" if "input" in error and not isinstance(error["input"], dict) else "")
