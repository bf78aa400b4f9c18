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


async def test_reports_are_registered_with_units_and_sent_when_requested(pair):
    vtn, ven = pair
    register = vtn.messages("oadrRegisterReport")[0]
    xml = register.xml.decode()
    assert "TELEMETRY_USAGE" in xml and "TELEMETRY_STATUS" in xml
    assert "<power:itemUnits>W</power:itemUnits>" in xml and "<scale:siScaleCode>k</scale:siScaleCode>" in xml
    request(vtn, "usage", "fleet-telemetry-usage", ["fleet-real-power"])
    request(vtn, "status", "fleet-telemetry-status", ["available-discharge-kw", "stored-energy-kwh",
                                                      "plugged-in-evs"])
    await vtn.wait_for("oadrCreatedReport", 2)
    await vtn.wait_for("oadrUpdateReport", 4)
    usage = values(vtn, "usage")
    assert usage and all(r_id == "fleet-real-power" for _, r_id, _ in usage)
    assert usage[-1][2] == pytest.approx(ven.fleet.fleet_power_kw())       # kW, + = import
    for _ in range(20):
        if {r for _, r, _ in values(vtn, "status")} == {"available-discharge-kw", "stored-energy-kwh",
                                                        "plugged-in-evs"}:
            break
        await vtn.wait_for("oadrUpdateReport", len(vtn.messages("oadrUpdateReport")) + 1)
    status = {r: v for _, r, v in values(vtn, "status")}
    assert status["plugged-in-evs"] == 50
    assert status["available-discharge-kw"] == pytest.approx(ven.fleet.available_export_kw())
    assert status["stored-energy-kwh"] == pytest.approx(ven.fleet.stored_energy_kwh())


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
