"""EiOpt: the fleet's availability window is announced with oadrCreateOpt (vavailability,
schema-checked by the scripted VTN) and cancelled/re-announced when the fleet changes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import free_port
from tests.integration.scripted_vtn import ScriptedVtn, VenUnderTest
from ven.availability import availability_window

def announced(payload: dict) -> dict:
    """The single `available` component (openleadr parses one component as a dict)."""
    available = payload["vavailability"]["components"]["available"]
    return available[0] if isinstance(available, list) else available


pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
T0 = datetime(2026, 7, 1, 16, tzinfo=timezone.utc)
H = timedelta(hours=1)


def test_window_ends_when_the_remaining_fleet_falls_below_the_minimum():
    sessions = [(T0 + 1 * H, 10.0), (T0 + 3 * H, 10.0), (T0 + 5 * H, 10.0)]
    assert availability_window(sessions, T0, min_export_kw=15.0).end == T0 + 3 * H
    assert availability_window(sessions, T0, min_export_kw=5.0).end == T0 + 5 * H
    assert availability_window(sessions, T0, min_export_kw=31.0) is None
    assert availability_window([], T0, 1.0) is None


async def test_availability_is_announced_and_replaced_when_evs_leave(tmp_path):
    vtn = ScriptedVtn(free_port())
    await vtn.start()
    ven = VenUnderTest(vtn.url, f"sqlite:///{tmp_path / 'ven.db'}")
    await ven.start()
    try:
        first = (await vtn.wait_for("oadrCreateOpt"))[0].payload
        window = announced(first)
        sessions = ven.ven.availability()
        expected = availability_window(sessions, datetime.now(timezone.utc), 1.0)
        end = window["dtstart"] + window["duration"]
        assert abs(end - expected.end) <= timedelta(minutes=1)
        assert first["opt_type"] == "optIn"
        # the EVs leaving last drop off: the window shrinks -> cancel + new opt
        latest = sorted(ven.fleet.vehicles, key=lambda v: v.departs_at)
        await ven.drop([v.vehicle_id for v in latest[len(latest) // 2:]])
        cancel = (await vtn.wait_for("oadrCancelOpt"))[0].payload
        assert cancel["opt_id"] == first["opt_id"]
        second = (await vtn.wait_for("oadrCreateOpt", 2))[1].payload
        new_end = announced(second)
        assert new_end["dtstart"] + new_end["duration"] < end
    finally:
        await ven.stop()
        await vtn.stop()
    assert vtn.schema_errors == []
