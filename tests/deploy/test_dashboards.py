"""Grafana dashboards: structure, and every query against a real Prometheus
scraping a live ``Metrics`` registry during a simulated event."""
from __future__ import annotations

import math
import re

import pytest

from aggregator.metrics import Metrics
from tests.deploy.fleet_simulation import EventSimulation
from tests.deploy.promql import (
    BUILTIN_SERIES, DATASOURCE_UID, PROMETHEUS_DIR, ROOT, alert_rules, catalogue_names, dashboards,
    metric_names, panel_queries, panels, substitute_variables, variable_queries)
from tests.integration.prometheus_server import PROMETHEUS_BINARY, PrometheusServer, free_port, require_binary

EXPECTED_UIDS = {"v2x-fleet-operations", "v2x-event-performance", "v2x-ven-charger-health"}


# ------------------------------------------------------------------ structure

def test_dashboards_have_the_fixed_unique_uids():
    boards = dashboards()
    uids = [board["uid"] for board in boards.values()]
    assert len(uids) == len(set(uids))
    assert set(uids) == EXPECTED_UIDS
    for board in boards.values():
        assert board.get("id") is None, "provisioned dashboards must not carry a database id"
        assert board["title"] and panels(board)


def test_every_panel_and_target_uses_the_fixed_datasource():
    for name, board in dashboards().items():
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels(board):
            if panel.get("type") == "row":
                continue
            assert panel.get("datasource") == {"type": "prometheus", "uid": DATASOURCE_UID}, \
                f"{name}: panel {panel['title']!r}"
            assert panel.get("targets"), f"{name}: panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                assert target.get("datasource", panel["datasource"])["uid"] == DATASOURCE_UID
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                assert variable["datasource"]["uid"] == DATASOURCE_UID


def test_provisioned_datasource_has_the_fixed_uid():
    text = (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    assert re.search(rf"^\s+uid:\s*{DATASOURCE_UID}\s*$", text, re.M)
    assert re.search(r"^\s+type:\s*prometheus\s*$", text, re.M)
    provider = (ROOT / "deploy/grafana/provisioning/dashboards/v2x.yml").read_text()
    assert "type: file" in provider and "path:" in provider


def all_queries() -> list[tuple[str, str]]:
    out = []
    for name, board in dashboards().items():
        out += [(f"{name}: {title}", expr) for title, expr in panel_queries(board)]
        out += [(f"{name}: variable", expr) for expr in variable_queries(board)]
    out += [(f"alert {name}", expr) for name, expr in alert_rules()]
    return out


def test_every_metric_in_a_query_is_in_the_catalogue():
    known = catalogue_names() | BUILTIN_SERIES
    unknown = {(where, name) for where, expr in all_queries() for name in metric_names(expr) if name not in known}
    assert not unknown, f"metrics not in aggregator/metrics.py: {sorted(unknown)}"
    assert len(all_queries()) > 30


def test_metric_name_check_catches_unknown_names():
    assert metric_names('sum by (program) (rate(v2x_fleet_exprot_joules_total{program=~"$program"}[5m]))') \
        == {"v2x_fleet_exprot_joules_total"}
    assert metric_names("time() - v2x_ven_last_successful_poll_timestamp_seconds > 3.6e6") \
        == {"v2x_ven_last_successful_poll_timestamp_seconds"}
    assert "v2x_fleet_exprot_joules_total" not in catalogue_names()


# ------------------------------------------------------------------ live Prometheus

@pytest.fixture(scope="module")
def live_prometheus():
    """Metrics served on a free port, a simulated event running, a real
    Prometheus scraping it (plus one dead target, so `up == 0` has a subject)."""
    binary = require_binary(PROMETHEUS_BINARY)
    metrics = Metrics()
    simulation = EventSimulation(metrics).start()
    port = free_port()
    server, thread = metrics.serve("127.0.0.1", port)
    dead = f"127.0.0.1:{free_port()}"
    prometheus = PrometheusServer([f"127.0.0.1:{port}", dead], binary=binary,
                                  rule_files=[PROMETHEUS_DIR / "alerts.yml"])
    try:
        prometheus.start()
        # a few scrapes of the running event, so rate() and increase() have data
        prometheus.wait_for("count_over_time(v2x_fleet_export_watts[1m])",
                            lambda r: bool(r) and float(r[0]["value"][1]) >= 4, timeout=30)
        yield prometheus
    finally:
        prometheus.stop()
        simulation.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def has_real_value(result: list[dict]) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


def test_every_dashboard_and_alert_query_returns_data(live_prometheus):
    failures = []
    for where, expr in all_queries():
        promql = expr if expr.startswith("label_values") else substitute_variables(expr)
        if promql.startswith("label_values"):
            (metric,) = metric_names(promql)
            label = promql.rstrip(") ").rsplit(",", 1)[1].strip()
            result = live_prometheus.query(f"count by ({label}) ({metric})")
            if not any(r["metric"].get(label) for r in result):
                failures.append((where, expr, "no label values"))
            continue
        try:
            live_prometheus.wait_for(promql, has_real_value, timeout=10)
        except TimeoutError as err:
            failures.append((where, expr, str(err)[-200:]))
    assert not failures, "queries without data:\n" + "\n".join(map(str, failures))


def test_alert_rules_loaded_by_prometheus_are_the_ones_tested(live_prometheus):
    loaded = {rule["name"]: rule["query"] for rule in live_prometheus.rules() if rule["type"] == "alerting"}
    assert set(loaded) == {name for name, _ in alert_rules()}


def test_query_check_fails_for_a_missing_metric(live_prometheus):
    """The data check above is not vacuous: an unknown metric stays empty."""
    with pytest.raises(TimeoutError):
        live_prometheus.wait_for("v2x_no_such_metric_watts", has_real_value, timeout=2)
