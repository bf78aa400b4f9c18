"""The VEN's event store round-trips every field the rules need (SQLite and PostgreSQL)."""
from __future__ import annotations

import random
from datetime import timedelta

from aggregator.store.db import make_engine
from ven.rules import Decision, Identity, apply_distribute
from ven.store import EventStore
from tests.ven.test_rules import T0, MIN, raw


def test_stored_events_and_identity_survive_a_restart(database_url):
    engine = make_engine(database_url)
    try:
        store = EventStore(engine)
        out = apply_distribute({}, "req-1", [raw("a", 3, start_after=10 * MIN, values=(5.0, 7.0),
                                                 targets=[{"group_id": "g1"}], priority=2)],
                               Identity(group_ids=frozenset({"g1"})), T0 - MIN, random.Random(1),
                               lambda e, _t: Decision("optIn", 200, "fits"))
        store.save(list(out.state.values()))
        store.save_identity("http://vtn", "ven-9", "reg-9")
        loaded = EventStore(engine).load()
        assert loaded["a"] == out.state["a"]
        assert loaded["a"].request_id == "req-1" and loaded["a"].timing.start_offset > timedelta(0)
        rows = store.intervals("a")
        offset = loaded["a"].timing.start_offset
        assert [(r.uid, r.start, r.end, r.value) for r in rows] == [
            (0, T0 + offset, T0 + MIN + offset, 5.0), (1, T0 + MIN + offset, T0 + 2 * MIN + offset, 7.0)]
        assert EventStore(engine).identity("http://vtn") == ("ven-9", "reg-9")
    finally:
        engine.dispose()
