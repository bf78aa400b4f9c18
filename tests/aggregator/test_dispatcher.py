"""The control loop with a simulated fleet and a simulated clock (no VTN): commitments
are delivered as metered export, drivers are protected, failures lose nothing."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

import aggregator.dispatch.ledger_writer as ledger_module
from aggregator.app import Aggregator
from aggregator.config import Settings
from aggregator.event_summary import summarize_event
from aggregator.store.models import MeterReading, PlugSession
from sim.stations import start_simulated_fleet

T0 = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)
TICK = timedelta(milliseconds=500)
MARKET = "http://utility.example/programs/v2x-summer"


def settings_for(database_url: str) -> Settings:
    return Settings.model_validate({"database": {"url": database_url}, "metrics": {"port": 0}})


def dispatch_event(event_id, start, values, interval=timedelta(seconds=30), test_event=False):
    """An oadrDistributeEvent's event, as openleadr parses it (powerReal in kW)."""
    return {"event_descriptor": {"event_id": event_id, "modification_number": 0, "event_status": "far",
                                 "market_context": MARKET, "priority": 1, "test_event": test_event},
            "active_period": {"dtstart": start, "duration": interval * len(values)},
            "event_signals": [{"signal_name": "LOAD_DISPATCH", "signal_type": "setpoint",
                               "measurement": {"name": "powerReal", "unit": "W", "scale": "k"},
                               "intervals": [{"uid": i, "duration": interval, "signal_payload": v}
                                             for i, v in enumerate(values)]}],
            "targets": [], "response_required": "always"}


def end_of(event) -> datetime:
    return event["active_period"]["dtstart"] + event["active_period"]["duration"]


class Harness:
    """An Aggregator whose clock is driven by the test; events go through the VEN's rules
    and its fleet port as a distribute would (no HTTP here: see tests/integration)."""

    def __init__(self, database_url: str, scenario: str = "default"):
        self.now = T0
        self.app = Aggregator(settings_for(database_url), clock=lambda: self.now)
        self.fleet = start_simulated_fleet(self.app, self.app.settings, T0)
        self._requests = 0

    async def run_until(self, until: datetime, tick: timedelta = TICK, every=None) -> None:
        while self.now < until:
            self.fleet.advance(self.now)
            await self.app.dispatcher.step(self.now)
            if every is not None:
                every(self.now)
            self.now += tick

    async def offer(self, event: dict) -> str:
        self._requests += 1
        [response] = self.app.ven.engine.on_distribute(f"req-{self._requests}", [event])
        return response.opt_type


