"""Connection resilience and honest opt changes, against the scripted VTN over HTTP."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import free_port
from tests.integration.scripted_vtn import ScriptedVtn, VenUnderTest, event_xml

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
MIN = timedelta(minutes=1)


async def until(condition, vtn: ScriptedVtn, polls: int = 30) -> None:
    """Wait poll by poll (never by the clock) until `condition()` holds."""
    for _ in range(polls):
        if condition():
            return
        await vtn.wait_for("oadrPoll", len(vtn.messages("oadrPoll")) + 1)
    assert condition()


async def test_start_up_retries_until_the_vtn_appears(tmp_path):
    port = free_port()
    vtn = ScriptedVtn(port)
    ven = VenUnderTest(vtn.url, f"sqlite:///{tmp_path / 'ven.db'}")
    starting = asyncio.create_task(ven.start(attempts=20, first_delay_s=0.2, max_delay_s=1.0))
    try:
        await asyncio.sleep(1.0)          # attempts fail against the closed port meanwhile
        assert not starting.done()
        await vtn.start()
        await asyncio.wait_for(starting, 30)
        assert ven.ven.registration_id and ven.ven.ven_id == "ven_py"
    finally:
        await ven.stop()
        await vtn.stop()
    assert vtn.schema_errors == []


async def test_error_answers_make_the_ven_back_off_and_it_recovers(tmp_path):
    vtn = ScriptedVtn(free_port())
    await vtn.start()
    ven = VenUnderTest(vtn.url, f"sqlite:///{tmp_path / 'ven.db'}", client_options={"max_backoff_s": 3.0})
    await ven.start()
    client = ven.ven.client
    try:
        vtn.error_code = 463
        await until(lambda: client.poll_backoff.failures >= 3, vtn)
        while client.skipped_polls == 0:                # scheduled polls are being left out
            await asyncio.sleep(0.2)
        assert ven.metrics.ven_connected._value.get() == 0
        vtn.error_code = None
        await until(lambda: client.poll_backoff.failures == 0, vtn)
        assert ven.metrics.ven_connected._value.get() == 1
    finally:
        await ven.stop()
        await vtn.stop()
    assert vtn.schema_errors == []


async def test_events_keep_running_while_the_vtn_is_unreachable(tmp_path):
    vtn = ScriptedVtn(free_port())
    await vtn.start()
    ven = VenUnderTest(vtn.url, f"sqlite:///{tmp_path / 'ven.db'}", client_options={"max_backoff_s": 2.0})
    await ven.start()
    try:
        start = datetime.now(timezone.utc) + timedelta(seconds=2)
        vtn.distribute([event_xml("e", start, [(10 * MIN, 80.0)])])
        await vtn.wait_for("oadrCreatedEvent")
        await vtn.stop()                                  # the VTN goes away entirely
        while ven.ven.client.poll_backoff.failures < 2:
            await asyncio.sleep(0.2)
        while datetime.now(timezone.utc) < start + timedelta(seconds=1):
            await asyncio.sleep(0.2)
        assert "e" in ven.port.executed
        now = datetime.now(timezone.utc)
        assert [c.export_kw for c in ven.committed("e") if c.start <= now < c.end] == [80.0]
        assert ven.ven.events["e"].status(datetime.now(timezone.utc)) == "active"
    finally:
        await ven.stop()


async def test_ven_and_registration_ids_and_events_survive_a_restart(tmp_path):
    vtn = ScriptedVtn(free_port())
    await vtn.start()
    database = f"sqlite:///{tmp_path / 'ven.db'}"
    first = VenUnderTest(vtn.url, database)
    await first.start()
    registration = first.ven.registration_id
    start = datetime.now(timezone.utc) + 10 * MIN
    vtn.distribute([event_xml("kept", start, [(MIN, 40.0)], start_after=timedelta(minutes=3))])
    await vtn.wait_for("oadrCreatedEvent")
    offset = first.ven.events["kept"].timing.start_offset
    await first.stop()
    second = VenUnderTest(vtn.url, database)
    # before it even talks to the VTN, the stored event is back in force
    assert second.ven.events["kept"].timing.start_offset == offset
    assert second.port.executed["kept"].pieces[0].start == start + offset
    assert second.committed("kept")[0].start == start + offset
    await second.start()
    try:
        again = vtn.messages("oadrCreatePartyRegistration")[-1].payload
        assert again["ven_id"] == "ven_py" and again["registration_id"] == registration
        assert second.ven.registration_id == registration
    finally:
        await second.stop()
        await vtn.stop()
    assert vtn.schema_errors == []


async def test_losing_the_fleet_sends_an_opt_out_with_the_original_request_id(tmp_path):
    vtn = ScriptedVtn(free_port())
    await vtn.start()
    ven = VenUnderTest(vtn.url, f"sqlite:///{tmp_path / 'ven.db'}", program={"min_coverage_to_opt_in": 0.5})
    await ven.start()
    try:
        request_id = vtn.distribute([event_xml("e42", datetime.now(timezone.utc) + 2 * MIN, [(5 * MIN, 60.0)])])
        first = await vtn.wait_for("oadrCreatedEvent")
        assert first[0].payload["event_responses"][0]["opt_type"] == "optIn"
        await ven.drop([v.vehicle_id for v in ven.fleet.vehicles])   # every charger drops off
        changes = await vtn.wait_for("oadrCreatedEvent", 2)
        change = changes[1].payload["event_responses"][0]
        assert (change["event_id"], change["opt_type"], change["request_id"]) == ("e42", "optOut", request_id)
        assert ven.ven.events["e42"].opt_state == "optOut"
        assert "e42" not in ven.port.executed and ven.committed("e42") == []
    finally:
        await ven.stop()
        await vtn.stop()
    assert vtn.schema_errors == []
