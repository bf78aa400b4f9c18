"""A `v2x run` process killed (SIGKILL) in the middle of an event picks it up again on
restart: the commitment comes back from the database, the rest of the event is
delivered, and the ledger counts nothing twice."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, select

from aggregator.event_summary import summarize_event
from aggregator.store.db import make_engine
from aggregator.store.models import MeterReading
from ven.store import VenEvent
from tests.conftest import free_port
from sim.vtn import UtilityVtn

pytestmark = pytest.mark.integration
INTERVAL = timedelta(seconds=8)


def start_service(database_url: str, vtn_url: str, log_path) -> subprocess.Popen:
    env = {"PATH": "/usr/bin:/bin", "V2X_VTN_URL": vtn_url, "V2X_DATABASE_URL": database_url,
           "V2X_METRICS_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "aggregator.cli", "run", "--simulated-fleet"],
                            env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
                            cwd=os.getcwd())


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def test_killed_mid_event_resumes_and_counts_nothing_twice(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    log_path = tmp_path / "service.log"

    async def scenario():
        vtn = UtilityVtn(port=free_port(), report_interval=timedelta(seconds=2))
        await vtn.start()
        first = second = None
        try:
            first = start_service(database_url, vtn.url, log_path)
            await wait_until(lambda: vtn.record.registered, 60, "registration")
            (ven_id,) = vtn.record.registered
            start = datetime.now(timezone.utc) + timedelta(seconds=4)
            event_id = vtn.dispatch_event(ven_id, start, [(INTERVAL, 200.0)] * 4)
            await wait_until(lambda: vtn.record.opt_responses, 30, "the opt response")
            # kill it hard in the middle of the second interval
            await wait_until(lambda: datetime.now(timezone.utc) > start + INTERVAL * 1.5, 60, "mid-event")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            killed_at = datetime.now(timezone.utc)
            second = start_service(database_url, vtn.url, log_path)
            end = start + INTERVAL * 4
            await wait_until(lambda: datetime.now(timezone.utc) > end + timedelta(seconds=2), 90, "the event end")
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
            return event_id, start, killed_at, vtn.record
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
            await vtn.stop()

    event_id, start, killed_at, record = asyncio.run(scenario())
    log = log_path.read_text()
    assert [opt for _, e, opt in record.opt_responses if e == event_id][:1] == ["optIn"], log[-3000:]
    assert "optOut" not in [opt for _, e, opt in record.opt_responses if e == event_id]
    engine = make_engine(database_url)
    try:
        with Session(engine) as db:
            assert db.get(VenEvent, event_id).opt_state == "optIn"
            readings = db.exec(select(MeterReading)).all()
        # readings from both lives of the process, each (source, ts) once
        stamps = [r.ts.replace(tzinfo=timezone.utc) for r in readings]
        assert any(t < killed_at for t in stamps) and any(t > killed_at for t in stamps)
        assert len({(r.source, r.ts) for r in readings}) == len(readings)
        summary = summarize_event(engine, event_id)
        # after the restart the commitment was back: the last two intervals were delivered
        for interval in summary.intervals[2:]:
            assert interval.delivered_export_kw == pytest.approx(200.0, rel=0.15), log[-3000:]
    finally:
        engine.dispose()