@pytest.fixture
def harness(tmp_path):
    h = Harness(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield h
    h.app.engine.dispose()


def test_committed_export_is_delivered_and_metered(harness):
    async def scenario():
        await harness.run_until(T0 + timedelta(seconds=5))
        event = dispatch_event("e1", T0 + timedelta(seconds=20), [120.0, 300.0, 200.0])
        assert await harness.offer(event) == "optIn"
        await harness.run_until(end_of(event) + timedelta(seconds=10))
        return summarize_event(harness.app.engine, "e1")
    summary = asyncio.run(scenario())
    assert [i.committed_export_kw for i in summary.intervals] == [120.0, 300.0, 200.0]
    for interval in summary.intervals:
        assert interval.coverage == pytest.approx(1.0)
        # within the charger response at the edges; the switch to a bigger ask
        # goes out a few seconds early, so an interval may over-deliver a little
        assert 0.92 <= interval.delivered_export_kw / interval.committed_export_kw <= 1.15
    assert summary.performance_ratio == pytest.approx(1.0, abs=0.05)
    # once the event is over, the gauge shows settlement's figure, not a second computation
    gauge = harness.app.metrics.performance_ratio.labels(program="v2x-summer")._value.get()
    assert gauge == pytest.approx(summary.performance_ratio, abs=1e-9)
    assert harness.app.tally.settled["e1"] == gauge


def test_a_test_event_is_answered_but_moves_no_energy(harness):
    async def scenario():
        await harness.run_until(T0 + timedelta(seconds=5))
        event = dispatch_event("t1", T0 + timedelta(seconds=10), [300.0], test_event=True)
        assert await harness.offer(event) == "optIn"
        await harness.run_until(end_of(event) + timedelta(seconds=5))
        return summarize_event(harness.app.engine, "t1")
    summary = asyncio.run(scenario())
    assert summary.intervals[0].committed_export_kw == 0.0
    assert summary.intervals[0].delivered_export_kw < 0     # the fleet kept charging
    assert "test event" in summary.note


def test_impossible_commitment_is_dispatched_best_effort_with_shortfall(harness):
    async def scenario():
        await harness.run_until(T0 + timedelta(seconds=5))
        event = dispatch_event("big", T0 + timedelta(seconds=10), [5000.0, 5000.0])
        opt = await harness.offer(event)
        await harness.run_until(end_of(event) + timedelta(seconds=5))
        return opt, summarize_event(harness.app.engine, "big")
    opt, summary = asyncio.run(scenario())
    assert opt == "optIn"
    assert "best effort" in summary.note and "short" in summary.note
    delivered = [i.delivered_export_kw for i in summary.intervals]
    bound = float(harness.app.registry.export_bound_kw(T0, [1 / 120])[0])
    assert min(delivered) > 0.7 * bound        # the fleet gave most of what it could
    assert summary.performance_ratio < 0.5     # and the shortfall is reported, not hidden


def test_a_vanishing_charger_is_replanned_around(harness):
    victim = "cp-school-bus-01"

    async def scenario():
        await harness.run_until(T0 + timedelta(seconds=5))
        event = dispatch_event("e2", T0 + timedelta(seconds=10), [300.0, 300.0])
        await harness.offer(event)

        def pull_plug(now):
            if now >= T0 + timedelta(seconds=45):
                harness.fleet.set_online(victim, now >= T0 + timedelta(seconds=60))
        await harness.run_until(end_of(event) + timedelta(seconds=5), every=pull_plug)
        return summarize_event(harness.app.engine, "e2")
    summary = asyncio.run(scenario())
    # the others covered for the missing bus while it was offline
    assert summary.intervals[1].delivered_export_kw == pytest.approx(300.0, rel=0.1)
    metrics = harness.app.metrics
    assert metrics.chargers_connected._value.get() == metrics.chargers_total._value.get()  # back again


def test_departing_drivers_get_their_energy(harness):
    async def scenario():
        await harness.run_until(T0 + timedelta(seconds=2))
        event = dispatch_event("e3", T0 + timedelta(seconds=5), [400.0] * 8, interval=timedelta(seconds=30))
        await harness.offer(event)
        await harness.run_until(T0 + timedelta(minutes=4), tick=timedelta(seconds=1))
    asyncio.run(scenario())
    departures = {vehicle: (energy, need) for vehicle, _at, energy, need in harness.app.registry.departures}
    assert {"home-car-01", "home-car-02"} <= set(departures)   # they leave 2.4 and 3 minutes in
    for energy, need in departures.values():
        assert need - energy < 0.1
    with Session(harness.app.engine) as db:
        closed = db.exec(select(PlugSession).where(PlugSession.vehicle_id == "home-car-01")).one()
        assert closed.left_at is not None and closed.energy_at_departure_kwh >= closed.need_kwh - 0.1


def test_ledger_rows_survive_a_database_outage(harness, monkeypatch):
    real_insert = ledger_module.insert_meter_readings
    failing = {"on": False}

    def flaky(session, rows):
        if failing["on"]:
            raise OperationalError("INSERT", {}, Exception("database is down"))
        return real_insert(session, rows)
    monkeypatch.setattr(ledger_module, "insert_meter_readings", flaky)

    async def scenario():
        await harness.run_until(T0 + timedelta(seconds=6))
        failing["on"] = True
        await harness.run_until(T0 + timedelta(seconds=21))
        queued = len(harness.app.ledger.pending)
        failing["on"] = False
        await harness.run_until(T0 + timedelta(seconds=22))
        return queued
    queued = asyncio.run(scenario())
    assert queued > 0
    assert harness.app.ledger.pending == []
    assert harness.app.metrics.database_errors._value.get() > 0
    with Session(harness.app.engine) as db:
        stamps = {r.ts for r in db.exec(select(MeterReading).where(MeterReading.source == "cp-school-bus-01")).all()}
    # a reading every 5 s from 0 to 20 s, none lost while the database was down
    expected = {T0 + timedelta(seconds=s) for s in (0, 5, 10, 15, 20)}
    assert expected <= {t.replace(tzinfo=timezone.utc) for t in stamps}
