"""One connected station, CSMS side: the `ocpp` package's ChargePoint (v21 or v201)
with our handlers. Handlers translate what the station says into station events
and never call the station themselves (a handler that awaited a CALL would wait
on the very loop that reads the answer).

Idempotence: TransactionEvents are de-duplicated on (transactionId, seqNo) and an
Ended transaction is never ended twice; the fleet registry de-duplicates samples
by timestamp and continues a re-announced session instead of opening a second.
What the CSMS knows of a station (its transaction, sequence numbers, last sample,
the profile it holds) is a `StationState` kept by the CSMS across connections, so
a station that reconnects and replays what it queued offline is not counted twice.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ocpp.charge_point import serialize_as_dict
from ocpp.exceptions import GenericError, NotImplementedError as OcppNotImplemented, OCPPError
from ocpp.messages import CallError, MessageType, unpack
from ocpp.routing import on
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v201 import ChargePoint as ChargePoint201

from aggregator.chargers.port import MeterSample, SessionEnded, SessionStarted, VehicleIdentified, VehicleInfo
from aggregator.ocpp.messages import (V21, V201, iso, parse_time, read_meter_values, to_camel, to_sample, to_snake,
                                      vehicle_from_needs)
from aggregator.ocpp.validation import check_call, check_result

log = logging.getLogger(__name__)

HEARTBEAT_S = 300


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class InstalledProfile:
    """Our TxProfile as the station holds it (as far as we know)."""
    kind: str                          # "Absolute" or "Dynamic"
    transaction_id: str | None
    setpoint_w: float | None = None


@dataclass
class StationState:
    """What the CSMS knows of one station; outlives its connections (reconnects)."""
    transaction_id: str | None = None
    vehicle_id: str | None = None
    evse_id: int = 1
    seq: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    last_sample: MeterSample | None = None
    capacity_kwh: float | None = None
    pending_needs: VehicleInfo | None = None
    dynamic: bool | None = None        # supports Dynamic profiles: None = not known yet
    profile: InstalledProfile | None = None
    profile_known: bool = False        # `profile` is what the station reported or last accepted
    reported_profiles: list = field(default_factory=list)   # ReportChargingProfiles since the last request
    last_setpoint: object = None       # the last Setpoint sent (answers PullDynamicScheduleUpdate)


class _Handlers:
    """Shared by both versions; `self._call_result` is the version's module."""
    version: str

    def _setup(self, csms, state: StationState | None) -> None:
        self.csms = csms
        self.st = state if state is not None else StationState()
        self.booted = False
        self.protocol_errors = 0
        self._pending: dict[str, asyncio.Future] = {}

    # -- the fast CALL path (the fan-out's): a payload we built, straight to JSON --------------
    async def fast_call(self, action: str, payload: dict) -> list:
        """Send a CALL built by us (snake_case dict, no schema validation: our payloads are
        checked by the tests and by the Node peer) and return the answer frame:
        [3, id, payload] or [4, id, code, description, details]. One CALL at a time per
        station (shares the `ocpp` package's lock); the caller applies the deadline."""
        unique_id = f"c{next(_ids)}"
        frame = json.dumps([2, unique_id, action, to_camel(payload)], separators=(",", ":"))
        async with self._call_lock:
            future = asyncio.get_running_loop().create_future()
            self._pending[unique_id] = future
            try:
                await self._connection.send(frame)
                return await future
            finally:
                self._pending.pop(unique_id, None)

    # the station state, as attributes of the connection (the CSMS and tests read these)
    transaction_id = property(lambda self: self.st.transaction_id)
    evse_id = property(lambda self: self.st.evse_id)
    vehicle_id = property(lambda self: self.st.vehicle_id)
    last_sample = property(lambda self: self.st.last_sample)

    def _emit(self, event) -> None:
        self.csms.emit(event)

    # -- framing: every malformed message gets its CALLERROR, the connection lives on ------
    async def route_message(self, raw_msg):
        if raw_msg[:3] in ("[3,", "[4,"):   # an answer to a fast CALL?
            try:
                frame = json.loads(raw_msg)
                unique_id = frame[1]
                future = self._pending.get(unique_id)
            except (ValueError, TypeError, IndexError, KeyError):
                unique_id = future = None
            if future is not None:
                if not future.done():
                    future.set_result(frame)
                return
            if isinstance(unique_id, str) and unique_id[:1] == "c" and unique_id[1:].isdigit():
                # a fast CALL's answer after its deadline (the command already timed out)
                log.info("station %s answered %s too late; dropped", self.id, unique_id)
                return
        try:
            msg = unpack(raw_msg)
        except OCPPError as err:
            self.protocol_errors += 1
            unique_id = "-1"   # OCPP-J: the id of a message we cannot read
            try:
                parsed = json.loads(raw_msg)
                if isinstance(parsed, list) and len(parsed) > 1 and isinstance(parsed[1], str):
                    unique_id = parsed[1]
            except (ValueError, TypeError):
                pass
            log.warning("station %s sent a malformed message (%s)", self.id, err.__class__.__name__)
            await self._send(CallError(unique_id, err.code, err.description, err.details or {}).to_json())
            return
        if msg.message_type_id == MessageType.Call and msg.action not in self.route_map:
            self.protocol_errors += 1
            error = OcppNotImplemented(details={"cause": f"{msg.action} is not implemented by this CSMS"})
            await self._send(msg.create_call_error(error).to_json())
            return
        if msg.message_type_id == MessageType.Call and not isinstance(msg.payload, dict):
            self.protocol_errors += 1
            await self._send(CallError(msg.unique_id, "FormatViolation", "payload is not an object", {}).to_json())
            return
        if msg.message_type_id != MessageType.Call:
            self._response_queue.put_nowait(msg)   # an answer to a CALL made through the package
            return
        try:   # the schema check here (fast path), so the package's handler path skips its own
            check_call(msg, self._ocpp_version)
            await self._answer(msg)
        except OCPPError as err:
            self.protocol_errors += 1
            log.warning("station %s: %s refused (%s)", self.id, msg.action, err.__class__.__name__)
            await self._send(msg.create_call_error(err).to_json())

    async def _answer(self, msg) -> None:
        """The `ocpp` package's `_handle_call` for our handlers (no `call_unique_id`, no
        `@after` hooks), with key conversions cached: at thousands of stations the
        package's per-message regexes and signature inspection were a fifth of the CSMS.
        Our answers are not schema-checked here (as the package's skip_schema_validation):
        the handlers build them, and the Node peer in the tests validates every one."""
        handler = self.route_map[msg.action].get("_on_action")
        if handler is None:
            raise OcppNotImplemented(details={"cause": f"{msg.action} is not implemented by this CSMS"})
        try:
            response = handler(**to_snake(msg.payload))
            if inspect.isawaitable(response):
                response = await response
        except Exception as err:   # as the package: the station gets a CALLERROR, the connection lives on
            log.exception("station %s: handling %s failed", self.id, msg.action)
            await self._send(msg.create_call_error(err).to_json())
            return
        await self._send(msg.create_call_result(to_camel(serialize_as_dict(response))).to_json())

    async def request(self, payload) -> dict:
        """A CALL of ours on the fast path, its answer checked against the schema: the
        answer's payload (camelCase), or the OCPPError of a CALLERROR or an out-of-schema
        answer (for re-sync, which reads the answers)."""
        action = type(payload).__name__
        frame = await self.fast_call(action, payload.__dict__)
        if frame[0] == 4:
            raise _call_error(frame)
        answer = frame[2] if len(frame) > 2 else None
        check_result(action, answer, self._ocpp_version)
        return answer

    # -- handlers -------------------------------------------------------------------------
    @on("BootNotification")
    def on_boot_notification(self, charging_station, reason, **kwargs):
        self.booted = True
        self.st.profile, self.st.profile_known = None, False   # a rebooted station may have lost its profiles
        self.csms.booted(self)
        return self._call_result.BootNotification(current_time=iso(_now()), interval=HEARTBEAT_S,
                                                  status="Accepted")

    @on("Heartbeat")
    def on_heartbeat(self, **kwargs):
        return self._call_result.Heartbeat(current_time=iso(_now()))

    @on("StatusNotification")
    def on_status_notification(self, **kwargs):
        return self._call_result.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_token, **kwargs):
        return self._call_result.Authorize(id_token_info={"status": "Accepted"})

    @on("NotifyEvent")
    def on_notify_event(self, **kwargs):
        return self._call_result.NotifyEvent()

    @on("ReportChargingProfiles")
    def on_report_charging_profiles(self, request_id, charging_limit_source, charging_profile, evse_id,
                                    tbc=False, **kwargs):
        """The answer to our GetChargingProfiles (re-sync): the profiles the station holds."""
        self.st.reported_profiles.extend(charging_profile or [])
        if not tbc:
            self.csms.profiles_reported(self)
        return self._call_result.ReportChargingProfiles()

    @on("MeterValues")
    def on_meter_values(self, evse_id, meter_value, **kwargs):
        self._samples(meter_value)
        return self._call_result.MeterValues()

    @on("NotifyEVChargingNeeds")
    def on_notify_ev_charging_needs(self, evse_id, charging_needs, timestamp=None, **kwargs):
        soc = self.st.last_sample.soc_pct if self.st.last_sample else None
        info = vehicle_from_needs(charging_needs, version=self.version, soc_pct=soc, capacity_kwh=self.st.capacity_kwh)
        if info.capacity_kwh:
            self.st.capacity_kwh = info.capacity_kwh
        if self.st.transaction_id is None:
            self.st.pending_needs = info    # applied when the transaction starts
        else:
            ts = parse_time(timestamp) or (self.st.last_sample.ts if self.st.last_sample else _now())
            self._emit(VehicleIdentified(self.id, ts, _with_id(info, self.st.vehicle_id)))
        return self._call_result.NotifyEVChargingNeeds(status="Accepted")

    @on("TransactionEvent")
    def on_transaction_event(self, event_type, timestamp, trigger_reason, seq_no, transaction_info,
                             meter_value=None, id_token=None, evse=None, **kwargs):
        tx = transaction_info["transaction_id"]
        answer = self._call_result.TransactionEvent(
            id_token_info={"status": "Accepted"} if id_token else None)
        if seq_no <= self.st.seq.get(tx, -1) or tx in self.st.ended:
            return answer   # a replay (the station resends what it queued offline): already counted
        self.st.seq[tx] = seq_no
        ts = parse_time(timestamp) or _now()
        if evse and evse.get("id"):
            self.st.evse_id = evse["id"]
        vehicle_id = id_token.get("id_token") if id_token else None
        meters = read_meter_values(meter_value)
        if tx != self.st.transaction_id and event_type in ("Started", "Updated"):
            # a new transaction, or one we learn about after a reconnect or our restart
            self.st.transaction_id, self.st.vehicle_id = tx, vehicle_id
            soc = next((m.soc_pct for m in meters if m.soc_pct is not None), None)
            info = self.st.pending_needs or VehicleInfo()
            self.st.pending_needs = None
            capacity = info.capacity_kwh or self.st.capacity_kwh
            energy = info.energy_kwh if info.energy_kwh is not None else (
                soc / 100.0 * capacity if soc is not None and capacity else None)
            self._emit(SessionStarted(self.id, ts, _with_id(VehicleInfo(
                capacity_kwh=capacity, energy_kwh=energy, departs_at=info.departs_at, need_kwh=info.need_kwh,
                floor_kwh=info.floor_kwh, max_charge_kw=info.max_charge_kw,
                max_discharge_kw=info.max_discharge_kw), vehicle_id)))
        elif vehicle_id and vehicle_id != self.st.vehicle_id and event_type == "Updated":
            self.st.vehicle_id = vehicle_id
            self._emit(VehicleIdentified(self.id, ts, VehicleInfo(vehicle_id=vehicle_id)))
        self._samples(meter_value, meters)
        if event_type == "Ended":
            self.st.ended.add(tx)
            self.st.seq.pop(tx, None)
            if tx == self.st.transaction_id:
                self._emit(SessionEnded(self.id, ts))
                self.st.transaction_id, self.st.vehicle_id = None, None
                if self.st.profile is not None and self.st.profile.transaction_id == tx:
                    self.st.profile = None   # a TxProfile ends with its transaction
        return answer

    def _samples(self, meter_value, meters=None) -> None:
        for meter in meters if meters is not None else read_meter_values(meter_value):
            sample = to_sample(self.id, meter, self.st.last_sample)
            if sample is None or (self.st.last_sample is not None and sample.ts <= self.st.last_sample.ts):
                continue
            self.st.last_sample = sample
            self._emit(sample)


