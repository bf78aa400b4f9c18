"""Event values -> fleet import ceilings through the program settings."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from aggregator.commitment import UnsupportedSignal, resolve_commitment
from aggregator.config import ProgramSettings
from ven.event import Event, EventInterval

T0 = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)


def event(signal_name, signal_type, values):
    intervals = tuple(EventInterval(i, T0 + timedelta(minutes=15 * i), T0 + timedelta(minutes=15 * (i + 1)), v)
                      for i, v in enumerate(values))
    return Event("e", 0, "far", signal_name, signal_type, intervals)


def test_setpoint_with_positive_export_sign():
    ceilings = [c.import_ceiling_kw for c in resolve_commitment(event("LOAD_DISPATCH", "setpoint", [300, 0, -50]),
                                                                  ProgramSettings(export_sign="positive"))]
    assert ceilings == [-300, 0, 50]


def test_setpoint_with_negative_export_sign_is_our_own_sign():
    committed = resolve_commitment(event("LOAD_DISPATCH", "setpoint", [-300]), ProgramSettings(export_sign="negative"))
    assert committed[0].import_ceiling_kw == -300
    assert committed[0].export_kw == 300


def test_delta_is_relative_to_the_baseline():
    committed = resolve_commitment(event("LOAD_DISPATCH", "delta", [100]), ProgramSettings(export_sign="positive"),
                                   baseline_kw=40.0)
    assert committed[0].import_ceiling_kw == pytest.approx(-60.0)


def test_simple_levels_map_through_the_program():
    program = ProgramSettings(simple_level_export_kw={"1": 50.0, "2": 120.0, "3": 200.0})
    ceilings = [c.import_ceiling_kw for c in resolve_commitment(event("SIMPLE", "level", [0, 1, 2, 3]), program)]
    assert math.isnan(ceilings[0])
    assert ceilings[1:] == [-50.0, -120.0, -200.0]


def test_unknown_level_and_unmapped_signal_are_refused():
    with pytest.raises(UnsupportedSignal, match="level 7"):
        resolve_commitment(event("SIMPLE", "level", [7]), ProgramSettings())
    with pytest.raises(UnsupportedSignal, match="BID_LOAD"):
        resolve_commitment(event("BID_LOAD", "setpoint", [1]), ProgramSettings())


# -- the commitment book and the intake (the fleet side of the VEN port) ---------------------

from sqlalchemy import text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from aggregator.commitment import CommittedInterval  # noqa: E402
from aggregator.commitment_book import CommitmentBook, CommitmentWriteFailed  # noqa: E402
from aggregator.event_intake import EventIntake  # noqa: E402
from aggregator.store.db import make_engine  # noqa: E402
from tests.ven.fakes import FakeFleet  # noqa: E402
from ven.port import RAMP, ExecutableRequest, RequestPiece, WriteFailed  # noqa: E402
from ven.rules import StoredEvent  # noqa: E402
from ven.schedule import Timing  # noqa: E402
from ven.store import EventStore  # noqa: E402

Q = timedelta(minutes=15)


def stored_event(event_id, signal_type="delta", values=(30.0,)):
    """The VEN's record of the event (the commitment references it)."""
    e = event("LOAD_DISPATCH", signal_type, values)
    e = Event(event_id, 0, "far", e.signal_name, e.signal_type, e.intervals)
    return StoredEvent(e, "req-1", "optIn", 200, "", Timing(), T0, T0)


def request(event_id, values, signal_type="delta", ramp=False, mod=0):
    pieces = [RequestPiece(T0 + i * Q, T0 + (i + 1) * Q, v, uid=i) for i, v in enumerate(values)]
    if ramp:
        pieces.insert(0, RequestPiece(T0 - Q, T0, values[0], RAMP, 0.5, 0))
    return ExecutableRequest(event_id, mod, "LOAD_DISPATCH", signal_type, tuple(pieces))


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_the_book_persists_and_reloads_its_commitments(db):
    EventStore(db).save([stored_event("e1")])
    book = CommitmentBook(db)
    pieces = [CommittedInterval(T0, T0 + Q, 30.0, -30.0), CommittedInterval(T0 + Q, T0 + 2 * Q, 0.0, float("nan")),
              CommittedInterval(T0 - Q, T0, float("nan"), -10.0, "ramp")]
    book.set("e1", pieces, baseline_kw=12.5)
    version = book.version
    book.set("e1", list(pieces), baseline_kw=12.5)          # unchanged: no write, same version
    assert book.version == version
    again = CommitmentBook(db)                              # a restart
    loaded = sorted(again.of("e1"), key=lambda c: c.start)
    assert [(c.start, c.end, c.kind) for c in loaded] == [(T0 - Q, T0, "ramp"), (T0, T0 + Q, "event"),
                                                          (T0 + Q, T0 + 2 * Q, "event")]
    assert loaded[1].import_ceiling_kw == -30.0 and math.isnan(loaded[2].import_ceiling_kw)
    assert again.baseline_kw("e1") == 12.5 and again.version > 0
    assert [eid for eid, _ in again.intervals()] == ["e1"] * 3
    again.withdraw("e1")
    assert CommitmentBook(db).intervals() == []


