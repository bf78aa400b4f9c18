"""Bid export and storage (SQLite and PostgreSQL), a short backtest, the expected-arrivals bound."""
import csv
import io
import json
from datetime import date, datetime, timezone

import numpy as np
import pytest

from aggregator.store.db import make_engine
from bidding.backtest import event_days, run_backtest
from bidding.bids import Bid, bids_to_csv, make_bid
from bidding.forecast import ForecastOptions, forecast, history_days, profile_cache
from bidding.intake import expected_arrivals_bound_kw
from bidding.programs import get_program
from bidding.store import fleet_nameplate_kw, load_bids, load_sessions, save_bid
from sim.history import generate_history, load_archetype, write_history

NOW = datetime(2025, 7, 14, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def workplace():
    return generate_history(load_archetype("workplace"), date(2025, 5, 1), date(2025, 7, 20), seed=1)


def _bid(table, program_name="dr-capacity", day=date(2025, 7, 15)):
    program = get_program(program_name)
    fc = forecast(profile_cache(table, program.window), history_days(table, program.window), program.window, day,
                  ForecastOptions(n_samples=500))
    return program, fc, make_bid(program, fc, NOW, fleet_nameplate_kw(table), history={"source": "test"})


def test_bid_exports_to_json_and_csv(workplace):
    program, fc, bid = _bid(workplace)
    d = json.loads(bid.to_json())
    assert Bid.from_dict(d) == bid
    assert d["window_start"] == "2025-07-15T20:00:00+00:00" and d["window_end"] == "2025-07-15T23:00:00+00:00"
    assert d["parameters"]["sizing_telemetry_derate"] == program.telemetry_loss and d["history"]["pool_days"] > 0
    rows = list(csv.DictReader(io.StringIO(bids_to_csv([bid]))))
    assert [float(r["quantity_kw"]) for r in rows] == pytest.approx(list(bid.quantity_kw), abs=1e-3)
    # the quantity is the 25th percentile of the derated forecast (p=2, k=6)
    assert bid.quantity_kw[0] == pytest.approx(np.quantile(fc.samples[:, 0] * 0.98, 0.25), rel=0.02)
    assert bid.p90_kw[0] <= bid.quantity_kw[0] <= bid.p50_kw[0]


def test_bids_and_history_round_trip_through_the_database(database_url, workplace):
    engine = make_engine(database_url)
    try:
        small = workplace.subset(workplace.arrived_s < workplace.arrived_s.min() + 20 * 86400)
        write_history(engine, small)
        back = load_sessions(engine)
        assert len(back) == len(small)
        assert np.sort(back.arrived_s) == pytest.approx(np.sort(small.arrived_s))
        _, _, bid = _bid(workplace)
        bid_id = save_bid(engine, bid)
        [stored] = load_bids(engine, "dr-capacity")
        assert stored.id == bid_id
        assert stored.quantity_kw == bid.quantity_kw and stored.hour_starts == bid.hour_starts
        assert stored.history == bid.history and stored.parameters == bid.parameters
    finally:
        engine.dispose()


def test_short_backtest_scores_every_strategy(workplace):
    program = get_program("dr-capacity")
    days = [d for d in event_days(2025, program) if d <= date(2025, 7, 20)][:3]
    res = run_backtest(workplace, program, 2025, "workplace", fleet_nameplate_kw(workplace), days=days,
                       forecast_options=ForecastOptions(n_samples=300))
    rows = {r["strategy"]: r for r in res.summary()}
    assert set(rows) == {"optimal", "mean", "nameplate"} and all(r["events"] == 3 for r in rows.values())
    # the nameplate (every vehicle's discharge kW, all afternoon) is never delivered: big penalties
    assert rows["nameplate"]["performance_ratio"] < 0.5
    assert rows["nameplate"]["penalties"] > rows["optimal"]["penalties"]
    assert rows["optimal"]["committed_kwh"] < rows["nameplate"]["committed_kwh"]
    for r in res.events:   # settlement credits at most the commitment
        assert all(c <= q + 1e-6 for c, q in zip(r.delivered_kw, r.committed_kw))


def test_expected_arrivals_count_only_sessions_starting_in_the_window():
    table = generate_history(load_archetype("residential_evenings"), date(2025, 5, 1), date(2025, 7, 14), seed=2)
    start = datetime(2025, 7, 15, 20, tzinfo=timezone.utc)    # 16:00 EDT
    later = expected_arrivals_bound_kw(start, 3, table, quantile=0.5)
    assert later.shape == (3,)
    assert later[0] < later[1] < later[2]        # residents arrive through the evening
    everyone = set(table.vehicle_id.astype(str))
    assert expected_arrivals_bound_kw(start, 3, table, plugged_ids=everyone) == pytest.approx(np.zeros(3))


def test_the_intakes_arrival_forecast_reads_history_from_the_database(database_url):
    """`ArrivalForecast` (what the event intake calls) loads the sessions once per day and
    maps the hourly forecast onto the event's intervals."""
    from bidding.intake import ArrivalForecast
    table = generate_history(load_archetype("residential_evenings"), date(2025, 6, 1), date(2025, 7, 14), seed=3)
    engine = make_engine(database_url)
    try:
        write_history(engine, table)
        start = datetime(2025, 7, 15, 20, tzinfo=timezone.utc)
        forecast_kw = ArrivalForecast(engine, quantile=0.5)(start, [0.25] * 12, set())
        hourly = expected_arrivals_bound_kw(start, 3, load_sessions(engine, until=datetime(2025, 7, 15, tzinfo=timezone.utc)),
                                            quantile=0.5)
        assert forecast_kw.shape == (12,)
        assert forecast_kw == pytest.approx(np.repeat(hourly, 4))
        assert forecast_kw[-1] > 0
    finally:
        engine.dispose()
