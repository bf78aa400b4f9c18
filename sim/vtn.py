"""A utility VTN simulator on `openleadr.OpenADRServer`, for the demo and the tests.

It registers VENs, asks for their TELEMETRY_USAGE reports, records every value
and every opt response, and issues LOAD_DISPATCH events with powerReal in kW.
Runs on 127.0.0.1 only.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from aiohttp import web
from openleadr import OpenADRServer, objects
from openleadr.service import VTNService, handler, service

from ven.pki import DevPki

from ven.measurements import real_power_kw

log = logging.getLogger(__name__)


@service("EiOpt")
class AvailabilityService(VTNService):
    """EiOpt for the simulator (openleadr's own OptService is a stub the server does not route)."""

    def __init__(self, vtn_id: str, record: "VtnRecord"):
        super().__init__(vtn_id)
        self.record = record

    @handler("oadrCreateOpt")
    async def create_opt(self, payload: dict):
        self.record.opts[payload["opt_id"]] = payload
        return "oadrCreatedOpt", {"opt_id": payload["opt_id"]}

    @handler("oadrCancelOpt")
    async def cancel_opt(self, payload: dict):
        self.record.opts.pop(payload["opt_id"], None)
        return "oadrCanceledOpt", {"opt_id": payload["opt_id"]}


@dataclass
class VtnRecord:
    registered: dict[str, str] = field(default_factory=dict)               # ven_id -> ven_name
    reports: list[tuple[str, datetime, float]] = field(default_factory=list)  # (ven_id, ts, value kW)
    opt_responses: list[tuple[str, str, str]] = field(default_factory=list)   # (ven_id, event_id, opt)
    opts: dict[str, dict] = field(default_factory=dict)                      # optID -> availability announced


class UtilityVtn:
    def __init__(self, host: str = "127.0.0.1", port: int = 8080, vtn_id: str = "UTILITY-VTN",
                 poll_interval: timedelta = timedelta(seconds=1), report_interval: timedelta = timedelta(seconds=5),
                 server_options: dict | None = None, pki: DevPki | None = None):
        """With `pki`, the VTN serves HTTPS requiring client certificates from the PKI's CA,
        signs its messages with the VTN key, and accepts only the VEN certificate whose
        fingerprint it was given out of band (the PKI's VEN certificate)."""
        self.host, self.port = host, port
        self.report_interval = report_interval
        self.record = VtnRecord()
        self.registered_event = asyncio.Event()
        self.pki = pki
        options = dict(server_options or {})
        if pki is not None:
            options.update(cert=str(pki.vtn_cert), key=str(pki.vtn_key), http_cert=str(pki.vtn_cert),
                           http_key=str(pki.vtn_key), http_ca_file=str(pki.ca_cert), show_server_cert_domain=False)
        self.server = OpenADRServer(vtn_id=vtn_id, http_host=host, http_port=port,
                                    requested_poll_freq=poll_interval, show_fingerprint=False,
                                    ven_lookup=self._lookup, **options)
        self.server.app.add_routes([web.post(f"{self.server.http_path_prefix}/EiOpt",
                                             AvailabilityService(vtn_id, self.record).handler)])
        self.server.add_handler("on_create_party_registration", self._on_registration)
        self.server.add_handler("on_register_report", self._on_register_report)
        self._registrations: dict[str, dict] = {}

    @property
    def url(self) -> str:
        scheme = "https" if self.pki is not None else "http"
        return f"{scheme}://{self.host}:{self.port}/OpenADR2/Simple/2.0b"

    async def start(self) -> None:
        await self.server.run()

    async def stop(self) -> None:
        await self.server.stop()

    # -- handlers ----------------------------------------------------------------
    def _lookup(self, ven_id: str) -> dict:
        return self._registrations.get(ven_id, {})

    def _on_registration(self, payload: dict):
        ven_name = payload["ven_name"]
        if self.pki is not None and payload.get("fingerprint") != self.pki.ven_fingerprint:
            log.warning("VTN: refused %s: certificate fingerprint %s is not the one on file",
                        ven_name, payload.get("fingerprint"))
            return False
        ven_id = payload.get("ven_id") or f"ven-{ven_name}"
        registration_id = f"reg-{uuid.uuid4().hex[:12]}"
        self._registrations[ven_id] = {"ven_id": ven_id, "ven_name": ven_name, "registration_id": registration_id,
                                       "fingerprint": self.pki.ven_fingerprint if self.pki else None}
        self.record.registered[ven_id] = ven_name
        self.registered_event.set()
        log.info("VTN: registered %s as %s", ven_name, ven_id)
        return ven_id, registration_id

    def _on_register_report(self, ven_id, resource_id, measurement, unit, scale,
                            min_sampling_interval, max_sampling_interval):
        if measurement != "RealPower":
            return None   # the simulator subscribes to telemetry usage (fleet real power) only
        def on_values(values):
            for ts, value in values:
                self.record.reports.append((ven_id, ts, float(value)))
        interval = max(self.report_interval, min_sampling_interval or timedelta(0))
        return on_values, interval

    def _on_opt(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.record.opt_responses.append((ven_id, event_id, opt_type))
        log.info("VTN: %s answered %s for %s", ven_id, opt_type, event_id)

    # -- events ------------------------------------------------------------------
    def dispatch_event(self, ven_id: str, start: datetime, intervals: list[tuple[timedelta, float]],
                       signal_type: str = "setpoint", market_context: str = "http://utility.example/programs/v2x-summer",
                       event_id: str | None = None, priority: int = 1, test_event: bool = False) -> str:
        """Queue a LOAD_DISPATCH event (values in kW) for `ven_id`; returns the eventID."""
        event_id = event_id or f"evt-{uuid.uuid4().hex[:10]}"
        oadr_intervals = []
        t = start
        for uid, (duration, value) in enumerate(intervals):
            oadr_intervals.append(objects.Interval(dtstart=t, duration=duration, signal_payload=value, uid=uid))
            t += duration
        signal = objects.EventSignal(intervals=oadr_intervals, signal_name="LOAD_DISPATCH", signal_type=signal_type,
                                     signal_id=f"sig-{uuid.uuid4().hex[:8]}", measurement=real_power_kw(),
                                     current_value=0.0)
        event = objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=event_id, modification_number=0, market_context=market_context, event_status="far",
                priority=priority, test_event=test_event, created_date_time=datetime.now(timezone.utc)),
            active_period=objects.ActivePeriod(dtstart=start, duration=t - start),
            event_signals=[signal], targets=[objects.Target(ven_id=ven_id)],
            response_required="always")
        self.server.add_raw_event(ven_id=ven_id, event=event, callback=self._on_opt)
        log.info("VTN: queued %s for %s: %d intervals from %s", event_id, ven_id, len(intervals), start.isoformat())
        return event_id
