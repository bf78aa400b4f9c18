import pytest

from aggregator.settlement.payments import (
    DEFAULT_FACTOR, EventParticipation, PerformanceFactor, capacity_payment, connected_solutions_season)


def test_default_factor_is_piecewise():
    assert DEFAULT_FACTOR(0.3) == 0.0
    assert DEFAULT_FACTOR(0.4999) == 0.0
    assert DEFAULT_FACTOR(0.5) == 0.5            # step: the right-hand value applies
    assert DEFAULT_FACTOR(0.75) == pytest.approx(0.75)
    assert DEFAULT_FACTOR(1.3) == 1.0
    assert DEFAULT_FACTOR(-1.0) == 0.0


def test_custom_factor_with_bonus():
    factor = PerformanceFactor(((0.0, 0.0), (0.8, 0.8), (1.0, 1.0), (1.2, 1.1)))
    assert factor(1.1) == pytest.approx(1.05)
    assert factor(5.0) == pytest.approx(1.1)
    with pytest.raises(ValueError):
        PerformanceFactor(((1.0, 1.0), (0.5, 0.5)))


def test_capacity_payment():
    # 100 kW committed at $8/kW, performance 0.802 -> factor 0.802
    pay = capacity_payment(100.0, 0.802, 8.0)
    assert pay.factor == pytest.approx(0.802)
    assert pay.amount == pytest.approx(641.6)
    assert capacity_payment(100.0, 0.4, 8.0).amount == 0.0
    assert capacity_payment(0.0, None, 8.0).amount == 0.0


def test_connected_solutions_season_average():
    """4 events of 3 h: 30 kW, opted out, missed, half an event at 30 kW
    (45 kWh over 3 h = 15 kW). Average = (30 + 0 + 0 + 15) / 4 = 11.25 kW."""
    events = [EventParticipation("e1", 3.0, 90.0),
              EventParticipation("e2", 3.0, 90.0, opted_out=True),
              EventParticipation("e3", 3.0, 0.0, missed=True),
              EventParticipation("e4", 3.0, 45.0)]
    season = connected_solutions_season(events, rate_per_kw_season=275.0)
    assert season.average_kw == pytest.approx(11.25)
    assert season.payment == pytest.approx(3093.75)
    assert dict(season.events) == pytest.approx({"e1": 30.0, "e2": 0.0, "e3": 0.0, "e4": 15.0})


def test_net_import_during_an_event_counts_zero_not_negative():
    season = connected_solutions_season([EventParticipation("e", 2.0, -10.0), EventParticipation("f", 2.0, 20.0)])
    assert season.average_kw == pytest.approx(5.0)


def test_empty_season_pays_nothing():
    assert connected_solutions_season([]).payment == 0.0
