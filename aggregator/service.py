"""`v2x run`: the aggregator as a long-running service against a real VTN.

Registers at the configured VTN, serves /metrics and runs the control loop in
real time until SIGINT/SIGTERM. Everything it must not lose is in the database
(events and their commitments, registration, the ledger), so a process killed
mid-event picks the event up again on restart and counts nothing twice.

Chargers: the OCPP 2.1 driver is not built yet, so the only fleet it can
command today is the simulated one (`--simulated-fleet`, the configured
scenario on simulated chargers).
"""
from __future__ import annotations

import asyncio
import logging
import signal
from datetime import datetime, timedelta, timezone

from aggregator.app import Aggregator
from aggregator.config import Settings
from aggregator.demo import SimulatedFleet

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
    now = datetime.now(timezone.utc)
    app = Aggregator(settings)
    fleet = SimulatedFleet(settings.fleet.scenario, now)
    if fleet.resume_from_ledger(app.engine):
        say("simulated chargers resumed from their last meter readings")
    fleet.plug_into(app)
    try:
        port = app.serve_metrics()
        say(f"/metrics on http://{settings.metrics.host}:{port}/metrics")
        # Read the fleet before the VTN can send anything: opt decisions need its state.
        now = datetime.now(timezone.utc)
        fleet.advance(now)
        await app.dispatcher.step(now)
        await app.start_ven()
        say(f"registered at {settings.ven.vtn_url} as {app.ven.ven_id}; {len(fleet.chargers)} simulated EVs")
        while not stop.is_set():
            now = datetime.now(timezone.utc)
            fleet.advance(now)
            await app.dispatcher.step(now)
            try:
                await asyncio.wait_for(stop.wait(), tick.total_seconds())
            except asyncio.TimeoutError:
                pass
        say("stopping")
    finally:
        await app.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
