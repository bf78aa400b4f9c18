"""The whole chain over real HTTP on 127.0.0.1: the openleadr VTN simulator issues
events, our VEN receives them, the fleet is dispatched and metered, telemetry goes back."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta

import pytest

from aggregator.config import Settings
from sim.demo import DemoOptions, run_demo
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def settings_for(tmp_path, **program) -> Settings:
    return Settings.model_validate({"database": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
                                    "metrics": {"port": 0}, "program": program})


def quick(profile, interval_s=10.0):
    """Short events; intervals stay long against the chargers' ~1 s response, as real ones are."""
    return DemoOptions(profile_kw=tuple(profile), interval=timedelta(seconds=interval_s),
                       lead=timedelta(seconds=4), report_interval=timedelta(seconds=1),
                       fast_forward_step=timedelta(minutes=15), progress=lambda *_: None)


def test_event_over_http_is_delivered_reported_and_drivers_protected(tmp_path):
    result = asyncio.run(run_demo(settings_for(tmp_path), quick([100.0, 250.0, 100.0])))
    summary = result.summary
    assert summary.opt_state == "optIn"
    assert [opt for _, _, opt in result.opt_responses] == ["optIn"]
    # metered delivery, not the plan: within the chargers' response at the edges
    assert summary.committed_kwh == pytest.approx((100 + 250 + 100) * 10 / 3600)
    assert summary.delivered_kwh == pytest.approx(summary.committed_kwh, rel=0.12)
    for interval in summary.intervals:
        assert interval.coverage == pytest.approx(1.0)
    # telemetry arrived at the VTN as fleet real power (kW, negative = export during the event)
    assert len(result.vtn_reports) >= 3
    assert min(value for _, _, value in result.vtn_reports) < -50
    # the VEN announced its availability window (EiOpt) and the VTN acknowledged it
    assert result.availability_opts and result.availability_opts[0]["opt_type"] == "optIn"
    # every driver left with what they asked (all needs in the default fleet are reachable)
    assert len(summary.drivers) == 50
    assert all(d.energy_at_departure_kwh is not None for d in summary.drivers)
    assert summary.drivers_short == []
    assert summary.drivers_unreachable == []


def test_the_same_chain_over_mutual_tls_with_signed_messages(tmp_path):
    options = quick([150.0, 150.0])
    options.pki_folder = tmp_path / "pki"
    result = asyncio.run(run_demo(settings_for(tmp_path), options))
    assert result.vtn_url.startswith("https://")
    assert [opt for _, _, opt in result.opt_responses] == ["optIn"]
    assert result.summary.delivered_kwh == pytest.approx(result.summary.committed_kwh, rel=0.12)
    assert len(result.vtn_reports) >= 3


def test_event_beyond_the_fleet_is_answered_and_dispatched_best_effort(tmp_path):
    result = asyncio.run(run_demo(settings_for(tmp_path), quick([3000.0, 3000.0], interval_s=6.0)))
    summary = result.summary
    assert summary.opt_state == "optIn"
    assert "best effort" in summary.note
    assert summary.delivered_kwh > 0.25 * summary.committed_kwh    # it really moved energy
    assert summary.performance_ratio < 0.6                          # and reports the shortfall
    assert summary.drivers_short == []


def test_program_that_requires_coverage_opts_out_of_what_it_cannot_serve(tmp_path):
    result = asyncio.run(run_demo(settings_for(tmp_path, min_coverage_to_opt_in=0.9), quick([3000.0], interval_s=5.0)))
    assert [opt for _, _, opt in result.opt_responses] == ["optOut"]
    assert result.summary.opt_state == "optOut"
    assert result.summary.delivered_kwh < 0   # no export: the fleet kept charging


def test_demo_command_exits_zero_and_writes_its_outputs(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "aggregator.cli", "demo", "--out", str(out), "--json", str(tmp_path / "s.json"),
         "--profile", "120,200", "--interval-seconds", "10"],
        env={"PATH": "/usr/bin:/bin", "V2X_METRICS_PORT": str(free_port())},
        capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "performance ratio" in run.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["opt_state"] == "optIn"
    assert 0.8 < summary["performance_ratio"] < 1.2
    assert summary["drivers_stranded"] == []
    assert (out / "demo_intervals.csv").read_text().count("\n") == 3
    assert (out / "demo_committed_vs_delivered.png").read_bytes()[:4] == b"\x89PNG"
    # the demo's ledger settles with `v2x settle` to the same metered delivery
    settle = subprocess.run(
        [sys.executable, "-m", "aggregator.cli", "--database", f"sqlite:///{out / 'demo.db'}", "settle",
         "--event", summary["event_id"], "--json", str(tmp_path / "settle.json"), "--png", str(tmp_path / "s.png")],
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
    assert settle.returncode == 0, settle.stderr[-2000:]
    settled = json.loads((tmp_path / "settle.json").read_text())
    (event,) = settled["settlements"]
    assert event["totals"]["ratio"] == pytest.approx(summary["performance_ratio"], rel=1e-3)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
