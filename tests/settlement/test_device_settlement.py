"""Device-metered settlement: DST days, partial intervals, re-settlement versions."""
from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest

from aggregator.settlement.delivery import RegisterReading
from aggregator.settlement.engine import DeviceMetering, SettlementInputs, inputs_hash, resettle, settle_event
from aggregator.settlement.performance import EventInterval, EventSettlement, committed_export_kw
from tests.settlement.builders import UTC, local, registers

H = timedelta(hours=1)
T_SETTLE = datetime(2024, 12, 1, tzinfo=UTC)


def hourly(start, n, committed):
    return tuple(EventInterval(i, start + i * H, start + (i + 1) * H, committed) for i in range(n))


def test_committed_export_from_import_ceiling():
    assert committed_export_kw(-50.0) == 50.0
    assert committed_export_kw(20.0) == 0.0
    assert committed_export_kw(None) is None


def test_fall_back_day_event_has_four_hours_and_a_starred_label():
    """2024-11-03 00:00-03:00 local lasts 4 h. Charger A exports 7 kW, charger B
    exports 3 kW except in the repeated hour where it imports 2 kW."""
    day = date(2024, 11, 3)
    start, end = local(day, 0), local(day, 3)
    repeated = local(day, 1, fold=1)
    readings = {
        "cp-a": registers(start - H, end + H, lambda t: -7.0),
        "cp-b": registers(start - H, end + H, lambda t: 2.0 if repeated <= t < repeated + H else -3.0),
    }
    intervals = hourly(start, 4, 12.0)
    assert intervals[-1].end == end
    result = settle_event(SettlementInputs("fb", intervals, DeviceMetering(readings)), T_SETTLE)
    assert [r.label("hour-ending") for r in result.intervals] == ["HE 01:00", "HE 02:00", "HE 02:00*", "HE 03:00"]
    assert [r.label_hb for r in result.intervals] == ["HB 00:00", "HB 01:00", "HB 01:00*", "HB 02:00"]
    assert [r.delivered_kw for r in result.intervals] == pytest.approx([10.0, 10.0, 5.0, 10.0])
    assert [r.ratio for r in result.intervals] == pytest.approx([10 / 12, 10 / 12, 5 / 12, 10 / 12])
    assert result.totals.delivered_avg_kw == pytest.approx(35.0 / 4)
    assert result.totals.ratio == pytest.approx(35.0 / 48)
    assert result.totals.hours == pytest.approx(4.0)


def test_spring_forward_day_event_has_three_hours():
    day = date(2024, 3, 10)
    start, end = local(day, 0), local(day, 4)
    readings = {"cp-a": registers(start, end, lambda t: -9.0, step=timedelta(minutes=1))}
    intervals = hourly(start, 3, 10.0)
    assert intervals[-1].end == end
    result = settle_event(SettlementInputs("sf", intervals, DeviceMetering(readings)), T_SETTLE)
    assert [r.label() for r in result.intervals] == ["HB 00:00", "HB 01:00", "HB 03:00"]
    assert result.totals.delivered_kwh == pytest.approx(27.0)
    assert result.totals.ratio == pytest.approx(0.9)


def test_partial_intervals_are_time_weighted():
    """Event starts at 16:10: a 50-minute interval at 60 kW committed, then a
    30-minute one at 100 kW committed; delivery 60 kW throughout."""
    day = date(2024, 7, 16)
    a, b, c = local(day, 16, 10), local(day, 17), local(day, 17, 30)
    intervals = (EventInterval(0, a, b, 60.0), EventInterval(1, b, c, 100.0))
    readings = {"cp": registers(local(day, 16), local(day, 18), lambda t: -60.0, step=timedelta(minutes=1))}
    result = settle_event(SettlementInputs("part", intervals, DeviceMetering(readings)), T_SETTLE)
    assert [r.ratio for r in result.intervals] == pytest.approx([1.0, 0.6])
    committed_kwh = 60 * 50 / 60 + 100 * 0.5            # 100 kWh
    assert result.totals.committed_kwh == pytest.approx(committed_kwh)
    assert result.totals.delivered_kwh == pytest.approx(80.0)
    assert result.totals.ratio == pytest.approx(0.8)
    assert result.totals.committed_avg_kw == pytest.approx(committed_kwh / (80 / 60))


