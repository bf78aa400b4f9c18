"""Sites: their records (name, time zone, grid limits; aggregator/sites) with what is live there.

A site number that stations or vehicles carry but that has no record is listed too
(`configured: false`, no limits). Writes go to the database in one transaction after the whole
input is checked, then the dispatcher re-reads the limits and re-plans at its next step."""
from __future__ import annotations

from typing import Union

from aiohttp import web
from aiohttp_pydantic.oas.typing import r200, r201, r204
from sqlmodel import Session, select

from aggregator.api import schemas as s
from aggregator.api.http import ApiView, Conflict, Denied, allow, finite, invalid, ok, problem
from aggregator.api.schemas import FieldError
from aggregator.sites import SiteRecord, get_site, list_sites
from aggregator.store.db import as_utc
from aggregator.store.models import StationCredential

SHOWN = 20    # names listed in a 409 before "and N more"


def _nothing_live() -> dict:
    return dict(stations=0, stations_online=0, vehicles=0, plugged_in=0, power_kw=0.0)


def _live(registry) -> dict[int, dict]:
    """Per site number: stations, vehicles, plugged in, power now (from the fleet-state registry)."""
    out: dict[int, dict] = {}

    def site(number: int) -> dict:
        return out.setdefault(number, _nothing_live())
    for live in registry.stations.values():
        entry = site(live.station.site)
        entry["stations"] += 1
        entry["stations_online"] += int(bool(live.online))
        entry["plugged_in"] += int(live.session is not None)
        if live.last is not None and live.online:
            entry["power_kw"] += finite(live.last.power_kw) or 0.0
    for spec in registry.vehicles.values():
        site(spec.site)["vehicles"] += 1
    return out


def _site(number: int, record: SiteRecord | None, live: dict | None) -> s.Site:
    live = live or _nothing_live()
    if record is None:
        return s.Site(site=number, configured=False, name=None, timezone=None, import_limit_kw=None,
                      export_limit_kw=None, notes="", updated_at=None, **live)
    return s.Site(site=number, configured=True, name=record.name, timezone=record.timezone,
                  import_limit_kw=finite(record.import_limit_kw), export_limit_kw=finite(record.export_limit_kw),
                  notes=record.notes, updated_at=as_utc(record.updated_at), **live)


def site_summaries(core) -> list[s.Site]:
    """Every site: the records and the numbers in use, in number order."""
    records = {row.id: row for row in list_sites(core.engine)}
    live = _live(core.registry)
    return [_site(n, records.get(n), live.get(n)) for n in sorted(set(records) | set(live))]


def _detail(core, number: int, record: SiteRecord | None, operator: bool) -> s.SiteDetail:
    registry = core.registry
    summary = _site(number, record, _live(registry).get(number))
    stations = sorted(sid for sid, live in registry.stations.items() if live.station.site == number)
    plugged = sorted(live.session.vehicle_id for live in registry.stations.values()
                     if live.station.site == number and live.session is not None)
    power = summary.power_kw
    return s.SiteDetail(
        **summary.model_dump(),
        import_headroom_kw=None if summary.import_limit_kw is None else summary.import_limit_kw - power,
        export_headroom_kw=None if summary.export_limit_kw is None else summary.export_limit_kw + power,
        station_ids=stations, plugged_vehicle_ids=plugged if operator else None)


def _replan(core) -> None:
    """The sites' limits changed: the dispatcher reads them again and re-plans at its next step."""
    core.sites.changed()
    core.registry.version += 1     # what the plan depends on changed (the dispatcher's re-plan trigger)


def _users(core, number: int) -> list[str]:
    """What still refers to site `number`: stations (live, or registered for OCPP) and vehicles."""
    registry = core.registry
    stations = {sid for sid, live in registry.stations.items() if live.station.site == number}
    with Session(core.engine) as db:
        stations |= set(db.exec(select(StationCredential.station_id).where(StationCredential.site == number)).all())
    vehicles = sorted(v.id for v in registry.vehicles.values() if v.site == number)
    out = []
    for kind, names in (("stations", sorted(stations)), ("vehicles", vehicles)):
        if names:
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            out.append(f"{kind} {', '.join(names[:SHOWN])}{more}")
    return out


class SitesView(ApiView):
    roles = allow(GET="operator utility", POST="operator")

    async def get(self) -> Union[r200[list[s.Site]], Denied]:
        """Sites: their records (name, time zone, grid limits) and the site numbers stations or
        vehicles carry, with stations, vehicles and power now.

        Tags: sites
        Security: bearerAuth
        """
        return ok(site_summaries(self.core))

    async def post(self, body: s.SiteIn) -> Union[r201[s.SiteDetail], Denied, Conflict]:
        """Add a site record (operators). Its limits bind the plans from the next step on.
        409 when the site number has a record already (PATCH it).

        Tags: sites
        Security: bearerAuth
        """
        core = self.core
        record = SiteRecord(id=body.id, name=body.name, timezone=body.timezone or core.settings.program.timezone,
                            import_limit_kw=body.import_limit_kw, export_limit_kw=body.export_limit_kw,
                            notes=body.notes, updated_at=core.clock())
        with Session(core.engine, expire_on_commit=False) as db:
            if db.get(SiteRecord, body.id) is not None:
                return problem(409, f"site {body.id} exists (PATCH /api/v1/sites/{body.id} changes it)",
                               [FieldError(field="body.id", message="exists")])
            db.add(record)
            db.commit()
        _replan(core)
        return ok(_detail(core, body.id, record, True), status=201)


class SiteView(ApiView):
    roles = allow(GET="operator utility", PATCH="operator", DELETE="operator")

    async def get(self, site: s.SiteNumber, /) -> Union[r200[s.SiteDetail], Denied]:
        """One site: its record, limits and headroom now, its stations and the vehicles plugged in.

        Tags: sites
        Security: bearerAuth
        """
        record = get_site(self.core.engine, site)
        if record is None and site not in _live(self.core.registry):
            return problem(404, "no such site")
        return ok(_detail(self.core, site, record, self.principal.role == "operator"))

    async def patch(self, site: s.SiteNumber, /, body: s.SitePatch) -> Union[r200[s.SiteDetail], Denied]:
        """Change a site record (operators): the fields given; a limit given as null is removed.
        The next plan keeps the site within its new limits.

        Tags: sites
        Security: bearerAuth
        """
        fields = body.model_fields_set
        if not fields:
            return invalid("body", "nothing to change")
        core = self.core
        with Session(core.engine, expire_on_commit=False) as db:
            record = db.get(SiteRecord, site)
            if record is None:
                return problem(404, "no such site (POST /api/v1/sites adds it)")
            for name in fields:
                setattr(record, name, getattr(body, name))
            record.updated_at = core.clock()
            db.add(record)
            db.commit()
        _replan(core)
        return ok(_detail(core, site, record, True))

    async def delete(self, site: s.SiteNumber, /) -> Union[r204, Denied, Conflict]:
        """Delete a site record (operators). 409, naming them, while stations or vehicles are at the site.

        Tags: sites
        Security: bearerAuth
        """
        core = self.core
        with Session(core.engine) as db:
            record = db.get(SiteRecord, site)
            if record is None:
                return problem(404, "no such site")
            users = _users(core, site)
            if users:
                message = f"site {site} is in use by " + "; ".join(users) + " (move them to another site first)"
                return problem(409, message, [FieldError(field="path.site", message=message)])
            db.delete(record)
            db.commit()
        _replan(core)
        return web.Response(status=204)
