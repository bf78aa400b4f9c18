"""Every OpenADR 2.0b event rule (REFERENCE.md §2), each against the scripted VTN over real HTTP.

The VTN serves raw XML and schema-checks every message our VEN sends; each
test ends by asserting that none failed."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, select

from aggregator.store.models import Commitment
from tests.integration.scripted_vtn import ScriptedVtn, VenUnderTest, event_xml, soon
from ven.store import VenEvent, VenEventInterval

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MIN = timedelta(minutes=1)


async def answer(vtn: ScriptedVtn, events: list[str]) -> dict[str, dict]:
    """Serve a full distribute; return the eventResponses of the one oadrCreatedEvent it got."""
    before = len(vtn.messages("oadrCreatedEvent"))
    request_id = vtn.distribute(events)
    created = await vtn.wait_for("oadrCreatedEvent", before + 1)
    payload = created[before].payload
    responses = payload.get("event_responses") or []
    assert all(r["request_id"] == request_id for r in responses)
    return {r["event_id"]: r for r in responses}


def stored(ven: VenUnderTest, event_id: str) -> VenEvent | None:
    with Session(ven.engine) as db:
        return db.get(VenEvent, event_id)


def intervals(ven: VenUnderTest, event_id: str) -> list[VenEventInterval]:
    return ven.ven.store.intervals(event_id)


async def test_new_event_is_stored_with_absolute_interval_starts_and_opted_in(pair):
    vtn, ven = pair
    start = soon()
    got = await answer(vtn, [event_xml("e1", start, [(MIN, 50.0), (2 * MIN, 80.0), (MIN, 20.0)])])
    assert got["e1"]["opt_type"] == "optIn" and got["e1"]["response_code"] == 200
    rows = intervals(ven, "e1")
    assert [r.uid for r in rows] == [0, 1, 2]
    assert [r.start for r in rows] == [start, start + MIN, start + 3 * MIN]       # rules 2/8: cumulative
    assert rows[-1].end == start + 4 * MIN
    assert [r.value for r in rows] == [50.0, 80.0, 20.0]
    row = stored(ven, "e1")
    assert (row.modification_number, row.opt_state, row.status) == (0, "optIn", "far")
    assert row.request_id == vtn.messages("oadrCreatedEvent")[-1].payload["event_responses"][0]["request_id"]
    # what crossed the port: the executed intervals, no OpenADR codes
    request = ven.port.executed["e1"]
    assert [(p.uid, p.start, p.end, p.value, p.kind) for p in request.pieces] == [
        (0, start, start + MIN, 50.0, "event"), (1, start + MIN, start + 3 * MIN, 80.0, "event"),
        (2, start + 3 * MIN, start + 4 * MIN, 20.0, "event")]
    # the commitment the aggregator recorded for it (one event record: it references ven_event)
    assert [c.export_kw for c in ven.committed("e1")] == [50.0, 80.0, 20.0]
    with Session(ven.engine) as db:
        rows = db.exec(select(Commitment).where(Commitment.event_id == "e1").order_by(Commitment.start)).all()
        assert [(r.import_ceiling_kw, r.kind) for r in rows] == [(-50.0, "event"), (-80.0, "event"), (-20.0, "event")]


async def test_bad_interval_uids_and_durations_are_rejected_with_454(pair):
    vtn, ven = pair
    got = await answer(vtn, [
        event_xml("uids", soon(), [(MIN, 10.0), (MIN, 10.0)], uids=[0, 2]),
        event_xml("sum", soon(), [(MIN, 10.0), (MIN, 10.0)], duration=5 * MIN),
        event_xml("good", soon(), [(MIN, 10.0)])])
    assert (got["uids"]["response_code"], got["uids"]["opt_type"]) == (454, "optOut")
    assert (got["sum"]["response_code"], got["sum"]["opt_type"]) == (454, "optOut")
    assert got["good"]["response_code"] == 200
    assert "uids" not in ven.port.executed and "sum" not in ven.port.executed


async def test_open_ended_event_runs_until_cancelled(pair):
    vtn, ven = pair
    start = soon(1)
    got = await answer(vtn, [event_xml("open", start, [(MIN, 30.0), (timedelta(0), 40.0)], duration=timedelta(0))])
    assert got["open"]["opt_type"] == "optIn"
    rows = intervals(ven, "open")
    assert rows[1].start == start + MIN and rows[1].end is None                     # rule 47
    last = ven.port.executed["open"].pieces[-1]
    assert last.open_ended and last.end > start + timedelta(hours=12)                # planned to a horizon
    await answer(vtn, [event_xml("open", start, [(MIN, 30.0), (timedelta(0), 40.0)], duration=timedelta(0),
                                 mod=1, status="cancelled")])
    assert "open" not in ven.port.executed and ven.committed("open") == []


async def test_test_event_is_answered_but_moves_no_energy(pair):
    vtn, ven = pair
    got = await answer(vtn, [event_xml("t", soon(), [(MIN, 100.0)], test_event=True)])
    assert got["t"]["opt_type"] == "optIn"                                            # rule 6
    assert stored(ven, "t").test_event
    assert "t" not in ven.port.executed and [c[1] for c in ven.port.calls if c[0] == "assess"] == ["t"]


async def test_simple_levels_map_through_the_program(pair):
    vtn, ven = pair
    start = soon()
    got = await answer(vtn, [event_xml("s", start, [(MIN, 0), (MIN, 1), (MIN, 2), (MIN, 3)], signal_name="SIMPLE",
                                       signal_type="level", item_base=None)])
    assert got["s"]["opt_type"] == "optIn"
    levels = ven.program.simple_level_export_kw
    committed = ven.committed("s")
    assert committed[0].import_ceiling_kw != committed[0].import_ceiling_kw            # level 0: no ask (NaN)
    assert [c.export_kw for c in committed[1:]] == [levels["1"], levels["2"], levels["3"]]
    got = await answer(vtn, [event_xml("bad-level", start, [(MIN, 5)], signal_name="SIMPLE", signal_type="level",
                                       item_base=None)])
    assert (got["bad-level"]["opt_type"], got["bad-level"]["response_code"]) == ("optOut", 460)


async def test_response_required_never_sends_nothing_and_always_answers_every_event(pair):
    vtn, ven = pair
    start = soon()
    never = event_xml("quiet", start, [(MIN, 10.0)], response_required="never")
    got = await answer(vtn, [event_xml("a", start, [(MIN, 10.0)]), never])
    assert set(got) == {"a"}                                                          # rule 12/64
    assert stored(ven, "quiet").opt_state == "optIn"
    # an unchanged repeat is answered again with the same opt (rule 62), one message per distribute
    polls_before = len(vtn.messages("oadrPoll"))
    got = await answer(vtn, [event_xml("a", start, [(MIN, 10.0)]), never])
    assert got["a"]["opt_type"] == "optIn"
    # the answer went out before the next poll
    created_at = vtn.messages("oadrCreatedEvent")[-1].at
    polls = vtn.messages("oadrPoll")[polls_before:]
    served = [p for p in polls if p.at < created_at]
    assert len(served) == 1
    # only "never" events: no oadrCreatedEvent at all
    count = len(vtn.messages("oadrCreatedEvent"))
    vtn.distribute([never])
    await vtn.wait_served()
    await vtn.wait_for("oadrPoll", len(vtn.messages("oadrPoll")) + 2)
    assert len(vtn.messages("oadrCreatedEvent")) == count


async def test_priority_decides_overlaps(pair):
    vtn, ven = pair
    start = soon()
    got = await answer(vtn, [
        event_xml("low", start, [(4 * MIN, 50.0)], priority=3),
        event_xml("high", start + MIN, [(MIN, 200.0)], priority=1, market_context=ven.program.market_context),
        event_xml("none", start, [(6 * MIN, 10.0)], priority=0)])
    assert all(r["opt_type"] == "optIn" for r in got.values())
    high = ven.port.executed["high"].pieces
    low = ven.port.executed["low"].pieces
    none = ven.port.executed["none"].pieces
    assert [(c.start, c.end) for c in high] == [(start + MIN, start + 2 * MIN)]
    assert [(c.start, c.end) for c in low] == [(start, start + MIN), (start + 2 * MIN, start + 4 * MIN)]
    assert [(c.start, c.end) for c in none] == [(start + 4 * MIN, start + 6 * MIN)]     # 0 is the lowest


async def test_equal_priority_first_activated_wins(pair):
    vtn, ven = pair
    start = soon()
    await answer(vtn, [event_xml("first", start, [(2 * MIN, 50.0)], priority=2),
                       event_xml("second", start + MIN, [(2 * MIN, 90.0)], priority=2)])
    assert [(c.start, c.end) for c in ven.port.executed["first"].pieces] == [(start, start + 2 * MIN)]
    assert [(c.start, c.end) for c in ven.port.executed["second"].pieces] == [(start + 2 * MIN, start + 3 * MIN)]


async def test_targets_and_market_context_are_checked(pair):
    vtn, ven = pair
    start = soon()
    got = await answer(vtn, [
        event_xml("mine", start, [(MIN, 10.0)], targets="<ei:venID>ven_py</ei:venID>"),
        event_xml("group", start + 2 * MIN, [(MIN, 10.0)], targets="<ei:groupID>Group_123</ei:groupID>"),
        event_xml("other", start, [(MIN, 10.0)], targets="<ei:venID>someone_else</ei:venID>"),
        event_xml("market", start, [(MIN, 10.0)], market_context="http://other.example/program")])
    assert got["mine"]["opt_type"] == got["group"]["opt_type"] == "optIn"
    assert (got["other"]["opt_type"], got["other"]["response_code"]) == ("optOut", 462)      # rule 22
    assert (got["market"]["opt_type"], got["market"]["response_code"]) == ("optOut", 453)    # rule 48
    assert set(ven.port.executed) == {"mine", "group"}


async def test_start_randomization_is_drawn_once_and_kept_across_modifications(pair):
    vtn, ven = pair
    start = soon()
    await answer(vtn, [event_xml("r", start, [(MIN, 10.0)], start_after=timedelta(minutes=5))])
    offset = stored(ven, "r").start_offset_s
    assert 0 < offset <= 300                                                           # rule 30
    assert intervals(ven, "r")[0].start == start + timedelta(seconds=offset)
    assert ven.port.executed["r"].pieces[0].start == start + timedelta(seconds=offset)
    await answer(vtn, [event_xml("r", start, [(MIN, 20.0)], start_after=timedelta(minutes=5), mod=1)])
    assert stored(ven, "r").start_offset_s == offset
    assert stored(ven, "r").modification_number == 1


async def test_ramp_up_and_recovery_windows_are_scheduled(pair):
    vtn, ven = pair
    start = soon()
    await answer(vtn, [event_xml("ramp", start, [(2 * MIN, 100.0)], ramp_up=4 * MIN, recovery=4 * MIN)])
    crossed = ven.port.executed["ramp"].pieces
    assert [p.kind for p in crossed] == ["ramp"] * 4 + ["event"] + ["recovery"] * 4
    assert [p.weight for p in crossed] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 0.8, 0.6, 0.4, 0.2])
    pieces = sorted(ven.committed("ramp"), key=lambda c: c.start)
    assert pieces[0].start == start - 4 * MIN and pieces[-1].end == start + 6 * MIN
    before = [c for c in pieces if c.end <= start]
    after = [c for c in pieces if c.start >= start + 2 * MIN]
    assert len(before) == 4 and len(after) == 4
    ceilings = [c.import_ceiling_kw for c in before]
    assert ceilings == sorted(ceilings, reverse=True) and ceilings[-1] > -100.0    # ramps down toward -100
    recovery = [c.import_ceiling_kw for c in after]
    assert recovery == sorted(recovery) and recovery[0] > -100.0                    # and back up
    assert ven.ven.events["ramp"].status(start - MIN) == "near"
    assert ven.ven.events["ramp"].status(start + 3 * MIN) == "recovery"


async def test_cancellation_is_acknowledged_and_stops_execution(pair):
    vtn, ven = pair
    start = soon()
    await answer(vtn, [event_xml("c", start, [(MIN, 10.0)])])
    got = await answer(vtn, [event_xml("c", start, [(MIN, 10.0)], mod=1, status="cancelled")])
    assert (got["c"]["opt_type"], got["c"]["response_code"]) == ("optIn", 200)        # rules 36/59
    assert "c" not in ven.port.executed and ven.committed("c") == []                 # rule 60
    assert stored(ven, "c").status == "cancelled"
    got = await answer(vtn, [event_xml("ghost", start, [(MIN, 10.0)], status="cancelled")])
    assert (got["ghost"]["opt_type"], got["ghost"]["response_code"]) == ("optIn", 200)  # rule 21


async def test_cancelling_an_active_event_randomizes_its_end(pair):
    vtn, ven = pair
    # started 20 min ago with a start offset of at most 10 min: it is running whatever the draw
    start = datetime.now(timezone.utc).replace(microsecond=0) - 20 * MIN
    await answer(vtn, [event_xml("act", start, [(60 * MIN, 10.0)], status="active",
                                 start_after=timedelta(minutes=10))])
    assert ven.ven.events["act"].status(datetime.now(timezone.utc)) == "active"
    cancelled = await answer(vtn, [event_xml("act", start, [(60 * MIN, 10.0)], status="cancelled", mod=1,
                                             start_after=timedelta(minutes=10))])
    assert cancelled["act"]["opt_type"] == "optIn"
    row = stored(ven, "act")
    assert 0 < row.end_offset_s <= 600                                                  # rule 65
    cut = row.cancelled_at.replace(tzinfo=timezone.utc) + timedelta(seconds=row.end_offset_s)
    assert ven.port.executed["act"].pieces[-1].end == cut                             # ramps down at the cut
    assert intervals(ven, "act")[-1].end == cut


async def test_modification_numbers_higher_replaces_lower_is_an_error(pair):
    vtn, ven = pair
    start = soon()
    await answer(vtn, [event_xml("m", start, [(MIN, 10.0)], mod=2)])
    got = await answer(vtn, [event_xml("m", start, [(MIN, 99.0)], mod=3)])
    assert got["m"]["response_code"] == 200 and stored(ven, "m").modification_number == 3    # rule 57
    assert ven.port.executed["m"].pieces[0].value == 99.0
    got = await answer(vtn, [event_xml("m", start, [(MIN, 5.0)], mod=1)])
    assert got["m"]["response_code"] == 450                                            # rule 58
    assert stored(ven, "m").modification_number == 3
    assert ven.port.executed["m"].pieces[0].value == 99.0
    # lower is an error in the cancelled state too
    await answer(vtn, [event_xml("m", start, [(MIN, 99.0)], mod=4, status="cancelled")])
    got = await answer(vtn, [event_xml("m", start, [(MIN, 5.0)], mod=0)])
    assert got["m"]["response_code"] == 450 and stored(ven, "m").status == "cancelled"


async def test_event_missing_from_a_distribute_is_cancelled_also_by_an_empty_one(pair):
    vtn, ven = pair
    start = soon()
    await answer(vtn, [event_xml("x", start, [(MIN, 10.0)]), event_xml("y", start, [(MIN, 10.0)])])
    await answer(vtn, [event_xml("y", start, [(MIN, 10.0)])])
    assert stored(ven, "x").status == "cancelled" and "x" not in ven.port.executed       # rule 61
    assert "y" in ven.port.executed
    vtn.distribute([])
    await vtn.wait_served()
    for _ in range(40):
        if stored(ven, "y").status == "cancelled":
            break
        await vtn.wait_for("oadrPoll", len(vtn.messages("oadrPoll")) + 1)
    assert stored(ven, "y").status == "cancelled" and "y" not in ven.port.executed


async def test_load_dispatch_delta_and_load_control_and_price(pair):
    vtn, ven = pair
    start = soon()
    baseline = ven.fleet.power_kw
    got = await answer(vtn, [
        event_xml("delta", start, [(MIN, 30.0)], signal_type="delta"),
        event_xml("lc", start + 2 * MIN, [(MIN, 0.5)], signal_name="LOAD_CONTROL",
                  signal_type="x-loadControlCapacity", item_base=None),
        event_xml("price", start + 4 * MIN, [(MIN, 0.10), (MIN, 0.35), (MIN, 0.60)],
                  signal_name="ELECTRICITY_PRICE", signal_type="price",
                  item_base=__import__("tests.integration.scripted_vtn", fromlist=["PRICE_USD"]).PRICE_USD),
        event_xml("mult", start + 8 * MIN, [(MIN, 2.0)], signal_type="multiplier")])
    assert got["delta"]["opt_type"] == "optIn"
    assert ven.committed("delta")[0].import_ceiling_kw == pytest.approx(baseline - 30.0)
    assert ven.committed("lc")[0].import_ceiling_kw == pytest.approx(baseline * 0.5)
    price = ven.committed("price")
    assert price[0].import_ceiling_kw != price[0].import_ceiling_kw           # below every threshold: no ask
    assert [c.export_kw for c in price[1:]] == [100.0, 200.0]
    assert (got["mult"]["opt_type"], got["mult"]["response_code"]) == ("optOut", 460)


async def test_a_failing_decision_answers_optout_and_later_events_still_work(pair, monkeypatch):
    vtn, ven = pair
    def boom(request, now):
        raise RuntimeError("broken decision")
    monkeypatch.setattr(ven.intake, "assess", boom)
    got = await answer(vtn, [event_xml("p1", soon(), [(MIN, 10.0)])])
    assert got["p1"]["opt_type"] == "optOut"
    monkeypatch.undo()
    got = await answer(vtn, [event_xml("p1", soon(), [(MIN, 10.0)]), event_xml("p2", soon(), [(MIN, 10.0)])])
    assert got["p2"]["opt_type"] == "optIn"                                             # not poisoned (#118)


async def test_a_delta_target_does_not_move_with_the_fleets_response(pair):
    vtn, ven = pair
    start = soon()
    baseline = ven.fleet.power_kw
    assert baseline != 0
    await answer(vtn, [event_xml("d", start, [(MIN, 30.0), (MIN, 50.0)], signal_type="delta")])
    assert [c.import_ceiling_kw for c in ven.committed("d")] == pytest.approx([baseline - 30.0, baseline - 50.0])
    ven.fleet.power_kw = baseline - 45.0                  # the fleet responds to the event ...
    got = await answer(vtn, [event_xml("d", start, [(MIN, 30.0), (MIN, 60.0)], signal_type="delta", mod=1)])
    assert got["d"]["opt_type"] == "optIn"
    # ... and a modification is resolved against the baseline frozen when the event was accepted
    assert [c.import_ceiling_kw for c in ven.committed("d")] == pytest.approx([baseline - 30.0, baseline - 60.0])
    assert ven.book.baseline_kw("d") == pytest.approx(baseline)


async def test_load_control_and_delta_resolve_against_a_non_zero_baseline(pair):
    """Each mapping against a baseline that is neither 0 nor 1 and values chosen so the
    plausible slips differ: capacity v vs 1 - v, percent offset vs share, ignoring the
    baseline, the export sign of x-loadControlSetpoint, delta added instead of taken."""
    vtn, ven = pair
    ven.fleet.power_kw = baseline = 42.0
    start = soon()
    got = await answer(vtn, [
        event_xml("cap", start, [(MIN, 0.6), (MIN, 0.25)], signal_name="LOAD_CONTROL",
                  signal_type="x-loadControlCapacity", item_base=None),
        event_xml("pct", start + 3 * MIN, [(MIN, 20.0), (MIN, 150.0)], signal_name="LOAD_CONTROL",
                  signal_type="x-loadControlPercentOffset", item_base=None),
        event_xml("set", start + 6 * MIN, [(MIN, 25.0), (MIN, -5.0)], signal_name="LOAD_CONTROL",
                  signal_type="x-loadControlSetpoint", item_base=None),
        event_xml("dlt", start + 9 * MIN, [(MIN, 30.0), (MIN, 70.0)], signal_type="delta")])
    assert all((r["opt_type"], r["response_code"]) == ("optIn", 200) for r in got.values()), got
    ceilings = {e: [c.import_ceiling_kw for c in ven.committed(e)] for e in got}
    assert ceilings["cap"] == pytest.approx([0.6 * baseline, 0.25 * baseline])           # 25.2, 10.5
    assert ceilings["pct"] == pytest.approx([0.8 * baseline, -0.5 * baseline])           # 33.6, -21.0
    assert ceilings["set"] == pytest.approx([-25.0, 5.0])        # positive = export asked (export_sign positive)
    assert ceilings["dlt"] == pytest.approx([baseline - 30.0, baseline - 70.0])          # 12.0, -28.0
    for event_id in got:
        assert ven.book.baseline_kw(event_id) == pytest.approx(baseline)
