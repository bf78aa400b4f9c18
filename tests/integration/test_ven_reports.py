"""Reports against the scripted VTN: registration with the right itemBase, oadrCreateReport
at the requested granularity, oadrCancelReport, and no report lost while the VTN is down."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from openleadr import objects

from tests.conftest import free_port
from tests.integration.scripted_vtn import ScriptedVtn, VenUnderTest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
async def pair(tmp_path):
    vtn = ScriptedVtn(free_port())
    await vtn.start()
    ven = VenUnderTest(vtn.url, f"sqlite:///{tmp_path / 'ven.db'}", client_options={"max_backoff_s": 2.0})
    await ven.start()
    yield vtn, ven
    await ven.stop()
    await vtn.stop()
    assert vtn.schema_errors == []


def request(vtn: ScriptedVtn, request_id: str, specifier: str, r_ids: list[str], granularity=timedelta(seconds=1)):
    vtn.push_message("oadrCreateReport", request_id=f"req-{request_id}", ven_id=vtn.ven_id, report_requests=[
        objects.ReportRequest(report_request_id=request_id, report_specifier=objects.ReportSpecifier(
            report_specifier_id=specifier, granularity=granularity, report_back_duration=granularity,
            specifier_payloads=[objects.SpecifierPayload(r_id=r, reading_type="Direct Read") for r in r_ids]))])


def values(vtn: ScriptedVtn, request_id: str) -> list[tuple]:
    out = []
    for message in vtn.messages("oadrUpdateReport"):
        for report in message.payload["reports"]:
            if report["report_request_id"] == request_id:
                out.extend((i["dtstart"], i["report_payload"]["r_id"], i["report_payload"]["value"])
                           for i in report["intervals"])
    return out


SI = {"none": 1.0, None: 1.0, "k": 1e3, "M": 1e6}


async def test_reports_are_registered_with_units_and_sent_when_requested(pair):
    vtn, ven = pair
    # distinct, non-zero values: a report that sends W, another field, or nothing shows
    ven.fleet.power_kw = -123.4
    register = vtn.messages("oadrRegisterReport")[0]
    xml = register.xml.decode()
    assert "TELEMETRY_USAGE" in xml and "TELEMETRY_STATUS" in xml
    described = {d["r_id"]: (report["report_name"], d) for report in register.payload["reports"]
                 for d in report["report_descriptions"]}
    name, power = described["fleet-real-power"]
    assert name == "METADATA_TELEMETRY_USAGE"
    assert (power["measurement"]["name"], power["measurement"]["unit"], power["measurement"]["scale"]) == \
        ("powerReal", "W", "k")                                            # the value is in kW
    request(vtn, "usage", "fleet-telemetry-usage", ["fleet-real-power"])
    request(vtn, "status", "fleet-telemetry-status", ["available-discharge-kw", "stored-energy-kwh",
                                                      "plugged-in-evs"])
    await vtn.wait_for("oadrCreatedReport", 2)
    await vtn.wait_for("oadrUpdateReport", 4)
    usage = values(vtn, "usage")
    assert usage and all(r_id == "fleet-real-power" for _, r_id, _ in usage)
    assert usage[-1][2] == pytest.approx(-123.4)                           # kW, - = export
    scale = SI[power["measurement"]["scale"]]
    assert usage[-1][2] * scale == pytest.approx(-123_400.0)               # what the VTN reads, in W
    for _ in range(20):
        if {r for _, r, _ in values(vtn, "status")} == {"available-discharge-kw", "stored-energy-kwh",
                                                        "plugged-in-evs"}:
            break
        await vtn.wait_for("oadrUpdateReport", len(vtn.messages("oadrUpdateReport")) + 1)
    status = {r: v for _, r, v in values(vtn, "status")}
    expected = {"plugged-in-evs": 50.0, "available-discharge-kw": ven.fleet.available_export_kw(),
                "stored-energy-kwh": ven.fleet.stored_energy_kwh()}
    assert len(set(expected.values()) | {-123.4}) == 4 and 0 not in expected.values()   # all distinct, non-zero
    assert status == pytest.approx(expected)


async def test_cancel_report_stops_it(pair):
    vtn, ven = pair
    request(vtn, "usage", "fleet-telemetry-usage", ["fleet-real-power"])
    await vtn.wait_for("oadrUpdateReport", 2)
    vtn.push_message("oadrCancelReport", request_id="cancel-1", report_request_id="usage", report_to_follow=False,
                     ven_id=vtn.ven_id)
    await vtn.wait_for("oadrCanceledReport")
    sent = len(values(vtn, "usage"))
    polls = len(vtn.messages("oadrPoll"))
    await vtn.wait_for("oadrPoll", polls + 4)
    assert len(values(vtn, "usage")) == sent


async def test_reports_queued_while_the_vtn_is_down_arrive_in_order(pair):
    vtn, ven = pair
    queued = []
    client = ven.ven.client
    original_put = client.pending_reports.put

    async def counting_put(report):
        queued.append(report)
        await original_put(report)
    client.pending_reports.put = counting_put
    request(vtn, "usage", "fleet-telemetry-usage", ["fleet-real-power"])
    await vtn.wait_for("oadrUpdateReport", 1)
    vtn.down = True
    while len(queued) < len(vtn.messages("oadrUpdateReport")) + 4:   # reports pile up while it is down
        await asyncio.sleep(0.2)
    vtn.down = False
    target = len(queued)
    await vtn.wait_for("oadrUpdateReport", target, timeout=60)
    stamps = [dtstart for dtstart, _, _ in values(vtn, "usage")]
    assert stamps == sorted(stamps)                      # in order
    generated = [i.dtstart for report in queued[:target] for i in report.intervals]
    assert generated == stamps[:len(generated)]          # nothing dropped, nothing reordered


def _stamps(vtn: ScriptedVtn, request_id: str) -> list:
    return [dtstart for dtstart, _, _ in values(vtn, request_id)]


async def test_reports_owed_across_an_outage_and_a_restart_arrive_once_in_order(tmp_path, database_url):
    """VTN down, reports queue; this VEN is stopped and a new one starts on the same
    database while the VTN is still down; the VTN comes back: every owed report arrives
    exactly once, in the order it was made."""
    from sqlmodel import Session, select

    from ven.store import VenReportOutbox

    vtn = ScriptedVtn(free_port())
    await vtn.start()
    first = VenUnderTest(vtn.url, database_url, client_options={"max_backoff_s": 2.0})
    second = None
    try:
        await first.start()
        first.fleet.power_kw = 11.0
        request(vtn, "usage", "fleet-telemetry-usage", ["fleet-real-power"])
        await vtn.wait_for("oadrUpdateReport", 1)
        vtn.down = True
        queue = first.ven.client.pending_reports
        for step in range(200):                                 # reports pile up while it is down
            if queue.qsize() >= 4:
                break
            first.fleet.power_kw = 11.0 + step                  # each report carries its own value
            await asyncio.sleep(0.1)
        assert queue.qsize() >= 4
        await first.stop()
        owed = [(i.dtstart, i.report_payload.value) for report in queue.owed() for i in report.intervals]
        delivered_before = values(vtn, "usage")

        second = VenUnderTest(vtn.url, database_url, client_options={"max_backoff_s": 2.0})
        restored = second.ven.client.pending_reports.owed()
        assert [(i.dtstart, i.report_payload.value) for r in restored for i in r.intervals] == owed
        starting = asyncio.create_task(second.start(attempts=40, first_delay_s=0.2, max_delay_s=1.0))
        await asyncio.sleep(1.0)                                # registration fails while the VTN is down
        assert not starting.done()
        vtn.down = False
        await asyncio.wait_for(starting, 60)
        for _ in range(120):
            if len(values(vtn, "usage")) >= len(delivered_before) + len(owed):
                break
            await asyncio.sleep(0.25)
        after = values(vtn, "usage")[len(delivered_before):]
        assert [(dtstart, value) for dtstart, _, value in after] == owed          # each once, in order
        stamps = _stamps(vtn, "usage")
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)     # nothing twice overall
        with Session(second.engine) as db:
            assert db.exec(select(VenReportOutbox)).all() == []                 # nothing owed any more
    finally:
        if second is not None:
            await second.stop()
        await vtn.stop()
    assert vtn.schema_errors == []
