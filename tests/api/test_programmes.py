"""Programmes through the API: roles, what is listed (settings, events, settled performance), and
an operator's enrolment change reaching the VEN's market-context check at once and surviving a
restart (the configuration only seeds it)."""
from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from aggregator.app import Aggregator
from aggregator.config import Settings
from tests.aggregator.test_dispatcher import MARKET, dispatch_event

pytestmark = pytest.mark.integration
OTHER = "http://utility.example/programs/v2x-winter"


def auth(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def event_of(event_id: str, start, market_context: str) -> dict:
    event = dispatch_event(event_id, start, [50.0])
    event["event_descriptor"]["market_context"] = market_context
    return event


def test_roles(live):
    own = sorted(live.app.registry.plugged_vehicle_ids())[0]
    tokens = {"anonymous": None, "driver": live.token("driver", own), "utility": live.token("utility"),
              "operator": live.token("operator")}
    reads = {"anonymous": 401, "driver": 403, "utility": 200, "operator": 200}
    writes = {"anonymous": 401, "driver": 403, "utility": 403}
    for role, token in tokens.items():
        assert requests.get(live.url + "/api/v1/programmes", headers=auth(token)).status_code == reads[role]
        if role in writes:
            answer = requests.put(live.url + "/api/v1/programmes/enrollment", headers=auth(token),
                                  json={"market_context": OTHER, "enrolled": True})
            assert answer.status_code == writes[role], role
    assert OTHER not in live.app.ven.engine.identity.market_contexts


def test_the_primary_programme_with_its_settings_events_and_performance(live):
    [primary, *others] = requests.get(live.url + "/api/v1/programmes", headers=auth(live.token("utility"))).json()
    program = live.app.settings.program
    assert primary["market_context"] == MARKET == program.market_context
    assert primary["primary"] and primary["enrolled"] and primary["source"] == "config"
    assert (primary["timezone"], primary["export_sign"], primary["baseline_method"]) == (
        program.timezone, program.export_sign, "device")
    assert primary["signals"]["simple_level_export_kw"] == program.simple_level_export_kw
    assert primary["events_total"] >= 1 and primary["settled_events"] == 1
    assert primary["ratio"] == pytest.approx(1.0, abs=0.1)
    evt = next(e for e in primary["events"] if e["event_id"] == "evt-1")
    assert evt["settlement_version"] == 1 and evt["committed_kwh"] == pytest.approx(primary["committed_kwh"])
    assert evt["start"] is not None and evt["opt_state"] == "optIn"
    assert requests.get(live.url + "/api/v1/programmes?events=0", headers=auth(live.token("utility"))).json()[0][
        "events"] == []
    answer = requests.get(live.url + "/api/v1/programmes?events=201", headers=auth(live.token("utility")))
    assert answer.status_code == 400 and answer.json()["fields"][0]["field"] == "query.events"


def test_enrolment_changes_reach_the_ven_at_once(live):
    operator = auth(live.token("operator"))
    url = live.url + "/api/v1/programmes/enrollment"
    start = live.now + timedelta(hours=2)
    assert live.offer(event_of("winter-1", start, OTHER)) == "optOut"        # not enrolled: 453

    answer = requests.put(url, headers=operator, json={"market_context": OTHER, "enrolled": True})
    assert answer.status_code == 200, answer.text
    assert answer.json()["enrolled"] and answer.json()["source"] == "api" and not answer.json()["primary"]
    assert OTHER in live.app.ven.engine.identity.market_contexts
    assert live.offer(event_of("winter-2", start, OTHER)) == "optIn"
    listed = requests.get(live.url + "/api/v1/programmes", headers=operator).json()
    winter = next(p for p in listed if p["market_context"] == OTHER)
    assert {e["event_id"] for e in winter["events"]} == {"winter-1", "winter-2"}

    answer = requests.put(url, headers=operator, json={"market_context": OTHER, "enrolled": False})
    assert answer.status_code == 200 and not answer.json()["enrolled"]
    assert live.offer(event_of("winter-3", start, OTHER)) == "optOut"
    assert OTHER not in live.app.ven.engine.identity.market_contexts and MARKET in live.app.ven.identity.market_contexts

    primary = requests.put(url, headers=operator, json={"market_context": MARKET, "enrolled": False})
    assert primary.status_code == 409 and primary.json()["fields"][0]["field"] == "body.market_context"
    assert requests.put(url, headers=operator, json={"market_context": "urn:never", "enrolled": False}
                        ).status_code == 404
    for body, field in [({"market_context": "has space", "enrolled": True}, "body.market_context"),
                        ({"market_context": OTHER}, "body.enrolled"), ({"market_context": OTHER, "enrolled": 3},
                                                                         "body.enrolled")]:
        answer = requests.put(url, headers=operator, json=body)
        assert answer.status_code == 400 and field in [f["field"] for f in answer.json()["fields"]], answer.text


def test_enrolments_survive_a_restart_and_the_configuration_only_seeds_them(tmp_path):
    seeded = "http://utility.example/programs/seeded"
    config = {"database": {"url": f"sqlite:///{tmp_path / 'p.db'}"}, "metrics": {"port": 0},
              "program": {"additional_market_contexts": [seeded]}}
    app = Aggregator(Settings.model_validate(config))
    try:
        assert app.ven.engine.identity.market_contexts == {MARKET, seeded}
        app.enrollment.set(seeded, False)          # what the API does for an operator
        app.enrollment.set(OTHER, True)
        assert app.ven.engine.identity.market_contexts == {MARKET, OTHER}
    finally:
        app.engine.dispose()
    app = Aggregator(Settings.model_validate(config))   # the same configuration after a restart
    try:
        assert app.ven.engine.identity.market_contexts == {MARKET, OTHER}
        assert app.ven.identity.market_contexts == {MARKET, OTHER}
    finally:
        app.engine.dispose()
