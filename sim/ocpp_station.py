"""Simulated charging stations that speak OCPP 2.1 (or 2.0.1, charge-only) over
real WebSockets, with the battery physics of `sim.station.SimulatedStation`.

Each station is a client on the `ocpp` package (its own ChargePoint per version):
BootNotification, StatusNotification, TransactionEvent Started/Updated/Ended with
meter values (SoC, power, energy registers), NotifyEVChargingNeeds (departure,
energy requests, V2X limits); it answers SetChargingProfile (a TxProfile:
CentralSetpoint, negative = discharge; Absolute, or Dynamic when `dynamic` is
on, else a Dynamic profile is rejected with reason "UnsupportedKind"),
UpdateDynamicSchedule, ClearChargingProfile (back to charging at full power),
GetChargingProfiles (-> ReportChargingProfiles), TriggerMessage
(TransactionEvent, MeterValues) and GetTransactionStatus. While offline it queues
its TransactionEvents (offline = true) and sends them when it reconnects.
Behaviours (`sim.station.Behaviour`): reject, answer late, never answer a
profile. Many stations run in one process.

`advance(to)` moves simulated time (synchronous, as `sim.stations`); the messages it
causes are queued per station and `flush()` waits until the CSMS has answered them.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from dataclasses import replace
from datetime import datetime, timedelta

import websockets
from collections import deque
from ocpp.routing import after, on
from ocpp.v21 import call as call21
from ocpp.v201 import call as call201
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v201 import ChargePoint as ChargePoint201

from aggregator.chargers.port import Ack, Setpoint
from aggregator.fleet_state.registry import StationSpec
from aggregator.ocpp.credentials import StationEntry
from aggregator.ocpp.messages import V21, V201, iso, power_from_profile, to_snake
from sim.scenario import load_scenario
from sim.station import Behaviour, SimulatedStation
from sim.stations import station_id_for

log = logging.getLogger(__name__)


def meter_value(sample, *, with_soc: bool = True) -> dict:
    values = [
        {"value": round(sample.energy_import_kwh * 1000.0, 3), "measurand": "Energy.Active.Import.Register",
         "unit_of_measure": {"unit": "Wh"}},
        {"value": round(sample.energy_export_kwh * 1000.0, 3), "measurand": "Energy.Active.Export.Register",
         "unit_of_measure": {"unit": "Wh"}},
        {"value": round(max(0.0, sample.power_kw) * 1000.0, 1), "measurand": "Power.Active.Import",
         "unit_of_measure": {"unit": "W"}},
        {"value": round(max(0.0, -sample.power_kw) * 1000.0, 1), "measurand": "Power.Active.Export",
         "unit_of_measure": {"unit": "W"}},
    ]
    if with_soc and sample.soc_pct is not None:
        values.append({"value": round(sample.soc_pct, 3), "measurand": "SoC", "unit_of_measure": {"unit": "Percent"}})
    return {"timestamp": iso(sample.ts), "sampled_value": values}


class _StationSide:
    """Handlers shared by both versions; `self.sim` is the OcppStation it belongs to."""

    async def route_message(self, raw_msg):
        if self.sim.lean and raw_msg.startswith("[2,") and (
                '"UpdateDynamicSchedule"' in raw_msg or '"SetChargingProfile"' in raw_msg):
            # lean (benchmark swarms): the same handlers, without the schema check and dataclass round trip
            frame = json.loads(raw_msg)
            handler = self.on_update_dynamic_schedule if frame[2] == "UpdateDynamicSchedule" \
                else self.on_set_charging_profile
            result = handler(**to_snake(frame[3]))
            answer = {"status": result.status}
            if getattr(result, "status_info", None):
                answer["statusInfo"] = {"reasonCode": result.status_info["reason_code"]}
            await self._connection.send(json.dumps([3, frame[1], answer], separators=(",", ":")))
            return
        behaviour = self.sim.station.behaviour
        if behaviour.kind in ("silent", "late") and '"SetChargingProfile"' in raw_msg:
            if behaviour.kind == "silent":
                return   # never answers

            async def later():
                await asyncio.sleep(behaviour.late_s)
                await super(_StationSide, self).route_message(raw_msg)
            self.sim.spawn(later())
            return
        await super().route_message(raw_msg)

    @on("SetChargingProfile")
    def on_set_charging_profile(self, evse_id, charging_profile, **kwargs):
        station, sim = self.sim.station, self.sim
        if charging_profile.get("charging_profile_purpose") != "TxProfile" or not station.plugged:
            return self._call_result.SetChargingProfile(status="Rejected")
        dynamic = charging_profile.get("charging_profile_kind") == "Dynamic"
        if dynamic and not sim.dynamic:
            return self._call_result.SetChargingProfile(status="Rejected",
                                                        status_info={"reason_code": "UnsupportedKind"})
        kw, valid_from, valid_to = power_from_profile(charging_profile)
        if sim.version == V201:
            kw = max(0.0, kw)
        if dynamic:   # open-ended: held while updates keep coming (the profile's dynUpdateInterval)
            valid_from = station.now
            valid_to = station.now + timedelta(seconds=charging_profile.get("dyn_update_interval") or 86400)
        ack = station.accept(Setpoint(station.station_id, kw, valid_from or station.now,
                                      valid_to or station.now + timedelta(days=1)))
        if ack is Ack.ACCEPTED:
            sim.profile = charging_profile
            sim.profiles_received += 1
            sim.commands.append(("Dynamic" if dynamic else "Absolute", kw))
        return self._call_result.SetChargingProfile(status="Accepted" if ack is Ack.ACCEPTED else "Rejected")

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, charging_profile_id=None, **kwargs):
        station, sim = self.sim.station, self.sim
        if sim.profile is None or (charging_profile_id is not None and sim.profile.get("id") != charging_profile_id):
            return self._call_result.ClearChargingProfile(status="Unknown")
        sim.profile = None
        sim.commands.append(("Clear", None))
        station.setpoint_kw, station.valid_until = station.vehicle.max_charge_kw, None
        return self._call_result.ClearChargingProfile(status="Accepted")

    @on("GetChargingProfiles")
    def on_get_charging_profiles(self, request_id, charging_profile, evse_id=None, **kwargs):
        sim = self.sim
        purpose = charging_profile.get("charging_profile_purpose")
        if sim.profile is None or (purpose and sim.profile.get("charging_profile_purpose") != purpose):
            return self._call_result.GetChargingProfiles(status="NoProfiles")
        return self._call_result.GetChargingProfiles(status="Accepted")

    @after("GetChargingProfiles")
    def after_get_charging_profiles(self, request_id, charging_profile, evse_id=None, **kwargs):
        sim = self.sim
        purpose = charging_profile.get("charging_profile_purpose")
        if sim.profile is not None and (not purpose or sim.profile.get("charging_profile_purpose") == purpose):
            sim.queue(sim.calls.ReportChargingProfiles(request_id=request_id, charging_limit_source="CSO",
                                                       evse_id=1, charging_profile=[sim.profile]))

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message, **kwargs):
        if requested_message in ("TransactionEvent", "MeterValues"):
            return self._call_result.TriggerMessage(status="Accepted")
        return self._call_result.TriggerMessage(status="NotImplemented")

    @after("TriggerMessage")
    def after_trigger_message(self, requested_message, **kwargs):
        if requested_message == "TransactionEvent" and self.sim.transaction_id is not None:
            self.sim.queue_transaction_event("Updated", "Trigger", with_id=True)
        elif requested_message == "MeterValues" and self.sim.station.plugged:
            self.sim.queue(self._call.MeterValues(evse_id=1, meter_value=[meter_value(self.sim.station.sample())]))

    @on("GetTransactionStatus")
    def on_get_transaction_status(self, transaction_id=None, **kwargs):
        ongoing = transaction_id is not None and transaction_id == self.sim.transaction_id
        return self._call_result.GetTransactionStatus(messages_in_queue=self.sim.messages_in_queue(),
                                                      ongoing_indicator=ongoing if transaction_id else None)


class _Station21(_StationSide, ChargePoint21):
    @on("UpdateDynamicSchedule")
    def on_update_dynamic_schedule(self, charging_profile_id, schedule_update, **kwargs):
        station, sim = self.sim.station, self.sim
        profile = sim.profile
        if (profile is None or profile.get("id") != charging_profile_id
                or profile.get("charging_profile_kind") != "Dynamic" or not station.plugged):
            return self._call_result.UpdateDynamicSchedule(status="Rejected")
        watts = schedule_update.get("setpoint", schedule_update.get("limit", 0.0))
        window = timedelta(seconds=profile.get("dyn_update_interval") or 86400)
        ack = station.accept(Setpoint(station.station_id, float(watts) / 1000.0, station.now, station.now + window))
        if ack is Ack.ACCEPTED:
            period = profile["charging_schedule"][0]["charging_schedule_period"][0]
            period.update({k: v for k, v in schedule_update.items() if k in ("setpoint", "limit", "discharge_limit")})
            sim.updates_received += 1
            sim.commands.append(("Update", float(watts) / 1000.0))
        return self._call_result.UpdateDynamicSchedule(status="Accepted" if ack is Ack.ACCEPTED else "Rejected")


class _Station201(_StationSide, ChargePoint201):
    pass


class OcppStation:
    """One simulated station as an OCPP client."""

    def __init__(self, station: SimulatedStation, departs_at: datetime, need_kwh: float, *, version: str = V21,
                 sample_interval: timedelta = timedelta(seconds=5), dynamic: bool = True, lean: bool = False):
        self.station = station
        self.lean = lean                             # no schema validation on either side (benchmark swarms)
        self.dynamic = dynamic and version == V21    # takes Dynamic profiles + UpdateDynamicSchedule
        self.calls = call21 if version == V21 else call201
        self.profile: dict | None = None             # our installed TxProfile (as received)
        self.commands: list = []                     # ("Dynamic"|"Absolute"|"Update"|"Clear", kW)
        self.updates_received = 0
        self.offline_queue: list = []                # TransactionEvents made while offline
        self.sent_transaction_events: deque = deque(maxlen=64)
        self.departs_at = departs_at
        self.need_kwh = need_kwh
        self.version = version
        self.sample_interval = sample_interval
        self.transaction_id: str | None = None
        self.tx_count = 0
        self.seq = 0
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.cp = None
        self.websocket = None
        self.profiles_received = 0
        self.answers: list = []
        self._tasks: set[asyncio.Task] = set()
        self._next_sample: datetime | None = None

    @property
    def station_id(self) -> str:
        return self.station.station_id

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- connection ------------------------------------------------------------------------
    async def connect(self, url: str, *, password: str | None = None, ssl_context: ssl.SSLContext | None = None,
                      boot: bool = True, open_timeout: float = 30) -> None:
        headers = {}
        if password is not None:
            token = base64.b64encode(f"{self.station_id}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        subprotocol = "ocpp2.1" if self.version == V21 else "ocpp2.0.1"
        self.websocket = await websockets.connect(url.rstrip("/") + "/" + self.station_id,
                                                  subprotocols=[subprotocol], additional_headers=headers,
                                                  ssl=ssl_context, open_timeout=open_timeout, ping_interval=None,
                                                  compression=None)
        cls = _Station21 if self.version == V21 else _Station201
        self.cp = cls(self.station_id, self.websocket, response_timeout=30)
        self.cp.sim = self
        self.station.online = True
        self.spawn(self._read())
        self.spawn(self._send_loop())
        for payload in self.offline_queue:   # what it queued offline goes first
            self.outbox.put_nowait(payload)
        self.offline_queue = []
        if boot:
            self.queue(self.cp._call.BootNotification(
                charging_station={"model": "v2x-sim", "vendor_name": "v2x"}, reason="PowerUp"))
            self.queue(self.cp._call.StatusNotification(
                timestamp=iso(self.station.now), connector_status="Occupied" if self.station.plugged else "Available",
                evse_id=1, connector_id=1))
            if self.station.plugged and self.transaction_id is None:
                self.start_transaction()

    async def _read(self) -> None:
        try:
            await self.cp.start()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.station.online = False

    async def _send_loop(self) -> None:
        outbox = self.outbox   # `disconnect` gives the station a new one
        while True:
            payload = await outbox.get()
            try:
                if self.cp is not None and self.station.online:
                    self.answers.append(await self.cp.call(payload, suppress=False, skip_schema_validation=self.lean))
                    if type(payload).__name__ == "TransactionEvent":
                        self.sent_transaction_events.append(payload)
            except Exception as err:   # keep sending: a station does not stop on one failed message
                log.debug("station %s: %s failed: %s", self.station_id, type(payload).__name__, err)
            finally:
                outbox.task_done()

    async def disconnect(self) -> None:
        if self.websocket is not None:
            await self.websocket.close()
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self.outbox = asyncio.Queue()
        self.station.online = False

    # -- what the station sends ----------------------------------------------------------------
    def queue(self, payload) -> None:
        if not self.station.online:
            if type(payload).__name__ == "TransactionEvent" and len(self.offline_queue) < 10_000:
                self.offline_queue.append(replace(payload, offline=True))
            return
        self.outbox.put_nowait(payload)

    def messages_in_queue(self) -> bool:
        return bool(self.offline_queue) or self.outbox.qsize() > 0 or self.outbox._unfinished_tasks > 0

    def replay(self, payloads) -> None:
        """Send these again (a station that never saw our answers resends them)."""
        for payload in payloads:
            self.queue(payload)

    def start_transaction(self) -> None:
        self.tx_count += 1
        self.transaction_id = f"{self.station_id}-tx{self.tx_count}"
        self.seq = 0
        self.queue_transaction_event("Started", "CablePluggedIn", with_id=True)
        extra = {"timestamp": iso(self.station.now)} if self.version == V21 else {}
        self.queue(self.calls.NotifyEVChargingNeeds(evse_id=1, charging_needs=self.charging_needs(), **extra))
        self._next_sample = self.station.now + self.sample_interval

    def charging_needs(self) -> dict:
        v, s = self.station.vehicle, self.station
        dc = {"ev_max_current": 200.0, "ev_max_voltage": 500.0, "ev_max_power": v.max_charge_kw * 1000.0,
              "ev_energy_capacity": v.capacity_kwh * 1000.0,
              "energy_amount": max(0.0, self.need_kwh - s.energy_kwh) * 1000.0}
        if s.reports_soc:
            dc["state_of_charge"] = int(round(100 * s.energy_kwh / v.capacity_kwh))
        needs = {"requested_energy_transfer": "DC_BPT" if self.version == V21 else "DC",
                 "departure_time": iso(self.departs_at), "dc_charging_parameters": dc}
        if self.version == V21:
            needs["available_energy_transfer"] = ["DC", "DC_BPT"]
            needs["control_mode"] = "ScheduledControl"
            needs["v2x_charging_parameters"] = {
                "ev_target_energy_request": (self.need_kwh - s.energy_kwh) * 1000.0,
                "ev_min_v2x_energy_request": (v.floor_kwh - s.energy_kwh) * 1000.0,
                "max_charge_power": v.max_charge_kw * 1000.0,
                "max_discharge_power": v.max_discharge_kw * 1000.0}
        return needs

    def queue_transaction_event(self, event_type: str, trigger: str, *, with_id: bool = False) -> None:
        sample = self.station.sample()
        kwargs = {}
        if with_id:
            kwargs["id_token"] = {"id_token": self.station.vehicle.id, "type": "Local"}
        tx = {"transaction_id": self.transaction_id}
        if event_type == "Ended":
            tx["stopped_reason"] = "EVDisconnected"
        self.queue(self.calls.TransactionEvent(
            event_type=event_type, timestamp=iso(sample.ts), trigger_reason=trigger, seq_no=self.seq,
            transaction_info=tx, evse={"id": 1, "connector_id": 1},
            meter_value=[meter_value(sample, with_soc=self.station.reports_soc)], **kwargs))
        self.seq += 1

    # -- simulated time -------------------------------------------------------------------
    def advance(self, to: datetime, max_step_s: float = 1.0) -> None:
        station = self.station
        if station.plugged and self.departs_at <= to:
            station.advance(max(self.departs_at, station.now), max_step_s)
            if self.transaction_id is not None:
                self.queue_transaction_event("Ended", "EVCommunicationLost")
                self.queue(self.calls.StatusNotification(timestamp=iso(station.now), connector_status="Available",
                                                            evse_id=1, connector_id=1))
                self.transaction_id = None
            station.plugged = False
            station.setpoint_kw = 0.0
        station.advance(to, max_step_s)
        if station.plugged and self._next_sample is not None and to >= self._next_sample:
            self.queue_transaction_event("Updated", "MeterValuePeriodic")
            self._next_sample = to + self.sample_interval


class OcppSimulatedFleet:
    """The scenario's vehicles on OCPP stations (`cp-<vehicle>`), for the demo, tests and benchmarks.
    `charge_only` vehicles get OCPP 2.0.1 stations."""

    def __init__(self, scenario_name: str, now: datetime, *, sample_interval: timedelta = timedelta(seconds=5),
                 behaviours: dict[str, Behaviour] | None = None, charge_only: set[str] = frozenset(),
                 reports_soc: bool = True, scenario=None):
        self.scenario = scenario or load_scenario(scenario_name, now)
        behaviours = behaviours or {}
        self.clients: dict[str, OcppStation] = {}
        for v in self.scenario.vehicles:
            version = V201 if v.spec.id in charge_only else V21
            spec = v.spec if version == V21 else replace(v.spec, max_discharge_kw=0.0)
            station = SimulatedStation(station_id_for(v.spec.id), spec, v.energy_kwh, now, reports_soc=reports_soc,
                                       behaviour=behaviours.get(v.spec.id))
            self.clients[station.station_id] = OcppStation(station, v.session.departs_at, v.session.need_kwh,
                                                           version=version, sample_interval=sample_interval)

    @property
    def stations(self) -> dict[str, SimulatedStation]:
        return {sid: c.station for sid, c in self.clients.items()}

    @property
    def specs(self):
        return [c.station.vehicle for c in self.clients.values()]

    def station_specs(self) -> list[StationSpec]:
        return [StationSpec(c.station_id, c.station.vehicle.site, c.station.vehicle.max_charge_kw,
                            c.station.vehicle.max_discharge_kw) for c in self.clients.values()]

    def directory_entries(self, password_hash: str | None = None) -> list[StationEntry]:
        return [StationEntry(s.id, password_hash, s.site, s.max_charge_kw, s.max_discharge_kw)
                for s in self.station_specs()]

    async def connect_all(self, url: str, *, concurrency: int = 200, **options) -> None:
        limit = asyncio.Semaphore(concurrency)

        async def one(client):
            async with limit:
                await client.connect(url, **options)
        await asyncio.gather(*(one(c) for c in self.clients.values()))
        await self.flush()

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued message has been answered by the CSMS."""
        await asyncio.wait_for(asyncio.gather(*(c.outbox.join() for c in self.clients.values()
                                                if c.station.online)), timeout)

    async def close(self) -> None:
        await asyncio.gather(*(c.disconnect() for c in self.clients.values()), return_exceptions=True)

    def advance(self, to: datetime, max_step_s: float = 1.0) -> None:
        for client in self.clients.values():
            client.advance(to, max_step_s)

    @property
    def last_departure(self) -> datetime:
        return max(c.departs_at for c in self.clients.values())

    @property
    def any_plugged(self) -> bool:
        return any(c.station.plugged for c in self.clients.values())

    def export_register_kwh(self) -> float:
        return sum(c.station.export_kwh - c.station.import_kwh for c in self.clients.values())
