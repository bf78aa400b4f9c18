"""`v2x run`: the aggregator as a long-running service against a real VTN.

Registers at the configured VTN, serves /metrics and runs the control loop in
real time until SIGINT/SIGTERM. On either signal it stops safely within
`shutdown_budget`: every station gets a command with no discharge that keeps
charging toward its driver's need (`Dispatcher.hold_safe`), the meters are read
once more, queued ledger rows are written (retried within the budget), the
setpoints sent are recorded in the ledger as event "shutdown", the VEN flushes
its reports and stops, and the process exits 0. Everything it must not lose is in the database
(events and their commitments, registration, the ledger), so a process killed
mid-event picks the event up again on restart and counts nothing twice.

Chargers: by default the OCPP CSMS ([ocpp] settings) is started and the loop
dispatches to whatever registered stations connect (`v2x stations add`);
`--simulated-fleet` commands the configured scenario on simulated stations
instead (whose clock is the simulation's own task, not this loop's).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from datetime import datetime, timedelta, timezone

from aggregator.app import Aggregator
from aggregator.config import Settings

log = logging.getLogger(__name__)


class NoChargerDriver(RuntimeError):
    """No charger driver is configured."""


async def run_service(settings: Settings, *, simulated_fleet: bool, stop: asyncio.Event | None = None,
                      tick: timedelta = timedelta(milliseconds=500), say=print,
                      shutdown_budget: timedelta = timedelta(seconds=20), member=None) -> None:
    if settings.cluster.enabled and member is None:   # one of several instances (aggregator/cluster)
        from aggregator.cluster.runner import run_clustered
        return await run_clustered(settings, run_service, simulated_fleet=simulated_fleet, stop=stop, tick=tick,
                                   say=say)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    app = Aggregator(settings)
    simulation = csms = None
    world_stop = asyncio.Event()   # the simulated world outlives the loop until the shutdown hold is done
    running = False
    try:
        if simulated_fleet:
            from sim.stations import start_simulated_fleet   # the simulation, only when asked for
            now = datetime.now(timezone.utc)
            fleet = start_simulated_fleet(app, settings, now, resume=True)
            simulation = asyncio.get_running_loop().create_task(_simulate(fleet, world_stop, tick))
            fleet_text = f"{len(fleet.stations)} simulated EVs"
        elif member is not None:   # cluster: the sockets are on every instance's CSMS
            fleet_text = member.attach_stations(app)
        else:
            from aggregator.ocpp.service import start_csms
            try:
                csms = await start_csms(app, settings)
            except (OSError, ValueError) as err:
                raise NoChargerDriver(f"the OCPP CSMS could not start: {err}") from err
            say(f"OCPP CSMS on {csms.url}<station id> (security profile {settings.ocpp.security_profile}, "
                f"{len(csms.directory.entries)} registered stations)")
            fleet_text = "stations over OCPP"
        if member is not None:   # fenced: commands through the station command table, ledger writes
            member.attach(app)
        port = app.serve_metrics()
        say(f"/metrics on http://{settings.metrics.host}:{port}/metrics")
        if settings.api.enabled:   # before the VEN registers, so the probes answer while it does
            try:
                api_port = await app.serve_api(require_ven=True)
                say(f"API and console on http://{settings.api.host}:{api_port}/ (/api/openapi.json, /console/, "
                    f"/healthz, /readyz)")
            except OSError as err:   # the control loop matters more than the console: run without it
                log.error("the HTTP API could not start on %s:%s (%s); running without it (probes fail)",
                          settings.api.host, settings.api.port, err)
                say(f"API NOT started: {err} (set [api] port / V2X_API_PORT)")
        # Read the fleet before the VTN can send anything: opt decisions need its state.
        await app.dispatcher.step(datetime.now(timezone.utc))
        app.freeze_heap()   # the fleet is loaded: full collections no longer walk it
        await app.start_ven()
        say(f"registered at {settings.ven.vtn_url} as {app.ven.ven_id}; {fleet_text}")
        running = True
        while not stop.is_set():
            await app.dispatcher.step(datetime.now(timezone.utc))
            try:
                await asyncio.wait_for(stop.wait(), tick.total_seconds())
            except asyncio.TimeoutError:
                pass
        say("stopping: every station is held at no discharge, charging toward its driver's need")
        try:
            await asyncio.wait_for(_stop_safely(app, say, shutdown_budget), shutdown_budget.total_seconds())
        except asyncio.TimeoutError:
            log.error("shutdown took longer than %.0f s; exiting anyway", shutdown_budget.total_seconds())
        running = False
    finally:
        if running:   # left the loop by an error: still try to leave the stations safe
            with contextlib.suppress(Exception):
                await asyncio.wait_for(app.dispatcher.hold_safe(datetime.now(timezone.utc)),
                                       shutdown_budget.total_seconds() / 2)
        world_stop.set()
        if simulation is not None:
            simulation.cancel()
        if csms is not None:
            await csms.stop()
        await app.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _stop_safely(app: Aggregator, say, budget: timedelta) -> None:
    started = time.monotonic()
    report = await app.dispatcher.hold_safe(datetime.now(timezone.utc))
    written = await app.ledger.drain(max(1.0, budget.total_seconds() / 2 - (time.monotonic() - started)))
    app.registry.persist()
    held = sum(1 for _, r in report.commands if r.ack.value == "accepted")
    say(f"stopped: {held}/{len(report.commands)} stations hold no discharge; ledger "
        f"{'written' if written else f'NOT fully written ({len(app.ledger.pending)} rows lost)'} "
        f"in {time.monotonic() - started:.1f} s")


async def _simulate(fleet, stop: asyncio.Event, tick: timedelta) -> None:
    """The simulated stations' world, in real time."""
    while not stop.is_set():
        fleet.advance(datetime.now(timezone.utc))
        await asyncio.sleep(tick.total_seconds() / 2)
