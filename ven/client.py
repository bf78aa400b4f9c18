"""Our VEN: openleadr does transport, registration, signing and report plumbing
(through the thin subclass in `ven.oadr`); the event semantics are ours:

- every distribute goes through `ven.engine.EventEngine` (rules, store, fleet port),
  which never raises: a failure becomes an optOut, with the reason logged;
- one oadrCreatedEvent per distribute, sent before the poll returns;
- later opt changes (the fleet lost capability) are checked every
  `opt_check_interval` and sent with the event's original requestID (rule 42);
- the fleet is reached through `ven.port` only: executable requests and
  assessments (`FleetPort`), and what we report (`FleetTelemetry`);
- reports: TELEMETRY_USAGE of fleet real power (powerReal, W with siScaleCode
  k, positive = import) and TELEMETRY_STATUS (available discharge kW, stored
  kWh, plugged-in EVs); queued reports survive a VTN outage and a restart
  (`ven.reports.ReportQueue` in the database), delivered once, in order;
- EiOpt: the window in which the fleet can export is announced with
  oadrCreateOpt (vavailability) and re-announced (oadrCancelOpt + new opt)
  when departures or dropped chargers move it (`ven.availability`);
- a distribute is answered event by event: an event that cannot be read gets
  its own 454 + optOut; start-up retry with exponential back-off and jitter;
  the poll backs off on transport failures and refused messages only, capped
  at `max_poll_backoff_s`; the venID and registrationID are kept in the database.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from openleadr import objects

from ven.availability import AvailabilityAnnouncer
from ven.engine import EventEngine
from ven.execution import Planning
from ven.measurements import real_power_kw
from ven.oadr import VenOpenADRClient
from ven.port import FleetPort, FleetTelemetry
from ven.reports import ReportQueue
from ven.rules import Identity
from ven.store import EventStore

log = logging.getLogger(__name__)


class VenUnavailable(RuntimeError):
    """The VTN could not be reached or refused registration within the retry budget."""


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class VenClient:
    def __init__(self, vtn_url: str, ven_name: str, port: FleetPort, telemetry: FleetTelemetry, *,
                 store_engine=None, identity: Identity | None = None, market_context: str | None = None,
                 ven_id: str | None = None, clock: Callable[[], datetime] = _utc_now,
                 rng: random.Random | None = None, planning: Planning = Planning(),
                 report_sampling: timedelta = timedelta(seconds=5), metrics=None,
                 client_options: dict | None = None, opt_check_interval: timedelta = timedelta(seconds=5),
                 availability_min_kw: float = 1.0, max_poll_backoff_s: float | None = None):
        """`port` is the fleet side of the event flow (`ven.port.FleetPort`, e.g. the
        aggregator's `EventIntake`); `telemetry` is what the VEN reports
        (`ven.port.FleetTelemetry`, e.g. the aggregator's `FleetView`).
        `store_engine`: the SQLAlchemy engine of the event store (None: events are kept in
        memory only; with it, outgoing reports wait in the `ven_report_outbox` table too, so
        a restart still delivers them). `market_context`: the program the EiOpt availability
        is announced for (and, without `identity`, the one program we accept events for).
        `max_poll_backoff_s`: the longest gap between polls while backing off (None:
        max(60 s, 10 poll periods))."""
        self.metrics = metrics
        self.port = port
        self.telemetry = telemetry
        self.vtn_url = vtn_url
        self.rejected: list[tuple[str, str]] = []   # (event id, reason) of events we answered with an error
        self.store = EventStore(store_engine) if store_engine is not None else None
        stored_ven_id, stored_registration = (self.store.identity(vtn_url) if self.store else (None, None))
        ven_id = ven_id or stored_ven_id
        if identity is None:
            identity = Identity(ven_id=ven_id, market_contexts=frozenset({market_context} if market_context else ()))
        elif identity.ven_id is None and ven_id:
            identity = _with_ven_id(identity, ven_id)   # the configured or stored venID
        if market_context is None and len(identity.market_contexts) == 1:
            market_context = next(iter(identity.market_contexts))
        self.identity = identity
        self.engine = EventEngine(port, identity, clock, store=self.store, rng=rng, planning=planning,
                                  metrics=metrics)
        self.opt_check_interval = opt_check_interval
        self.client = VenOpenADRClient(ven_name=ven_name, vtn_url=vtn_url, ven_id=ven_id, show_fingerprint=False,
                                       distribute_handler=self._on_distribute, on_poll_result=self._on_poll_result,
                                       on_report_sent=self._on_report_sent,
                                       report_queue=ReportQueue(store_engine, vtn_url),
                                       **{"max_backoff_s": max_poll_backoff_s, **(client_options or {})})
        self.client.registration_id = None
        self._stored_registration = stored_registration
        self._wrap_registration()
        self._add_reports(report_sampling)
        self._opt_task: asyncio.Task | None = None
        self.announcer = AvailabilityAnnouncer(self.client, market_context, availability_min_kw)
        self._clock = clock

    @property
    def ven_id(self) -> str | None:
        return self.client.ven_id

    @property
    def registration_id(self) -> str | None:
        return self.client.registration_id

    @property
    def events(self):
        return self.engine.state

    # -- reports -----------------------------------------------------------------------
    def availability(self) -> list[tuple[datetime, float]]:
        return self.telemetry.availability()

    def _add_reports(self, sampling: timedelta) -> None:
        rate = objects.SamplingRate(min_period=sampling, max_period=timedelta(hours=1), on_change=False)
        telemetry = self.telemetry
        self.client.add_report(
            # scale must be passed again: add_report overwrites the measurement's scale with its own default
            callback=lambda: float(telemetry.fleet_power_kw()), resource_id="fleet", measurement=real_power_kw(),
            scale="k", report_specifier_id="fleet-telemetry-usage", r_id="fleet-real-power",
            sampling_rate=rate, report_duration=timedelta(hours=24))
        for r_id, report_type, read in (
                ("available-discharge-kw", "upRegulationCapacityAvailable", telemetry.available_export_kw),
                ("stored-energy-kwh", "storedEnergy", telemetry.stored_energy_kwh),
                ("plugged-in-evs", "x-resourceStatus", telemetry.plugged_in)):
            self.client.add_report(
                callback=lambda read=read: float(read()), resource_id="fleet", report_name="TELEMETRY_STATUS",
                report_specifier_id="fleet-telemetry-status", r_id=r_id, report_type=report_type,
                reading_type="x-notApplicable", sampling_rate=rate, report_duration=timedelta(hours=24))

    # -- events --------------------------------------------------------------------------
    async def _on_distribute(self, request_id: str, raw_events: list[dict]) -> list[dict]:
        started = time.perf_counter()
        responses = self.engine.on_distribute(request_id, raw_events)
        for response in responses:
            if response.response_code != 200:
                self.rejected.append((response.event_id, response.response_description))
        if self.metrics is not None:
            self.metrics.ven_response_latency.observe(time.perf_counter() - started)
        self._count_events()
        return [r.as_openleadr() for r in responses]

    async def _opt_watch(self) -> None:
        while True:
            await asyncio.sleep(self.opt_check_interval.total_seconds())
            await self.check_opt_changes()

    async def check_opt_changes(self) -> None:
        try:
            for response in self.engine.opt_changes():
                await self.client.created_event(response.request_id, response.event_id, response.opt_type,
                                                response.modification_number)
            self._count_events()
        except Exception:  # the watcher must survive anything
            log.exception("opt-change check failed")
        try:
            await self.announcer.refresh(self.availability(), self._clock())
        except Exception:
            log.exception("availability announcement failed")

    # -- transport and identity -------------------------------------------------------------
    def _on_poll_result(self, ok: bool, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.ven_poll_latency.observe(seconds)
            self.metrics.ven_connected.set(1 if ok else 0)
            if ok:
                self.metrics.ven_last_poll.set(time.time())

    def _on_report_sent(self, values: int) -> None:
        if self.metrics is not None:
            self.metrics.reports_sent.inc(values)

    def _count_events(self) -> None:
        if self.metrics is None:
            return
        counts = {"optIn": 0, "optOut": 0}
        for stored in self.engine.state.values():
            if not stored.cancelled and stored.status(self.engine.clock()) != "completed":
                counts[stored.opt_state] = counts.get(stored.opt_state, 0) + 1
        for opt, count in counts.items():
            self.metrics.events_known.labels(opt=opt).set(count)

    def _wrap_registration(self) -> None:
        """Re-register with the stored registrationID, and store what the VTN assigns."""
        original = self.client.create_party_registration

        async def create_party_registration(*args, **kwargs):
            if kwargs.get("registration_id") is None and self._stored_registration:
                kwargs["registration_id"] = self._stored_registration
            result = await original(*args, **kwargs)
            if self.client.registration_id and self.store is not None:
                self.store.save_identity(self.vtn_url, self.client.ven_id, self.client.registration_id)
                self._stored_registration = self.client.registration_id
            if self.client.ven_id:
                self.engine.identity = self.identity = _with_ven_id(self.identity, self.client.ven_id)
            return result

        self.client.create_party_registration = create_party_registration

    async def start(self, attempts: int = 8, first_delay_s: float = 0.5, max_delay_s: float = 30.0) -> None:
        """Register (retrying with exponential back-off and full jitter) and start polling."""
        delay = first_delay_s
        for attempt in range(1, attempts + 1):
            self.client.client_session = None   # a failed run() closed it; start a fresh one
            try:
                await self.client.run()
            except Exception as err:
                log.warning("registration attempt failed: %s: %s", err.__class__.__name__, err)
            if self.client.registration_id:
                log.info("registered at the VTN as ven_id=%s (registration %s)", self.client.ven_id,
                         self.client.registration_id)
                if self.metrics is not None:
                    self.metrics.ven_connected.set(1)
                self._opt_task = asyncio.get_running_loop().create_task(self._opt_watch())
                return
            if attempt == attempts:
                break
            wait = random.uniform(0, delay)
            log.warning("VTN at %s not reachable or refused registration (attempt %d/%d); retrying in %.1f s",
                        self.client.vtn_url, attempt, attempts, wait)
            await asyncio.sleep(wait)
            delay = min(max_delay_s, delay * 2)
        raise VenUnavailable(f"could not register at {self.client.vtn_url} after {attempts} attempts")

    async def stop(self) -> None:
        if self._opt_task is not None:
            self._opt_task.cancel()
            self._opt_task = None
        try:
            await self.client.stop()
        except Exception:  # stopping must not mask the reason we stop
            log.debug("error while stopping the openleadr client", exc_info=True)


def _with_ven_id(identity: Identity, ven_id: str) -> Identity:
    from dataclasses import replace
    return replace(identity, ven_id=ven_id)
