"""Fleet state: stations, vehicles and open plug-in sessions, fed by station events,
kept in memory for the control loop and written through to the database (the
read model of the API and of other instances).

- A session opens when a station says so, with whatever it knows of the vehicle;
  a session that starts before the vehicle is known runs as an unidentified,
  charge-only vehicle at that station until it is identified.
- One open session per vehicle (a unique index in the database): a vehicle
  seen at a new station closes its old session ("replaced"); on restart the
  open sessions are loaded and a station re-announcing the same vehicle
  continues its session instead of opening a second one.
- Energy in the battery: from SoC when the station reports it; otherwise the
  declared fallback: the last known energy plus metered AC energy, counted
  conservatively (gains discounted, losses inflated by `ESTIMATE_MARGIN`); with
  no SoC ever known, the vehicle is assumed at its reserve floor, so nothing is
  exported from energy we cannot see and its need is still charged for.
- Stale SoC: a vehicle whose station reported SoC but has not for `soc_stale_after`
  (telemetry lost, a sample stream that stopped) exports nothing until a fresh SoC
  arrives; it is planned on the conservative estimate above, so its need is still
  charged for.
- Drivers change their minds (`driver_update`, the HTTP API's entry point): an
  earlier departure, a different need, a boost (charge now, no export), an
  opt-out from discharging or a reserve for this session; the plan is redone at
  the next step. Boost and opt-out are undone by passing False; the choices are
  columns of the session row, so a restarted registry restores them.
- A station that rejects or does not acknowledge a command is unavailable
  (left out of the plan) until it accepts one; retries back off.
- A vehicle that, settled on a charging setpoint, meters less than it was asked
  (its BMS tapers near full) is planned with what it accepts (`charge_cap_kw`),
  so the rest of the fleet is not planned around charging that cannot happen.
Database writes are queued and flushed once per step (`persist`); on failure
they stay queued.

What the plan sees is also kept as columns (`planned_fleet`): numpy arrays of the
available vehicles, rebuilt only when something the plan depends on changes
(`version`, or a change that does not re-plan by itself, such as a charge cap
forgotten when a vehicle discharges); a meter sample only refreshes that vehicle's
energy. The time-dependent parts (departed vehicles, a boost's end) are applied per
call, so the opt decision, the dispatcher and the metrics of one step share one build
instead of walking every vehicle each.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from aggregator.allocator import FleetArrays, deliverable_export_bound_kw
from aggregator.chargers.port import (Ack, CommandResult, MeterSample, SessionEnded, SessionStarted, StationEvent,
                                      StationOffline, StationOnline, VehicleIdentified, VehicleInfo)
from aggregator.fleet import MemberState, PlugIn, VehicleSpec
from aggregator.store.db import as_utc
from aggregator.store.models import MeterReading, PlugSession, Station, Vehicle

log = logging.getLogger(__name__)

ESTIMATE_MARGIN = 0.03                  # conservative share on metered energy when SoC is unknown
DEFAULT_STAY = timedelta(hours=8)       # departure assumed for a session that gives none
RETRY_FIRST = timedelta(seconds=2)
RETRY_MAX = timedelta(seconds=60)
ACCEPTANCE_SETTLE = timedelta(seconds=5)   # a charging command held this long has settled
ACCEPTANCE_TOLERANCE_KW = 0.5
SOC_STALE_AFTER = timedelta(seconds=60)    # no SoC for this long: no export from the vehicle
BOOST_MIN_LEFT = timedelta(seconds=30)     # a boost's last half minute is planned as a normal need


@dataclass(frozen=True)
class StationSpec:
    id: str
    site: int = 0
    max_charge_kw: float = 22.0
    max_discharge_kw: float = 0.0     # 0 = charge-only


@dataclass
class _Anchor:
    """Last known battery energy and the meter registers at that moment."""
    energy_kwh: float
    import_kwh: float
    export_kwh: float


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BOOST_MIN_LEFT_US = BOOST_MIN_LEFT // timedelta(microseconds=1)


def _epoch_us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


class PlannedFleet(NamedTuple):
    """The allocator's view of the available fleet and the station of each row."""
    station_ids: list[str]
    fleet: FleetArrays


