"""promtool checks: config, rules, alert unit tests, and the lint of our own
/metrics exposition."""
from __future__ import annotations

import re
import subprocess

import pytest
from prometheus_client import generate_latest

from tests.deploy.promql import PROMETHEUS_DIR, alert_rules, populated_metrics
from tests.integration.prometheus_server import require_binary


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool")


def run(promtool: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], input=stdin, capture_output=True, cwd=PROMETHEUS_DIR, timeout=60)


def output(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).decode(errors="replace")


def test_prometheus_config_is_valid(promtool):
    result = run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, output(result)
    assert "1 rule files found" in output(result)


def test_alert_rules_are_valid(promtool):
    result = run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, output(result)
    assert f"{len(alert_rules())} rules found" in output(result)


def test_alert_rule_unit_tests_pass(promtool):
    result = run(promtool, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, output(result)


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    text = (PROMETHEUS_DIR / "alerts_test.yml").read_text()
    cases = re.findall(r"alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*(\[\])?", text)
    names = [name for name, _ in alert_rules()]
    assert names and len(set(names)) == len(names)
    for name in names:
        kinds = {bool(empty) for alert, empty in cases if alert == name}
        assert kinds == {True, False}, f"{name}: needs a firing and a quiet case, has {kinds}"
    assert {alert for alert, _ in cases} <= set(names), "unit test for an alert that does not exist"


def test_required_alerts_exist():
    names = {name for name, _ in alert_rules()}
    for required in ("V2xVenDisconnected", "V2xDeliveryBelowCommitment", "V2xAllocatorFailing",
                     "V2xAllocatorSlow", "V2xTelemetryStale"):
        assert required in names


def test_metrics_exposition_passes_promtool_lint(promtool):
    exposition = generate_latest(populated_metrics().registry)
    assert b"v2x_event_delivered_joules_total{" in exposition     # the registry really is populated
    result = run(promtool, "check", "metrics", stdin=exposition)
    assert result.returncode == 0 and output(result).strip() == "", output(result)


def test_promtool_lint_does_report_problems(promtool):
    """The lint check above can fail: a badly named counter is reported."""
    bad = b"# HELP bad_requests Requests.\n# TYPE bad_requests counter\nbad_requests 1\n"
    result = run(promtool, "check", "metrics", stdin=bad)
    assert "_total" in output(result)