_ids = itertools.count(1)


def _call_error(frame: list) -> OCPPError:
    """The OCPPError of a CALLERROR frame [4, id, code, description, details]."""
    code = frame[2] if len(frame) > 2 else "GenericError"
    description = frame[3] if len(frame) > 3 else ""
    details = frame[4] if len(frame) > 4 and isinstance(frame[4], dict) else {}
    try:
        return CallError(frame[1], code, description, details).to_exception()
    except Exception:   # a code OCPP does not define
        return GenericError(description=f"CALLERROR {code!r}: {description}", details=details)


def _with_id(info: VehicleInfo, vehicle_id: str | None) -> VehicleInfo:
    from dataclasses import replace
    return replace(info, vehicle_id=vehicle_id) if vehicle_id else info


class Connection21(_Handlers, ChargePoint21):
    version = V21

    @on("PullDynamicScheduleUpdate")
    def on_pull_dynamic_schedule_update(self, charging_profile_id, **kwargs):
        """A station with a Dynamic profile asks for the current values (its dynUpdateInterval passed)."""
        update = self.csms.current_schedule_update(self)
        if update is None:
            return self._call_result.PullDynamicScheduleUpdate(status="Rejected")
        return self._call_result.PullDynamicScheduleUpdate(status="Accepted", schedule_update=update)

    def __init__(self, station_id, websocket, csms, response_timeout: float = 30, state=None):
        ChargePoint21.__init__(self, station_id, websocket, response_timeout=response_timeout)
        self._setup(csms, state)


class Connection201(_Handlers, ChargePoint201):
    version = V201

    def __init__(self, station_id, websocket, csms, response_timeout: float = 30, state=None):
        ChargePoint201.__init__(self, station_id, websocket, response_timeout=response_timeout)
        self._setup(csms, state)


def connection_for(version: str):
    return Connection21 if version == V21 else Connection201
