"""The rules engine as a pure function: state + distribute -> state + responses."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from ven.arbitration import Contender, Piece, arbitrate
from ven.rules import Decision, Identity, apply_distribute, targets_match

T0 = datetime(2026, 7, 1, 16, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)
ME = Identity(ven_id="ven1", group_ids=frozenset({"g1"}), market_contexts=frozenset({"http://mc"}))


def raw(event_id, mod=0, status="far", start=T0, values=(10.0,), start_after=None, required="always",
        targets=(), market="http://mc", priority=1):
    period = {"dtstart": start, "duration": MIN * len(values)}
    if start_after:
        period["tolerance"] = {"tolerate": {"startafter": start_after}}
    return {"event_descriptor": {"event_id": event_id, "modification_number": mod, "event_status": status,
                                 "market_context": market, "priority": priority},
            "active_period": period,
            "event_signals": [{"signal_name": "LOAD_DISPATCH", "signal_type": "setpoint",
                               "intervals": [{"uid": i, "duration": MIN, "signal_payload": v}
                                             for i, v in enumerate(values)]}],
            "targets": list(targets), "response_required": required}


def opt_in(event, timing):
    return Decision("optIn", 200, "ok")


def run(state, events, now=T0 - timedelta(hours=1), seed=1, decide=opt_in):
    return apply_distribute(state, "req", events, ME, now, random.Random(seed), decide)


def test_no_targets_means_you_and_any_matching_target_is_enough():
    assert targets_match((), ME)
    assert targets_match(({"group_id": "g1"}, {"ven_id": "other"}), ME)
    assert not targets_match(({"resource_id": "r9"},), ME)


def test_new_modified_unchanged_and_lower():
    out = run({}, [raw("a", 1)])
    assert [c.kind for c in out.changes] == ["new"]
    state = out.state
    assert [c.kind for c in run(state, [raw("a", 1)]).changes] == ["unchanged"]
    assert [c.kind for c in run(state, [raw("a", 2)]).changes] == ["modified"]
    lower = run(state, [raw("a", 0)])
    assert [c.kind for c in lower.changes] == ["lower-mod"]
    assert lower.responses[0].response_code == 450
    assert lower.state["a"] is state["a"]


def test_unchanged_repeat_does_not_ask_the_fleet_again():
    calls = []
    state = run({}, [raw("a")], decide=lambda e, _t: calls.append(e) or Decision("optIn")).state
    run(state, [raw("a")], decide=lambda e, _t: calls.append(e) or Decision("optOut"))
    assert len(calls) == 1


def test_start_offset_is_drawn_once_within_startafter_and_kept():
    state = run({}, [raw("a", start_after=10 * MIN)], seed=3).state
    offset = state["a"].timing.start_offset
    assert timedelta(0) < offset <= 10 * MIN
    state2 = run(state, [raw("a", 1, start_after=10 * MIN)], seed=99).state
    assert state2["a"].timing.start_offset == offset
    assert run({}, [raw("b")]).state["b"].timing.start_offset == timedelta(0)


def test_implied_cancellation_and_empty_distribute():
    state = run({}, [raw("a"), raw("b")]).state
    out = run(state, [raw("b")])
    assert {c.event_id: c.kind for c in out.changes}["a"] == "implied-cancel"
    assert out.state["a"].cancelled and not out.state["b"].cancelled
    out = run(out.state, [])
    assert out.state["b"].cancelled and out.responses == []


def test_completed_events_are_not_cancelled_by_omission():
    state = run({}, [raw("old", start=T0)]).state
    out = run(state, [], now=T0 + timedelta(hours=2))
    assert not out.state["old"].cancelled


def test_cancelling_a_running_event_randomizes_its_end_only_if_it_started():
    state = run({}, [raw("a", start_after=5 * MIN, values=(1.0,) * 60)], seed=2).state
    before = run(state, [raw("a", 1, status="cancelled", start_after=5 * MIN)], now=T0 - MIN).state["a"]
    assert before.timing.end_offset == timedelta(0)
    during = run(state, [raw("a", 1, status="cancelled", start_after=5 * MIN)], now=T0 + 20 * MIN).state["a"]
    assert timedelta(0) < during.timing.end_offset <= 5 * MIN


def test_response_required_never_gets_no_response_but_is_stored():
    out = run({}, [raw("n", required="never"), raw("a")])
    assert [r.event_id for r in out.responses] == ["a"]
    assert "n" in out.state


def test_market_context_and_target_mismatch_are_refused_without_asking_the_fleet():
    asked = []
    out = run({}, [raw("m", market="http://else"), raw("t", targets=[{"ven_id": "x"}])],
              decide=lambda e, _t: asked.append(e) or Decision("optIn"))
    codes = {r.event_id: (r.response_code, r.opt_type) for r in out.responses}
    assert codes == {"m": (453, "optOut"), "t": (462, "optOut")}
    assert asked == []


def test_arbitration_priority_then_first_activated():
    a = Contender("a", 2, (T0,), (Piece(T0, T0 + 10 * MIN, "a"),))
    b = Contender("b", 1, (T0 + MIN,), (Piece(T0 + 2 * MIN, T0 + 4 * MIN, "b"),))
    z = Contender("z", 0, (T0 - MIN,), (Piece(T0, T0 + 20 * MIN, "z"),))
    out = arbitrate([a, b, z])
    assert [(p.start, p.end) for p in out["b"]] == [(T0 + 2 * MIN, T0 + 4 * MIN)]
    assert [(p.start, p.end) for p in out["a"]] == [(T0, T0 + 2 * MIN), (T0 + 4 * MIN, T0 + 10 * MIN)]
    assert [(p.start, p.end) for p in out["z"]] == [(T0 + 10 * MIN, T0 + 20 * MIN)]
    tie = arbitrate([Contender("late", 1, (T0 + MIN,), (Piece(T0, T0 + 5 * MIN, 0),)),
                     Contender("early", 1, (T0,), (Piece(T0, T0 + 5 * MIN, 0),))])
    assert tie["late"] == [] and len(tie["early"]) == 1
