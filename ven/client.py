"""Our VEN: openleadr does transport, registration, signing and report plumbing;
this module adds what the library leaves to us:

- handlers that never raise (a raising `on_event` poisons openleadr's client,
  upstream issue #118): a malformed event or a failing handler becomes an
  optOut for that event alone, with the reason logged;
- translation into the domain `Event` before the aggregator sees anything;
- a TELEMETRY_USAGE report of fleet real power (kW, positive = import);
- start-up retry with exponential back-off and jitter while the VTN is down.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from openleadr import OpenADRClient, objects

from ven.event import Event
from ven.measurements import real_power_kw
from ven.translate import MalformedEvent, translate_event

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], Awaitable[str]]


class VenUnavailable(RuntimeError):
    """The VTN could not be reached or refused registration within the retry budget."""


class VenClient:
    def __init__(self, vtn_url: str, ven_name: str, on_event: EventHandler, fleet_power_kw: Callable[[], float],
                 *, ven_id: str | None = None, report_sampling: timedelta = timedelta(seconds=5),
                 metrics=None, client_options: dict | None = None):
        self.on_event = on_event
        self.metrics = metrics
        self.rejected: list[tuple[str, str]] = []   # (event id or '?', reason) of events we could not execute
        self.client = OpenADRClient(ven_name=ven_name, vtn_url=vtn_url, ven_id=ven_id,
                                    show_fingerprint=False, **(client_options or {}))
        self.client.add_handler("on_event", self._handle)
        self.client.add_handler("on_update_event", self._handle)
        self.client.add_report(
            callback=lambda: float(fleet_power_kw()), resource_id="fleet", measurement=real_power_kw(),
            report_specifier_id="fleet-telemetry-usage", r_id="fleet-real-power",
            sampling_rate=objects.SamplingRate(min_period=report_sampling, max_period=timedelta(hours=1),
                                               on_change=False),
            report_duration=timedelta(hours=24))
        self._wrap_poll()

    @property
    def ven_id(self) -> str | None:
        return self.client.ven_id

    @property
    def registration_id(self) -> str | None:
        return self.client.registration_id

    async def _handle(self, raw: dict) -> str:
        """openleadr's on_event/on_update_event: must always return optIn/optOut."""
        started = time.perf_counter()
        event_id = "?"
        try:
            event_id = raw.get("event_descriptor", {}).get("event_id", "?")
            event = translate_event(raw)
            decision = await self.on_event(event)
            if decision not in ("optIn", "optOut"):
                log.error("event handler returned %r for %s; answering optOut", decision, event_id)
                decision = "optOut"
        except MalformedEvent as err:
            log.error("malformed event %s, answering optOut: %s", event_id, err)
            self.rejected.append((event_id, str(err)))
            decision = "optOut"
        except Exception as err:  # never let openleadr see an exception (issue #118)
            log.exception("event handler failed for %s, answering optOut", event_id)
            self.rejected.append((event_id, f"{err.__class__.__name__}: {err}"))
            decision = "optOut"
        if self.metrics is not None:
            self.metrics.ven_response_latency.observe(time.perf_counter() - started)
        return decision

    def _wrap_poll(self) -> None:
        """Time each poll and track whether the VTN answers (for /metrics)."""
        original = self.client.poll

        async def timed_poll():
            started = time.perf_counter()
            try:
                response_type, payload = await original()
            except Exception as err:  # e.g. an empty body from the VTN: openleadr cannot unpack it
                log.warning("poll failed: %s: %s", err.__class__.__name__, err)
                response_type, payload = None, {}
            if self.metrics is not None:
                self.metrics.ven_poll_latency.observe(time.perf_counter() - started)
                self.metrics.ven_connected.set(1 if response_type is not None else 0)
                if response_type is not None:
                    self.metrics.ven_last_poll.set(time.time())
            return response_type, payload

        self.client.poll = timed_poll

    async def start(self, attempts: int = 8, first_delay_s: float = 0.5, max_delay_s: float = 30.0) -> None:
        """Register (retrying with exponential back-off and full jitter) and start polling."""
        delay = first_delay_s
        for attempt in range(1, attempts + 1):
            self.client.client_session = None   # a failed run() closed it; start a fresh one
            await self.client.run()
            if self.client.registration_id:
                log.info("registered at the VTN as ven_id=%s (registration %s)", self.client.ven_id,
                         self.client.registration_id)
                if self.metrics is not None:
                    self.metrics.ven_connected.set(1)
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
        try:
            await self.client.stop()
        except Exception:  # stopping must not mask the reason we stop
            log.debug("error while stopping the openleadr client", exc_info=True)
