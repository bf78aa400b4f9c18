"""A real Prometheus scrapes the aggregator during a demo event over real HTTP; what it
stored agrees with the ledger, and every dashboard panel has data from the real run."""
from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime, timedelta

import pytest

from aggregator.config import Settings
from sim.demo import DemoOptions, run_demo
from tests.conftest import free_port
from tests.deploy.promql import dashboards, panel_queries, substitute_variables
from tests.integration.prometheus_server import PROMETHEUS_BINARY, PrometheusServer, require_binary

pytestmark = pytest.mark.integration
PROFILE_KW = (120.0, 260.0, 180.0)


@pytest.fixture(scope="module")
def scraped_demo(tmp_path_factory):
    binary = require_binary(PROMETHEUS_BINARY)
    port = free_port()
    folder = tmp_path_factory.mktemp("prom-demo")
    settings = Settings.model_validate({"database": {"url": f"sqlite:///{folder / 'ledger.db'}"},
                                        "metrics": {"port": port}})
    # Prometheus watches the aggregator for a few scrapes before the event, as it would in production
    options = DemoOptions(profile_kw=PROFILE_KW, interval=timedelta(seconds=10), lead=timedelta(seconds=5),
                          warmup=timedelta(seconds=10),
                          report_interval=timedelta(seconds=1), progress=lambda *_: None)
    with PrometheusServer([f"127.0.0.1:{port}"], binary=binary) as prometheus:
        result = asyncio.run(run_demo(settings, options))
        # late enough in interval 1 that every station has pushed a sample since its setpoint changed
        # (stations sample every fleet.meter_interval_s = 5 s; the gauges are as fresh as the samples)
        middle = datetime.fromisoformat(result.summary.intervals[1].start).timestamp() + 7.5
        time.sleep(1.5)   # let the last scrape land
        yield prometheus, result, middle, time.time()


def value(result: list[dict]) -> float:
    assert result, "empty result"
    return float(result[0]["value"][1])


def at(prometheus, promql: str, ts: float) -> list[dict]:
    return prometheus.api("query", query=promql, time=f"{ts:.3f}")["result"]


def test_committed_export_scraped_matches_the_ledger(scraped_demo):
    prometheus, result, middle, after = scraped_demo
    committed_w = value(at(prometheus, "v2x_committed_export_watts", middle))
    assert committed_w == pytest.approx(result.summary.intervals[1].committed_export_kw * 1e3)
    peak = value(at(prometheus, "max_over_time(v2x_committed_export_watts[2m])", after))
    assert peak == pytest.approx(max(PROFILE_KW) * 1e3)


def test_delivered_energy_counter_matches_the_metered_ledger(scraped_demo):
    prometheus, result, middle, after = scraped_demo
    delivered_j = value(at(prometheus, "max_over_time(v2x_event_delivered_joules_total[3m])", after))
    ledger_kwh = result.summary.delivered_kwh
    assert ledger_kwh > 0.5
    # the counter is fed from the same meter reads, attributed per read span
    assert delivered_j / 3.6e6 == pytest.approx(ledger_kwh, rel=0.05)
    ratio = value(at(prometheus, "last_over_time(v2x_event_performance_ratio[3m])", after))
    assert ratio == pytest.approx(result.summary.performance_ratio, rel=0.1)


def test_fleet_gauges_during_the_event(scraped_demo):
    prometheus, result, middle, _after = scraped_demo
    assert value(at(prometheus, "v2x_plugged_in_evs", middle)) == 50
    export_w = value(at(prometheus, "v2x_fleet_export_watts", middle))
    assert export_w == pytest.approx(result.summary.intervals[1].committed_export_kw * 1e3, rel=0.1)
    assert value(at(prometheus, 'v2x_event_state{state="active"}', middle)) == 1
    assert value(at(prometheus, "v2x_ven_connected", middle)) == 1
    assert value(at(prometheus, "v2x_available_discharge_watts", middle)) > export_w


def test_every_dashboard_panel_has_data_from_the_real_run(scraped_demo):
    prometheus, _result, middle, _after = scraped_demo
    empty = []
    for name, board in dashboards().items():
        for title, expr in panel_queries(board):
            rows = at(prometheus, substitute_variables(expr), middle)
            if not any(not math.isnan(float(r["value"][1])) for r in rows):
                empty.append(f"{name}: {title}: {expr}")
    assert not empty, "panels without data during a real event:\n" + "\n".join(empty)
