"""Every oadrDistributeEvent sample of the OpenADR 2.0b spec (tests/fixtures/oadr20b-spec-samples), wrapped
in the envelope and served raw by the scripted VTN; our answers are schema-checked."""
from __future__ import annotations

import pytest
from lxml import etree

from tests.conftest import FIXTURES, free_port
from tests.integration.scripted_vtn import ScriptedVtn, VenUnderTest
from ven.rules import Identity

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OADR = "http://openadr.org/oadr-2.0b/2012/07"
MARKETS = frozenset({"http://www.myprogram.com", "http://MarketContext1"})


def bare(name: str) -> bytes:
    """The sample's payload element (unwrapping it if the sample is a whole oadrPayload)."""
    root = etree.parse(str(FIXTURES / name)).getroot()
    if etree.QName(root).localname == "oadrPayload":
        root = root.find(f"{{{OADR}}}oadrSignedObject")[0]
    return etree.tostring(root)


# (files served in order, expected (responseCode, optType) of the last answer for each event)
CASES = {
    "spec-sample": (["Sample_oadrDistributeEvent.xml"], {"Event_939393": (200, "optIn")}),
    "spec-baseline": (["Sample_oadrDistributeEvent_W_Baseline.xml"], {"Event_939393": (200, "optIn")}),
    # targeted at a GML service area: this VEN has no configured location, so it is not targeted
    "spec-gml": (["Sample_oadrDistributeEvent_W_GML.xml"], {"Event_939393": (462, "optOut")}),
    "payload-20b": (["sample_oadrPayload_20b.xml"], {"Event120613_113614_987_0": (200, "optIn")}),
    # modification numbers 0, 1, 2, 4: each replaces the last
    "batch-a": (["batch_a_1.xml", "batch_a_2.xml", "batch_a_3.xml", "batch_a_4.xml"], {"e_1": (200, "optIn")}),
    # 0, 5, then 3: lower than the one held -> 450
    "batch-b": (["batch_b_1.xml", "batch_b_2.xml", "batch_b_3.xml"], {"e_1": (450, "optIn")}),
    # targets: venID / resourceID / partyID / groupID that are ours, then ones that are not
    "batch-c-ven": (["batch_c_1.xml"], {"e_1": (200, "optIn")}),
    "batch-c-resource": (["batch_c_2.xml"], {"e_1": (200, "optIn")}),
    "batch-c-party": (["batch_c_3.xml"], {"e_1": (200, "optIn")}),
    "batch-c-group": (["batch_c_4.xml"], {"e_1": (200, "optIn")}),
    "batch-c-other-ven": (["batch_c_5.xml"], {"e_1": (462, "optOut")}),
    "batch-c-other-resource": (["batch_c_6.xml"], {"e_1": (462, "optOut")}),
    "batch-c-other-party": (["batch_c_7.xml"], {"e_1": (462, "optOut")}),
    "batch-c-other-group": (["batch_c_8.xml"], {"e_1": (462, "optOut")}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_spec_sample_is_answered_by_the_rules(case, tmp_path):
    files, expected = CASES[case]
    vtn = ScriptedVtn(free_port(), ven_id="ven_py")
    await vtn.start()
    identity = Identity(resource_ids=frozenset({"Resource_123", "RES_123"}), party_ids=frozenset({"Party_123"}),
                        group_ids=frozenset({"Group_123"}), market_contexts=MARKETS)
    ven = VenUnderTest(vtn.url, f"sqlite:///{tmp_path / 'ven.db'}", identity=identity)
    try:
        await ven.start()
        for n, name in enumerate(files, start=1):
            vtn.push(bare(name))
            await vtn.wait_for("oadrCreatedEvent", n)
        last = {r["event_id"]: r for r in vtn.messages("oadrCreatedEvent")[-1].payload["event_responses"]}
        assert {eid: (r["response_code"], r["opt_type"]) for eid, r in last.items()} == expected
        # every distribute got exactly one answer, and nothing else was answered
        assert len(vtn.messages("oadrCreatedEvent")) == len(files)
    finally:
        await ven.stop()
        await vtn.stop()
    assert vtn.schema_errors == []
