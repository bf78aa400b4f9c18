"""The CSMS: a WebSocket server for OCPP 2.1 and 2.0.1 stations that implements
the charger port.

- `command(setpoint)` sends the station a TxProfile (SetChargingProfile; OCPP 2.1
  CentralSetpoint, negative = discharge; OCPP 2.0.1 a charging limit, never below
  0) or, when the setpoint is the station's full charging power (nothing asked of
  it), ClearChargingProfile. It resolves to ACCEPTED / REJECTED from the
  CALLRESULT (a CALLERROR is a rejection), TIMED_OUT when no answer comes in
  `command_timeout`, OFFLINE when the station is not connected.
- A station that disconnects is reported offline; one that connects is reported
  online and re-synchronised: it is asked (TriggerMessage) for its transaction
  state, which re-announces a running session without counting anything twice.
- `request_meter_values` triggers a MeterValues message and returns at once.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import datetime, timezone

import ocpp.messages
import websockets
from ocpp.exceptions import OCPPError
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from aggregator.chargers.port import (Ack, CommandResult, Setpoint, StationEventSink, StationOffline, StationOnline)
from aggregator.fleet_state.registry import StationSpec
from aggregator.ocpp.connection import connection_for
from aggregator.ocpp.credentials import StationDirectory
from aggregator.ocpp.handshake import make_process_request, station_id_of
from aggregator.ocpp.messages import PROFILE_ID, SUBPROTOCOLS, V21, charging_profile

log = logging.getLogger(__name__)

# Validate in the event loop: a thread hop per message costs more than validating a small payload.
ocpp.messages.ASYNC_VALIDATION = False


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Csms:
    def __init__(self, sink: StationEventSink, directory: StationDirectory, *, host: str = "127.0.0.1",
                 port: int = 9000, security_profile: int = 0, ssl_context: ssl.SSLContext | None = None,
                 command_timeout: float = 10.0, validate_outgoing: bool = True, clock=_utc_now):
        self.sink = sink
        self.directory = directory
        self.host, self.port = host, port
        self.security_profile = security_profile
        self.ssl_context = ssl_context
        self.command_timeout = command_timeout
        self.validate_outgoing = validate_outgoing
        self.clock = clock
        self.connections: dict = {}
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
                                   max_size=2 ** 20, compression=None)
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
        connection = connection_for(version)(station_id, websocket, self, response_timeout=self.command_timeout)
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
        """After a (re)connect: ask the station for its transaction state (a running
        transaction is re-announced; sessions and samples are de-duplicated downstream)."""
        for _ in range(int(grace_s / 0.05)):   # let a booting station send its BootNotification first
            if connection.booted:
                break
            await asyncio.sleep(0.05)
        try:
            await connection.call(connection._call.TriggerMessage(requested_message="TransactionEvent",
                                                                  evse={"id": connection.evse_id}),
                                  suppress=False)
        except (OCPPError, asyncio.TimeoutError, ConnectionClosed) as err:
            log.info("station %s: transaction re-sync not possible (%s)", connection.id, err.__class__.__name__)

    # -- ChargerPort ----------------------------------------------------------------------
    async def command(self, setpoint: Setpoint) -> CommandResult:
        sid = setpoint.station_id
        connection = self.connections.get(sid)
        if connection is None:
            return CommandResult(sid, Ack.OFFLINE, "not connected")
        if connection.transaction_id is None:
            return CommandResult(sid, Ack.REJECTED, "no transaction on the station")
        entry = self.directory.get(sid)
        max_charge = entry.max_charge_kw if entry else 22.0
        max_discharge = (entry.max_discharge_kw if entry else 0.0) if connection.version == V21 else 0.0
        calls = connection._call
        if setpoint.power_kw >= max_charge - 1e-6:
            payload = calls.ClearChargingProfile(charging_profile_id=PROFILE_ID)
        else:
            payload = calls.SetChargingProfile(
                evse_id=connection.evse_id,
                charging_profile=charging_profile(setpoint, version=connection.version,
                                                  transaction_id=connection.transaction_id,
                                                  max_charge_kw=max_charge, max_discharge_kw=max_discharge))
        try:
            result = await asyncio.wait_for(
                connection.call(payload, suppress=False, skip_schema_validation=not self.validate_outgoing),
                self.command_timeout)
        except asyncio.TimeoutError:
            return CommandResult(sid, Ack.TIMED_OUT, f"no answer within {self.command_timeout:g} s")
        except ConnectionClosed:
            return CommandResult(sid, Ack.OFFLINE, "connection closed")
        except OCPPError as err:
            return CommandResult(sid, Ack.REJECTED, f"CALLERROR {err.code}: {err.description}")
        status = getattr(result, "status", None)
        if status == "Accepted" or (status == "Unknown" and isinstance(payload, calls.ClearChargingProfile)):
            return CommandResult(sid, Ack.ACCEPTED)
        info = getattr(result, "status_info", None) or {}
        return CommandResult(sid, Ack.REJECTED, f"{status}: {info.get('reason_code', '')}".rstrip(": "))

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
