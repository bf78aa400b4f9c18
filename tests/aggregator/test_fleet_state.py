"""The charger port and the fleet-state registry with simulated stations and a test
clock: acknowledgements re-plan, sessions come from stations, SoC is optional,
restarts open no second session."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, select

from aggregator.app import Aggregator
from aggregator.chargers.port import Ack, MeterSample, SessionStarted, VehicleIdentified, VehicleInfo
from aggregator.config import Settings
from aggregator.fleet import VehicleSpec
from aggregator.fleet_state.registry import StationSpec
from aggregator.store.models import PlugSession
from sim.station import Behaviour, SimulatedStation
from sim.stations import SimulatedStations, start_simulated_fleet

T0 = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)
TICK = timedelta(milliseconds=500)
BUS = VehicleSpec("bus-1", "school-bus", 200.0, 40.0, 19.2, 19.2, 0.92, 0.92)


def settings_for(database_url: str) -> Settings:
    return Settings.model_validate({"database": {"url": database_url}, "metrics": {"port": 0}})


async def run_until(app, fleet, now, until, tick=TICK):
    while now < until:
        fleet.advance(now)
        await app.dispatcher.step(now)
        now += tick
    return now


@pytest.fixture
def app(database_url):
    app = Aggregator(settings_for(database_url), clock=lambda: T0)
    app.dispatcher.command_deadline = timedelta(seconds=0.3)
    yield app
    app.engine.dispose()


def test_a_rejecting_station_is_replanned_as_unavailable_until_it_accepts(app):
    fleet = start_simulated_fleet(app, app.settings, T0, behaviours={"school-bus-01": Behaviour("reject")})
    victim = fleet.stations["cp-school-bus-01"]

    async def scenario():
        now = await run_until(app, fleet, T0, T0 + timedelta(seconds=2))
        planned = {s.station_id for s in app.registry.snapshot(now)}
        assert "cp-school-bus-01" not in planned and len(planned) == len(fleet.stations) - 1
        rejected = [r for _, r in app.ledger_commands if r.station_id == "cp-school-bus-01"]
        assert rejected and rejected[0].ack is Ack.REJECTED
        victim.behaviour = Behaviour("accept")   # it recovers; the back-off retry finds out
        now = await run_until(app, fleet, now, now + timedelta(seconds=10))
        assert "cp-school-bus-01" in {s.station_id for s in app.registry.snapshot(now)}
        answers = [r.ack for _, r in app.ledger_commands if r.station_id == "cp-school-bus-01"]
        assert answers[-1] is Ack.ACCEPTED and victim.valid_until is not None
    app.ledger_commands = []
    app.dispatcher.observers.append(_CommandRecorder(app.ledger_commands))
    asyncio.run(scenario())


def test_a_station_that_acknowledges_too_late_is_unavailable(app):
    fleet = start_simulated_fleet(app, app.settings, T0, behaviours={"school-bus-02": Behaviour("late", 1.0)})

    async def scenario():
        now = await run_until(app, fleet, T0, T0 + timedelta(seconds=1))
        assert "cp-school-bus-02" not in {s.station_id for s in app.registry.snapshot(now)}
        live = app.registry.stations["cp-school-bus-02"]
        assert live.unavailable_since is not None and live.retry_at > now - TICK
    asyncio.run(scenario())


class _CommandRecorder:
    def __init__(self, sink):
        self.sink = sink

    def observe(self, report):
        self.sink.extend(report.commands)


def test_a_session_that_starts_before_the_vehicle_is_known(app):
    """An AC station starts a session for a vehicle nobody has named yet: it is charged
    (charge-only, nothing exported from it) and keeps its session when identified."""
    station = SimulatedStation("cp-visitor", BUS, 120.0, T0, reports_soc=False)
    net = SimulatedStations(app.registry)
    app.registry.register_station(StationSpec("cp-visitor", 0, 22.0, 19.2))
    net.add(station, T0 + timedelta(hours=4), 180.0)
    app.use_chargers(net)
    app.registry.on_station_event(SessionStarted("cp-visitor", T0, VehicleInfo()))   # no id, no SoC, no needs

    async def scenario():
        now = await run_until(app, net, T0, T0 + timedelta(seconds=3))
        [member] = app.registry.snapshot(now)
        assert member.spec.id == "cp-visitor/unidentified" and member.spec.max_discharge_kw == 0.0
        assert station.setpoint_kw > 0          # charged toward a full battery by default
        app.registry.register_vehicles([BUS])
        app.registry.on_station_event(VehicleIdentified("cp-visitor", now, VehicleInfo(
            vehicle_id="bus-1", departs_at=T0 + timedelta(hours=4), need_kwh=180.0)))
        now = await run_until(app, net, now, now + timedelta(seconds=2))
        [member] = app.registry.snapshot(now)
        assert member.spec.id == "bus-1" and member.spec.max_discharge_kw == pytest.approx(19.2)
        assert member.session.need_kwh == 180.0
    asyncio.run(scenario())
    with Session(app.engine) as db:
        rows = db.exec(select(PlugSession)).all()
    assert [(r.vehicle_id, r.station_id, r.left_at) for r in rows] == [("bus-1", "cp-visitor", None)]


def test_without_soc_the_energy_estimate_is_conservative(app):
    """No SoC from the station: energy starts at the reserve floor and grows by what the meter
    shows was charged, discounted; it never exceeds the battery's true energy."""
    station = SimulatedStation("cp-ac", BUS, 100.0, T0, reports_soc=False)
    net = SimulatedStations(app.registry, sample_interval=timedelta(seconds=5))
    app.registry.register_vehicles([BUS])
    app.registry.register_station(StationSpec("cp-ac", 0, 19.2, 19.2))
    net.add(station, T0 + timedelta(hours=3), 190.0)
    app.use_chargers(net)
    net.plug_in_all()

    async def scenario():
        now = T0
        for _ in range(6):
            now = await run_until(app, net, now, now + timedelta(minutes=1), tick=timedelta(seconds=5))
            [member] = app.registry.snapshot(now)
            assert member.energy_kwh <= station.energy_kwh + 1e-9
        return member
    member = asyncio.run(scenario())
    assert member.energy_kwh > BUS.floor_kwh                 # the metered charge is counted
    assert not app.registry.stations["cp-ac"].soc_known


