"""Vehicles, stations, plug-in sessions, the fleet now and its alerts (sites: sites.py).

The live view comes from the fleet-state registry (the API's read model, in this
process); history (closed sessions) from the database. Writes go through the
registry, which writes them through to the database."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Annotated, Union

from aiohttp_pydantic.oas.typing import r200
from pydantic import Field
from sqlmodel import Session, select

from aggregator.api import schemas as s
from aggregator.api.http import OPTIONS, ApiView, Conflict, Denied, allow, finite, invalid, ok, problem
from aggregator.api.sites import site_summaries
from aggregator.fleet import VehicleSpec
from aggregator.fleet_state.registry import StationSpec
from aggregator.store.db import as_utc
from aggregator.store.models import PlugSession

MAX_DEPARTURE_AHEAD = timedelta(days=7)
Limit = Annotated[int, Field(ge=1, le=10_000)]
Offset = Annotated[int, Field(ge=0, le=10_000_000)]


# -- reading the registry ----------------------------------------------------------------------
def _live_of(registry, vehicle_id: str):
    return next((live for live in registry.plugged() if live.session.vehicle_id == vehicle_id), None)


def _session_now(registry, live) -> s.SessionNow:
    capacity = live.spec.capacity_kwh
    energy = finite(registry.energy_kwh(live))
    return s.SessionNow(
        station_id=live.station.id, arrived_at=live.plug.arrived_at, departs_at=live.plug.departs_at,
        need_kwh=live.plug.need_kwh, target_soc_pct=100 * live.plug.need_kwh / capacity if capacity else 0.0,
        energy_kwh=energy, soc_pct=None if energy is None or not capacity else 100 * energy / capacity,
        soc_reported=bool(live.soc_known), power_kw=finite(live.last.power_kw) if live.last else None,
        online=bool(live.online), no_export=getattr(live, "no_export", None))


def _vehicle(registry, spec: VehicleSpec) -> s.Vehicle:
    live = _live_of(registry, spec.id)
    return s.Vehicle(id=spec.id, kind=spec.kind, capacity_kwh=spec.capacity_kwh, floor_kwh=spec.floor_kwh,
                     max_charge_kw=spec.max_charge_kw, max_discharge_kw=spec.max_discharge_kw,
                     eta_charge=spec.eta_charge, eta_discharge=spec.eta_discharge, site=spec.site,
                     session=_session_now(registry, live) if live is not None else None)


def _station(live) -> s.Station:
    spec = live.station
    return s.Station(id=spec.id, site=spec.site, max_charge_kw=spec.max_charge_kw,
                     max_discharge_kw=spec.max_discharge_kw, online=bool(live.online),
                     available=live.unavailable_since is None,
                     vehicle_id=live.session.vehicle_id if live.session is not None else None,
                     power_kw=finite(live.last.power_kw) if live.last else None,
                     last_sample_at=live.last.ts if live.last else None)


def _session_row(row: PlugSession) -> s.PlugSession:
    return s.PlugSession(id=row.id, vehicle_id=row.vehicle_id, station_id=row.station_id,
                         arrived_at=as_utc(row.arrived_at), departs_at=as_utc(row.departs_at),
                         energy_at_arrival_kwh=row.energy_at_arrival_kwh, need_kwh=row.need_kwh,
                         left_at=as_utc(row.left_at) if row.left_at else None,
                         energy_at_departure_kwh=finite(row.energy_at_departure_kwh),
                         closed_reason=row.closed_reason)


def alerts(core, require_ven: bool) -> list[s.Alert]:
    registry = core.registry
    found: list[s.Alert] = []
    if registry.database_errors:
        found.append(s.Alert(severity="critical", kind="database", subject="fleet state",
                             message=f"{registry.database_errors} failed writes of fleet state (kept for retry)"))
    if require_ven and core.ven.registration_id is None:
        found.append(s.Alert(severity="critical", kind="ven", subject=core.settings.ven.vtn_url,
                             message="the VEN is not registered at the VTN"))
    for station_id, live in sorted(registry.stations.items()):
        if live.session is None:
            continue
        who = live.session.vehicle_id
        if not live.online:
            found.append(s.Alert(severity="warning", kind="station_offline", subject=station_id,
                                 message=f"offline with {who} plugged in"))
        elif live.unavailable_since is not None:
            found.append(s.Alert(severity="warning", kind="station_unavailable", subject=station_id,
                                 message=f"not accepting commands since {live.unavailable_since.isoformat()}"))
        if getattr(live, "soc_stale", False):
            found.append(s.Alert(severity="warning", kind="soc_stale", subject=station_id,
                                 message=f"no SoC from {who} lately: not discharged until it reports again"))
    return found


# -- views -------------------------------------------------------------------------------------
class MeView(ApiView):
    roles = allow(GET="driver operator utility")

    async def get(self) -> Union[r200[s.Me], Denied]:
        """Who the token is: its role and, for a driver, its vehicle.

        Tags: auth
        Security: bearerAuth
        """
        return ok(s.Me(role=self.principal.role, vehicle_id=self.principal.vehicle_id))


class VehiclesView(ApiView):
    roles = allow(GET="driver operator")

    async def get(self, site: int | None = None, limit: Limit = 1000, offset: Offset = 0
                  ) -> Union[r200[list[s.Vehicle]], Denied]:
        """The vehicle catalogue with each vehicle's open session (a driver sees only its own vehicle).

        Tags: vehicles
        Security: bearerAuth
        """
        registry = self.core.registry
        specs = sorted(registry.vehicles.values(), key=lambda v: v.id)
        if self.principal.role == "driver":
            specs = [v for v in specs if v.id == self.principal.vehicle_id]
        if site is not None:
            specs = [v for v in specs if v.site == site]
        return ok([_vehicle(registry, spec) for spec in specs[offset:offset + limit]])


class VehicleView(ApiView):
    roles = allow(GET="driver operator", PUT="operator")

    async def get(self, vehicle_id: s.Id, /) -> Union[r200[s.Vehicle], Denied]:
        """One vehicle and its open session (SoC, departure, target, boost or opt-out).

        Tags: vehicles
        Security: bearerAuth
        """
        spec = self.core.registry.vehicles.get(vehicle_id)
        if spec is None:
            return problem(404, "no such vehicle")
        return ok(_vehicle(self.core.registry, spec))

    async def put(self, vehicle_id: s.Id, /, body: s.VehicleIn) -> Union[r200[s.Vehicle], Denied]:
        """Add a vehicle to the catalogue or replace its description (operators).

        Tags: vehicles
        Security: bearerAuth
        """
        if body.floor_kwh > body.capacity_kwh:
            return invalid("body.floor_kwh", "must not exceed capacity_kwh")
        registry = self.core.registry
        spec = VehicleSpec(vehicle_id, body.kind, body.capacity_kwh, body.floor_kwh, body.max_charge_kw,
                           body.max_discharge_kw, body.eta_charge, body.eta_discharge, body.site)
        registry.register_vehicles([spec])
        if not registry.persist():
            return problem(503, "database unavailable; the change is kept and written at the next step")
        return ok(_vehicle(registry, spec))


class VehicleSessionView(ApiView):
    roles = allow(PATCH="driver operator")

    async def patch(self, vehicle_id: s.Id, /, body: s.DriverRequest) -> Union[r200[s.Vehicle], Denied, Conflict]:
        """A driver's change to the plugged-in vehicle: departure, target (SoC % or kWh), reserve,
        boost or opt-out. The next plan honours it. 409 when the vehicle is not plugged in.

        Tags: vehicles
        Security: bearerAuth
        """
        core = self.core
        registry = core.registry
        spec = registry.vehicles.get(vehicle_id)
        if spec is None:
            return problem(404, "no such vehicle")
        fields = body.model_fields_set
        if not fields:
            return invalid("body", "nothing to change")
        if body.target_soc_pct is not None and body.need_kwh is not None:
            return invalid("body.need_kwh", "give target_soc_pct or need_kwh, not both")
        live = _live_of(registry, vehicle_id)
        if live is None:
            return problem(409, "the vehicle is not plugged in")
        capacity = live.spec.capacity_kwh
        now = core.clock()
        if body.departs_at is not None:
            if body.departs_at <= now:
                return invalid("body.departs_at", "must be in the future")
            if body.departs_at > now + MAX_DEPARTURE_AHEAD:
                return invalid("body.departs_at", "must be within 7 days")
        need = body.need_kwh
        if body.target_soc_pct is not None:
            need = body.target_soc_pct / 100 * capacity
        if need is not None and need > capacity + 1e-9:
            return invalid("body.need_kwh", f"more than the battery holds ({capacity:g} kWh)")
        if body.reserve_kwh is not None and body.reserve_kwh > capacity:
            return invalid("body.reserve_kwh", f"more than the battery holds ({capacity:g} kWh)")
        # Everything is valid: now change (the registry's one call, then the catalogue's reserve).
        # boost / opt_out given as false undo an earlier boost / opt-out; left out, they stay as they are;
        # a reserve applies to this session's plan now and, through the catalogue, to later plug-ins.
        boost = body.boost if "boost" in fields else None
        opt_out = body.opt_out if "opt_out" in fields else None
        if (body.departs_at is not None or need is not None or boost is not None or opt_out is not None
                or body.reserve_kwh is not None):
            registry.driver_update(vehicle_id, departs_at=body.departs_at, need_kwh=need, boost=boost,
                                   opt_out=opt_out, reserve_kwh=body.reserve_kwh)
        if body.reserve_kwh is not None and body.reserve_kwh != spec.floor_kwh:
            registry.register_vehicles([replace(spec, floor_kwh=body.reserve_kwh)])
        if not registry.persist():
            return problem(503, "database unavailable; the change is kept and written at the next step")
        return ok(_vehicle(registry, registry.vehicles[vehicle_id]))


class VehicleSessionsView(ApiView):
    roles = allow(GET="driver operator")

    async def get(self, vehicle_id: s.Id, /, limit: Limit = 100, offset: Offset = 0
                  ) -> Union[r200[list[s.PlugSession]], Denied]:
        """The vehicle's plug-in sessions, newest first.

        Tags: sessions
        Security: bearerAuth
        """
        if vehicle_id not in self.core.registry.vehicles:
            return problem(404, "no such vehicle")
        with Session(self.core.engine) as db:
            rows = db.exec(select(PlugSession).where(PlugSession.vehicle_id == vehicle_id)
                           .order_by(PlugSession.arrived_at.desc()).offset(offset).limit(limit)).all()
            return ok([_session_row(row) for row in rows])


class SessionsView(ApiView):
    roles = allow(GET="operator")

    async def get(self, vehicle_id: s.Id | None = None, open: bool | None = None, limit: Limit = 100,
                  offset: Offset = 0) -> Union[r200[list[s.PlugSession]], Denied]:
        """Plug-in sessions, newest first (open: only open or only closed ones).

        Tags: sessions
        Security: bearerAuth
        """
        query = select(PlugSession)
        if vehicle_id is not None:
            query = query.where(PlugSession.vehicle_id == vehicle_id)
        if open is True:
            query = query.where(PlugSession.left_at.is_(None))
        elif open is False:
            query = query.where(PlugSession.left_at.is_not(None))
        with Session(self.core.engine) as db:
            rows = db.exec(query.order_by(PlugSession.arrived_at.desc()).offset(offset).limit(limit)).all()
            return ok([_session_row(row) for row in rows])


class StationsView(ApiView):
    roles = allow(GET="operator")

    async def get(self, site: int | None = None, limit: Limit = 1000, offset: Offset = 0
                  ) -> Union[r200[list[s.Station]], Denied]:
        """The stations, online or not, with the vehicle plugged into each.

        Tags: stations
        Security: bearerAuth
        """
        lives = [live for _, live in sorted(self.core.registry.stations.items())
                 if site is None or live.station.site == site]
        return ok([_station(live) for live in lives[offset:offset + limit]])


class StationView(ApiView):
    roles = allow(GET="operator", PUT="operator")

    async def get(self, station_id: s.Id, /) -> Union[r200[s.Station], Denied]:
        """One station.

        Tags: stations
        Security: bearerAuth
        """
        live = self.core.registry.stations.get(station_id)
        if live is None:
            return problem(404, "no such station")
        return ok(_station(live))

    async def put(self, station_id: s.Id, /, body: s.StationIn) -> Union[r200[s.Station], Denied]:
        """Add a station or change its site and limits (operators). OCPP credentials are
        `v2x stations add`'s.

        Tags: stations
        Security: bearerAuth
        """
        registry = self.core.registry
        registry.register_station(StationSpec(station_id, body.site, body.max_charge_kw, body.max_discharge_kw))
        if not registry.persist():
            return problem(503, "database unavailable; the change is kept and written at the next step")
        return ok(_station(registry.stations[station_id]))


class FleetView(ApiView):
    roles = allow(GET="operator")

    async def get(self) -> Union[r200[s.Fleet], Denied]:
        """The fleet now: stations online, vehicles plugged in, power, stored energy, export available.

        Tags: fleet
        Security: bearerAuth
        """
        core = self.core
        registry = core.registry
        now = core.clock()
        return ok(s.Fleet(
            at=now, stations=len(registry.stations),
            stations_online=sum(1 for live in registry.stations.values() if live.online),
            plugged_in=registry.plugged_in(), power_kw=finite(registry.fleet_power_kw()) or 0.0,
            stored_energy_kwh=finite(registry.stored_energy_kwh()) or 0.0,
            available_export_kw=finite(registry.available_export_kw(now)) or 0.0, sites=site_summaries(core)))


class AlertsView(ApiView):
    roles = allow(GET="operator")

    async def get(self) -> Union[r200[list[s.Alert]], Denied]:
        """What needs an operator's attention: stations offline or refusing commands with a vehicle
        plugged in, stale SoC, failed database writes, an unregistered VEN.

        Tags: fleet
        Security: bearerAuth
        """
        return ok(alerts(self.core, self.request.app[OPTIONS]["require_ven"]))