@dataclass
class _Columns:
    """The available vehicles (plugged in, online, accepting commands) as arrays, in
    `stations` order; departures and boosts are applied per call (`planned_fleet`)."""
    key: tuple
    lives: list
    row: dict[str, int]           # station id -> row
    station_ids: np.ndarray       # object
    ids: np.ndarray               # object: vehicle ids
    energy_kwh: np.ndarray
    capacity_kwh: np.ndarray
    floor_kwh: np.ndarray         # the driver's reserve where given
    need_kwh: np.ndarray          # a boost's own target where higher
    departs_us: np.ndarray        # int64 microseconds since the epoch (exact, as datetime arithmetic)
    boost_us: np.ndarray          # a boost's end, where `has_boost`
    has_boost: np.ndarray
    max_charge_kw: np.ndarray
    max_discharge_kw: np.ndarray
    eta_charge: np.ndarray
    eta_discharge: np.ndarray
    site: np.ndarray


@dataclass
class _Live:
    station: StationSpec
    online: bool = False
    session: PlugSession | None = None      # the open session row (write-through)
    spec: VehicleSpec | None = None
    plug: PlugIn | None = None
    last: MeterSample | None = None
    anchor: _Anchor | None = None
    soc_known: bool = False
    unavailable_since: datetime | None = None
    retry_at: datetime | None = None
    retry_wait: timedelta = RETRY_FIRST
    intended_kw: float = 0.0                # what the plan last asked of it
    intended_since: datetime | None = None  # when that was accepted
    charge_cap_kw: float | None = None      # observed charge acceptance below the asked (BMS taper)
    soc_at: datetime | None = None          # when SoC was last reported
    soc_stale: bool = False
    no_export: str | None = None            # why the driver withdrew it from discharging (opt-out, boost)
    boost_until: datetime | None = None     # boost: planned as leaving when a full-power charge ends
    boost_kwh: float | None = None          # boost: the energy it charges to (full, or the driver's target)
    opt_out: bool = False
    reserve_kwh: float | None = None        # the driver's reserve for this session (None: the vehicle's floor)
    confirmed: bool = True                  # False: loaded at restart, not yet re-announced by the station
    samples: list[MeterSample] = field(default_factory=list)