def test_a_restart_continues_open_sessions_instead_of_opening_new_ones(database_url):
    for _ in range(3):
        app = Aggregator(settings_for(database_url), clock=lambda: T0)
        fleet = start_simulated_fleet(app, app.settings, T0, resume=True)
        asyncio.run(run_until(app, fleet, T0, T0 + timedelta(seconds=2)))
        app.engine.dispose()
    with Session(app.engine) as db:
        rows = db.exec(select(PlugSession)).all()
    assert len(rows) == len(fleet.stations)
    assert all(r.left_at is None for r in rows)


def test_a_session_that_ended_while_we_were_down_is_closed_on_reconciliation(database_url):
    app = Aggregator(settings_for(database_url), clock=lambda: T0)
    fleet = start_simulated_fleet(app, app.settings, T0)
    asyncio.run(run_until(app, fleet, T0, T0 + timedelta(seconds=2)))
    app.engine.dispose()
    # restart: the bus left while the aggregator was down, so its station announces no session
    app = Aggregator(settings_for(database_url), clock=lambda: T0)
    later = T0 + timedelta(minutes=10)
    fleet = start_simulated_fleet(app, app.settings, later, resume=True, skip_plug_in={"school-bus-03"})
    asyncio.run(run_until(app, fleet, later, later + timedelta(minutes=3), tick=timedelta(seconds=10)))
    with Session(app.engine) as db:
        rows = {r.vehicle_id: r for r in db.exec(select(PlugSession)).all()}
    app.engine.dispose()
    assert rows["school-bus-03"].left_at is not None and rows["school-bus-03"].closed_reason == "reconciled"
    reasons = [r.closed_reason for r in rows.values() if r.left_at is not None]
    assert reasons.count("reconciled") == 1 and set(reasons) <= {"reconciled", "departed"}
    assert len(rows) == len(fleet.stations)   # and no second session for anyone


def test_replayed_or_out_of_order_samples_are_ignored(app):
    app.registry.register_vehicles([BUS])
    app.registry.register_station(StationSpec("cp", 0, 19.2, 19.2))
    app.registry.on_station_event(SessionStarted("cp", T0, VehicleInfo(vehicle_id="bus-1", energy_kwh=100.0)))
    app.registry.on_station_event(MeterSample("cp", T0 + timedelta(seconds=10), 5.0, 0.0, 10.0, None))
    app.registry.on_station_event(MeterSample("cp", T0 + timedelta(seconds=5), 2.0, 0.0, 10.0, None))
    app.registry.on_station_event(MeterSample("cp", T0 + timedelta(seconds=10), 5.0, 0.0, 10.0, None))
    assert [s.ts for s in app.registry.drain_samples()] == [T0 + timedelta(seconds=10)]


def _planned(app, now) -> dict:
    return {m.spec.id: m for m in app.registry.snapshot(now)}


