"""Eligible-day rules and invariants of the baseline engine."""
from datetime import date, timedelta

import pytest
from hypothesis import given, settings, strategies as st

from aggregator.settlement.baseline import (
    AdjustmentKind, AdjustmentRule, DaySelection, InsufficientData, caiso_10_in_10, compute_baseline,
    nyiso_5_of_10, pjm_high_4_of_5)
from aggregator.settlement.calendar import DayCalendar, nerc_holidays
from tests.settlement.builders import NY, hourly_profile, local

DAY = date(2024, 7, 16)           # Tuesday
CAL = DayCalendar(holidays=nerc_holidays(2024))
NO_ADJ = AdjustmentRule()


def flat_days(n_back: int, value=lambda d: 100.0):
    return {DAY - timedelta(days=k): (lambda v: (lambda h: v))(value(DAY - timedelta(days=k)))
            for k in range(0, n_back + 1)}


def baseline(days, spec, calendar=CAL, event_days=frozenset(), hours=(16, 19), day=DAY):
    """Hours missing from a day's dict are missing data (no default fill)."""
    return compute_baseline(hourly_profile(days, default=None), local(day, hours[0]), local(day, hours[1]),
                            spec, NY, calendar, event_days)


def test_event_days_are_not_reference_days():
    days = flat_days(30)
    spec = caiso_10_in_10(adjustment=NO_ADJ)
    plain = baseline(days, spec)
    excluded = baseline(days, spec, event_days=frozenset({date(2024, 7, 15), date(2024, 7, 12)}))
    assert date(2024, 7, 15) in plain.selected_days
    assert date(2024, 7, 15) not in excluded.selected_days and date(2024, 7, 12) not in excluded.selected_days
    assert len(excluded.selected_days) == 10


def test_weekend_event_uses_weekend_days_and_holidays_as_weekend_when_asked():
    sunday = date(2024, 7, 7)
    days = {sunday - timedelta(days=k): (lambda h: 100.0) for k in range(0, 30)}
    days[date(2024, 7, 4)] = lambda h: 500.0                   # Thursday holiday
    spec = caiso_10_in_10(adjustment=NO_ADJ)
    plain = baseline(days, spec, day=sunday)
    assert all(d.weekday() >= 5 for d in plain.selected_days)
    assert plain.selected_days == (date(2024, 7, 6), date(2024, 6, 30), date(2024, 6, 29), date(2024, 6, 23))
    with_holidays = baseline(days, spec, DayCalendar(nerc_holidays(2024), holidays_as_weekend=True), day=sunday)
    assert date(2024, 7, 4) in with_holidays.selected_days
    assert with_holidays.slots[0].adjusted_kw == pytest.approx((500 + 3 * 100) / 4)


def test_days_with_missing_data_are_skipped():
    days = flat_days(30)
    days[date(2024, 7, 15)] = {h: 100.0 for h in range(24) if h != 17}   # a gap in the event window
    result = baseline(days, caiso_10_in_10(adjustment=NO_ADJ))
    assert date(2024, 7, 15) not in result.selected_days


def test_too_few_days_is_an_error():
    with pytest.raises(InsufficientData, match="eligible weekday days"):
        baseline(flat_days(5), pjm_high_4_of_5())        # 3 weekdays in 5 days < 4
    with pytest.raises(InsufficientData, match="adjustment window"):
        days = flat_days(30)
        days[DAY] = {h: 100.0 for h in range(24) if h != 13}
        baseline(days, caiso_10_in_10())


def test_lookback_limits_the_search():
    days = flat_days(60)
    spec = caiso_10_in_10(adjustment=NO_ADJ, lookback_days=7,
                          weekday=DaySelection(pool_days=10, min_days=1))
    result = baseline(days, spec)
    assert result.selected_days == (date(2024, 7, 15), date(2024, 7, 12), date(2024, 7, 11), date(2024, 7, 10),
                                    date(2024, 7, 9))      # 7 days back, inclusive
    assert min(result.selected_days) >= DAY - timedelta(days=7)


def test_additive_cap():
    days = flat_days(30)
    days[DAY] = {12: 200.0, 13: 200.0, 14: 200.0}
    spec = pjm_high_4_of_5(adjustment=AdjustmentRule(AdjustmentKind.ADDITIVE, cap_up=0.2, cap_down=0.2))
    result = baseline(days, spec)
    assert result.adjustment == pytest.approx(100.0)
    assert result.adjustment_applied == pytest.approx(20.0)
    assert result.slots[0].adjusted_kw == pytest.approx(120.0)


loads = st.lists(st.floats(0, 500, allow_nan=False), min_size=24, max_size=24)


@settings(max_examples=30, deadline=None)
@given(profiles=st.lists(loads, min_size=12, max_size=12), event_day=loads)
def test_invariants(profiles, event_day):
    """Unadjusted baseline lies within the selected days' range per slot; a
    capped multiplicative adjustment stays within its cap; High X of Y is never
    below the plain average of the same pool on the event window."""
    weekdays = []
    d = DAY
    while len(weekdays) < len(profiles):
        d -= timedelta(days=1)
        if d.weekday() < 5 and d not in CAL.holidays:
            weekdays.append(d)
    days = {day: (lambda p: (lambda h: p[h]))(p) for day, p in zip(weekdays, profiles)}
    days[DAY] = (lambda p: (lambda h: p[h]))(event_day)
    spec = nyiso_5_of_10()
    result = baseline(days, spec)
    by_day = dict(zip(weekdays, profiles))
    for i, s in enumerate(result.slots):
        values = [by_day[day][16 + i] for day in result.selected_days]
        assert min(values) - 1e-9 <= s.unadjusted_kw <= max(values) + 1e-9
        if s.unadjusted_kw > 0:
            assert 0.8 - 1e-9 <= s.adjusted_kw / s.unadjusted_kw <= 1.2 + 1e-9
    plain = baseline(days, nyiso_5_of_10(weekday=DaySelection(pool_days=10, min_days=5), adjustment=NO_ADJ))
    pool_mean = sum(s.unadjusted_kw for s in plain.slots)
    high_mean = sum(s.unadjusted_kw for s in result.slots)
    if set(plain.pool) == set(result.pool):      # the same pool (low-usage screen is the same rule)
        assert high_mean >= pool_mean - 1e-9
