"""The API's contract: tokens and roles (no leak through ids), input errors naming the field with
nothing written, drivers' changes reaching the plan, operators managing the catalogue, probes."""
from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from sqlmodel import Session, select

from aggregator.api.tokens import create_token, revoke_token, token_hash
from aggregator.store.models import ApiToken
from tests.api.live import LiveAggregator

pytestmark = pytest.mark.integration


def auth(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(scope="module")
def ids(live):
    plugged = sorted(live.app.registry.plugged_vehicle_ids())
    return {"own": plugged[0], "other": plugged[1]}


def test_tokens_are_stored_hashed_and_can_be_revoked(live, ids):
    token, token_id = create_token(live.app.engine, "driver", ids["own"])
    with Session(live.app.engine) as db:
        row = db.get(ApiToken, token_id)
        assert row.token_hash == token_hash(token) and token not in row.token_hash
    assert requests.get(f"{live.url}/api/v1/me", headers=auth(token)).json() == {"role": "driver",
                                                                                 "vehicle_id": ids["own"]}
    assert revoke_token(live.app.engine, token_id)
    assert requests.get(f"{live.url}/api/v1/me", headers=auth(token)).status_code == 401
    with pytest.raises(ValueError, match="--vehicle"):
        create_token(live.app.engine, "driver")
    with pytest.raises(ValueError, match="no vehicle"):
        create_token(live.app.engine, "driver", "no-such-vehicle")


@pytest.mark.parametrize("path", ["/api/v1/vehicles", "/api/v1/events", "/api/v1/fleet", "/api/v1/me"])
def test_no_token_no_data(live, path):
    for headers in ({}, {"Authorization": "Bearer v2x_wrong"}, {"Authorization": "Basic abc"}):
        answer = requests.get(live.url + path, headers=headers)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.json()["error"]


def test_roles(live, ids):
    driver, operator, utility = live.token("driver", ids["own"]), live.token("operator"), live.token("utility")
    expect = {
        ("/api/v1/fleet", driver): 403, ("/api/v1/fleet", utility): 403, ("/api/v1/fleet", operator): 200,
        ("/api/v1/events", driver): 403, ("/api/v1/events", utility): 200, ("/api/v1/events", operator): 200,
        ("/api/v1/settlements", utility): 200, ("/api/v1/bids", utility): 403, ("/api/v1/bids", operator): 200,
        ("/api/v1/vehicles", utility): 403, ("/api/v1/stations", driver): 403, ("/api/v1/sites", operator): 200,
        (f"/api/v1/vehicles/{ids['own']}", driver): 200, (f"/api/v1/vehicles/{ids['other']}", operator): 200,
    }
    for (path, token), status in expect.items():
        assert requests.get(live.url + path, headers=auth(token)).status_code == status, path
    listed = requests.get(f"{live.url}/api/v1/vehicles", headers=auth(driver)).json()
    assert [v["id"] for v in listed] == [ids["own"]]


def test_a_driver_cannot_tell_other_vehicles_from_missing_ones(live, ids):
    driver = live.token("driver", ids["own"])
    answers = [requests.request(method, f"{live.url}/api/v1/vehicles/{vehicle}{suffix}", headers=auth(driver),
                                json=body)
               for vehicle in (ids["other"], "no-such-vehicle")
               for method, suffix, body in (("GET", "", None), ("GET", "/sessions", None),
                                            ("PATCH", "/session", {"boost": True}))]
    assert {(a.status_code, a.text) for a in answers} == {(403, '{"error": "forbidden", "fields": []}')}
    operator = live.token("operator")
    assert requests.get(f"{live.url}/api/v1/vehicles/no-such-vehicle", headers=auth(operator)).status_code == 404


def test_invalid_input_names_the_field_and_writes_nothing(live, ids):
    vehicle = ids["other"]
    operator = live.token("operator")
    url = f"{live.url}/api/v1/vehicles/{vehicle}/session"
    before = requests.get(f"{live.url}/api/v1/vehicles/{vehicle}", headers=auth(operator)).json()
    future = (live.now + timedelta(hours=2)).isoformat()
    cases = [
        ({"departs_at": (live.now - timedelta(minutes=1)).isoformat()}, "body.departs_at"),
        ({"departs_at": "2026-07-16T08:00:00"}, "body.departs_at"),                  # no offset
        ({"departs_at": future, "target_soc_pct": 120}, "body.target_soc_pct"),        # departure valid, SoC not
        ({"departs_at": future, "need_kwh": 10_000}, "body.need_kwh"),
        ({"departs_at": future, "need_kwh": before["capacity_kwh"] + 1}, "body.need_kwh"),
        ({"target_soc_pct": 50, "need_kwh": 10}, "body.need_kwh"),
        ({"departs_at": future, "colour": "red"}, "body.colour"),
        ({"boost": "very"}, "body.boost"),
        ({}, "body"),
    ]
    for body, field in cases:
        answer = requests.patch(url, headers=auth(operator), json=body)
        assert answer.status_code == 400, body
        assert field in [f["field"] for f in answer.json()["fields"]], answer.json()
    answer = requests.get(f"{live.url}/api/v1/vehicles?limit=0&colour=red", headers=auth(operator))
    assert answer.status_code == 400 and {f["field"] for f in answer.json()["fields"]} == {"query.colour"}
    answer = requests.put(f"{live.url}/api/v1/vehicles/{vehicle}", headers=auth(operator),
                          json={**{k: before[k] for k in ("kind", "capacity_kwh", "max_charge_kw", "max_discharge_kw",
                                                           "eta_charge", "eta_discharge", "site")},
                                "floor_kwh": before["capacity_kwh"] + 1})
    assert answer.status_code == 400 and answer.json()["fields"][0]["field"] == "body.floor_kwh"
    after = requests.get(f"{live.url}/api/v1/vehicles/{vehicle}", headers=auth(operator)).json()
    assert after == before


def test_a_driver_change_reaches_the_next_plan(live, ids):
    vehicle = ids["own"]
    driver = live.token("driver", vehicle)
    departs = (live.now + timedelta(hours=3)).replace(microsecond=0)
    answer = requests.patch(f"{live.url}/api/v1/vehicles/{vehicle}/session", headers=auth(driver),
                            json={"departs_at": departs.isoformat(), "target_soc_pct": 80, "opt_out": True})
    assert answer.status_code == 200, answer.text
    session = answer.json()["session"]
    assert session["departs_at"] == departs.isoformat().replace("+00:00", "Z")
    assert session["target_soc_pct"] == pytest.approx(80) and session["no_export"] == "opt-out"
    report = live.step()
    assert report.planned
    [member] = [m for m in live.app.registry.snapshot(live.now) if m.spec.id == vehicle]
    assert member.session.departs_at == departs and member.spec.max_discharge_kw == 0
    assert member.session.need_kwh == pytest.approx(0.8 * member.spec.capacity_kwh)


def test_a_vehicle_not_plugged_in_is_a_conflict(live):
    operator = live.token("operator")
    body = {"kind": "car", "capacity_kwh": 60, "floor_kwh": 10, "max_charge_kw": 11, "max_discharge_kw": 11,
            "eta_charge": 0.92, "eta_discharge": 0.92, "site": 7}
    answer = requests.put(f"{live.url}/api/v1/vehicles/new-car", headers=auth(operator), json=body)
    assert answer.status_code == 200 and answer.json()["session"] is None
    assert requests.patch(f"{live.url}/api/v1/vehicles/new-car/session", headers=auth(operator),
                          json={"boost": True}).status_code == 409
    assert requests.put(f"{live.url}/api/v1/stations/cp-new", headers=auth(operator),
                        json={"site": 7, "max_charge_kw": 11, "max_discharge_kw": 11}).json()["site"] == 7
    sites = requests.get(f"{live.url}/api/v1/sites/7", headers=auth(operator)).json()
    assert (sites["vehicles"], sites["stations"]) == (1, 1)


def test_events_carry_settlements_performance(live):
    utility = live.token("utility")
    [event] = requests.get(f"{live.url}/api/v1/events", headers=auth(utility)).json()
    assert event["opt_state"] == "optIn" and len(event["intervals"]) == 2
    performance = event["performance"]
    assert performance["source"] == "settlement" and performance["ratio"] == pytest.approx(1.0, abs=0.1)
    [run] = requests.get(f"{live.url}/api/v1/settlements?event_id={event['event_id']}", headers=auth(utility)).json()
    detail = requests.get(f"{live.url}/api/v1/settlements/{run['id']}", headers=auth(utility)).json()
    assert [i["committed_kw"] for i in detail["intervals"]] == [100.0, 200.0]


def test_probes_need_no_token(live):
    assert requests.get(f"{live.url}/healthz").json() == {"status": "ok"}
    ready = requests.get(f"{live.url}/readyz").json()
    assert ready["ready"] and ready["schema_revision"] == ready["schema_expected"]
    spec = requests.get(f"{live.url}/api/openapi.json").json()
    assert spec["openapi"].startswith("3.1") and "bearerAuth" in spec["components"]["securitySchemes"]


def test_readyz_requires_the_ven_when_asked(live):
    from aggregator.api.server import build_api
    from aggregator.api.health import readiness
    assert build_api(live.app, require_ven=True) is not None
    state = readiness(live.app, require_ven=True)
    assert not state.ready and state.ven_registered is False and "VEN" in state.problems[0]


def test_postgres_store(database_url):
    """Tokens and the API's reads on both databases."""
    running = LiveAggregator(database_url).start()
    try:
        operator = running.token("operator")
        assert requests.get(f"{running.url}/readyz").status_code == 200
        assert requests.get(f"{running.url}/api/v1/sessions?open=true", headers=auth(operator)).status_code == 200
        with Session(running.app.engine) as db:
            assert len(db.exec(select(ApiToken)).all()) == 1
    finally:
        running.stop()
