"""An Aggregator with simulated stations and its HTTP API, running in a thread of its own
(its own event loop), so synchronous clients (requests, schemathesis, a browser) can talk to
it on 127.0.0.1 while the test drives the simulated clock."""
from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta, timezone

from sqlmodel import Session

from aggregator.api import ApiServer
from aggregator.api.tokens import create_token
from aggregator.app import Aggregator
from aggregator.config import Settings
from aggregator.settlement.report import settle_from_ledger
from aggregator.store.models import Bid
from sim.stations import start_simulated_fleet
from tests.aggregator.test_dispatcher import dispatch_event

T0 = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)
TICK = timedelta(milliseconds=500)


class LiveAggregator:
    def __init__(self, database_url: str, config: dict | None = None):
        self.database_url = database_url
        self.config = config or {}      # more settings (sections as in the TOML file)
        self.now = T0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-aggregator", daemon=True)
        self.app: Aggregator | None = None
        self.fleet = None
        self.server: ApiServer | None = None
        self.tokens: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "LiveAggregator":
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        settings = Settings.model_validate({"database": {"url": self.database_url}, "metrics": {"port": 0},
                                            **self.config})
        self.app = Aggregator(settings, clock=lambda: self.now)
        self.fleet = start_simulated_fleet(self.app, settings, self.now)
        await self.app.dispatcher.step(self.now)
        self.server = ApiServer(self.app, "127.0.0.1", 0)
        await self.server.start()

    def stop(self) -> None:
        async def _stop():
            if self.server is not None:
                await self.server.stop()
            if self.app is not None:
                self.app.engine.dispose()
        try:
            self.call(_stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def call(self, coroutine, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self.server.url

    # -- the simulated world -------------------------------------------------------------------
    def run_until(self, until: datetime, tick: timedelta = TICK):
        async def _run():
            report = None
            while self.now < until:
                self.fleet.advance(self.now)
                report = await self.app.dispatcher.step(self.now)
                self.now += tick
            return report
        return self.call(_run())

    def step(self):
        """One control-loop step at the current simulated time (returns its StepReport)."""
        async def _step():
            self.fleet.advance(self.now)
            return await self.app.dispatcher.step(self.now)
        return self.call(_step())

    def offer(self, event: dict) -> str:
        async def _offer():
            [response] = self.app.ven.engine.on_distribute("req-1", [event])
            return response.opt_type
        return self.call(_offer())

    def token(self, role: str, vehicle_id: str | None = None) -> str:
        key = f"{role}:{vehicle_id}"
        if key not in self.tokens:
            self.tokens[key] = create_token(self.app.engine, role, vehicle_id)[0]
        return self.tokens[key]

    def with_history(self) -> "LiveAggregator":
        """An event delivered and settled, and a bid, so every read endpoint has something."""
        start = self.now + timedelta(seconds=10)
        assert self.offer(dispatch_event("evt-1", start, [100.0, 200.0])) == "optIn"
        self.run_until(start + timedelta(seconds=70))

        async def _settle():
            with Session(self.app.engine) as db:
                settle_from_ledger(db, event_id="evt-1", computed_at=self.now)
                db.add(Bid(program="v2x-summer", strategy="optimal", window_start=T0, window_end=T0 + timedelta(hours=3),
                           created_at=T0, price_per_kw=4.5, quantity_json=json.dumps([100.0, 120.0, 90.0]),
                           forecast_json="{}", history_json="{}", params_json="{}"))
                db.commit()
        self.call(_settle())
        return self