def test_driver_choices_survive_a_restart_and_can_be_undone(database_url):
    """Opt-out, boost and a session reserve are kept in the session row: a restarted registry
    plans with them; boost=False / opt_out=False undo them (also across the next restart),
    None leaves them as they are, and a reserve applies to the open session's plan at once.
    Catches: choices kept in memory only, False treated as "leave as is", a reserve written to
    the catalogue only (next plug-in), a boost that overwrote the need it was undone to."""
    def start(at, resume):
        app = Aggregator(settings_for(database_url), clock=lambda: at)
        fleet = start_simulated_fleet(app, app.settings, at, resume=resume)
        return app, fleet

    app, fleet = start(T0, False)
    now = asyncio.run(run_until(app, fleet, T0, T0 + timedelta(seconds=2)))
    before = _planned(app, now)
    bus3 = before["school-bus-03"].spec
    need2 = before["school-bus-02"].session.need_kwh
    reserve = bus3.floor_kwh + 0.4 * (bus3.capacity_kwh - bus3.floor_kwh)
    assert before["school-bus-01"].spec.max_discharge_kw > 0 and need2 < before["school-bus-02"].spec.capacity_kwh
    app.registry.driver_update("school-bus-01", opt_out=True)
    app.registry.driver_update("school-bus-02", boost=True, now=now)
    app.registry.driver_update("school-bus-03", reserve_kwh=reserve)
    app.registry.driver_update("school-bus-01", need_kwh=before["school-bus-01"].session.need_kwh)   # None: as is
    planned = _planned(app, now)                                   # the open sessions' plan, now
    assert planned["school-bus-03"].spec.floor_kwh == pytest.approx(reserve)
    now = asyncio.run(run_until(app, fleet, now, now + timedelta(seconds=1)))
    app.engine.dispose()

    def check_choices(planned):
        assert planned["school-bus-01"].spec.max_discharge_kw == 0.0                   # opted out
        assert planned["school-bus-02"].spec.max_discharge_kw == 0.0                   # boosting: no export ...
        assert planned["school-bus-02"].session.need_kwh == pytest.approx(planned["school-bus-02"].spec.capacity_kwh)
        assert planned["school-bus-02"].session.departs_at < before["school-bus-02"].session.departs_at   # ... at once
        assert planned["school-bus-03"].spec.floor_kwh == pytest.approx(reserve)
        assert planned["school-bus-03"].spec.max_discharge_kw > 0

    check_choices(_planned(app, now))
    later = now + timedelta(seconds=5)
    app, fleet = start(later, True)                                # restart
    try:
        now = asyncio.run(run_until(app, fleet, later, later + timedelta(seconds=2)))
        check_choices(_planned(app, now))
        assert app.registry.stations["cp-school-bus-01"].no_export == "opt-out"
        assert app.registry.stations["cp-school-bus-02"].no_export == "boost"
        app.registry.driver_update("school-bus-01", opt_out=False)
        app.registry.driver_update("school-bus-02", boost=False)
        undone = _planned(app, now)
        now = asyncio.run(run_until(app, fleet, now, now + timedelta(seconds=1)))
    finally:
        app.engine.dispose()

    def check_undone(planned):
        assert planned["school-bus-01"].spec.max_discharge_kw == pytest.approx(before["school-bus-01"].spec.max_discharge_kw)
        assert planned["school-bus-02"].spec.max_discharge_kw == pytest.approx(before["school-bus-02"].spec.max_discharge_kw)
        assert planned["school-bus-02"].session.need_kwh == pytest.approx(need2)          # the need from before
        # planned to its departure again, not to the boost's end (the simulation re-announces it a few s apart)
        assert abs(planned["school-bus-02"].session.departs_at - before["school-bus-02"].session.departs_at) \
            < timedelta(minutes=1)
        assert planned["school-bus-03"].spec.floor_kwh == pytest.approx(reserve)     # untouched

    check_undone(undone)
    again = now + timedelta(seconds=5)
    app, fleet = start(again, True)                                # and the undo survives a restart too
    try:
        now = asyncio.run(run_until(app, fleet, again, again + timedelta(seconds=2)))
        check_undone(_planned(app, now))
        with Session(app.engine) as db:
            rows = {r.vehicle_id: r for r in db.exec(select(PlugSession).where(PlugSession.left_at.is_(None))).all()}
        assert not rows["school-bus-01"].opt_out and rows["school-bus-02"].boost_until is None
        assert rows["school-bus-03"].reserve_kwh == pytest.approx(reserve)
    finally:
        app.engine.dispose()


