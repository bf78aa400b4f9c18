"""A network of simulated stations behind the charger port, built from a scenario.

It behaves as real stations do toward the aggregator: sessions start when a
vehicle plugs in (with what the vehicle tells: id, needs, SoC if it reports
it), meter samples arrive every `sample_interval` of simulated time and on
request, the vehicle leaves at its departure time (a last sample, then the
session ends), commands are answered by each station (accepted, rejected, late
or never), and an offline station answers nothing and sends nothing.
The simulation's clock is advanced by whoever runs it (`advance(to)`).
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlmodel import Session, select

from aggregator.chargers.port import (Ack, CommandResult, SessionEnded, SessionStarted, Setpoint, StationEventSink,
                                      StationOffline, StationOnline, VehicleInfo)
from aggregator.fleet_state.registry import StationSpec
from aggregator.store.models import MeterReading
from sim.scenario import load_scenario
from sim.station import Behaviour, SimulatedStation


def station_id_for(vehicle_id: str) -> str:
    return f"cp-{vehicle_id}"


class SimulatedStations:
    """Implements `ChargerPort`; pushes station events into `sink` (the fleet registry)."""

    def __init__(self, sink: StationEventSink, sample_interval: timedelta = timedelta(seconds=5)):
        self.sink = sink
        self.sample_interval = sample_interval
        self.stations: dict[str, SimulatedStation] = {}
        self.departures: dict[str, datetime] = {}
        self.needs: dict[str, float] = {}
        self._next_sample: dict[str, datetime] = {}

    # -- the simulated world ---------------------------------------------------------
    def add(self, station: SimulatedStation, departs_at: datetime, need_kwh: float) -> None:
        self.stations[station.station_id] = station
        self.departures[station.station_id] = departs_at
        self.needs[station.station_id] = need_kwh

    def station_specs(self) -> list[StationSpec]:
        return [StationSpec(s.station_id, s.vehicle.site, s.vehicle.max_charge_kw, s.vehicle.max_discharge_kw)
                for s in self.stations.values()]

    def plug_in_all(self) -> None:
        """Every station boots (online) and announces its session, if it has one, with a first sample."""
        for sid, station in self.stations.items():
            if station.online:
                self.sink.on_station_event(StationOnline(sid, station.now))
            if station.plugged and station.online:
                self._announce(station)

    def _announce(self, station: SimulatedStation) -> None:
        v = station.vehicle
        info = VehicleInfo(vehicle_id=v.id, capacity_kwh=v.capacity_kwh,
                           energy_kwh=station.energy_kwh if station.reports_soc else None,
                           departs_at=self.departures[station.station_id], need_kwh=self.needs[station.station_id],
                           floor_kwh=v.floor_kwh, max_charge_kw=v.max_charge_kw, max_discharge_kw=v.max_discharge_kw)
        self.sink.on_station_event(SessionStarted(station.station_id, station.now, info))
        self.sink.on_station_event(station.sample())
        self._next_sample[station.station_id] = station.now + self.sample_interval

    def advance(self, to: datetime, max_step_s: float = 1.0) -> None:
        for sid, station in self.stations.items():
            departs = self.departures[sid]
            if station.plugged and departs <= to:
                station.advance(max(departs, station.now), max_step_s)
                self._leave(station)
            station.advance(to, max_step_s)
            if station.plugged and station.online and to >= self._next_sample.get(sid, to):
                self.sink.on_station_event(station.sample())
                self._next_sample[sid] = to + self.sample_interval

    def _leave(self, station: SimulatedStation) -> None:
        """The driver unplugs: the station meters the end and closes the session."""
        if station.online:
            self.sink.on_station_event(station.sample())
            self.sink.on_station_event(SessionEnded(station.station_id, station.now))
        station.plugged = False
        station.setpoint_kw = 0.0

    def set_online(self, station_id: str, online: bool) -> None:
        station = self.stations[station_id]
        if station.online == online:
            return
        station.online = online
        if online:
            self.sink.on_station_event(StationOnline(station_id, station.now))
            if station.plugged:
                self._announce(station)
        else:
            self.sink.on_station_event(StationOffline(station_id, station.now))

    @property
    def last_departure(self) -> datetime:
        return max(self.departures.values())

    @property
    def any_plugged(self) -> bool:
        return any(s.plugged for s in self.stations.values())

    def export_register_kwh(self) -> float:
        """Net export of all the simulated meters (for progress lines only)."""
        return sum(s.export_kwh - s.import_kwh for s in self.stations.values())

    # -- ChargerPort ---------------------------------------------------------------------
    # A station that answers at once returns a finished future (no task per command: 10,000
    # stations answering is then cheap); a late or silent one a coroutine that waits.
    def command(self, setpoint: Setpoint):
        station = self.stations.get(setpoint.station_id)
        if station is None or not station.online:
            return _done(CommandResult(setpoint.station_id, Ack.OFFLINE, "not connected"))
        if station.behaviour.kind in ("silent", "late"):
            return self._answer_later(station, setpoint)
        return _done(CommandResult(setpoint.station_id, station.accept(setpoint)))

    async def _answer_later(self, station: SimulatedStation, setpoint: Setpoint) -> CommandResult:
        if station.behaviour.kind == "silent":
            await asyncio.Event().wait()   # never answers; the caller's deadline ends it
        await asyncio.sleep(station.behaviour.late_s)
        return CommandResult(setpoint.station_id, station.accept(setpoint))

    def request_meter_values(self, station_id: str):
        station = self.stations.get(station_id)
        if station is not None and station.online and station.plugged:
            self.sink.on_station_event(station.sample())
        return _done(None)


def _done(value):
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


class SimulatedFleet(SimulatedStations):
    """The scenario's vehicles, one simulated station each (station id `cp-<vehicle>`)."""

    def __init__(self, sink: StationEventSink, scenario_name: str, now: datetime,
                 sample_interval: timedelta = timedelta(seconds=5), behaviours: dict[str, Behaviour] | None = None,
                 reports_soc: bool = True, skip_plug_in: set[str] = frozenset()):
        super().__init__(sink, sample_interval)
        self.scenario = load_scenario(scenario_name, now)
        behaviours = behaviours or {}
        for v in self.scenario.vehicles:
            sid = station_id_for(v.spec.id)
            station = SimulatedStation(sid, v.spec, v.energy_kwh, now, reports_soc=reports_soc,
                                       behaviour=behaviours.get(v.spec.id))
            station.plugged = v.spec.id not in skip_plug_in   # e.g. a vehicle that left while we were down
            self.add(station, v.session.departs_at, v.session.need_kwh)

    @property
    def specs(self):
        return [v.spec for v in self.scenario.vehicles]

    def resume_from_ledger(self, engine) -> int:
        """Continue each simulated station from its last meter reading, as a real station
        keeps its registers and the vehicle its battery across our restart. Returns how many resumed."""
        resumed = 0
        with Session(engine) as db:
            for station in self.stations.values():
                last = db.exec(select(MeterReading).where(MeterReading.source == station.station_id)
                               .order_by(MeterReading.ts.desc()).limit(1)).first()
                if last is None:
                    continue
                station.import_kwh, station.export_kwh = last.energy_import_kwh, last.energy_export_kwh
                if last.soc_pct is not None:
                    station.energy_kwh = last.soc_pct / 100 * station.vehicle.capacity_kwh
                resumed += 1
        return resumed


def start_simulated_fleet(app, settings, now: datetime, *, resume: bool = False, **fleet_options) -> SimulatedFleet:
    """The scenario's simulated stations, registered with the fleet state and attached
    as the dispatcher's chargers; each station announces its session."""
    fleet = SimulatedFleet(app.registry, settings.fleet.scenario, now,
                           sample_interval=timedelta(seconds=settings.fleet.meter_interval_s), **fleet_options)
    app.registry.register_vehicles(fleet.specs)
    for spec in fleet.station_specs():
        app.registry.register_station(spec)
    app.registry.load()
    if resume:
        fleet.resume_from_ledger(app.engine)
    app.use_chargers(fleet)
    fleet.plug_in_all()
    return fleet
