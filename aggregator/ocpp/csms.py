"""The CSMS: a WebSocket server for OCPP 2.1 and 2.0.1 stations that implements
the charger port.

- `command(setpoint)` resolves to ACCEPTED / REJECTED from the CALLRESULT (a
  CALLERROR is a rejection), TIMED_OUT when no answer comes in `command_timeout`,
  OFFLINE when the station is not connected. What it sends:
  * a setpoint while a commitment is in force (see "clearing" below): on an OCPP 2.1
    station a Dynamic TxProfile (CentralSetpoint, W, negative = discharge) once per
    transaction, then `UpdateDynamicSchedule` for each new setpoint; a station that
    rejects the Dynamic profile (and accepts an Absolute one) is remembered as not
    supporting dynamic profiles and gets an Absolute `SetChargingProfile` (valid
    from/to = the setpoint's window) each time. OCPP 2.0.1 stations get a charging
    limit (never below 0) in an Absolute profile.
  * clearing: when no commitment overlaps the setpoint's validity window (the
    `commitment_in_force(valid_from, valid_until)` callable; the composition root
    passes the commitment book) and the setpoint is not a discharge, nothing is asked
    of the station: it gets `ClearChargingProfile` (once; our profile id) and
    charges as its vehicle asks. Without the callable every setpoint is sent.
- A station that disconnects is reported offline; one that connects is reported
  online and re-synchronised: the profile it holds is re-read (GetChargingProfiles
  -> ReportChargingProfiles), its queued offline messages are awaited
  (GetTransactionStatus until messagesInQueue is false) and its transaction state is
  re-read (TriggerMessage TransactionEvent). At most `resync_concurrency` re-syncs
  run at once (a reconnect storm queues them); an attempt that times out is retried
  with back-off (`resyncs_done` / `resyncs_failed` count them). Per-station state (transaction,
  sequence numbers, last sample, installed profile) outlives connections, so
  nothing it replays is counted twice.
- `request_meter_values` triggers a MeterValues message and returns at once.
"""
from __future__ import annotations

import asyncio
import logging
import random
import ssl
from datetime import datetime, timezone

import ocpp.messages
from ocpp.exceptions import OCPPError
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from aggregator.chargers.port import (Ack, CommandResult, Setpoint, StationEventSink, StationOffline, StationOnline)
from aggregator.fleet_state.registry import StationSpec
from aggregator.ocpp.connection import InstalledProfile, StationState, connection_for
from aggregator.ocpp.credentials import StationDirectory
from aggregator.ocpp.handshake import make_process_request, station_id_of
from aggregator.ocpp.messages import PROFILE_ID, SUBPROTOCOLS, V21, charging_profile, schedule_update

log = logging.getLogger(__name__)

