"""Per-event answers and a bounded poll back-off (issue 14, item 8), against the scripted VTN.

A schema-valid distribute is answered event by event: an event openleadr cannot
parse, or one whose intervals break rules 2/8, gets its own 454 + optOut, and
the others are processed as usual. Only a message that cannot be read at all
makes the VEN back off, and the gap between polls stays under the cap."""
from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import free_port
from tests.integration.scripted_vtn import ScriptedVtn, VenUnderTest, distribute_xml, event_xml, soon

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
MIN = timedelta(minutes=1)


async def test_one_bad_event_gets_its_own_answer_and_the_others_are_processed(pair):
    vtn, ven = pair
    start = soon()
    two = [(MIN, 30.0), (MIN, 60.0)]
    uid_text = event_xml("uid-text", start, two).replace("<xcal:text>1</xcal:text>", "<xcal:text>one</xcal:text>")
    no_uid = event_xml("no-uid", start, two).replace("<xcal:uid><xcal:text>1</xcal:text></xcal:uid>", "")
    request_id = vtn.distribute([
        event_xml("good-1", start, two),
        uid_text,                                               # openleadr's parser raises on this one
        event_xml("dup", start, two, uids=[0, 0]),              # a duplicated interval
        no_uid,                                                 # an interval without uid
        event_xml("good-2", start + 5 * MIN, [(2 * MIN, 45.0)], signal_type="delta")])
    created = await vtn.wait_for("oadrCreatedEvent", timeout=30)
    assert len(created) == 1                                    # one answer for the whole distribute
    got = {r["event_id"]: r for r in created[0].payload["event_responses"]}
    assert set(got) == {"good-1", "uid-text", "dup", "no-uid", "good-2"}
    assert all(r["request_id"] == request_id for r in got.values())
    for bad in ("uid-text", "dup", "no-uid"):
        assert (got[bad]["response_code"], got[bad]["opt_type"]) == (454, "optOut"), bad
        assert bad not in ven.port.executed and ven.committed(bad) == []
    assert "cannot be read" in got["uid-text"]["response_description"]
    for good in ("good-1", "good-2"):
        assert (got[good]["response_code"], got[good]["opt_type"]) == (200, "optIn"), good
    # the good ones were committed through the fleet port
    assert [c.export_kw for c in ven.committed("good-1")] == [30.0, 60.0]
    baseline = ven.book.baseline_kw("good-2")
    assert baseline == pytest.approx(ven.fleet.power_kw) and baseline != 0
    assert [c.import_ceiling_kw for c in ven.committed("good-2")] == pytest.approx([baseline - 45.0])
    # a readable message is not a failure: no refusal, no back-off
    client = ven.ven.client
    assert client.rejected_messages == [] and client.poll_backoff.failures == 0


async def test_an_unreadable_event_in_a_later_distribute_keeps_the_event_in_force(pair):
    """A modification that cannot be read is answered 454 with the opt we hold; the version
    in force stays in force (nothing half-applied)."""
    vtn, ven = pair
    start = soon()
    vtn.distribute([event_xml("kept", start, [(MIN, 30.0)])])
    await vtn.wait_for("oadrCreatedEvent")
    broken = event_xml("kept", start, [(MIN, 90.0)], mod=1).replace("<xcal:text>0</xcal:text>",
                                                                     "<xcal:text>zero</xcal:text>")
    vtn.distribute([broken, event_xml("other", start + 5 * MIN, [(MIN, 10.0)])])
    created = await vtn.wait_for("oadrCreatedEvent", 2)
    got = {r["event_id"]: r for r in created[1].payload["event_responses"]}
    assert (got["kept"]["response_code"], got["kept"]["opt_type"]) == (454, "optIn")
    assert got["other"]["response_code"] == 200
    assert [c.export_kw for c in ven.committed("kept")] == [30.0]
    assert ven.ven.events["kept"].event.modification_number == 0


def unreadable_distribute(n: int) -> str:
    """Not schema-valid (an eventStatus outside the enumeration): cannot be read at all."""
    return distribute_xml([event_xml(f"bad-{n}", soon(), [(MIN, 10.0)]).replace(
        "<ei:eventStatus>far</ei:eventStatus>", "<ei:eventStatus>whenever</ei:eventStatus>")], f"bad-{n}")


async def test_a_run_of_unreadable_payloads_backs_off_within_the_cap_and_the_next_event_is_picked_up(tmp_path):
    cap = 4.0
    vtn = ScriptedVtn(free_port())
    await vtn.start()
    ven = VenUnderTest(vtn.url, f"sqlite:///{tmp_path / 'ven.db'}", client_options={"max_backoff_s": cap})
    await ven.start()
    client = ven.ven.client
    try:
        assert client.poll_backoff_cap_s() == cap
        polls_before = len(vtn.messages("oadrPoll"))
        bad = 7
        for n in range(bad):
            vtn.push(unreadable_distribute(n))
        request_id = vtn.distribute([event_xml("after", soon(), [(MIN, 25.0)])])
        created = await vtn.wait_for("oadrCreatedEvent", timeout=90)
        assert created[0].payload["event_responses"][0]["request_id"] == request_id
        assert len(client.rejected_messages) == bad
        assert vtn.schema_errors == []                           # the VEN's own messages stay valid
        polls = [p.at for p in vtn.messages("oadrPoll")[polls_before:]]
        gaps = [(b - a).total_seconds() for a, b in zip(polls, polls[1:])]
        # it did back off (an uncapped 1 s * 2^n would reach 16-64 s after seven failures) ...
        assert max(gaps) > 1.5
        # ... and never left more than the cap between two polls (plus scheduling slack)
        assert max(gaps) <= cap + 1.0, gaps
        # the first good exchange resets it
        assert client.poll_backoff.failures == 0
        assert [c.export_kw for c in ven.committed("after")] == [25.0]
    finally:
        await ven.stop()
        await vtn.stop()
