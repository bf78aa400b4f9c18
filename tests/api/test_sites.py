"""Sites through the API: roles, validation naming the field with nothing written, 409 on deleting
a site in use, the configuration seeding sites, and an operator's new export limit binding the
next plan during an event (end to end: API -> database -> dispatcher -> allocator -> commands)."""
from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from aggregator.app import Aggregator
from aggregator.config import Settings
from aggregator.sites import get_site, list_sites
from tests.aggregator.test_dispatcher import dispatch_event
from tests.api.live import LiveAggregator

pytestmark = pytest.mark.integration


def auth(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(scope="module")
def tokens(live):
    own = sorted(live.app.registry.plugged_vehicle_ids())[0]
    return {"anonymous": None, "driver": live.token("driver", own), "utility": live.token("utility"),
            "operator": live.token("operator")}


def test_roles(live, tokens):
    url = live.url + "/api/v1/sites"
    body = {"id": 900, "name": "Roles depot"}
    expect_read = {"anonymous": 401, "driver": 403, "utility": 200, "operator": 200}
    expect_write = {"anonymous": 401, "driver": 403, "utility": 403}
    for role, token in tokens.items():
        assert requests.get(url, headers=auth(token)).status_code == expect_read[role], role
        assert requests.get(f"{url}/0", headers=auth(token)).status_code == expect_read[role], role
        if role in expect_write:
            assert requests.post(url, headers=auth(token), json=body).status_code == expect_write[role], role
            assert requests.patch(f"{url}/0", headers=auth(token), json={"name": "x"}).status_code == expect_write[role]
            assert requests.delete(f"{url}/0", headers=auth(token)).status_code == expect_write[role], role
    assert get_site(live.app.engine, 900) is None          # nobody but an operator wrote anything
    operator = auth(tokens["operator"])
    created = requests.post(url, headers=operator, json=body)
    assert created.status_code == 201 and created.json()["configured"] and created.json()["name"] == "Roles depot"
    assert created.json()["timezone"] == live.app.settings.program.timezone     # the programme's by default
    assert requests.patch(f"{url}/900", headers=operator, json={"notes": "n"}).json()["notes"] == "n"
    assert requests.delete(f"{url}/900", headers=operator).status_code == 204
    assert requests.get(f"{url}/900", headers=operator).status_code == 404


def test_listing_and_detail_show_records_and_what_is_live(live, tokens):
    operator, utility = auth(tokens["operator"]), auth(tokens["utility"])
    answer = requests.post(live.url + "/api/v1/sites", headers=operator,
                           json={"id": 1, "name": "Homes feeder", "timezone": "America/Chicago",
                                 "import_limit_kw": 500, "export_limit_kw": 150.5, "notes": "feeder F-3"})
    assert answer.status_code == 201, answer.text
    listed = {s["site"]: s for s in requests.get(live.url + "/api/v1/sites", headers=utility).json()}
    assert listed[1]["configured"] and listed[1]["export_limit_kw"] == 150.5 and listed[1]["stations"] > 0
    assert not listed[0]["configured"] and listed[0]["name"] is None and listed[0]["stations"] > 0
    detail = requests.get(live.url + "/api/v1/sites/1", headers=operator).json()
    plugged = [live_.session.vehicle_id for live_ in live.app.registry.stations.values()
               if live_.station.site == 1 and live_.session is not None]
    assert sorted(plugged) == detail["plugged_vehicle_ids"] and detail["plugged_in"] == len(plugged)
    assert detail["import_headroom_kw"] == pytest.approx(500 - detail["power_kw"])
    assert detail["export_headroom_kw"] == pytest.approx(150.5 + detail["power_kw"])
    assert requests.get(live.url + "/api/v1/sites/1", headers=utility).json()["plugged_vehicle_ids"] is None
    fleet = requests.get(live.url + "/api/v1/fleet", headers=operator).json()
    assert [s["site"] for s in fleet["sites"]] == sorted(listed)
    assert requests.post(live.url + "/api/v1/sites", headers=operator,
                         json={"id": 1, "name": "again"}).status_code == 409
    assert requests.get(live.url + "/api/v1/sites/4242", headers=operator).status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"id": 77, "name": "x", "export_limit_kw": -1}, "body.export_limit_kw"),
    ({"id": 77, "name": "x", "import_limit_kw": -0.5}, "body.import_limit_kw"),
    ('{"id": 77, "name": "x", "import_limit_kw": NaN}', "body.import_limit_kw"),
    ('{"id": 77, "name": "x", "export_limit_kw": 1e999}', "body.export_limit_kw"),
    ({"id": 77, "name": "x", "export_limit_kw": "lots"}, "body.export_limit_kw"),
    ({"id": 77, "name": "x", "timezone": "Mars/Olympus"}, "body.timezone"),
    ({"id": 77, "name": ""}, "body.name"),
    ({"id": -1, "name": "x"}, "body.id"),
    ({"name": "x"}, "body.id"),
    ({"id": 77, "name": "x", "colour": "red"}, "body.colour"),
])
def test_invalid_sites_are_refused_naming_the_field(live, tokens, body, field):
    operator = auth(tokens["operator"])
    kwargs = {"data": body, "headers": {**operator, "Content-Type": "application/json"}} if isinstance(body, str) \
        else {"json": body, "headers": operator}
    answer = requests.post(live.url + "/api/v1/sites", **kwargs)
    assert answer.status_code == 400, answer.text
    assert field in [f["field"] for f in answer.json()["fields"]], answer.json()
    assert get_site(live.app.engine, 77) is None


