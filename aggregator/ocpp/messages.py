"""OCPP payloads <-> the charger port's events and setpoints. Pure functions.

Payload dicts here are in the `ocpp` package's snake_case (it converts keys at
the wire). Units at the wire: W, Wh, percent; here: kW, kWh (DESIGN: convert at
the edges). Sign: positive = the vehicle imports.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone

from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case

from aggregator.chargers.port import MeterSample, Setpoint, VehicleInfo

V21, V201 = "2.1", "2.0.1"
SUBPROTOCOLS = {"ocpp2.1": V21, "ocpp2.0.1": V201}
PROFILE_ID = 1                       # the aggregator's one TxProfile per station (replaced on each command)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _scaled(sample: dict) -> float:
    value = float(sample["value"])
    unit = sample.get("unit_of_measure") or {}
    value *= 10 ** int(unit.get("multiplier", 0) or 0)
    if unit.get("unit") in ("kWh", "kW"):
        value *= 1000.0
    return value


@dataclass(frozen=True)
class Meter:
    """What one meterValue entry says (any field may be missing)."""
    ts: datetime
    import_kwh: float | None = None
    export_kwh: float | None = None
    power_kw: float | None = None
    soc_pct: float | None = None


def read_meter_values(meter_value: list[dict] | None) -> list[Meter]:
    out = []
    for entry in meter_value or []:
        ts = parse_time(entry.get("timestamp"))
        if ts is None:
            continue
        got: dict[str, float] = {}
        for sampled in entry.get("sampled_value") or []:
            measurand = sampled.get("measurand", "Energy.Active.Import.Register")
            if sampled.get("phase"):
                continue   # totals only
            try:
                got[measurand] = _scaled(sampled)
            except (KeyError, TypeError, ValueError):
                continue
        power = None
        if "Power.Active.Import" in got or "Power.Active.Export" in got:
            power = (got.get("Power.Active.Import", 0.0) - got.get("Power.Active.Export", 0.0)) / 1000.0
        out.append(Meter(ts,
                         got["Energy.Active.Import.Register"] / 1000.0 if "Energy.Active.Import.Register" in got
                         else None,
                         got["Energy.Active.Export.Register"] / 1000.0 if "Energy.Active.Export.Register" in got
                         else None,
                         power, got.get("SoC")))
    return out


def to_sample(station_id: str, meter: Meter, last: MeterSample | None) -> MeterSample | None:
    """A complete sample from a meter entry, registers not sent carried over from the last sample."""
    imp = meter.import_kwh if meter.import_kwh is not None else (last.energy_import_kwh if last else None)
    exp = meter.export_kwh if meter.export_kwh is not None else (last.energy_export_kwh if last else 0.0)
    if imp is None:
        return None   # no register yet: nothing the ledger can count
    power = meter.power_kw if meter.power_kw is not None else (last.power_kw if last else 0.0)
    return MeterSample(station_id, meter.ts, imp, exp, power, meter.soc_pct)


def vehicle_from_needs(charging_needs: dict, *, version: str, soc_pct: float | None,
                       capacity_kwh: float | None) -> VehicleInfo:
    """NotifyEVChargingNeeds -> what the session learns about its vehicle (the driver's values win).
    Energy requests are relative to the battery now (Wh); negative min V2X energy = what may be given."""
    dc = charging_needs.get("dc_charging_parameters") or {}
    ac = charging_needs.get("ac_charging_parameters") or {}
    v2x = charging_needs.get("v2x_charging_parameters") or {} if version == V21 else {}
    capacity = dc.get("ev_energy_capacity")
    capacity_kwh = capacity / 1000.0 if capacity else capacity_kwh
    soc = soc_pct if soc_pct is not None else dc.get("state_of_charge")   # the meter's SoC is finer
    energy = soc / 100.0 * capacity_kwh if soc is not None and capacity_kwh else None
    need = floor = None
    if v2x.get("target_soc") is not None and capacity_kwh:
        need = v2x["target_soc"] / 100.0 * capacity_kwh
    elif energy is not None:
        request = v2x.get("ev_target_energy_request", dc.get("energy_amount", ac.get("energy_amount")))
        if request is not None:
            need = energy + request / 1000.0
    if energy is not None and v2x.get("ev_min_v2x_energy_request") is not None:
        floor = max(0.0, energy + v2x["ev_min_v2x_energy_request"] / 1000.0)
    max_charge = v2x.get("max_charge_power", dc.get("ev_max_power"))
    max_discharge = v2x.get("max_discharge_power") if version == V21 else 0.0
    return VehicleInfo(
        capacity_kwh=capacity_kwh, energy_kwh=energy, departs_at=parse_time(charging_needs.get("departure_time")),
        need_kwh=need, floor_kwh=floor,
        max_charge_kw=max_charge / 1000.0 if max_charge is not None else None,
        max_discharge_kw=abs(max_discharge) / 1000.0 if max_discharge is not None else None)


def _period(setpoint: Setpoint, *, version: str, max_charge_kw: float, max_discharge_kw: float) -> dict:
    """One schedule period: OCPP 2.1 CentralSetpoint (negative = discharge, W);
    OCPP 2.0.1 a charging limit only (charge-only: never below 0)."""
    if version == V21:
        watts = max(-max_discharge_kw, min(max_charge_kw, setpoint.power_kw)) * 1000.0
        return {"start_period": 0, "operation_mode": "CentralSetpoint", "setpoint": round(watts, 1),
                "limit": round(max_charge_kw * 1000.0, 1), "discharge_limit": -round(max_discharge_kw * 1000.0, 1)}
    return {"start_period": 0, "limit": round(max(0.0, min(max_charge_kw, setpoint.power_kw)) * 1000.0, 1)}


def validity_s(setpoint: Setpoint) -> int:
    return max(1, int(round((setpoint.valid_until - setpoint.valid_from).total_seconds())))


def charging_profile(setpoint: Setpoint, *, version: str, transaction_id: str, max_charge_kw: float,
                     max_discharge_kw: float, kind: str = "Absolute") -> dict:
    """The TxProfile for one setpoint. Absolute: valid from `valid_from` to `valid_until`
    (after it the station falls back to its default: no discharge). Dynamic (OCPP 2.1, updated
    by UpdateDynamicSchedule): open-ended, so the validity window becomes `dynUpdateInterval`
    (the station pulls an update when it has heard nothing for that long) and
    `maxOfflineDuration` with `invalidAfterOfflineDuration` (a station cut off from us drops it)."""
    period = _period(setpoint, version=version, max_charge_kw=max_charge_kw, max_discharge_kw=max_discharge_kw)
    profile = {"id": PROFILE_ID, "stack_level": 0, "charging_profile_purpose": "TxProfile",
               "charging_profile_kind": kind, "transaction_id": transaction_id,
               "charging_schedule": [{"id": PROFILE_ID, "charging_rate_unit": "W",
                                      "charging_schedule_period": [period]}]}
    if kind == "Dynamic":
        window = validity_s(setpoint)
        profile.update(dyn_update_interval=window, dyn_update_time=iso(setpoint.valid_from),
                       max_offline_duration=window, invalid_after_offline_duration=True)
    else:
        profile.update(valid_from=iso(setpoint.valid_from), valid_to=iso(setpoint.valid_until))
        profile["charging_schedule"][0]["start_schedule"] = iso(setpoint.valid_from)
    return profile


def schedule_update(setpoint: Setpoint, *, max_charge_kw: float, max_discharge_kw: float) -> dict:
    """UpdateDynamicSchedule's scheduleUpdate for a Dynamic CentralSetpoint profile (OCPP 2.1)."""
    period = _period(setpoint, version=V21, max_charge_kw=max_charge_kw, max_discharge_kw=max_discharge_kw)
    return {"setpoint": period["setpoint"], "limit": period["limit"], "discharge_limit": period["discharge_limit"]}


def power_from_profile(profile: dict) -> tuple[float, datetime | None, datetime | None]:
    """(kW, valid_from, valid_to) a station applies from a TxProfile (the simulator's side)."""
    schedule = profile["charging_schedule"][0]
    period = schedule["charging_schedule_period"][0]
    scale = 1.0 if schedule.get("charging_rate_unit", "W") == "W" else 0.23   # A -> kW, 230 V single phase
    if period.get("operation_mode") == "CentralSetpoint" and period.get("setpoint") is not None:
        watts = float(period["setpoint"])
    else:
        watts = max(0.0, float(period.get("limit", 0.0)))
    kw = watts / 1000.0 if scale == 1.0 else watts * scale
    return kw, parse_time(profile.get("valid_from")), parse_time(profile.get("valid_to"))


# -- wire keys: the `ocpp` package's camelCase <-> snake_case rules, cached per key --------------
@functools.lru_cache(maxsize=512)
def _camel_key(key: str) -> str:
    return next(iter(snake_to_camel_case({key: None})))


def to_camel(value):
    """snake_case keys -> the wire's camelCase, Nones dropped (the `ocpp` package's
    rules, cached per key)."""
    if isinstance(value, dict):
        return {_camel_key(k): to_camel(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [to_camel(v) for v in value if v is not None]
    return value


@functools.lru_cache(maxsize=1024)
def _snake_key(key: str) -> str:
    return next(iter(camel_to_snake_case({key: None})))


def to_snake(value):
    """The wire's camelCase keys -> snake_case (the `ocpp` package's rules, cached per key)."""
    if isinstance(value, dict):
        return {_snake_key(k): to_snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_snake(v) for v in value]
    return value
