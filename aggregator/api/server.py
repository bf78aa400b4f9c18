"""The HTTP API and web console as one aiohttp application, served by the aggregator's own
process (`Aggregator.serve_api`, `v2x run`).

    /api/v1/...            the API (bearer tokens; see aggregator/api/fleet.py, sites.py, programme.py)
    /api/openapi.json      its OpenAPI 3.1 document, generated from the views' pydantic models
    /healthz, /readyz      probes, no token
    /console/driver.html   the driver's page, /console/operator.html the operator's
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp_pydantic.oas import pydantic_schema_to_oas
from aiohttp_pydantic.oas.view import generate_oas

from aggregator.api import fleet, health, programme, sites
from aggregator.api.http import (CORE, OPTIONS, TOKENS, authenticate_middleware, json_errors,
                                 strict_query_middleware)
from aggregator.api.tokens import TokenStore

CONSOLE = Path(__file__).with_name("console")
PREFIX = "/api/v1"
OPENAPI_PATH = "/api/openapi.json"
SPEC = web.AppKey("v2x_openapi", dict)

# Pydantic emits JSON Schema 2020-12, which is what OpenAPI 3.1 uses: keep it as it is
# (the library's translation is for 3.0's dialect) and serve the document as 3.1.
pydantic_schema_to_oas.add_or_replace_translater("3.0.0", pydantic_schema_to_oas.pydantic_schema_to_oas_3_1)

ROUTES = [
    ("/healthz", health.HealthView),
    ("/readyz", health.ReadyView),
    (f"{PREFIX}/me", fleet.MeView),
    (f"{PREFIX}/fleet", fleet.FleetView),
    (f"{PREFIX}/alerts", fleet.AlertsView),
    (f"{PREFIX}/vehicles", fleet.VehiclesView),
    (f"{PREFIX}/vehicles/{{vehicle_id}}", fleet.VehicleView),
    (f"{PREFIX}/vehicles/{{vehicle_id}}/session", fleet.VehicleSessionView),
    (f"{PREFIX}/vehicles/{{vehicle_id}}/sessions", fleet.VehicleSessionsView),
    (f"{PREFIX}/sessions", fleet.SessionsView),
    (f"{PREFIX}/stations", fleet.StationsView),
    (f"{PREFIX}/stations/{{station_id}}", fleet.StationView),
    (f"{PREFIX}/sites", sites.SitesView),
    (f"{PREFIX}/sites/{{site}}", sites.SiteView),
    (f"{PREFIX}/programmes", programme.ProgrammesView),
    (f"{PREFIX}/programmes/enrollment", programme.EnrollmentView),
    (f"{PREFIX}/events", programme.EventsView),
    (f"{PREFIX}/events/{{event_id}}", programme.EventView),
    (f"{PREFIX}/settlements", programme.SettlementsView),
    (f"{PREFIX}/settlements/{{run_id}}", programme.SettlementView),
    (f"{PREFIX}/bids", programme.BidsView),
]


def openapi_document(app: web.Application) -> dict:
    spec = generate_oas([app], version_spec="1", title_spec="v2x aggregator API")
    spec["openapi"] = "3.1.0"
    spec["info"]["description"] = (
        "Drivers, operators and the utility's programme staff. Bearer tokens from `v2x tokens create`: "
        "a driver token sees and changes only its own vehicle, an operator token the fleet, a utility "
        "token reads events, performance and settlement. kW, kWh, UTC; positive power = the vehicle imports.")
    spec.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http", "scheme": "bearer", "description": "a token from `v2x tokens create`"}
    texts = {"200": "OK", "201": "created", "204": "deleted", "400": "invalid input (the fields are named)", "401": "no or unknown token",
             "403": "forbidden (role, or another driver's vehicle)", "404": "not found",
             "409": "conflict (the vehicle is not plugged in, the site exists or is in use, the programme is the primary one)", "503": "unavailable (database, or not ready)"}
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):   # an omitted query parameter is the null
                schema = parameter.get("schema", {})
                branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
                if parameter.get("in") == "query" and len(branches) == 1:
                    schema.pop("anyOf")
                    schema.update(branches[0])
            for code, response in operation.get("responses", {}).items():
                if response.get("description") in (None, "", code):
                    response["description"] = texts.get(code, code)
    return spec


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[SPEC])


async def _console_index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console/operator.html")


def build_api(core, *, require_ven: bool = False) -> web.Application:
    """The application for `core` (an `aggregator.app.Aggregator`)."""
    tokens = TokenStore(core.engine)
    app = web.Application(middlewares=[json_errors, authenticate_middleware(tokens), strict_query_middleware(SPEC)],
                          client_max_size=64 * 1024)
    app[CORE] = core
    app[TOKENS] = tokens
    app[OPTIONS] = {"require_ven": require_ven}
    for path, view in ROUTES:
        app.router.add_view(path, view)
    app.router.add_get(OPENAPI_PATH, _openapi)
    app.router.add_get("/console/", _console_index)
    app.router.add_get("/", _console_index)
    app.router.add_static("/console/", CONSOLE, show_index=False)
    app[SPEC] = openapi_document(app)
    return app


class ApiServer:
    """The API on host:port inside the running event loop."""

    def __init__(self, core, host: str = "127.0.0.1", port: int = 8088, *, require_ven: bool = False):
        self.app = build_api(core, require_ven=require_ven)
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
