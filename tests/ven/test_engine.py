"""The VEN's event engine through its fleet port: what crosses it, and failed writes
(event store or commitment) that must never be silently lost."""
from __future__ import annotations

import logging
import random
from datetime import timedelta

import pytest
from sqlalchemy import text

from aggregator.store.db import make_engine
from tests.ven.fakes import RecordingPort
from tests.ven.test_rules import ME, MIN, T0, raw
from ven.engine import EventEngine
from ven.port import Assessment, WriteFailed
from ven.store import EventStore

NOW = T0 - timedelta(hours=1)


class Counter:
    def __init__(self):
        self.value = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class FakeMetrics:
    def __init__(self):
        self.database_errors = Counter()


class FailingPort(RecordingPort):
    """Records like RecordingPort; `execute` fails for the event ids in `failing`."""

    def __init__(self, failing=()):
        super().__init__()
        self.failing = set(failing)
        self.lost: set[str] = set()       # events the fleet can no longer serve
        self.attempts: list[str] = []

    def assess(self, request, now):
        if request.event_id in self.lost:
            return Assessment("optOut", "the fleet left")
        return super().assess(request, now)

    def execute(self, request) -> None:
        if request.event_id in self.failing:
            self.attempts.append(request.event_id)
            raise WriteFailed(f"commitment table unavailable for {request.event_id}")
        super().execute(request)


def engine_with(port, store=None, metrics=None) -> EventEngine:
    return EventEngine(port, ME, lambda: NOW, store=store, rng=random.Random(1), metrics=metrics)


def test_requests_cross_the_port_at_executed_times_without_response_codes():
    port = RecordingPort()
    engine = engine_with(port)
    [response] = engine.on_distribute("r1", [raw("a", values=(10.0, 20.0), start_after=10 * MIN)])
    assert (response.opt_type, response.response_code) == ("optIn", 200)
    offset = engine.state["a"].timing.start_offset
    assert offset > timedelta(0)
    request = port.executed["a"]
    assert [(p.start, p.end, p.value, p.kind) for p in request.pieces] == [
        (T0 + offset, T0 + offset + MIN, 10.0, "event"), (T0 + offset + MIN, T0 + offset + 2 * MIN, 20.0, "event")]
    assert port.assessed[0].pieces[0].start == T0 + offset      # the decision was asked about executed times too
    assert not hasattr(request, "response_code")
    engine.on_distribute("r2", [])                               # implied cancellation before it started
    assert "a" not in port.executed and port.calls[-1] == ("withdraw", "a")


def test_a_failed_commitment_write_opts_the_event_out_logs_and_counts(caplog):
    caplog.set_level(logging.ERROR, logger="ven.engine")
    port, metrics = FailingPort(failing={"bad"}), FakeMetrics()
    engine = engine_with(port, metrics=metrics)
    responses = {r.event_id: r for r in engine.on_distribute("r1", [raw("bad"), raw("good", start=T0 + 5 * MIN)])}
    assert responses["bad"].opt_type == "optOut" and responses["good"].opt_type == "optIn"
    assert engine.state["bad"].opt_state == "optOut"
    assert "could not record the commitment" in engine.state["bad"].reason
    assert metrics.database_errors.value >= 1
    assert any("bad" in r.getMessage() and "could not record" in r.getMessage() for r in caplog.records)
    assert set(port.executed) == {"good"}
    # the same version again is answered with what we said (optOut), not silently re-tried as optIn
    again = {r.event_id: r for r in engine.on_distribute("r2", [raw("bad"), raw("good", start=T0 + 5 * MIN)])}
    assert again["bad"].opt_type == "optOut"


def test_a_failure_outside_a_distribute_goes_to_the_vtn_as_an_opt_change():
    port, metrics = FailingPort(), FakeMetrics()
    engine = engine_with(port, metrics=metrics)
    engine.on_distribute("r1", [raw("low", priority=2, values=(10.0,) * 4),
                                raw("high", priority=1, start=T0 + MIN)])
    assert [(p.start, p.end) for p in port.executed["low"].pieces] == [
        (T0, T0 + MIN), (T0 + 2 * MIN, T0 + 3 * MIN), (T0 + 3 * MIN, T0 + 4 * MIN)]
    # the fleet can no longer serve "high"; "low" gets its minute back but cannot be recorded
    port.lost.add("high")
    port.failing.add("low")
    changes = engine.opt_changes()
    assert [(c.event_id, c.opt_type, c.request_id) for c in changes] == [("high", "optOut", "r1"),
                                                                        ("low", "optOut", "r1")]
    assert engine.state["low"].opt_state == "optOut" and "could not record" in engine.state["low"].reason
    assert set(port.executed) == set()
    assert metrics.database_errors.value == 1


def test_a_failed_event_store_write_is_retried_then_answered_optout(tmp_path):
    db = make_engine(f"sqlite:///{tmp_path / 'ven.db'}")
    naps: list[float] = []
    store = EventStore(db, attempts=3, backoff_s=0.01, sleep=naps.append)
    metrics, port = FakeMetrics(), RecordingPort()
    engine = engine_with(port, store=store, metrics=metrics)
    engine.on_distribute("r1", [raw("kept")])
    with db.begin() as connection:                 # the event tables become unwritable
        connection.execute(text("DROP TABLE ven_event_interval"))
    responses = {r.event_id: r for r in engine.on_distribute("r2", [raw("kept"), raw("lost", start=T0 + 5 * MIN)])}
    assert naps == [0.01, 0.02]                    # retried with back-off before giving up
    assert responses["lost"].opt_type == "optOut"
    assert "could not store the event" in engine.state["lost"].reason
    assert "lost" not in port.executed
    assert metrics.database_errors.value == 1
    db.dispose()


def test_the_store_raises_after_its_retries(tmp_path):
    db = make_engine(f"sqlite:///{tmp_path / 'ven.db'}")
    with db.begin() as connection:
        connection.execute(text("DROP TABLE ven_event_interval"))
    engine = engine_with(RecordingPort())
    engine.on_distribute("r1", [raw("x")])
    store = EventStore(db, attempts=2, sleep=lambda s: None)
    with pytest.raises(WriteFailed, match="after 2 attempts"):
        store.save([engine.state["x"]])
    db.dispose()