def test_a_failed_commitment_write_is_retried_then_raises_and_changes_nothing(db):
    EventStore(db).save([stored_event("e1")])
    naps: list[float] = []
    book = CommitmentBook(db, attempts=3, backoff_s=0.01, sleep=naps.append)
    book.set("e1", [CommittedInterval(T0, T0 + Q, 30.0, -30.0)], baseline_kw=0.0)
    version = book.version
    with db.begin() as connection:
        connection.execute(text("DROP TABLE commitment"))
    with pytest.raises(CommitmentWriteFailed, match="after 3 attempts") as failure:
        book.set("e1", [CommittedInterval(T0, T0 + Q, 50.0, -50.0)], baseline_kw=0.0)
    assert isinstance(failure.value, WriteFailed)           # what the VEN engine opts out on
    assert naps == [0.01, 0.02]
    assert [c.import_ceiling_kw for c in book.of("e1")] == [-30.0] and book.version == version
    with pytest.raises(CommitmentWriteFailed):
        book.withdraw("e1")
    assert book.of("e1")                                    # still what the database last had


def test_a_delta_target_is_frozen_at_acceptance_and_survives_a_restart(db):
    EventStore(db).save([stored_event("d")])
    fleet = FakeFleet(T0, power_kw=40.0)                    # a non-zero baseline
    program = ProgramSettings(export_sign="positive")
    intake = EventIntake(CommitmentBook(db), fleet, program, lambda: T0)
    intake.execute(request("d", (30.0, 50.0), ramp=True))
    ceilings = [c.import_ceiling_kw for c in sorted(intake.book.of("d"), key=lambda c: c.start)]
    assert ceilings == pytest.approx([40.0 - 15.0, 10.0, -10.0])     # ramp halfway, then baseline - delta
    fleet.power_kw = -20.0                                  # the fleet responds: its live power moves
    intake.execute(request("d", (30.0, 60.0), ramp=True, mod=1))   # a modification
    assert [c.import_ceiling_kw for c in intake.book.of("d") if c.kind == "event"] == pytest.approx([10.0, -20.0])
    restarted = EventIntake(CommitmentBook(db), fleet, program, lambda: T0)
    restarted.execute(request("d", (30.0, 60.0), mod=1))    # re-resolution after a restart
    assert [c.import_ceiling_kw for c in restarted.book.of("d")] == pytest.approx([10.0, -20.0])
    assert restarted.book.baseline_kw("d") == 40.0


def test_assessment_maps_unsupported_signals_and_checks_the_export_bound(db):
    fleet = FakeFleet(T0, vehicles=2)
    intake = EventIntake(CommitmentBook(db), fleet, ProgramSettings(export_sign="positive",
                                                                     min_coverage_to_opt_in=0.5), lambda: T0)
    unsupported = ExecutableRequest("m", 0, "LOAD_DISPATCH", "multiplier", (RequestPiece(T0, T0 + Q, 2.0),))
    assert intake.assess(unsupported, T0).supported is False
    small = intake.assess(request("s", (1.0,), signal_type="setpoint"), T0)
    big = intake.assess(request("b", (10_000.0,), signal_type="setpoint"), T0)
    assert (small.opt, small.supported) == ("optIn", True)
    assert big.opt == "optOut"
    assert intake.book.intervals() == []                    # assessing commits nothing


def test_a_future_event_counts_the_vehicles_expected_to_plug_in(db):
    """Opt decisions for a future event add what the bidding forecast expects from vehicles
    not plugged in yet (REFERENCE §6), and never count a plugged-in vehicle twice."""
    fleet = FakeFleet(T0, vehicles=2)
    calls = []

    def arrivals(start, durations_h, plugged):
        calls.append((start, list(durations_h), set(plugged)))
        return np.full(len(durations_h), 500.0)

    program = ProgramSettings(export_sign="positive", min_coverage_to_opt_in=0.9)
    alone = EventIntake(CommitmentBook(db), fleet, program, lambda: T0 - timedelta(hours=20))
    with_forecast = EventIntake(CommitmentBook(db), fleet, program, lambda: T0 - timedelta(hours=20),
                                arrivals=arrivals)
    ask = request("future", (300.0, 300.0), signal_type="setpoint")
    assert alone.assess(ask, T0 - timedelta(hours=20)).opt == "optOut"
    assert with_forecast.assess(ask, T0 - timedelta(hours=20)).opt == "optIn"
    start, durations, plugged = calls[0]
    assert start == T0 and durations == pytest.approx([0.25, 0.25]) and plugged == fleet.plugged_vehicle_ids()
    # an event already running is decided on the plugged-in fleet alone
    calls.clear()
    assert with_forecast.assess(ask, T0).opt == "optOut" and calls == []
