"""`v2x events` shows what the VEN stored after a real distribute over HTTP; the logs say the same."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import free_port
from tests.integration.scripted_vtn import ScriptedVtn, VenUnderTest, event_xml

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
MIN = timedelta(minutes=1)


async def test_events_command_lists_what_the_ven_knows(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ven.engine")
    database = f"sqlite:///{tmp_path / 'ven.db'}"
    vtn = ScriptedVtn(free_port())
    await vtn.start()
    ven = VenUnderTest(vtn.url, database)
    await ven.start()
    start = datetime.now(timezone.utc).replace(microsecond=0) + 30 * MIN
    try:
        vtn.distribute([event_xml("shown", start, [(MIN, 25.0), (2 * MIN, 50.0)], start_after=timedelta(minutes=2),
                                  test_event=True, priority=2)])
        await vtn.wait_for("oadrCreatedEvent")
    finally:
        await ven.stop()
        await vtn.stop()
    run = subprocess.run([sys.executable, "-m", "aggregator.cli", "--database", database, "events", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    [event] = json.loads(run.stdout)
    offset = timedelta(seconds=event["start_offset_s"])
    assert event["event_id"] == "shown" and event["status"] == "far" and event["modification_number"] == 0
    assert event["opt_state"] == "optIn" and event["test_event"] is True and event["priority"] == 2
    assert event["market_context"] == ven.program.market_context
    assert datetime.fromisoformat(event["randomized_start"]) == start + offset
    assert [(i["uid"], datetime.fromisoformat(i["start"]), datetime.fromisoformat(i["end"]), i["target"])
            for i in event["intervals"]] == [(0, start + offset, start + offset + MIN, 25.0),
                                             (1, start + offset + MIN, start + offset + 3 * MIN, 50.0)]
    table = subprocess.run([sys.executable, "-m", "aggregator.cli", "--database", database, "events"],
                           capture_output=True, text=True, timeout=60).stdout
    assert "shown" in table and "TEST" in table and "target 50" in table
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "ven.engine")
    assert "event shown mod 0" in logged and (start + offset).isoformat() in logged
