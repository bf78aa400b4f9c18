"""The VTN unreachable for 2 minutes in the middle of an event, on real processes: the utility
VTN simulator (sim/vtn.py) stops serving (its port closed: every poll and report is refused)
and starts again on the same port. The `v2x run --simulated-fleet` subprocess keeps
dispatching the event from the stored commitment through the outage, and once the VTN is back
delivers the reports it owed for the outage, in order and once each, with the values metered
then. PostgreSQL. The poll back-off is capped at 10 s here (`ven.max_poll_backoff_s`) so the
test does not wait a minute for the first poll after the outage; the outage itself is 120 s.

Catches: dispatch that depends on the VTN being reachable (intervals not delivered), reports
dropped while the VTN is down (none with timestamps in the outage), reports sent twice or out
of order, report values not the fleet's power (W instead of kW, or 0)."""
from __future__ import annotations

import asyncio
import signal
import statistics
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, select

from aggregator.event_summary import summarize_event
from aggregator.store.db import make_engine
from aggregator.store.models import SetpointRecord
from sim.vtn import UtilityVtn
from tests.conftest import free_port
from tests.integration.service_process import event_answered, start_service, stop_all, utc, wait_until

pytestmark = pytest.mark.integration
INTERVAL = timedelta(seconds=45)
ASK_KW = 200.0
OUTAGE_FROM = timedelta(seconds=5)      # after the event's start
OUTAGE = timedelta(seconds=120)
REPORT_S = 2.0                          # asked of the VEN; it samples every 5 s


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_vtn_unreachable_for_2_minutes_mid_event(tmp_path, database_url):
    log_path = tmp_path / "service.log"
    config = tmp_path / "v2x.toml"
    config.write_text("[ven]\nmax_poll_backoff_s = 10\n")

    async def scenario():
        vtn = UtilityVtn(port=free_port(), report_interval=timedelta(seconds=REPORT_S))
        await vtn.start()
        process = None
        try:
            process = start_service(database_url, vtn.url, log_path, V2X_CONFIG=str(config))
            event_id, start = await event_answered(vtn, [(INTERVAL, ASK_KW)] * 3, log_path)
            await wait_until(lambda: datetime.now(timezone.utc) > start + OUTAGE_FROM, 60, "the outage")
            await vtn.stop()
            down_at = datetime.now(timezone.utc)
            heard_before = len(vtn.record.reports)
            await asyncio.sleep(OUTAGE.total_seconds())
            assert process.poll() is None, "the service died while the VTN was down"
            assert len(vtn.record.reports) == heard_before          # it really heard nothing
            await vtn.start()
            up_at = datetime.now(timezone.utc)
            end = start + INTERVAL * 3
            # the reports owed for the outage arrive, then the ones after the event's end
            await wait_until(lambda: any(utc(ts) > max(end, up_at) + timedelta(seconds=4)
                                         for _, ts, _ in vtn.record.reports), 120, "the owed reports", log_path)
            process.send_signal(signal.SIGTERM)
            await wait_until(lambda: process.poll() is not None, 40, "the service to stop", log_path)
            return process.returncode, event_id, start, down_at, up_at, vtn.record
        finally:
            stop_all(process)
            await vtn.stop()

    code, event_id, start, down_at, up_at, record = asyncio.run(scenario())
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert [opt for _, e, opt in record.opt_responses if e == event_id] == ["optIn"], log[-3000:]
    engine = make_engine(database_url)
    try:
        with Session(engine) as db:
            setpoints = db.exec(select(SetpointRecord).where(SetpointRecord.event_id == event_id)).all()
        summary = summarize_event(engine, event_id)
    finally:
        engine.dispose()
    # dispatched through the outage from the stored commitment: re-planned and commanded while
    # the VTN was down, and every interval delivered
    during = [s for s in setpoints if down_at <= utc(s.issued_at) <= up_at]
    assert len({s.vehicle_id for s in during}) >= 40, len(during)
    ratios = [i.delivered_export_kw / i.committed_export_kw for i in summary.intervals]
    assert len(ratios) == 3 and all(0.95 <= r <= 1.03 for r in ratios), (ratios, log[-3000:])
    # what the VTN received: the outage's reports, delivered after it, in order and once each
    stamps = [utc(ts) for _, ts, _ in record.reports]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    cadence = statistics.median((b - a).total_seconds() for a, b in zip(stamps, stamps[1:]))   # the VEN's sampling
    owed = [(t, value) for _, ts, value in record.reports if down_at < (t := utc(ts)) < up_at]
    assert len(owed) >= OUTAGE.total_seconds() / cadence - 1, (len(owed), cadence, log[-3000:])
    # ... carrying the fleet's export then (kW, negative = export), inside the event's intervals
    exporting = [value for ts, value in owed if start + timedelta(seconds=5) < ts < start + INTERVAL * 3]
    assert exporting and statistics.median(exporting) == pytest.approx(-ASK_KW, rel=0.1), exporting[:10]
