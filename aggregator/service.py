"""`v2x run`: the aggregator as a long-running service against a real VTN.

Registers at the configured VTN, serves /metrics and runs the control loop in
real time until SIGINT/SIGTERM. Everything it must not lose is in the database
(events and their commitments, registration, the ledger), so a process killed
mid-event picks the event up again on restart and counts nothing twice.

Chargers: the OCPP 2.1 driver is not built yet, so the only fleet it can
command today is the simulated one (`--simulated-fleet`: the configured
scenario on simulated stations, whose clock is the simulation's own task, not
this loop's).
"""
from __future__ import annotations

import asyncio
import logging
import signal
from datetime import datetime, timedelta, timezone

from aggregator.app import Aggregator
from aggregator.config import Settings

log = logging.getLogger(__name__)


class NoChargerDriver(RuntimeError):
    """No charger driver is configured."""


async def run_service(settings: Settings, *, simulated_fleet: bool, stop: asyncio.Event | None = None,
                      tick: timedelta = timedelta(milliseconds=500), say=print) -> None:
    if not simulated_fleet:
        raise NoChargerDriver("no charger driver is configured: the OCPP 2.1 driver is not built yet; "
                              "run with --simulated-fleet to command the scenario's simulated chargers")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    app = Aggregator(settings)
    simulation = None
    try:
        from sim.stations import start_simulated_fleet   # the simulation, only when asked for
        now = datetime.now(timezone.utc)
        fleet = start_simulated_fleet(app, settings, now, resume=True)
        simulation = asyncio.get_running_loop().create_task(_simulate(fleet, stop, tick))
        port = app.serve_metrics()
        say(f"/metrics on http://{settings.metrics.host}:{port}/metrics")
        # Read the fleet before the VTN can send anything: opt decisions need its state.
        await app.dispatcher.step(datetime.now(timezone.utc))
        await app.start_ven()
        say(f"registered at {settings.ven.vtn_url} as {app.ven.ven_id}; {len(fleet.stations)} simulated EVs")
        while not stop.is_set():
            await app.dispatcher.step(datetime.now(timezone.utc))
            try:
                await asyncio.wait_for(stop.wait(), tick.total_seconds())
            except asyncio.TimeoutError:
                pass
        say("stopping")
    finally:
        if simulation is not None:
            simulation.cancel()
        await app.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _simulate(fleet, stop: asyncio.Event, tick: timedelta) -> None:
    """The simulated stations' world, in real time."""
    while not stop.is_set():
        fleet.advance(datetime.now(timezone.utc))
        await asyncio.sleep(tick.total_seconds() / 2)