# Validate in the event loop: a thread hop per message costs more than validating a small payload.
ocpp.messages.ASYNC_VALIDATION = False


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Csms:
    def __init__(self, sink: StationEventSink, directory: StationDirectory, *, host: str = "127.0.0.1",
                 port: int = 9000, security_profile: int = 0, ssl_context: ssl.SSLContext | None = None,
                 command_timeout: float = 10.0, validate_outgoing: bool = False, clock=_utc_now,
                 commitment_in_force=None, dynamic_profiles: bool = True, resync_timeout: float = 10.0,
                 open_timeout: float = 60.0, resync_attempts: int = 4, resync_concurrency: int = 500):
        self.sink = sink
        self.directory = directory
        self.host, self.port = host, port
        self.security_profile = security_profile
        self.ssl_context = ssl_context
        self.command_timeout = command_timeout
        self.validate_outgoing = validate_outgoing
        self.clock = clock
        self.commitment_in_force = commitment_in_force   # (valid_from, valid_until) -> bool, or None
        self.dynamic_profiles = dynamic_profiles
        self.resync_timeout = resync_timeout
        self.resync_attempts = resync_attempts
        # Re-syncs in flight at once: in a reconnect storm of thousands, all at once would each
        # be slow and time out together; queued, each runs quickly when its turn comes.
        self._resync_slots = asyncio.Semaphore(resync_concurrency)
        self.open_timeout = open_timeout   # a reconnect storm of thousands must not time out its own handshakes
        self.connections: dict = {}
        self.states: dict[str, StationState] = {}
        self.resyncs_done = 0
        self.resyncs_failed = 0
        self._report_waiters: dict[str, asyncio.Future] = {}
        self._request_ids = 0
        self._server = None
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    # -- server ------------------------------------------------------------------------
    async def start(self) -> int:
        """Listen; returns the port (useful with port 0)."""
        if self.security_profile >= 2 and self.ssl_context is None:
            raise ValueError(f"security profile {self.security_profile} needs TLS (an ssl context)")
        self._server = await serve(self._serve, self.host, self.port, subprotocols=list(SUBPROTOCOLS),
                                   process_request=make_process_request(self.directory, self.security_profile),
                                   ssl=self.ssl_context, ping_interval=60, ping_timeout=60,
                                   max_size=2 ** 20, compression=None, open_timeout=self.open_timeout)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl_context else 'ws'}://{self.host}:{self.port}/ocpp/"

    async def stop(self) -> None:
        self._stopping = True   # our shutdown: stations are not reported offline
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def emit(self, event) -> None:
        try:
            self.sink.on_station_event(event)
        except Exception:   # the fleet state must never take a connection down
            log.exception("station event %s failed in the sink", type(event).__name__)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, websocket) -> None:
        station_id = station_id_of(websocket.request.path)
        version = SUBPROTOCOLS.get(websocket.subprotocol or "")
        if version is None:
            await websocket.close(1002, "no supported OCPP subprotocol")
            return
        entry = self.directory.get(station_id)
        previous = self.connections.get(station_id)
        if previous is not None:   # the station reconnected before we saw its old socket close: newest wins
            await previous._connection.close(1000, "replaced by a new connection")
        state = self.states.setdefault(station_id, StationState())
        connection = connection_for(version)(station_id, websocket, self, response_timeout=self.command_timeout,
                                             state=state)
        self.connections[station_id] = connection
        register = getattr(self.sink, "register_station", None)
        if register is not None and entry is not None:
            register(StationSpec(station_id, entry.site, entry.max_charge_kw,
                                 entry.max_discharge_kw if version == V21 else 0.0))
        self.emit(StationOnline(station_id, self.clock()))
        log.info("station %s connected (OCPP %s)", station_id, version)
        self._spawn(self._resync_soon(connection))
        try:
            await connection.start()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("station %s: connection failed", station_id)
        finally:
            if self.connections.get(station_id) is connection:
                del self.connections[station_id]
                if not self._stopping:
                    self.emit(StationOffline(station_id, self.clock()))
                    log.info("station %s disconnected", station_id)

    def booted(self, connection) -> None:
        """A station booted: its transactions start over from what it tells us."""

    async def _resync_soon(self, connection, grace_s: float = 1.0) -> None:
        """After a (re)connect: re-read what the station holds and where its transaction is.
        An attempt that times out (a reconnect storm of thousands) is retried with jittered
        back-off; after `resync_attempts` the station's profile stays unknown (the next command
        installs ours again) and it is counted in `resyncs_failed`."""
        for _ in range(int(grace_s / 0.05)):   # let a booting station send its BootNotification first
            if connection.booted:
                break
            await asyncio.sleep(0.05)
        delay, attempts = 1.0, self.resync_attempts
        for attempt in range(1, attempts + 1):
            try:
                async with self._resync_slots:   # the timeout counts from the slot, not the queue
                    if self.connections.get(connection.id) is not connection:
                        return   # gone or replaced: a new connection re-syncs itself
                    await asyncio.wait_for(self.resync(connection), self.resync_timeout)
                return
            except (OCPPError, asyncio.TimeoutError) as err:
                log.info("station %s: re-sync attempt %d incomplete (%s)", connection.id, attempt,
                         err.__class__.__name__)
            except ConnectionClosed:
                return
            if attempt < attempts:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay *= 2
        self.resyncs_failed += 1
        log.warning("station %s: re-sync failed %d times; its profile is treated as unknown", connection.id, attempts)

    async def resync(self, connection) -> None:
        st, calls = connection.st, connection._call
        # 1. the profile it holds (GetChargingProfiles -> ReportChargingProfiles)
        self._request_ids += 1
        epoch = id(st.profile), st.last_setpoint
        waiter = asyncio.get_running_loop().create_future()
        self._report_waiters[connection.id] = waiter
        st.reported_profiles = []
        try:   # (the fast, answer-checked CALL path: a reconnect storm of thousands must not crawl)
            answer = await connection.request(calls.GetChargingProfiles(
                request_id=self._request_ids, charging_profile={"charging_profile_purpose": "TxProfile"},
                evse_id=st.evse_id))
            accepted = answer.get("status") == "Accepted"
            if accepted:
                await asyncio.wait_for(waiter, self.command_timeout)
            if (id(st.profile), st.last_setpoint) == epoch:   # no command changed it meanwhile
                st.profile = _ours(st.reported_profiles if accepted else [])
                st.profile_known = True
        finally:
            self._report_waiters.pop(connection.id, None)
        # 2. what it queued while offline arrives before we read its state
        if st.transaction_id is not None:
            for _ in range(50):
                status = await connection.request(calls.GetTransactionStatus(transaction_id=st.transaction_id))
                if not status.get("messagesInQueue"):
                    break
                await asyncio.sleep(0.1)
        # 3. its transaction now (re-announces a running one; an unknown one starts a session)
        await connection.request(calls.TriggerMessage(requested_message="TransactionEvent", evse={"id": st.evse_id}))
        self.resyncs_done += 1

    def profiles_reported(self, connection) -> None:
        waiter = self._report_waiters.get(connection.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def current_schedule_update(self, connection) -> dict | None:
        """PullDynamicScheduleUpdate: the last setpoint (no discharge once its window has passed)."""
        setpoint = connection.st.last_setpoint
        if setpoint is None:
            return None
        if self.clock() >= setpoint.valid_until:
            setpoint = type(setpoint)(setpoint.station_id, max(0.0, setpoint.power_kw), setpoint.valid_from,
                                      setpoint.valid_until)
        max_charge, max_discharge = self._limits(connection)
        return schedule_update(setpoint, max_charge_kw=max_charge, max_discharge_kw=max_discharge)

    # -- ChargerPort ----------------------------------------------------------------------
    def managed(self, setpoint: Setpoint) -> bool:
        """Is anything asked of the station? A discharge always is; otherwise only while a
        commitment overlaps the setpoint's validity window (no callable: always)."""
        if setpoint.power_kw < 0 or self.commitment_in_force is None:
            return True
        return bool(self.commitment_in_force(setpoint.valid_from, setpoint.valid_until))

    def _limits(self, connection) -> tuple[float, float]:
        entry = self.directory.get(connection.id)
        max_charge = entry.max_charge_kw if entry else 22.0
        max_discharge = (entry.max_discharge_kw if entry else 0.0) if connection.version == V21 else 0.0
        return max_charge, max_discharge

    async def command(self, setpoint: Setpoint) -> CommandResult:
        sid = setpoint.station_id
        connection = self.connections.get(sid)
        if connection is None:
            return CommandResult(sid, Ack.OFFLINE, "not connected")
        if connection.st.transaction_id is None:
            return CommandResult(sid, Ack.REJECTED, "no transaction on the station")
        try:
            async with asyncio.timeout(self.command_timeout):   # one timer, no extra task (unlike wait_for)
                return await self._command(connection, setpoint)
        except asyncio.TimeoutError:
            return CommandResult(sid, Ack.TIMED_OUT, f"no answer within {self.command_timeout:g} s")
        except ConnectionClosed:
            return CommandResult(sid, Ack.OFFLINE, "connection closed")

    async def _ask(self, connection, payload) -> tuple[str, str]:
        """(status, detail) of one CALL; a CALLERROR is ("CALLERROR", why). Without
        `validate_outgoing` the payload goes out on the connection's fast path (no
        dataclass round trip, no schema validation); with it, through the `ocpp` package
        (request and answer validated against the JSON schemas)."""
        if not self.validate_outgoing:
            frame = await connection.fast_call(type(payload).__name__, payload.__dict__)
            if frame[0] == 4:
                code = frame[2] if len(frame) > 2 else "GenericError"
                return "CALLERROR", f"CALLERROR {code}: {frame[3] if len(frame) > 3 else ''}"
            answer = frame[2] if len(frame) > 2 and isinstance(frame[2], dict) else {}
            status = answer.get("status")
            info = answer.get("statusInfo") or {}
            return status, f"{status}: {info.get('reasonCode', '') if isinstance(info, dict) else ''}".rstrip(": ")
        try:
            result = await connection.call(payload, suppress=False,
                                           skip_schema_validation=not self.validate_outgoing)
        except OCPPError as err:
            return "CALLERROR", f"CALLERROR {err.code}: {err.description}"
        status = getattr(result, "status", None)
        info = getattr(result, "status_info", None) or {}
        return status, f"{status}: {info.get('reason_code', '')}".rstrip(": ")

    async def _command(self, connection, setpoint: Setpoint) -> CommandResult:
        sid, st, calls = setpoint.station_id, connection.st, connection._call
        max_charge, max_discharge = self._limits(connection)
        ok = CommandResult(sid, Ack.ACCEPTED)
        if not self.managed(setpoint):
            if st.profile_known and st.profile is None:
                return ok   # nothing of ours on the station: nothing to clear
            status, detail = await self._ask(connection, calls.ClearChargingProfile(charging_profile_id=PROFILE_ID))
            if status in ("Accepted", "Unknown"):   # Unknown: it had no such profile
                st.profile, st.profile_known, st.last_setpoint = None, True, None
                return ok
            return CommandResult(sid, Ack.REJECTED, detail)
        st.last_setpoint = setpoint
        watts = round(setpoint.power_kw * 1000.0, 1)
        tx = st.transaction_id
        if connection.version == V21 and self.dynamic_profiles and st.dynamic is not False:
            profile = st.profile
            if profile is not None and profile.kind == "Dynamic" and profile.transaction_id == tx:
                status, detail = await self._ask(connection, calls.UpdateDynamicSchedule(
                    charging_profile_id=PROFILE_ID,
                    schedule_update=schedule_update(setpoint, max_charge_kw=max_charge,
                                                    max_discharge_kw=max_discharge)))
                if status == "Accepted":
                    profile.setpoint_w = watts
                    return ok
                st.profile = None   # the station no longer holds it: install it again
            status, detail = await self._ask(connection, calls.SetChargingProfile(
                evse_id=st.evse_id, charging_profile=charging_profile(
                    setpoint, version=connection.version, transaction_id=tx, max_charge_kw=max_charge,
                    max_discharge_kw=max_discharge, kind="Dynamic")))
            if status == "Accepted":
                st.dynamic = True
                st.profile, st.profile_known = InstalledProfile("Dynamic", tx, watts), True
                return ok
            if st.dynamic is True:
                return CommandResult(sid, Ack.REJECTED, detail)
            # not known to support Dynamic profiles: an Absolute one tells
        status, detail = await self._ask(connection, calls.SetChargingProfile(
            evse_id=st.evse_id, charging_profile=charging_profile(
                setpoint, version=connection.version, transaction_id=tx, max_charge_kw=max_charge,
                max_discharge_kw=max_discharge)))
        if status == "Accepted":
            if connection.version == V21 and self.dynamic_profiles and st.dynamic is None:
                st.dynamic = False
                log.info("station %s does not take Dynamic profiles: Absolute profiles from now on", sid)
            st.profile, st.profile_known = InstalledProfile("Absolute", tx, watts), True
            return ok
        return CommandResult(sid, Ack.REJECTED, detail)

    async def request_meter_values(self, station_id: str) -> None:
        connection = self.connections.get(station_id)
        if connection is None:
            return

        async def trigger():
            try:
                await connection.call(connection._call.TriggerMessage(requested_message="MeterValues",
                                                                      evse={"id": connection.evse_id}))
            except (OCPPError, asyncio.TimeoutError, ConnectionClosed):
                pass
        self._spawn(trigger())

    def connected(self) -> list[str]:
        return list(self.connections)


def _ours(profiles: list[dict]) -> InstalledProfile | None:
    """Our TxProfile among those a station reported (None: it holds none of ours)."""
    for profile in profiles:
        if profile.get("id") != PROFILE_ID or profile.get("charging_profile_purpose") != "TxProfile":
            continue
        period = ((profile.get("charging_schedule") or [{}])[0].get("charging_schedule_period") or [{}])[0]
        watts = period.get("setpoint", period.get("limit"))
        return InstalledProfile(profile.get("charging_profile_kind", "Absolute"), profile.get("transaction_id"),
                                float(watts) if watts is not None else None)
    return None