def test_a_patch_with_one_bad_field_changes_nothing(live, tokens):
    operator = auth(tokens["operator"])
    requests.post(live.url + "/api/v1/sites", headers=operator, json={"id": 78, "name": "Kept", "export_limit_kw": 10})
    before = requests.get(live.url + "/api/v1/sites/78", headers=operator).json()
    for body, field in [({"name": "Changed", "export_limit_kw": -5}, "body.export_limit_kw"),
                        ({"name": None}, "body.name"), ({"timezone": "Nowhere"}, "body.timezone"),
                        ('{"import_limit_kw": Infinity}', "body.import_limit_kw"), ({}, "body")]:
        kwargs = {"data": body, "headers": {**operator, "Content-Type": "application/json"}} \
            if isinstance(body, str) else {"json": body, "headers": operator}
        answer = requests.patch(live.url + "/api/v1/sites/78", **kwargs)
        assert answer.status_code == 400 and field in [f["field"] for f in answer.json()["fields"]], answer.text
    assert requests.get(live.url + "/api/v1/sites/78", headers=operator).json() == before
    removed = requests.patch(live.url + "/api/v1/sites/78", headers=operator, json={"export_limit_kw": None}).json()
    assert removed["export_limit_kw"] is None and removed["name"] == "Kept"
    assert requests.patch(live.url + "/api/v1/sites/4243", headers=operator, json={"name": "x"}).status_code == 404


def test_deleting_a_site_in_use_is_a_conflict_naming_what_uses_it(live, tokens):
    operator = auth(tokens["operator"])
    requests.post(live.url + "/api/v1/sites", headers=operator, json={"id": 0, "name": "Depot"})
    answer = requests.delete(live.url + "/api/v1/sites/0", headers=operator)
    assert answer.status_code == 409
    stations = sorted(sid for sid, l in live.app.registry.stations.items() if l.station.site == 0)
    assert "stations " + stations[0] in answer.json()["error"] and "vehicles" in answer.json()["error"]
    assert get_site(live.app.engine, 0) is not None
    requests.put(live.url + "/api/v1/stations/cp-lonely", headers=operator, json={"site": 79})
    requests.post(live.url + "/api/v1/sites", headers=operator, json={"id": 79, "name": "One station"})
    answer = requests.delete(live.url + "/api/v1/sites/79", headers=operator)
    assert answer.status_code == 409 and "cp-lonely" in answer.json()["error"]
    requests.put(live.url + "/api/v1/stations/cp-lonely", headers=operator, json={"site": 80})
    assert requests.delete(live.url + "/api/v1/sites/79", headers=operator).status_code == 204
    assert requests.delete(live.url + "/api/v1/sites/79", headers=operator).status_code == 404


