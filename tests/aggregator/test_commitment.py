"""Event values -> fleet import ceilings through the program settings."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from aggregator.commitment import UnsupportedSignal, resolve_commitment
from aggregator.config import ProgramSettings
from ven.event import Event, EventInterval

T0 = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)


def event(signal_name, signal_type, values):
    intervals = tuple(EventInterval(i, T0 + timedelta(minutes=15 * i), T0 + timedelta(minutes=15 * (i + 1)), v)
                      for i, v in enumerate(values))
    return Event("e", 0, "far", signal_name, signal_type, intervals)


def test_setpoint_with_positive_export_sign():
    ceilings = [c.import_ceiling_kw for c in resolve_commitment(event("LOAD_DISPATCH", "setpoint", [300, 0, -50]),
                                                                  ProgramSettings(export_sign="positive"))]
    assert ceilings == [-300, 0, 50]


def test_setpoint_with_negative_export_sign_is_our_own_sign():
    committed = resolve_commitment(event("LOAD_DISPATCH", "setpoint", [-300]), ProgramSettings(export_sign="negative"))
    assert committed[0].import_ceiling_kw == -300
    assert committed[0].export_kw == 300


def test_delta_is_relative_to_the_baseline():
    committed = resolve_commitment(event("LOAD_DISPATCH", "delta", [100]), ProgramSettings(export_sign="positive"),
                                   baseline_kw=40.0)
    assert committed[0].import_ceiling_kw == pytest.approx(-60.0)


def test_simple_levels_map_through_the_program():
    program = ProgramSettings(simple_level_export_kw={"1": 50.0, "2": 120.0, "3": 200.0})
    ceilings = [c.import_ceiling_kw for c in resolve_commitment(event("SIMPLE", "level", [0, 1, 2, 3]), program)]
    assert math.isnan(ceilings[0])
    assert ceilings[1:] == [-50.0, -120.0, -200.0]


def test_unknown_level_and_unmapped_signal_are_refused():
    with pytest.raises(UnsupportedSignal, match="level 7"):
        resolve_commitment(event("SIMPLE", "level", [7]), ProgramSettings())
    with pytest.raises(UnsupportedSignal, match="BID_LOAD"):
        resolve_commitment(event("BID_LOAD", "setpoint", [1]), ProgramSettings())