def test_uncommitted_intervals_are_listed_but_not_in_the_ratio():
    start = local(date(2024, 7, 16), 16)
    intervals = (EventInterval(0, start, start + H, 50.0), EventInterval(1, start + H, start + 2 * H, None))
    readings = {"cp": registers(start, start + 2 * H, lambda t: -40.0)}
    result = settle_event(SettlementInputs("nc", intervals, DeviceMetering(readings)), T_SETTLE)
    assert result.intervals[1].ratio is None
    assert result.totals.ratio == pytest.approx(0.8)
    assert result.totals.event_avg_kw == pytest.approx(40.0)


def test_credit_cap_limits_over_delivery():
    start = local(date(2024, 7, 16), 16)
    readings = {"cp": registers(start, start + H, lambda t: -150.0)}
    inputs = SettlementInputs("cap", hourly(start, 1, 100.0), DeviceMetering(readings), max_credit_ratio=1.0)
    result = settle_event(inputs, T_SETTLE)
    assert result.intervals[0].delivered_kw == pytest.approx(150.0)
    assert result.totals.ratio == pytest.approx(1.0)


def test_resettlement_after_late_and_corrected_data_keeps_versions():
    start = local(date(2024, 7, 16), 16)
    intervals = hourly(start, 2, 50.0)
    full = registers(start, start + 2 * H, lambda t: -50.0)
    late = [r for r in full if r.ts <= start + H + H / 2]       # last 30 min not yet arrived
    v1 = settle_event(SettlementInputs("e", intervals, DeviceMetering({"cp": late})), T_SETTLE)
    assert v1.version == 1 and v1.supersedes is None
    assert v1.intervals[1].coverage == pytest.approx(0.5)
    assert v1.totals.ratio == pytest.approx(0.75)

    v2 = resettle(v1, SettlementInputs("e", intervals, DeviceMetering({"cp": full})), T_SETTLE + H)
    assert (v2.version, v2.supersedes) == (2, 1)
    assert v2.totals.ratio == pytest.approx(1.0)
    assert v2.inputs_hash != v1.inputs_hash
    # version 1 is untouched
    assert v1.totals.ratio == pytest.approx(0.75) and v1.version == 1

    # the same inputs again: no new version
    same = resettle(v2, SettlementInputs("e", intervals, DeviceMetering({"cp": list(reversed(full))})), T_SETTLE + 2 * H)
    assert same is v2

    # readings far outside the event do not matter either
    far = [RegisterReading(start + 10 * H, full[-1].import_kwh, full[-1].export_kwh + 99),
           RegisterReading(start + 11 * H, full[-1].import_kwh, full[-1].export_kwh + 199)]
    assert inputs_hash(SettlementInputs("e", intervals, DeviceMetering({"cp": full + far}))) == v2.inputs_hash

    # corrected readings in the second hour (meter delivered 10 % less): version 3
    at_h = next(r.export_kwh for r in full if r.ts == start + H)
    corrected = [replace(r, export_kwh=at_h + 0.9 * (r.export_kwh - at_h)) if r.ts > start + H else r
                 for r in full]
    v3 = resettle(v2, SettlementInputs("e", intervals, DeviceMetering({"cp": corrected})), T_SETTLE + 3 * H)
    assert (v3.version, v3.supersedes) == (3, 2)
    assert v3.totals.ratio == pytest.approx(0.95)
    assert v2.totals.ratio == pytest.approx(1.0)


def test_resettle_refuses_another_event():
    start = local(date(2024, 7, 16), 16)
    v1 = settle_event(SettlementInputs("a", hourly(start, 1, 1.0), DeviceMetering({})), T_SETTLE)
    with pytest.raises(ValueError, match="previous settlement is for a"):
        resettle(v1, SettlementInputs("b", hourly(start, 1, 1.0), DeviceMetering({})), T_SETTLE)


def test_result_round_trips_through_dict():
    start = local(date(2024, 7, 16), 16)
    readings = {"cp": registers(start, start + H, lambda t: -5.0)}
    result = settle_event(SettlementInputs("rt", hourly(start, 1, 10.0), DeviceMetering(readings)), T_SETTLE)
    assert EventSettlement.from_dict(result.to_dict()) == result


def test_overlapping_intervals_are_refused():
    start = local(date(2024, 7, 16), 16)
    intervals = (EventInterval(0, start, start + H, 1.0), EventInterval(1, start + H / 2, start + 2 * H, 1.0))
    with pytest.raises(ValueError, match="overlap"):
        SettlementInputs("x", intervals, DeviceMetering({}))
