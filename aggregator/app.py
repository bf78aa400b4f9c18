"""Composition root: store, metrics, fleet state, dispatcher, event intake and the VEN, wired once.

The charger side is attached after construction (`use_chargers`), because a
charger driver pushes its station events into the fleet registry made here."""
from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

from aggregator.allocator import AllocatorOptions
from aggregator.config import Settings
from aggregator.chargers.port import ChargerPort
from aggregator.commitment_book import CommitmentBook
from aggregator.dispatch.dispatcher import Dispatcher
from aggregator.dispatch.ledger_writer import LedgerWriter
from aggregator.dispatch.live_metrics import LiveMetrics
from aggregator.dispatch.tally import PerformanceTally
from aggregator.fleet_state.registry import FleetRegistry
from aggregator.event_intake import EventIntake, SignalMapping
from aggregator.metrics import Metrics
from aggregator.programmes import Enrollment
from aggregator.sites import SiteLimits, seed_sites
from bidding.intake import ArrivalForecast
from aggregator.store.db import make_engine
from ven.client import VenClient
from ven.rules import Identity
from ven.pki import ven_client_options as ven_client_options_for

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def program_label(market_context: str) -> str:
    """A short, low-cardinality label for metrics from the program's market context."""
    parsed = urlparse(market_context)
    return (parsed.path.rstrip("/").rsplit("/", 1)[-1] or parsed.netloc or market_context)[:40]


class Aggregator:
    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utc_now,
                 allocator_options: AllocatorOptions = AllocatorOptions(),
                 report_sampling: timedelta = timedelta(seconds=5), ven_client_options: dict | None = None):
        self.settings = settings
        self.clock = clock
        self.engine = make_engine(settings.database.url)
        self.metrics = Metrics()
        self.registry = FleetRegistry(self.engine, metrics=self.metrics)
        self.book = CommitmentBook(self.engine)
        label = program_label(settings.program.market_context)
        seed_sites(self.engine, settings.sites, settings.program.timezone)
        self.sites = SiteLimits(self.engine)     # the sites' grid limits, as the plans take them
        self.dispatcher = Dispatcher(self.registry, None, self.book, allocator_options=allocator_options,
                                     max_over_delivery_kw=settings.program.max_over_delivery_kw,
                                     site_limits=self.sites)
        self.ledger = LedgerWriter(self.engine, self.metrics)
        self.tally = PerformanceTally(self.metrics, self.dispatcher.committed_at, label, self.engine, self.book)
        self.dispatcher.observers = [self.ledger, LiveMetrics(self.metrics, self.registry, self.book, label),
                                     self.tally]
        program = settings.program
        self.intake = EventIntake(self.book, self.registry, program, clock,
                                  signals=SignalMapping(price_export_kw=tuple(map(tuple, program.price_export_kw))),
                                  arrivals=ArrivalForecast(self.engine, program.timezone))
        # the programmes we are enrolled in: the configured primary one, and the others as the
        # database holds them (seeded from additional_market_contexts, changed through the API)
        self.enrollment = Enrollment(self.engine, program.market_context, program.additional_market_contexts)
        identity = Identity(ven_id=settings.ven.ven_id, resource_ids=frozenset(settings.ven.resource_ids),
                            party_ids=frozenset(settings.ven.party_ids), group_ids=frozenset(settings.ven.group_ids),
                            market_contexts=self.enrollment.load())
        if ven_client_options is None and settings.ven.secure:
            ven_client_options = ven_client_options_for(settings.ven.cert_file, settings.ven.key_file,
                                                        settings.ven.ca_file, settings.ven.vtn_fingerprint)
        self.ven = VenClient(settings.ven.vtn_url, settings.ven.ven_name, self.intake, self.registry,
                             store_engine=self.engine, identity=identity, market_context=program.market_context,
                             ven_id=settings.ven.ven_id, clock=clock, report_sampling=report_sampling,
                             metrics=self.metrics, client_options=ven_client_options,
                             max_poll_backoff_s=settings.ven.max_poll_backoff_s)
        self.enrollment.attach(self.ven)
        self._metrics_server = None
        self._api_server = None
        self._froze_heap = False

    def use_chargers(self, port: ChargerPort) -> None:
        """The stations the dispatcher commands (a charger driver or the simulation)."""
        self.dispatcher.port = port

    def serve_metrics(self) -> int:
        """Start /metrics; returns the port (useful when the config asks for port 0)."""
        server, _thread = self.metrics.serve(self.settings.metrics.host, self.settings.metrics.port)
        self._metrics_server = server
        return server.server_port

    async def serve_api(self, *, require_ven: bool = False) -> int:
        """Start the HTTP API, web console and probes ([api] settings); returns the port.
        `require_ven`: /readyz waits for the VEN's registration."""
        from aggregator.api import ApiServer
        self._api_server = ApiServer(self, self.settings.api.host, self.settings.api.port, require_ven=require_ven)
        return await self._api_server.start()

    def freeze_heap(self) -> None:
        """Once the fleet is loaded (the service's first step): collect, then move every
        object alive now out of the garbage collector's reach (`gc.freeze`). The fleet's
        long-lived objects (tens per vehicle) then no longer make each full collection walk
        them: at 10,000 vehicles one took ~0.5 s, stalling the event loop wherever it fell,
        e.g. between a distribute's arrival and its setpoints. Objects made later are
        collected as before."""
        gc.collect()
        gc.freeze()
        self._froze_heap = True

    async def start_ven(self) -> None:
        await self.ven.start()

    async def stop(self) -> None:
        if self._api_server is not None:
            await self._api_server.stop()
            self._api_server = None
        await self.ven.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        self.engine.dispose()
        if self._froze_heap:   # what this service froze may be collected again (tests run many in one process)
            gc.unfreeze()
            self._froze_heap = False
