"""/healthz (the process answers) and /readyz (database reachable, schema current, VEN
registered when the service runs one), without authentication, for probes."""
from __future__ import annotations

from typing import Union

from aiohttp_pydantic.oas.typing import r200, r503
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from aggregator.api import schemas as s
from aggregator.api.http import OPTIONS, ApiView, ok
from aggregator.store.migrate import current_revision, head_revision


class HealthView(ApiView):
    async def get(self) -> r200[s.Health]:
        """Liveness: the process is up and its event loop answers.

        Tags: health
        """
        return ok(s.Health(status="ok"))


def readiness(core, require_ven: bool) -> s.Readiness:
    expected = head_revision()
    problems: list[str] = []
    database, revision = False, None
    try:
        with core.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            database = True
            revision = current_revision(connection)
    except SQLAlchemyError as err:
        problems.append(f"database unreachable ({err.__class__.__name__})")
    if database and revision != expected:
        problems.append(f"schema at {revision}, expected {expected}: run `v2x migrate`")
    registered = None
    if require_ven:
        registered = core.ven.registration_id is not None
        if not registered:
            problems.append("the VEN is not registered at the VTN")
    return s.Readiness(ready=not problems, database=database, schema_revision=revision, schema_expected=expected,
                       ven_registered=registered, problems=problems)


class ReadyView(ApiView):
    async def get(self) -> Union[r200[s.Readiness], r503[s.Readiness]]:
        """Readiness: database reachable, schema at this code's head, VEN registered (when required).

        Tags: health
        """
        state = readiness(self.core, self.request.app[OPTIONS]["require_ven"])
        return ok(state, status=200 if state.ready else 503)
