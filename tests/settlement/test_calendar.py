from datetime import date, datetime, timedelta

import pytest

from aggregator.settlement.calendar import (
    DayCalendar, LabelConvention, day_length, interval_label, nerc_holidays, wall_to_utc)
from tests.settlement.builders import NY, UTC, local

H = timedelta(hours=1)


def labels(start, n, convention, step=H):
    return [interval_label(start + i * step, start + (i + 1) * step, NY, convention) for i in range(n)]


def test_day_lengths_on_dst_days():
    assert day_length(date(2024, 3, 10), NY) == timedelta(hours=23)
    assert day_length(date(2024, 11, 3), NY) == timedelta(hours=25)
    assert day_length(date(2024, 7, 16), NY) == timedelta(hours=24)


def test_labels_on_an_ordinary_day():
    start = local(date(2024, 7, 16), 16)
    assert labels(start, 3, "hour-beginning") == ["HB 16:00", "HB 17:00", "HB 18:00"]
    assert labels(start, 3, LabelConvention.HOUR_ENDING) == ["HE 17:00", "HE 18:00", "HE 19:00"]
    last = local(date(2024, 7, 16), 23)
    assert interval_label(last, last + H, NY, "hour-ending") == "HE 24:00"


def test_labels_on_spring_forward_skip_the_missing_hour():
    start = local(date(2024, 3, 10), 0)
    assert labels(start, 4, "hour-beginning") == ["HB 00:00", "HB 01:00", "HB 03:00", "HB 04:00"]
    assert labels(start, 4, "hour-ending") == ["HE 01:00", "HE 02:00", "HE 04:00", "HE 05:00"]


def test_labels_on_fall_back_mark_the_repeated_hour():
    start = local(date(2024, 11, 3), 0)
    assert labels(start, 4, "hour-beginning") == ["HB 00:00", "HB 01:00", "HB 01:00*", "HB 02:00"]
    assert labels(start, 4, "hour-ending") == ["HE 01:00", "HE 02:00", "HE 02:00*", "HE 03:00"]


def test_quarter_hour_labels():
    start = local(date(2024, 7, 16), 16)
    q = timedelta(minutes=15)
    assert labels(start, 2, "hour-ending", q) == ["HE 16:15", "HE 16:30"]


def test_wall_to_utc_gap_and_fold():
    assert wall_to_utc(datetime(2024, 3, 10, 2, 30), NY) == []
    assert wall_to_utc(datetime(2024, 11, 3, 1, 30), NY) == [
        datetime(2024, 11, 3, 5, 30, tzinfo=UTC), datetime(2024, 11, 3, 6, 30, tzinfo=UTC)]
    assert wall_to_utc(datetime(2024, 7, 16, 16), NY) == [datetime(2024, 7, 16, 20, tzinfo=UTC)]


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        interval_label(datetime(2024, 7, 16, 16), datetime(2024, 7, 16, 17), NY)


def test_nerc_holidays():
    assert nerc_holidays(2024) == {date(2024, 1, 1), date(2024, 5, 27), date(2024, 7, 4),
                                   date(2024, 9, 2), date(2024, 11, 28), date(2024, 12, 25)}
    # Sunday holidays move to Monday
    assert date(2021, 7, 5) in nerc_holidays(2021)
    assert date(2022, 12, 26) in nerc_holidays(2022)


def test_day_types():
    cal = DayCalendar(holidays=nerc_holidays(2024))
    assert cal.day_type(date(2024, 7, 4)) == "weekday" and cal.excluded(date(2024, 7, 4))
    weekend_cal = DayCalendar(holidays=nerc_holidays(2024), holidays_as_weekend=True)
    assert weekend_cal.day_type(date(2024, 7, 4)) == "weekend" and not weekend_cal.excluded(date(2024, 7, 4))
    assert cal.day_type(date(2024, 7, 13)) == "weekend"
