from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings, strategies as st

from aggregator.settlement.delivery import (
    MeterDataError, RegisterReading, RegisterSeries, fleet_energy, interval_loads)
from tests.settlement.builders import UTC, registers

T0 = datetime(2024, 7, 16, 20, tzinfo=UTC)
H = timedelta(hours=1)


def test_interpolates_at_interval_boundaries():
    series = RegisterSeries([RegisterReading(T0, 0.0, 0.0), RegisterReading(T0 + H, 2.0, 10.0)])
    e = series.energy(T0 + timedelta(minutes=15), T0 + timedelta(minutes=45))
    assert e.import_kwh == pytest.approx(1.0)
    assert e.export_kwh == pytest.approx(5.0)
    assert e.net_export_kwh == pytest.approx(4.0)
    assert e.coverage == 1.0


def test_partial_coverage_counts_only_the_measured_part():
    series = RegisterSeries([RegisterReading(T0, 0.0, 0.0), RegisterReading(T0 + H / 2, 0.0, 5.0)])
    e = series.energy(T0, T0 + H)
    assert e.export_kwh == pytest.approx(5.0)
    assert e.coverage == pytest.approx(0.5)
    assert series.energy(T0 + H, T0 + 2 * H).coverage == 0.0


def test_register_going_backwards_is_an_error():
    with pytest.raises(MeterDataError, match="decreased"):
        RegisterSeries([RegisterReading(T0, 5.0, 0.0), RegisterReading(T0 + H, 4.0, 0.0)], "cp-1")


def test_duplicate_timestamps_keep_one_reading_and_order_does_not_matter():
    rows = registers(T0, T0 + H, lambda t: -6.0)
    series = RegisterSeries(list(reversed(rows)) + rows[:3])
    assert len(series) == len(rows)
    assert series.energy(T0, T0 + H).net_export_kwh == pytest.approx(6.0)


def test_fleet_sums_devices_and_reports_lowest_coverage():
    a = RegisterSeries(registers(T0, T0 + H, lambda t: -7.0))
    b = RegisterSeries(registers(T0, T0 + H / 2, lambda t: 4.0))      # imports, stops half-way
    idle = RegisterSeries(registers(T0 + 3 * H, T0 + 4 * H, lambda t: -1.0))
    e = fleet_energy({"a": a, "b": b, "idle": idle}, T0, T0 + H)
    assert e.net_export_kwh == pytest.approx(7.0 - 2.0)
    assert e.coverage == pytest.approx(0.5)


def test_interval_loads_leave_gaps_missing():
    series = RegisterSeries(registers(T0, T0 + 2 * H, lambda t: 3.0 if t < T0 + H else -2.0))
    loads = interval_loads(series, [(T0, T0 + H), (T0 + H, T0 + 2 * H), (T0 + 2 * H, T0 + 3 * H)])
    assert loads == {T0: pytest.approx(3.0), T0 + H: pytest.approx(-2.0)}


@settings(max_examples=60, deadline=None)
@given(powers=st.lists(st.floats(-20, 20, allow_nan=False), min_size=2, max_size=24),
       cut=st.floats(0.01, 0.99))
def test_energy_is_additive_over_a_split(powers, cut):
    step = timedelta(minutes=5)
    end = T0 + step * len(powers)
    rows = registers(T0, end, lambda t: powers[int((t - T0) / step)], step)
    series = RegisterSeries(rows)
    mid = T0 + (end - T0) * cut
    whole = series.energy(T0, end).net_export_kwh
    parts = series.energy(T0, mid).net_export_kwh + series.energy(mid, end).net_export_kwh
    assert parts == pytest.approx(whole, abs=1e-9)
    assert whole == pytest.approx(-sum(powers) * step.total_seconds() / 3600, abs=1e-9)
