"""`v2x demo`: one end-to-end DR event on the embedded defaults, all on 127.0.0.1.

A utility VTN simulator issues a LOAD_DISPATCH event; our VEN receives it over
OpenADR 2.0b HTTP, opts in, the allocator splits each interval across the
simulated fleet, the simulated chargers follow with battery physics, meters go
to the ledger, TELEMETRY_USAGE reports go back to the VTN and /metrics is
served. The event runs in real time; afterwards simulated time is fast-forwarded
until every vehicle has left, so each driver's energy at departure is measured.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from aggregator.app import Aggregator
from aggregator.config import Settings
from aggregator.event_summary import EventSummary, summarize_event
from sim.stations import SimulatedFleet, start_simulated_fleet
from sim.vtn import UtilityVtn
from ven.pki import create_dev_pki

if TYPE_CHECKING:
    from sim.ocpp_station import OcppSimulatedFleet

log = logging.getLogger(__name__)

# Export asked per interval, kW (positive = export): a ramp up to the peak and back.
DEFAULT_PROFILE_KW = (150.0, 250.0, 350.0, 450.0, 450.0, 350.0, 250.0, 150.0)


class DemoFailure(RuntimeError):
    """The demo could not complete; the message says which step failed."""


@dataclass
class DemoOptions:
    profile_kw: tuple[float, ...] = DEFAULT_PROFILE_KW
    interval: timedelta = timedelta(seconds=15)
    lead: timedelta = timedelta(seconds=8)          # from queuing the event to its start
    warmup: timedelta = timedelta(0)                # fleet runs this long before the VTN issues the event
    tick: timedelta = timedelta(milliseconds=250)   # control-loop period in real time
    fast_forward_step: timedelta = timedelta(minutes=5)
    vtn_port: int = 0                               # 0 = a free port
    report_interval: timedelta = timedelta(seconds=5)
    progress: callable = print
    pki_folder: Path | None = None                  # with it: mutual TLS + signed messages (dev PKI made there)
    chargers: str = "simulated"                     # "ocpp": the stations connect to the CSMS over OCPP 2.1


@dataclass
class DemoResult:
    summary: EventSummary
    vtn_reports: list = field(default_factory=list)
    opt_responses: list = field(default_factory=list)
    metrics_port: int = 0
    ven_rejected: list = field(default_factory=list)
    vtn_url: str = ""
    availability_opts: list = field(default_factory=list)   # EiOpt windows the VTN holds at the end


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_demo(settings: Settings, options: DemoOptions = DemoOptions()) -> DemoResult:
    say = options.progress
    vtn_port = options.vtn_port or free_port()
    pki = create_dev_pki(options.pki_folder) if options.pki_folder is not None else None
    vtn = UtilityVtn(port=vtn_port, report_interval=options.report_interval, pki=pki)
    ven_update = {"vtn_url": vtn.url}
    if pki is not None:
        say(f"mutual TLS + signatures: dev PKI in {options.pki_folder}")
        ven_update.update(cert_file=str(pki.ven_cert), key_file=str(pki.ven_key), ca_file=str(pki.ca_cert),
                          vtn_fingerprint=pki.vtn_fingerprint)
    settings = settings.model_copy(update={"ven": settings.ven.model_copy(update=ven_update)})
    now = datetime.now(timezone.utc)
    app = Aggregator(settings, report_sampling=min(options.report_interval, timedelta(seconds=5)))
    csms = None
    if options.chargers == "ocpp":
        fleet, csms = await _start_ocpp_fleet(app, settings, now)
        say(f"fleet: {len(fleet.stations)} EVs from scenario '{fleet.scenario.name}', connected over OCPP 2.1 "
            f"to the CSMS at {csms.url}<station id>")
    else:
        fleet = start_simulated_fleet(app, settings, now)
        say(f"fleet: {len(fleet.stations)} EVs from scenario '{fleet.scenario.name}'")
    with contextlib.redirect_stdout(io.StringIO()):   # openleadr prints a banner
        await vtn.start()
    try:
        metrics_port = app.serve_metrics()
        say(f"/metrics on http://{settings.metrics.host}:{metrics_port}/metrics; VTN simulator at {vtn.url}")
        # Read the fleet before the VTN can send anything: opt decisions need its state.
        await _advance(fleet, datetime.now(timezone.utc))
        await app.dispatcher.step(datetime.now(timezone.utc))
        try:
            await app.start_ven()
        except Exception as err:
            raise DemoFailure(f"VEN could not register at the VTN: {err}") from err
        say(f"VEN registered as {app.ven.ven_id}")
        if options.warmup:
            await _run_real_time(app, fleet, until=datetime.now(timezone.utc) + options.warmup, tick=options.tick,
                                 say=say)
        start = datetime.now(timezone.utc) + options.lead
        event_id = vtn.dispatch_event(app.ven.ven_id, start, [(options.interval, kw) for kw in options.profile_kw],
                                      market_context=settings.program.market_context)
        end = start + options.interval * len(options.profile_kw)
        say(f"VTN issued {event_id}: {len(options.profile_kw)} x {options.interval.total_seconds():.0f} s "
            f"LOAD_DISPATCH from {start:%H:%M:%S} UTC, peak export {max(options.profile_kw):.0f} kW")
        await _run_real_time(app, fleet, until=end + timedelta(seconds=1), tick=options.tick, say=say)
        if event_id not in app.ven.events:
            raise DemoFailure(f"the VEN never received {event_id} from the VTN")
        await app.ven.stop()
        say("event over; fast-forwarding simulated time until every vehicle has left")
        t = datetime.now(timezone.utc)
        while fleet.any_plugged or app.registry.plugged_in():
            t = min(t + options.fast_forward_step, fleet.last_departure + timedelta(seconds=1))
            await _advance(fleet, t, max_step_s=30.0)
            await app.dispatcher.step(t)
        summary = summarize_event(app.engine, event_id)
        return DemoResult(summary, list(vtn.record.reports), list(vtn.record.opt_responses), metrics_port,
                          list(app.ven.rejected), vtn.url, list(vtn.record.opts.values()))
    finally:
        if csms is not None:
            await csms.stop()
            await fleet.close()
        await app.stop()
        await vtn.stop()


async def _start_ocpp_fleet(app: Aggregator, settings: Settings, now: datetime):
    """The scenario's vehicles on simulated OCPP 2.1 stations, connected over real
    WebSockets on 127.0.0.1 to a CSMS (security profile 0: a local demo)."""
    from aggregator.ocpp.credentials import StationDirectory
    from aggregator.ocpp.csms import Csms
    from sim.ocpp_station import OcppSimulatedFleet
    fleet = OcppSimulatedFleet(settings.fleet.scenario, now,
                               sample_interval=timedelta(seconds=settings.fleet.meter_interval_s))
    app.registry.register_vehicles(fleet.specs)
    app.registry.load()
    csms = Csms(app.registry, StationDirectory(fleet.directory_entries()), host="127.0.0.1", port=0,
                security_profile=0, command_timeout=settings.ocpp.command_timeout_s)
    await csms.start()
    app.use_chargers(csms)
    try:
        await fleet.connect_all(csms.url)
    except Exception as err:
        await fleet.close()
        await csms.stop()
        raise DemoFailure(f"simulated stations could not connect to the CSMS: {err}") from err
    return fleet, csms


async def _advance(fleet, t: datetime, max_step_s: float = 1.0) -> None:
    """Move the simulated world to `t`; OCPP stations' messages are answered before the loop steps."""
    fleet.advance(t, max_step_s=max_step_s)
    flush = getattr(fleet, "flush", None)
    if flush is not None:
        await flush()


async def _run_real_time(app: Aggregator, fleet: SimulatedFleet | OcppSimulatedFleet, until: datetime,
                         tick: timedelta, say) -> None:
    """Step the loop in real time; after each committed interval, say what the meters measured."""
    current, current_started, start_register = None, None, 0.0
    while (now := datetime.now(timezone.utc)) < until:
        await _advance(fleet, now)
        await app.dispatcher.step(now)
        in_force = app.dispatcher.committed_at(now)
        committed = in_force[1] if in_force else None
        if current is not None and committed is not current:
            exported = fleet.export_register_kwh() - start_register
            seconds = (now - current_started).total_seconds()
            say(f"  interval from {current.start:%H:%M:%S}: committed {current.export_kw:6.1f} kW, "
                f"metered {exported * 3600 / seconds:6.1f} kW")
        if committed is not current:
            current, current_started, start_register = committed, now, fleet.export_register_kwh()
        await asyncio.sleep(tick.total_seconds())