class FleetRegistry:
    """Implements `StationEventSink` (stations push into it) and `FleetView` (others read it)."""

    def __init__(self, engine, vehicles: dict[str, VehicleSpec] | None = None, metrics=None,
                 soc_stale_after: timedelta | None = None):
        self.engine = engine
        self.soc_stale_after = soc_stale_after or SOC_STALE_AFTER
        self.metrics = metrics
        self.vehicles: dict[str, VehicleSpec] = dict(vehicles or {})
        self.stations: dict[str, _Live] = {}
        self._station_of: dict[str, str] = {}   # vehicle id -> the station of its open session
        self.version = 0                      # bumps whenever what the plan depends on changes
        self.departures: list[tuple[str, datetime, float, float]] = []   # (vehicle, at, energy, need)
        self._pending: list = []              # rows to write: Vehicle, Station, PlugSession
        self._samples: list[MeterSample] = []
        self.database_errors = 0
        self._layout = 0                      # bumps on plan-relevant changes that do not bump `version`
        self._columns: _Columns | None = None
        self._energy_dirty: set[str] = set()  # stations whose energy moved since the columns were built
        self._power: tuple | None = None      # (key, fleet power kW) while no sample or state changed
        self._sample_count = 0

    # -- catalogue --------------------------------------------------------------------
    def register_vehicles(self, specs: list[VehicleSpec]) -> None:
        for spec in specs:
            self.vehicles[spec.id] = spec
            self._pending.append(_vehicle_row(spec))

    def register_station(self, spec: StationSpec) -> None:
        live = self.stations.get(spec.id)
        if live is None:
            self.stations[spec.id] = _Live(spec)
        else:
            live.station = spec
        self._layout += 1
        self._pending.append(Station(id=spec.id, site=spec.site, max_charge_kw=spec.max_charge_kw,
                                     max_discharge_kw=spec.max_discharge_kw))

    def load(self) -> int:
        """Restart reconciliation: the open sessions in the database become live again
        (their stations continue them when they re-announce the vehicle). Returns how many."""
        with Session(self.engine) as db:
            for row in db.exec(select(Vehicle)).all():
                self.vehicles.setdefault(row.id, VehicleSpec(
                    row.id, row.kind, row.capacity_kwh, row.floor_kwh, row.max_charge_kw, row.max_discharge_kw,
                    row.eta_charge, row.eta_discharge, row.site))
            for row in db.exec(select(Station)).all():
                self.stations.setdefault(row.id, _Live(StationSpec(row.id, row.site, row.max_charge_kw,
                                                                   row.max_discharge_kw)))
            open_rows = db.exec(select(PlugSession).where(PlugSession.left_at.is_(None))).all()
            for row in open_rows:
                live = self.stations.get(row.station_id or "")
                spec = self.vehicles.get(row.vehicle_id)
                if live is None or spec is None:
                    continue
                db.expunge(row)
                live.session, live.spec, live.confirmed = row, spec, False
                self._station_of[row.vehicle_id] = live.station.id
                live.plug = PlugIn(spec.id, as_utc(row.arrived_at), as_utc(row.departs_at), row.need_kwh)
                live.opt_out, live.boost_kwh, live.reserve_kwh = bool(row.opt_out), row.boost_kwh, row.reserve_kwh
                live.boost_until = as_utc(row.boost_until) if row.boost_until is not None else None
                _refresh_no_export(live)
                last = db.exec(select(MeterReading).where(MeterReading.source == live.station.id)
                               .order_by(MeterReading.ts.desc()).limit(1)).first()
                if last is not None:
                    live.last = MeterSample(live.station.id, as_utc(last.ts), last.energy_import_kwh,
                                            last.energy_export_kwh, last.power_kw, last.soc_pct)
                    if last.soc_pct is not None:
                        live.anchor = _Anchor(last.soc_pct / 100 * spec.capacity_kwh, last.energy_import_kwh,
                                              last.energy_export_kwh)
                        live.soc_known = True
                if live.anchor is None:
                    live.anchor = _Anchor(row.energy_at_arrival_kwh, live.last.energy_import_kwh if live.last else 0.0,
                                          live.last.energy_export_kwh if live.last else 0.0)
            self.version += 1
            return sum(1 for live in self.stations.values() if live.session is not None)

    # -- station events -----------------------------------------------------------------
    def on_station_event(self, event: StationEvent) -> None:
        live = self.stations.get(event.station_id)
        if live is None:   # a station we were not told about: charge-only until configured
            self.register_station(StationSpec(event.station_id))
            live = self.stations[event.station_id]
        if isinstance(event, MeterSample):
            self._on_sample(live, event)
        elif isinstance(event, SessionStarted):
            self._on_started(live, event.ts, event.vehicle)
        elif isinstance(event, VehicleIdentified):
            self._on_identified(live, event.ts, event.vehicle)
        elif isinstance(event, SessionEnded):
            self._on_ended(live, event.ts, "departed")
        elif isinstance(event, StationOffline):
            if live.online:
                log.warning("station %s went offline", live.station.id)
                live.online = False
                self.version += 1
        elif isinstance(event, StationOnline):
            if not live.online:
                log.info("station %s is online", live.station.id)
                live.online = True
                live.unavailable_since, live.retry_at, live.retry_wait = None, None, RETRY_FIRST
                self.version += 1

    def _on_sample(self, live: _Live, sample: MeterSample) -> None:
        if live.last is not None and sample.ts <= live.last.ts:
            return   # a replayed or out-of-order sample: the ledger already has it
        live.last = sample
        live.samples.append(sample)
        self._sample_count += 1
        self._energy_dirty.add(live.station.id)
        self._observe_acceptance(live, sample)
        self._samples.append(sample)
        if sample.soc_pct is not None and live.spec is not None:
            live.anchor = _Anchor(sample.soc_pct / 100 * live.spec.capacity_kwh, sample.energy_import_kwh,
                                  sample.energy_export_kwh)
            live.soc_known = True
            live.soc_at = sample.ts
            if live.soc_stale:
                log.info("station %s reports SoC again", live.station.id)
                live.soc_stale = False
                self.version += 1

    def _observe_acceptance(self, live: _Live, sample: MeterSample) -> None:
        """Learn a charge limit below the vehicle's rating from a settled charging command."""
        asked = live.intended_kw
        if asked <= 0 or live.intended_since is None or sample.ts - live.intended_since < ACCEPTANCE_SETTLE:
            return
        if sample.power_kw < asked - max(ACCEPTANCE_TOLERANCE_KW, 0.05 * asked):
            cap = max(0.0, sample.power_kw)
            if live.charge_cap_kw is None or abs(cap - live.charge_cap_kw) > ACCEPTANCE_TOLERANCE_KW:
                live.charge_cap_kw = cap
                self.version += 1

    def _on_started(self, live: _Live, ts: datetime, info: VehicleInfo) -> None:
        vehicle_id = info.vehicle_id or f"{live.station.id}/unidentified"
        if live.session is not None and live.session.vehicle_id == vehicle_id:
            # The station re-announces the session it has (reconnect, our restart): continue it.
            live.confirmed = True
            if info.departs_at or info.need_kwh is not None:
                self._on_identified(live, ts, info)
            return
        if live.session is not None:
            self._on_ended(live, ts, "replaced")
        self._end_elsewhere(live, vehicle_id, ts)   # the vehicle cannot be plugged in twice
        spec = self._spec_for(live, vehicle_id, info)
        energy = info.energy_kwh if info.energy_kwh is not None else spec.floor_kwh
        departs = info.departs_at or ts + DEFAULT_STAY
        need = info.need_kwh if info.need_kwh is not None else spec.capacity_kwh
        need = min(max(need, 0.0), spec.capacity_kwh)
        live.spec = spec
        live.plug = PlugIn(vehicle_id, ts, departs, need)
        base_import = live.last.energy_import_kwh if live.last else 0.0
        base_export = live.last.energy_export_kwh if live.last else 0.0
        live.anchor = _Anchor(energy, base_import, base_export)
        live.soc_known = info.energy_kwh is not None
        live.soc_at = ts if live.soc_known else None
        live.soc_stale, live.no_export, live.boost_until = False, None, None
        live.boost_kwh, live.opt_out, live.reserve_kwh = None, False, None
        self._station_of[vehicle_id] = live.station.id
        live.session = PlugSession(vehicle_id=vehicle_id, station_id=live.station.id, arrived_at=ts,
                                   departs_at=departs, energy_at_arrival_kwh=energy, need_kwh=need)
        live.online = True
        self._pending.append(live.session)
        self.version += 1

    def _on_identified(self, live: _Live, ts: datetime, info: VehicleInfo) -> None:
        if live.session is None:
            self._on_started(live, ts, info)
            return
        if info.vehicle_id and info.vehicle_id != live.session.vehicle_id:
            # The unidentified vehicle now has a name: the same session, re-keyed.
            self._end_elsewhere(live, info.vehicle_id, ts)
            live.spec = self._spec_for(live, info.vehicle_id, info)
            self._station_of.pop(live.session.vehicle_id, None)
            self._station_of[info.vehicle_id] = live.station.id
            live.session.vehicle_id = info.vehicle_id
        elif info.max_charge_kw is not None or info.max_discharge_kw is not None or info.capacity_kwh is not None:
            live.spec = self._spec_for(live, live.session.vehicle_id, info)
        spec = live.spec
        departs = info.departs_at or live.plug.departs_at
        need = min(max(info.need_kwh, 0.0), spec.capacity_kwh) if info.need_kwh is not None else live.plug.need_kwh
        live.plug = PlugIn(spec.id, live.plug.arrived_at, departs, need)
        live.session.departs_at, live.session.need_kwh = departs, need
        if info.energy_kwh is not None:
            live.anchor = _Anchor(info.energy_kwh, live.last.energy_import_kwh if live.last else 0.0,
                                  live.last.energy_export_kwh if live.last else 0.0)
            live.soc_known = True
            live.soc_at = ts
            live.soc_stale = False
        self._pending.append(live.session)
        self.version += 1

    def _end_elsewhere(self, live: _Live, vehicle_id: str, ts: datetime) -> None:
        """A vehicle seen at `live` closes the session it still has at another station."""
        other = self.stations.get(self._station_of.get(vehicle_id, ""))
        if (other is not None and other is not live and other.session is not None
                and other.session.vehicle_id == vehicle_id):
            self._on_ended(other, ts, "replaced")

    def _on_ended(self, live: _Live, ts: datetime, reason: str) -> None:
        if live.session is None:
            return
        energy = self.energy_kwh(live)
        live.session.left_at = ts
        live.session.energy_at_departure_kwh = energy
        live.session.closed_reason = reason
        self._pending.append(live.session)
        if reason == "departed":
            self.departures.append((live.session.vehicle_id, ts, energy, live.plug.need_kwh))
            log.info("vehicle %s departed with %.1f kWh (asked %.1f)", live.session.vehicle_id, energy,
                     live.plug.need_kwh)
        if self._station_of.get(live.session.vehicle_id) == live.station.id:
            del self._station_of[live.session.vehicle_id]
        live.session, live.spec, live.plug, live.anchor, live.soc_known = None, None, None, None, False
        live.charge_cap_kw, live.soc_at, live.soc_stale, live.no_export = None, None, False, None
        live.boost_until, live.boost_kwh, live.opt_out, live.reserve_kwh = None, None, False, None
        self.version += 1

    def _spec_for(self, live: _Live, vehicle_id: str, info: VehicleInfo) -> VehicleSpec:
        """The known vehicle, with what the session says (driver/vehicle values win), within the station's limits."""
        known = self.vehicles.get(vehicle_id)
        if known is None:   # unknown vehicle: charge-only until we know it can discharge
            capacity = info.capacity_kwh or 60.0
            known = VehicleSpec(vehicle_id, "unknown", capacity, 0.0, live.station.max_charge_kw, 0.0, 0.92, 0.92,
                                live.station.site)
        spec = replace(
            known,
            capacity_kwh=info.capacity_kwh or known.capacity_kwh,
            floor_kwh=info.floor_kwh if info.floor_kwh is not None else known.floor_kwh,
            max_charge_kw=min(info.max_charge_kw if info.max_charge_kw is not None else known.max_charge_kw,
                              live.station.max_charge_kw),
            max_discharge_kw=min(info.max_discharge_kw if info.max_discharge_kw is not None
                                 else known.max_discharge_kw, live.station.max_discharge_kw),
            site=live.station.site)
        if spec != self.vehicles.get(vehicle_id):
            self.vehicles[vehicle_id] = spec if vehicle_id in self.vehicles else spec
            self._pending.append(_vehicle_row(spec))
        return spec

    def reconcile(self, now: datetime, started_at: datetime, grace: timedelta = timedelta(minutes=2)) -> None:
        """Restart reconciliation: a session loaded from the database that its station, online
        again, has not re-announced within `grace` of our start ended while we were down."""
        if now - started_at < grace:
            return
        for live in self.stations.values():
            if live.session is not None and not live.confirmed and live.online:
                log.warning("station %s did not re-announce %s's session after the restart: closed",
                            live.station.id, live.session.vehicle_id)
                self._on_ended(live, now, "reconciled")

    def mark_stale(self, now: datetime) -> list[str]:
        """Vehicles whose SoC was reported but not for `soc_stale_after` become stale (no export
        from them) until a fresh SoC arrives. Returns the stations that just became stale."""
        newly = []
        for live in self.plugged():
            if live.soc_stale or live.soc_at is None or now - live.soc_at <= self.soc_stale_after:
                continue
            log.warning("station %s: no SoC for %.0f s; %s is planned on the conservative estimate, no export",
                        live.station.id, (now - live.soc_at).total_seconds(), live.session.vehicle_id)
            live.soc_stale = True
            newly.append(live.station.id)
            self.version += 1
        return newly

    # -- drivers ------------------------------------------------------------------------------
    def driver_update(self, vehicle_id: str, *, departs_at: datetime | None = None, need_kwh: float | None = None,
                      boost: bool | None = None, opt_out: bool | None = None, reserve_kwh: float | None = None,
                      now: datetime | None = None) -> None:
        """A driver's change to a plugged-in vehicle's session (the HTTP API calls this):
        an earlier or later departure, a new energy need, a boost (charge as soon as possible
        to a full battery, or to `need_kwh`, with no export), an opt-out from discharging
        (charged toward the need by the departure, nothing exported) or a reserve for this
        session (never discharged below `reserve_kwh`, from the next plan on). None leaves a
        choice as it is; `boost=False` / `opt_out=False` undo an earlier boost / opt-out (a
        boost's target is its own, so the need from before it is back). The choices are kept
        in the session row (restored by `load`). Re-planned at the next step. Raises KeyError
        when the vehicle has no open session."""
        live = next((x for x in self.plugged() if x.session.vehicle_id == vehicle_id), None)
        if live is None:
            raise KeyError(f"vehicle {vehicle_id} is not plugged in")
        spec, plug = live.spec, live.plug
        departs = departs_at if departs_at is not None else plug.departs_at
        need = plug.need_kwh if need_kwh is None else min(max(float(need_kwh), 0.0), spec.capacity_kwh)
        live.plug = PlugIn(plug.vehicle_id, plug.arrived_at, departs, need)
        live.session.departs_at, live.session.need_kwh = departs, need
        if opt_out is not None:
            live.opt_out = bool(opt_out)
        if reserve_kwh is not None:
            live.reserve_kwh = min(max(float(reserve_kwh), 0.0), spec.capacity_kwh)
        if boost:   # full power from now: plan it as if it left when that charge is done
            now = now or self._latest_ts() or plug.arrived_at
            live.boost_kwh = spec.capacity_kwh if need_kwh is None else need
            missing = max(0.0, live.boost_kwh - self.energy_kwh(live))
            live.boost_until = now + timedelta(hours=missing / max(1e-6, spec.max_charge_kw * spec.eta_charge))
        elif boost is not None:
            live.boost_kwh = live.boost_until = None
        _refresh_no_export(live)
        live.session.opt_out, live.session.reserve_kwh = live.opt_out, live.reserve_kwh
        live.session.boost_kwh, live.session.boost_until = live.boost_kwh, live.boost_until
        log.info("driver of %s: departs %s, needs %.1f kWh%s%s", vehicle_id, departs.isoformat(), need,
                 f", {live.no_export}" if live.no_export else "",
                 f", reserve {live.reserve_kwh:.1f} kWh" if live.reserve_kwh is not None else "")
        self._pending.append(live.session)
        self.version += 1

    # -- commands ---------------------------------------------------------------------------
    def command_result(self, result: CommandResult, now: datetime) -> None:
        live = self.stations.get(result.station_id)
        if live is None:
            return
        if result.ack is Ack.ACCEPTED:
            if live.unavailable_since is not None:
                log.info("station %s accepts commands again", result.station_id)
                live.unavailable_since, live.retry_at, live.retry_wait = None, None, RETRY_FIRST
                self.version += 1
            if not live.online:
                live.online = True
                self.version += 1
            return
        if live.unavailable_since is None:
            log.warning("station %s: command %s (%s); re-planned as unavailable", result.station_id,
                        result.ack.value, result.detail)
            live.unavailable_since = now
            self.version += 1
        else:
            live.retry_wait = min(RETRY_MAX, live.retry_wait * 2)
        if result.ack is Ack.OFFLINE and live.online:
            live.online = False
            self._layout += 1
        live.retry_at = now + live.retry_wait

    def retries_due(self, now: datetime) -> list[tuple[str, float]]:
        """Unavailable stations whose back-off has passed: (station, the hold command: no discharge)."""
        return [(sid, max(0.0, live.intended_kw)) for sid, live in self.stations.items()
                if live.unavailable_since is not None and live.session is not None and live.online
                and live.retry_at is not None and live.retry_at <= now]

    def set_intended(self, station_id: str, power_kw: float, now: datetime | None = None) -> None:
        live = self.stations[station_id]
        if power_kw != live.intended_kw or live.intended_since is None:
            live.intended_since = now
        live.intended_kw = power_kw
        if power_kw < 0 and live.charge_cap_kw is not None:   # discharging leaves the taper region: relearn
            live.charge_cap_kw = None
            self._layout += 1

    # -- what the plan sees -------------------------------------------------------------------
    def energy_kwh(self, live: _Live) -> float:
        anchor, spec = live.anchor, live.spec
        if anchor is None or spec is None:
            return float("nan")
        if live.last is None:
            return anchor.energy_kwh
        imported = max(0.0, live.last.energy_import_kwh - anchor.import_kwh)
        exported = max(0.0, live.last.energy_export_kwh - anchor.export_kwh)
        if live.soc_known and imported == 0 and exported == 0:
            return anchor.energy_kwh
        gained = imported * spec.eta_charge * (1 - ESTIMATE_MARGIN)
        lost = exported / spec.eta_discharge * (1 + ESTIMATE_MARGIN)
        return float(min(spec.capacity_kwh, max(0.0, anchor.energy_kwh + gained - lost)))

    def plugged(self) -> list[_Live]:
        return [live for live in self.stations.values() if live.session is not None]

    def available(self, now: datetime) -> list[_Live]:
        return [live for live in self.plugged() if live.online and live.unavailable_since is None
                and live.plug.departs_at > now]

    def snapshot(self, now: datetime) -> list[MemberState]:
        """The vehicles the plan may use now (connected, accepting commands, not yet due to leave)."""
        return [MemberState(self._planned_spec(live), self._planned_plug(live, now), self.energy_kwh(live),
                            live.station.id) for live in self.available(now)]

    def planned_fleet(self, now: datetime, need_margin_kwh: float = 0.0) -> PlannedFleet:
        """`snapshot(now)` as the allocator's columns (`fleet_arrays(snapshot(now), now,
        need_margin_kwh)`, row for row) and the station of each row, from the cached
        columns: no walk over the vehicles unless the fleet changed."""
        cols = self._current_columns()
        t_us = _epoch_us(now)
        keep = cols.departs_us > t_us
        boosted = (cols.boost_us > t_us + _BOOST_MIN_LEFT_US) & (cols.boost_us < cols.departs_us) & cols.has_boost
        departs_us = np.where(boosted, cols.boost_us, cols.departs_us)[keep]
        capacity = cols.capacity_kwh[keep]
        fleet = FleetArrays(
            ids=cols.ids[keep], energy_kwh=cols.energy_kwh[keep], capacity_kwh=capacity,
            floor_kwh=cols.floor_kwh[keep], need_kwh=np.minimum(cols.need_kwh[keep] + need_margin_kwh, capacity),
            departure_h=(departs_us - t_us).astype(np.float64) / 1e6 / 3600,
            max_charge_kw=cols.max_charge_kw[keep], max_discharge_kw=cols.max_discharge_kw[keep],
            eta_charge=cols.eta_charge[keep], eta_discharge=cols.eta_discharge[keep], site=cols.site[keep])
        return PlannedFleet(list(cols.station_ids[keep]), fleet)

    def _current_columns(self) -> _Columns:
        key = (self.version, self._layout)
        cols = self._columns
        if cols is None or cols.key != key:
            self._energy_dirty.clear()
            cols = self._columns = self._build_columns(key)
        elif self._energy_dirty:
            for station_id in self._energy_dirty:
                i = cols.row.get(station_id)
                if i is not None:
                    cols.energy_kwh[i] = self.energy_kwh(cols.lives[i])
            self._energy_dirty.clear()
        return cols

    def _build_columns(self, key: tuple) -> _Columns:
        lives = [live for live in self.stations.values()
                 if live.session is not None and live.online and live.unavailable_since is None]
        station_ids, ids, rows = [], [], []
        nan = float("nan")
        for live in lives:   # one pass, one tuple of numbers per vehicle
            spec, plug, boost_until = live.spec, live.plug, live.boost_until
            if live.reserve_kwh is not None or live.soc_stale or live.no_export or live.charge_cap_kw is not None:
                spec = self._planned_spec(live)   # the driver's or the plan's own limits apply
            station_ids.append(live.station.id)
            ids.append(spec.id)
            rows.append((self.energy_kwh(live), spec.capacity_kwh, spec.floor_kwh,
                         plug.need_kwh if live.boost_kwh is None else max(plug.need_kwh, live.boost_kwh),
                         plug.departs_at.timestamp(), boost_until.timestamp() if boost_until is not None else nan,
                         spec.max_charge_kw, spec.max_discharge_kw, spec.eta_charge, spec.eta_discharge, spec.site))
        m = np.array(rows, dtype=np.float64).reshape(len(rows), 11)
        has_boost = ~np.isnan(m[:, 5])
        # whole microseconds since the epoch, as datetime arithmetic has them (a timestamp in
        # this era is within 0.5 us of exact, so rounding gives the exact count)
        departs_us = np.rint(m[:, 4] * 1e6).astype(np.int64)
        boost_us = np.where(has_boost, np.rint(np.nan_to_num(m[:, 5]) * 1e6), 0).astype(np.int64)
        return _Columns(
            key=key, lives=lives, row={sid: i for i, sid in enumerate(station_ids)},
            station_ids=np.array(station_ids, dtype=object), ids=np.array(ids, dtype=object),
            energy_kwh=m[:, 0].copy(), capacity_kwh=m[:, 1].copy(), floor_kwh=m[:, 2].copy(),
            need_kwh=m[:, 3].copy(), departs_us=departs_us, boost_us=boost_us, has_boost=has_boost,
            max_charge_kw=m[:, 6].copy(), max_discharge_kw=m[:, 7].copy(), eta_charge=m[:, 8].copy(),
            eta_discharge=m[:, 9].copy(), site=m[:, 10].astype(np.int64))

    @staticmethod
    def _planned_plug(live: _Live, now: datetime) -> PlugIn:
        plug = live.plug
        if live.boost_kwh is not None and live.boost_kwh > plug.need_kwh:   # a boost charges to its own target
            plug = replace(plug, need_kwh=live.boost_kwh)
        if live.boost_until is not None and now + BOOST_MIN_LEFT < live.boost_until < plug.departs_at:
            return replace(plug, departs_at=live.boost_until)
        return plug

    @staticmethod
    def _planned_spec(live: _Live) -> VehicleSpec:
        """The vehicle as the plan may use it: no export when its SoC is stale or its driver
        said so; charging within what it was seen to accept."""
        spec = live.spec
        if live.reserve_kwh is not None:
            spec = replace(spec, floor_kwh=live.reserve_kwh)
        if live.soc_stale or live.no_export:
            spec = replace(spec, max_discharge_kw=0.0)
        if live.charge_cap_kw is not None and live.charge_cap_kw < spec.max_charge_kw:
            spec = replace(spec, max_charge_kw=live.charge_cap_kw)
        return spec

    def drain_samples(self) -> list[MeterSample]:
        out, self._samples = self._samples, []
        for live in self.stations.values():
            live.samples = []
        return out

    # -- FleetView --------------------------------------------------------------------------
    def fleet_power_kw(self) -> float:
        key = (self.version, self._layout, self._sample_count, len(self.stations))
        if self._power is None or self._power[0] != key:
            self._power = (key, float(sum(live.last.power_kw for live in self.stations.values()
                                          if live.last is not None and live.online)))
        return self._power[1]

    def export_bound_kw(self, now: datetime, durations_h: np.ndarray) -> np.ndarray:
        fleet = self.planned_fleet(now).fleet
        if not len(fleet):
            return np.zeros(len(durations_h))
        return deliverable_export_bound_kw(fleet, np.asarray(durations_h, dtype=float))

    def available_export_kw(self, now: datetime | None = None) -> float:
        now = now or self._latest_ts()
        return float(self.export_bound_kw(now, np.array([0.25]))[0]) if now else 0.0

    def stored_energy_kwh(self) -> float:
        values = [self.energy_kwh(live) for live in self.plugged()]
        return float(sum(v for v in values if v == v))

    def plugged_in(self) -> int:
        return len(self.plugged())

    def plugged_vehicle_ids(self) -> set[str]:
        return {live.session.vehicle_id for live in self.plugged()}

    def availability(self) -> list[tuple[datetime, float]]:
        return [(live.plug.departs_at, self._planned_spec(live).max_discharge_kw) for live in self.plugged()
                if live.online and live.unavailable_since is None]

    def _latest_ts(self) -> datetime | None:
        stamps = [live.last.ts for live in self.stations.values() if live.last is not None]
        return max(stamps) if stamps else None

    # -- persistence --------------------------------------------------------------------------
    def persist(self) -> bool:
        """Write queued vehicles, stations and sessions in one transaction; keep them on failure."""
        if not self._pending:
            return True
        pending = self._pending
        try:
            with Session(self.engine, expire_on_commit=False) as db:
                rows = _dedupe(pending)
                for row in rows:
                    if not isinstance(row, PlugSession):
                        db.merge(row)
                db.flush()   # vehicles and stations before the sessions that reference them
                for row in rows:
                    if isinstance(row, PlugSession):
                        db.add(row)
                db.commit()
            self._pending = self._pending[len(pending):]
            return True
        except SQLAlchemyError as err:
            self.database_errors += 1
            if self.metrics is not None:
                self.metrics.database_errors.inc()
            log.error("fleet state write failed (%s); %d rows kept for retry", err.__class__.__name__, len(pending))
            return False


def _refresh_no_export(live: _Live) -> None:
    live.no_export = "boost" if live.boost_until is not None else "opt-out" if live.opt_out else None


def _vehicle_row(spec: VehicleSpec) -> Vehicle:
    return Vehicle(id=spec.id, kind=spec.kind, capacity_kwh=spec.capacity_kwh, floor_kwh=spec.floor_kwh,
                   max_charge_kw=spec.max_charge_kw, max_discharge_kw=spec.max_discharge_kw,
                   eta_charge=spec.eta_charge, eta_discharge=spec.eta_discharge, site=spec.site)


def _dedupe(rows: list) -> list:
    """The last version of each row."""
    keyed: dict = {}
    for row in rows:
        keyed[(type(row).__name__, id(row) if isinstance(row, PlugSession) else row.id)] = row
    return list(keyed.values())