def test_an_export_limit_patched_during_an_event_binds_the_next_plan(tmp_path):
    running = LiveAggregator(f"sqlite:///{tmp_path / 'limit.db'}").start()
    try:
        operator = auth(running.token("operator"))
        registry = running.app.registry

        def commanded_export(site):     # what the last plan asked of the site's stations
            return -sum(l.intended_kw for l in registry.stations.values() if l.station.site == site and l.session)

        start = running.now + timedelta(seconds=10)
        assert running.offer(dispatch_event("evt-site", start, [300.0] * 6, interval=timedelta(minutes=1))) == "optIn"
        assert requests.post(running.url + "/api/v1/sites", headers=operator,
                             json={"id": 0, "name": "Depot", "export_limit_kw": 1000}).status_code == 201
        running.run_until(start + timedelta(seconds=30))
        assert commanded_export(0) > 60, commanded_export(0)        # the depot exports a lot for the event

        answer = requests.patch(running.url + "/api/v1/sites/0", headers=operator, json={"export_limit_kw": 40})
        assert answer.status_code == 200 and answer.json()["export_limit_kw"] == 40
        report = running.step()                                   # the next step re-plans with the limit
        assert report.planned and report.plan is not None
        depot = {l.session.vehicle_id for l in registry.stations.values() if l.station.site == 0 and l.session}
        at_depot = [i for i, vehicle in enumerate(report.plan.ids) if vehicle in depot]
        assert len(at_depot) == len(depot)
        assert (-report.plan.power_kw[at_depot].sum(axis=0) <= 40 + 1e-6).all()   # every interval planned
        assert commanded_export(0) <= 40 + 1e-6
        assert commanded_export(0) == pytest.approx(40, abs=1.0)    # and the limit is used: the event asks more
        assert commanded_export(1) > 0                              # the other site is not limited

        running.run_until(running.now + timedelta(seconds=20))      # the stations follow: metered export too
        metered = -sum(l.last.power_kw for l in running.app.registry.stations.values()
                       if l.station.site == 0 and l.last is not None and l.online)
        assert metered <= 40 + 2.0, metered
    finally:
        running.stop()


def test_configured_sites_seed_the_database_and_api_edits_survive_a_restart(tmp_path):
    url = f"sqlite:///{tmp_path / 'seed.db'}"
    config = {"database": {"url": url}, "metrics": {"port": 0},
              "sites": [{"id": 0, "name": "Depot", "export_limit_kw": 150.0, "import_limit_kw": 400.0},
                        {"id": 3, "name": "Workplace", "timezone": "Europe/Paris"}]}
    app = Aggregator(Settings.model_validate(config))
    try:
        rows = {r.id: r for r in list_sites(app.engine)}
        assert rows[0].export_limit_kw == 150.0 and rows[3].timezone == "Europe/Paris"
        assert rows[0].timezone == app.settings.program.timezone and rows[3].import_limit_kw is None
        assert app.sites.current(app.clock())[0] == (400.0, 150.0)
    finally:
        app.engine.dispose()
    running = LiveAggregator(url, {"sites": config["sites"]}).start()
    try:
        operator = auth(running.token("operator"))
        assert requests.patch(running.url + "/api/v1/sites/0", headers=operator,
                              json={"export_limit_kw": 75}).status_code == 200
        assert requests.delete(running.url + "/api/v1/sites/3", headers=operator).status_code == 204
    finally:
        running.stop()
    app = Aggregator(Settings.model_validate(config))    # the same configuration again
    try:
        rows = {r.id: r for r in list_sites(app.engine)}
        assert rows[0].export_limit_kw == 75              # the operator's edit wins over the seed
        assert 3 in rows                                  # a deleted site the config still lists comes back
    finally:
        app.engine.dispose()
