"""SIGTERM to a `v2x run` process in the middle of an event: every station is left with no
discharge (charging toward its driver's need), the meters are read once more, the ledger
is written, the hold is recorded (event "shutdown") and the process exits 0 in bounded time."""
from __future__ import annotations

import asyncio
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, select

from aggregator.store.db import make_engine
from aggregator.store.models import SetpointRecord
from sim.vtn import UtilityVtn
from tests.conftest import free_port
from tests.integration.service_process import (event_answered, readings_by_source, start_service, stop_all, utc,
                                               wait_until)

pytestmark = pytest.mark.integration
SHUTDOWN_BOUND_S = 25.0    # the service's own budget is 20 s


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_mid_event_leaves_every_station_safe_and_loses_nothing(tmp_path, database_url, signum):
    log_path = tmp_path / "service.log"

    async def scenario():
        vtn = UtilityVtn(port=free_port(), report_interval=timedelta(seconds=2))
        await vtn.start()
        process = None
        try:
            process = start_service(database_url, vtn.url, log_path)
            _, start = await event_answered(vtn, [(timedelta(seconds=60), 300.0)], log_path, timedelta(seconds=6))
            await wait_until(lambda: datetime.now(timezone.utc) > start + timedelta(seconds=15), 60, "mid-event")
            exporting = [v for _, _, v in vtn.record.reports][-1:]
            stopped_at = datetime.now(timezone.utc)
            process.send_signal(signum)
            t0 = time.monotonic()
            code = process.wait(timeout=60)
            return code, time.monotonic() - t0, stopped_at, exporting
        finally:
            stop_all(process)
            await vtn.stop()

    code, took, stopped_at, exporting = asyncio.run(scenario())
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert took <= SHUTDOWN_BOUND_S, (took, log[-2000:])
    assert "stopped:" in log and "ledger written" in log, log[-2000:]
    assert exporting and exporting[0] < -100.0          # the fleet was exporting when told to stop
    engine = make_engine(database_url)
    try:
        with Session(engine) as db:
            held = db.exec(select(SetpointRecord).where(SetpointRecord.event_id == "shutdown")).all()
        by_source = readings_by_source(engine)
    finally:
        engine.dispose()
    # every plugged-in station got the safe command, none of them a discharge ...
    assert len({r.vehicle_id for r in held}) == len(by_source) == 50
    assert min(r.power_kw for r in held) >= 0.0
    assert sum(r.power_kw for r in held) > 0.0          # charging toward the drivers' needs goes on
    # ... and the last meter reading, taken after the hold settled, shows no discharge left
    last = {source: rows[-1] for source, rows in by_source.items()}
    assert all(utc(r.ts) > stopped_at for r in last.values())
    assert sum(min(0.0, r.power_kw) for r in last.values()) > -0.05 * 300.0