def test_a_vehicle_seen_at_another_station_closes_its_old_session(app):
    app.registry.register_vehicles([BUS])
    for sid in ("cp-a", "cp-b"):
        app.registry.register_station(StationSpec(sid, 0, 19.2, 19.2))
    app.registry.on_station_event(SessionStarted("cp-a", T0, VehicleInfo(vehicle_id="bus-1", energy_kwh=100.0)))
    app.registry.on_station_event(SessionStarted("cp-b", T0 + timedelta(minutes=5),
                                                 VehicleInfo(vehicle_id="bus-1", energy_kwh=101.0)))
    assert [live.station.id for live in app.registry.plugged()] == ["cp-b"]
    assert app.registry.persist()
    with Session(app.engine) as db:
        rows = {r.station_id: r for r in db.exec(select(PlugSession)).all()}
    assert rows["cp-a"].closed_reason == "replaced" and rows["cp-a"].left_at is not None
    assert rows["cp-b"].left_at is None


def _same_fleet(registry, now, margin=0.5):
    """The cached columns give what a walk over the vehicles gives, row for row."""
    from aggregator.fleet import fleet_arrays
    states = registry.snapshot(now)
    planned = registry.planned_fleet(now, margin)
    walked = fleet_arrays(states, now, margin)
    assert planned.station_ids == [s.station_id for s in states]
    for name in ("ids", "energy_kwh", "capacity_kwh", "floor_kwh", "need_kwh", "departure_h", "max_charge_kw",
                 "max_discharge_kw", "eta_charge", "eta_discharge", "site"):
        assert getattr(planned.fleet, name).tolist() == getattr(walked, name).tolist(), name
    return planned


def test_the_planned_fleet_columns_follow_every_change_of_the_fleet(app):
    """Samples, departures, boosts, opt-outs, reserves, tapering, rejections, going offline,
    a discharge that forgets a charge cap, stale SoC and new sessions: after each, the cached
    columns (`planned_fleet`) equal the allocator's arrays built from `snapshot`."""
    from aggregator.chargers.port import CommandResult, SessionEnded, StationOffline
    registry = app.registry
    specs = [VehicleSpec(f"ev-{i}", "car", 60.0 + i, 6.0, 11.0, 11.0 - i, 0.9, 0.95, i % 3) for i in range(6)]
    registry.register_vehicles(specs)
    for spec in specs:
        registry.register_station(StationSpec(f"cp-{spec.id}", spec.site, 11.0, 11.0))
    for i, spec in enumerate(specs):
        registry.on_station_event(SessionStarted(f"cp-{spec.id}", T0, VehicleInfo(
            vehicle_id=spec.id, energy_kwh=30.0 + i, need_kwh=50.0,
            departs_at=T0 + timedelta(minutes=10 + 20 * i, microseconds=123457 * i))))
    now = T0 + timedelta(seconds=1)
    _same_fleet(registry, now)

    def sample(i, t, power, imported=0.0, soc=None):
        registry.on_station_event(MeterSample(f"cp-ev-{i}", t, imported, 0.0, power, soc))
    sample(0, now, 5.0, 0.1, 52.0)
    sample(1, now, 3.0, 0.2)                       # no SoC: energy from the meter
    _same_fleet(registry, now)
    registry.driver_update("ev-2", boost=True, now=now)
    registry.driver_update("ev-3", opt_out=True)
    registry.driver_update("ev-4", reserve_kwh=20.0, need_kwh=40.0, departs_at=T0 + timedelta(hours=5))
    _same_fleet(registry, now)
    boost_end = registry.stations["cp-ev-2"].boost_until
    _same_fleet(registry, boost_end - timedelta(seconds=10))   # inside a boost's last half minute
    registry.set_intended("cp-ev-5", 8.0, now)
    sample(5, now + timedelta(seconds=6), 2.0, 0.3, 80.0)      # settled, meters less: a charge cap
    assert registry.stations["cp-ev-5"].charge_cap_kw is not None
    _same_fleet(registry, now + timedelta(seconds=6))
    registry.set_intended("cp-ev-5", -4.0, now)                # discharging forgets the cap
    _same_fleet(registry, now + timedelta(seconds=6))
    registry.command_result(CommandResult("cp-ev-1", Ack.REJECTED, "no"), now)
    _same_fleet(registry, now)
    registry.on_station_event(StationOffline("cp-ev-0", now))
    _same_fleet(registry, now)
    registry.on_station_event(SessionEnded("cp-ev-4", now))
    _same_fleet(registry, now)
    registry.mark_stale(now + timedelta(minutes=5))
    _same_fleet(registry, now + timedelta(minutes=5))
    later = T0 + timedelta(minutes=55)                          # some have left by their departure
    planned = _same_fleet(registry, later)
    assert len(planned.station_ids) < len(_same_fleet(registry, now).station_ids)
    registry.on_station_event(SessionStarted("cp-ev-4", later, VehicleInfo(
        vehicle_id="ev-4", energy_kwh=10.0, departs_at=later + timedelta(hours=2), need_kwh=30.0)))
    _same_fleet(registry, later)
    assert registry.export_bound_kw(later, [0.25]).shape == (1,)
