"""Season history generator: plug-in sessions drawn from a scenario archetype
(sim/scenarios/<name>.toml with ``archetype = ...``; distributions documented in
sim/scenarios/README.md), as a `bidding.history.SessionTable` (pure, seeded) and
written into the database registry (Vehicle, PlugSession).

    python -m sim.history --scenario workplace --season 2025 --database sqlite:///v2x.db

Day-level correlation: every day draws shared shocks z ~ N(0, 1) that move every
vehicle's plug-in probability, arrival time and arrival SoC together (a hot day,
a holiday, a school trip), so the forecast cannot treat vehicles as independent.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from bidding.history import SessionTable

__all__ = ["Archetype", "ARCHETYPES", "load_archetype", "generate_history", "write_history", "season_dates"]

ARCHETYPES = ("school_bus_depot", "workplace", "residential_evenings")


@dataclass(frozen=True)
class Archetype:
    name: str
    description: str
    timezone: str
    plug_shock_sd: float
    arrival_shock_sd_h: float
    soc_shock_sd_pct: float
    summer: tuple[tuple[int, int], tuple[int, int]] | None
    groups: tuple[dict, ...]

    def profile(self, group: dict, day: date) -> list[dict]:
        """The session templates of `group` on local date `day`."""
        if day.weekday() >= 5:
            return group.get("weekend", [])
        if self.summer and self.summer[0] <= (day.month, day.day) <= self.summer[1] and "summer" in group:
            return group["summer"]
        return group.get("weekday", [])

    @property
    def vehicles(self) -> int:
        return sum(int(g["count"]) for g in self.groups)

    @property
    def nameplate_discharge_kw(self) -> float:
        return float(sum(int(g["count"]) * float(g["max_discharge_kw"]) for g in self.groups))


def _md(text: str) -> tuple[int, int]:
    m, d = text.split("-")
    return int(m), int(d)


def load_archetype(name_or_path: str) -> Archetype:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        text = path.read_text()
    else:
        res = resources.files("sim.scenarios").joinpath(f"{name_or_path}.toml")
        if not res.is_file():
            raise ValueError(f"no scenario archetype named {name_or_path!r}; shipped: {', '.join(ARCHETYPES)}")
        text = res.read_text()
    raw = tomllib.loads(text)
    if "archetype" not in raw:
        raise ValueError(f"{name_or_path} is a demo fleet file, not a scenario archetype (no `archetype` key)")
    groups = tuple(raw["groups"])
    for g in groups:
        for key in ("kind", "count", "capacity_kwh", "reserve_pct", "max_charge_kw", "max_discharge_kw"):
            if key not in g:
                raise ValueError(f"archetype {raw['archetype']}: group {g.get('kind', '?')} has no {key}")
    summer = (_md(raw["summer_start"]), _md(raw["summer_end"])) if "summer_start" in raw else None
    return Archetype(raw["archetype"], raw.get("description", ""), raw.get("timezone", "America/New_York"),
                     float(raw.get("plug_shock_sd", 0.0)), float(raw.get("arrival_shock_sd_h", 0.0)),
                     float(raw.get("soc_shock_sd_pct", 0.0)), summer, groups)


def season_dates(year: int) -> tuple[date, date]:
    """History for a season: April 1 (lookback for the first June events) to September 30."""
    return date(year, 4, 1), date(year, 9, 30)


def generate_history(arch: Archetype, start: date, end: date, seed: int = 0) -> SessionTable:
    """Sessions arriving on local dates start..end (inclusive). Pure and seeded.

    Per vehicle and session template: plugged ~ Bernoulli(plug_prob + plug_shock);
    arrival ~ N(mean + arrival_shock, sd); dwell ~ N(mean, sd) (>= 0.5 h), the
    announced departure rounded to 15 min; SoC at arrival ~ N(mean - soc_shock, sd)
    clipped to [reserve + 2 %, 100 %]; need ~ N clipped to [reserve, 100 %], or 100 %
    with `override_prob`; with `early_departure_prob` the vehicle leaves after
    30-90 % of its dwell. A session never overlaps the same vehicle's next one.
    """
    rng = np.random.default_rng(seed)
    tz = ZoneInfo(arch.timezone)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    vehicles = []   # (id, group)
    for g in arch.groups:
        caps = rng.choice(np.asarray(g["capacity_kwh"], dtype=float), size=int(g["count"]))
        for i in range(int(g["count"])):
            vehicles.append((f"{g['kind']}-{len(vehicles) + 1:03d}", g, float(caps[i])))
    cols: dict[str, list] = {k: [] for k in ("vehicle_id", "kind", "site", "arrived_s", "departs_s", "left_s",
                                             "energy_at_arrival_kwh", "need_kwh", "capacity_kwh", "floor_kwh",
                                             "max_charge_kw", "max_discharge_kw", "eta_charge", "eta_discharge")}
    last_end = {vid: -np.inf for vid, _, _ in vehicles}
    for day in days:
        z_plug, z_arr, z_soc = rng.standard_normal(3)
        midnight = datetime.combine(day, time(0), tzinfo=tz)
        for vid, g, cap in vehicles:
            for tpl in arch.profile(g, day):
                p = float(np.clip(tpl["plug_prob"] + arch.plug_shock_sd * z_plug, 0.0, 1.0))
                u = rng.random(8)
                if u[0] >= p:
                    continue
                arr_h = tpl["arrival_h"][0] + arch.arrival_shock_sd_h * z_arr + tpl["arrival_h"][1] * _norm(u[1])
                dwell = max(0.5, tpl["dwell_h"][0] + tpl["dwell_h"][1] * _norm(u[2]))
                arrived = (midnight + timedelta(hours=float(arr_h))).astimezone(timezone.utc)
                a_s = arrived.timestamp()
                if a_s < last_end[vid] + 600:
                    a_s = last_end[vid] + 600
                d_s = a_s + round(dwell * 4) / 4 * 3600
                reserve = float(g["reserve_pct"])
                soc = float(np.clip(tpl["soc_pct"][0] - arch.soc_shock_sd_pct * z_soc + tpl["soc_pct"][1] * _norm(u[3]),
                                    reserve + 2.0, 100.0))
                need = float(np.clip(tpl["need_pct"][0] + tpl["need_pct"][1] * _norm(u[4]), reserve, 100.0))
                if u[5] < float(g.get("override_prob", 0.0)):
                    need = 100.0
                left = d_s
                if u[6] < float(g.get("early_departure_prob", 0.0)):
                    left = a_s + (0.3 + 0.6 * u[7]) * (d_s - a_s)
                last_end[vid] = max(d_s, left)
                cols["vehicle_id"].append(vid)
                cols["kind"].append(g["kind"])
                cols["site"].append(int(g.get("site", 0)))
                cols["arrived_s"].append(a_s)
                cols["departs_s"].append(d_s)
                cols["left_s"].append(left)
                cols["energy_at_arrival_kwh"].append(cap * soc / 100)
                cols["need_kwh"].append(cap * need / 100)
                cols["capacity_kwh"].append(cap)
                cols["floor_kwh"].append(cap * reserve / 100)
                cols["max_charge_kw"].append(float(g["max_charge_kw"]))
                cols["max_discharge_kw"].append(float(g["max_discharge_kw"]))
                cols["eta_charge"].append(float(g.get("eta_charge", 0.93)))
                cols["eta_discharge"].append(float(g.get("eta_discharge", 0.93)))
    return SessionTable(**{k: np.asarray(v) for k, v in cols.items()})


def _norm(u: float) -> float:
    """Standard normal from one uniform (inverse CDF), so every draw uses a fixed number of uniforms."""
    from statistics import NormalDist
    return NormalDist().inv_cdf(min(max(u, 1e-12), 1 - 1e-12))


def write_history(engine, table: SessionTable, arch: Archetype | None = None) -> int:
    """Write the vehicles and their (closed) sessions into the registry; returns sessions written.
    Vehicles already registered are kept as they are."""
    from sqlmodel import Session, select

    from aggregator.store.models import PlugSession, Vehicle
    from bidding.history import from_epoch
    with Session(engine) as s:
        known = set(s.exec(select(Vehicle.id)).all())
        seen = set()
        for i in range(len(table)):
            vid = str(table.vehicle_id[i])
            if vid in known or vid in seen:
                continue
            seen.add(vid)
            s.add(Vehicle(id=vid, kind=str(table.kind[i]), capacity_kwh=float(table.capacity_kwh[i]),
                          floor_kwh=float(table.floor_kwh[i]), max_charge_kw=float(table.max_charge_kw[i]),
                          max_discharge_kw=float(table.max_discharge_kw[i]), eta_charge=float(table.eta_charge[i]),
                          eta_discharge=float(table.eta_discharge[i]), site=int(table.site[i])))
        s.commit()
        rows = []
        for i in range(len(table)):
            left = table.left_s[i]
            energy_dep = min(float(table.capacity_kwh[i]), max(float(table.need_kwh[i]), float(table.energy_at_arrival_kwh[i])))
            rows.append(PlugSession(
                vehicle_id=str(table.vehicle_id[i]), station_id=f"st-{table.vehicle_id[i]}",
                arrived_at=from_epoch(table.arrived_s[i]), departs_at=from_epoch(table.departs_s[i]),
                energy_at_arrival_kwh=float(table.energy_at_arrival_kwh[i]), need_kwh=float(table.need_kwh[i]),
                left_at=None if np.isnan(left) else from_epoch(left),
                energy_at_departure_kwh=None if np.isnan(left) else energy_dep,
                closed_reason=None if np.isnan(left) else "departed"))
        s.add_all(rows)
        s.commit()
    return len(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.history",
                                     description="write a season of simulated plug-in sessions into the database")
    parser.add_argument("--scenario", required=True, help=f"archetype name ({', '.join(ARCHETYPES)}) or TOML path")
    parser.add_argument("--season", type=int, required=True, help="year: sessions from April 1 to September 30")
    parser.add_argument("--database", required=True, help="database URL (an empty one is initialised)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from aggregator.store.db import make_engine
    arch = load_archetype(args.scenario)
    start, end = season_dates(args.season)
    table = generate_history(arch, start, end, seed=args.seed)
    engine = make_engine(args.database)
    try:
        n = write_history(engine, table, arch)
    finally:
        engine.dispose()
    print(f"{args.database}: {n} sessions of {arch.vehicles} vehicles ({arch.name}, {start} to {end})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
