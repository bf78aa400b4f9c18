"""The web console in a real headless Chromium (Debian's, driven by Playwright): a driver moves
the departure end to end and the next plan honours it; the operator page shows the fleet,
the event's committed vs delivered, sites (an operator sets a site's limit) and alerts. Screenshots go to the test's tmp dir."""
from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.api.live import LiveAggregator

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    running = LiveAggregator(f"sqlite:///{tmp_path_factory.mktemp('console') / 'console.db'}").start()
    try:
        yield running.with_history()
    finally:
        running.stop()


def test_a_driver_changes_the_departure_and_the_next_plan_honours_it(browser, live, tmp_path):
    vehicle = sorted(live.app.registry.plugged_vehicle_ids())[0]
    token = live.token("driver", vehicle)
    page = browser.new_context(timezone_id="UTC", locale="en-GB", viewport={"width": 900, "height": 900}).new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{live.url}/console/driver.html#token={token}")
    page.wait_for_selector("body[data-loaded=yes]")
    assert vehicle in page.text_content("#vehicle-id")
    assert "%" in page.text_content("#soc")

    departs = datetime(2026, 7, 15, 21, 30, tzinfo=timezone.utc)
    assert departs > live.now
    page.fill("#departs-input", "2026-07-15T21:30")
    page.fill("#target-input", "85")
    page.click("#save")
    page.wait_for_selector("#status.ok")
    assert "21:30" in page.text_content("#departs")
    page.screenshot(path=str(tmp_path / "driver.png"), full_page=True)

    report = live.step()        # the next control-loop step re-plans with the change
    assert report.planned
    [member] = [m for m in live.app.registry.snapshot(live.now) if m.spec.id == vehicle]
    assert member.session.departs_at == departs
    assert member.session.need_kwh == pytest.approx(0.85 * member.spec.capacity_kwh)
    assert report.plan is not None

    page.fill("#departs-input", "2026-07-15T17:00")           # in the past: refused, named
    page.click("#save")
    page.wait_for_selector("#status.error")
    assert "departs_at" in page.text_content("#status")
    page.click("#opt-out")
    page.wait_for_selector("#status.ok")
    assert "opt-out" in page.text_content("#export")
    assert (tmp_path / "driver.png").stat().st_size > 10_000
    assert not errors


def test_the_operator_page_shows_fleet_events_sites_and_alerts(browser, live, tmp_path):
    token = live.token("operator")
    page = browser.new_context(timezone_id="UTC", locale="en-GB", viewport={"width": 1200, "height": 1000}).new_page()
    page.goto(f"{live.url}/console/operator.html#token={token}")
    page.wait_for_selector("body[data-loaded=yes]")
    assert page.text_content("#online") == "50 / 50"
    event_row = page.text_content("#events tr")
    assert "evt-1" in event_row and "settlement v1" in event_row
    assert len(page.query_selector_all("#sites tr")) == 2
    assert len(page.query_selector_all("#vehicles tr")) == 50
    assert "none" in page.text_content("#alerts")
    page.screenshot(path=str(tmp_path / "operator.png"), full_page=True)
    assert (tmp_path / "operator.png").stat().st_size > 10_000


def test_the_operator_sets_a_site_limit_from_the_sites_section(browser, live, tmp_path):
    from aggregator.sites import get_site
    page = browser.new_context(timezone_id="UTC", locale="en-GB", viewport={"width": 1200, "height": 1000}).new_page()
    page.goto(f"{live.url}/console/operator.html#token={live.token('operator')}")
    page.wait_for_selector("body[data-loaded=yes]")
    assert "(primary)" in page.text_content("#programmes tr")
    page.fill("#site-id", "1")
    page.fill("#site-name", "Homes feeder")
    page.fill("#site-export", "25")
    page.click("#site-save")
    page.wait_for_selector("#status.ok")
    row = page.text_content("#sites tr:nth-child(2)")
    assert "Homes feeder" in row and "25.0" in row and "none" in row      # export 25 kW, no import limit
    record = get_site(live.app.engine, 1)
    assert (record.name, record.export_limit_kw, record.import_limit_kw) == ("Homes feeder", 25.0, None)
    page.fill("#site-export", "-3")                    # the browser's own check stops it; the API would too
    page.fill("#site-import", "10")
    page.click("#site-save")
    assert get_site(live.app.engine, 1).import_limit_kw is None
    page.screenshot(path=str(tmp_path / "operator-sites.png"), full_page=True)


def test_without_a_token_the_console_shows_the_401(browser, live):
    page = browser.new_context().new_page()
    page.goto(f"{live.url}/console/operator.html")
    page.wait_for_selector("#status.error")
    assert "401" in page.text_content("#status")
