"""The HTTP plumbing of the API: the base view, error answers and the two middlewares
(errors as JSON `Problem`s; bearer-token authentication and role checks)."""
from __future__ import annotations

import json
import logging
import math
from typing import ClassVar, Union

from aiohttp import web
from aiohttp_pydantic import PydanticView
from aiohttp_pydantic.oas.typing import r400, r401, r403, r404, r409, r503
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from aggregator.api.schemas import FieldError, Problem
from aggregator.api.tokens import Principal, TokenStore

log = logging.getLogger(__name__)

CORE = web.AppKey("v2x_core", object)          # the Aggregator
TOKENS = web.AppKey("v2x_tokens", TokenStore)
OPTIONS = web.AppKey("v2x_api_options", dict)
PRINCIPAL = web.RequestKey("v2x_principal", Principal) if hasattr(web, "RequestKey") else "v2x_principal"

# Error answers every authenticated operation may give (documented in the OpenAPI document).
Denied = Union[r400[Problem], r401[Problem], r403[Problem], r404[Problem], r503[Problem]]
Conflict = r409[Problem]

_CONTEXT = {"body": "body", "headers": "header", "path": "path", "query string": "query"}


def problem(status: int, error: str, fields: list[FieldError] | None = None, headers=None) -> web.Response:
    body = Problem(error=error, fields=fields or []).model_dump(mode="json")
    return web.json_response(body, status=status, headers=headers)


def invalid(field: str, message: str) -> web.Response:
    return problem(400, f"invalid {field}: {message}", [FieldError(field=field, message=message)])


def ok(value, status: int = 200) -> web.Response:
    if isinstance(value, list):
        return web.json_response([v.model_dump(mode="json") for v in value], status=status)
    return web.json_response(value.model_dump(mode="json"), status=status)


def finite(value: float | None) -> float | None:
    """JSON has no NaN: unknown numbers are null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class ApiView(PydanticView):
    """Base of every API view. `roles` maps an HTTP method to the roles allowed to call it;
    a view without `roles` is public (health checks)."""
    roles: ClassVar[dict[str, frozenset[str]]] = {}

    @property
    def core(self):
        return self.request.app[CORE]

    @property
    def principal(self) -> Principal:
        return self.request[PRINCIPAL]

    async def on_validation_error(self, exception: ValidationError, context) -> web.StreamResponse:
        where = _CONTEXT.get(context, str(context))
        fields = []
        for error in exception.errors(include_url=False):
            loc = [str(part) for part in error.get("loc", ())]
            fields.append(FieldError(field=".".join([where, *loc]), message=error.get("msg", "invalid")))
        names = ", ".join(f.field for f in fields)
        return problem(400, f"invalid input: {names}", fields)


def allow(**methods: str) -> dict[str, frozenset[str]]:
    """allow(GET="operator utility", PUT="operator") -> the `roles` of a view."""
    return {method: frozenset(roles.split()) for method, roles in methods.items()}


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every error is a JSON `Problem`: aiohttp's own (404, 405, a malformed body) and ours;
    an unexpected exception is logged and answered 500 without details."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 400 and exc.content_type == "application/json":
            try:
                raw = json.loads(exc.text or "null")
            except ValueError:
                raw = None
            if isinstance(raw, dict) and raw.get("error") == "Malformed JSON":
                return problem(400, "invalid body: malformed JSON", [FieldError(field="body", message="malformed JSON")])
            return problem(400, "invalid body: must be a JSON object",
                           [FieldError(field="body", message="must be a JSON object")])
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem(exc.status, exc.reason.lower(), headers=headers)
    except UnicodeDecodeError:
        return problem(400, "invalid body: not UTF-8", [FieldError(field="body", message="not UTF-8 JSON")])
    except SQLAlchemyError as err:
        log.error("API %s %s: database error %s", request.method, request.path, err.__class__.__name__)
        return problem(503, "database unavailable")
    except Exception:
        log.exception("API %s %s failed", request.method, request.path)
        return problem(500, "internal error")


def authenticate_middleware(tokens: TokenStore):
    @web.middleware
    async def authenticate(request: web.Request, handler):
        """401 without a valid token; 403 for a role the operation does not allow, or a driver
        naming any vehicle but its own (the same answer whether that vehicle exists or not)."""
        view = getattr(request.match_info.route, "handler", None)
        allowed = (getattr(view, "roles", None) or {}).get(request.method)
        if allowed is None:
            return await handler(request)          # public, or a method the view does not have (405)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="v2x"'}
        if scheme.lower() != "bearer" or not token.strip():
            return problem(401, "a bearer token is required", headers=challenge)
        try:
            principal = tokens.principal(token.strip())
        except SQLAlchemyError:
            return problem(503, "database unavailable")
        if principal is None:
            return problem(401, "unknown or revoked token", headers=challenge)
        if principal.role not in allowed:
            return problem(403, "forbidden")
        vehicle = request.match_info.get("vehicle_id")
        if principal.role == "driver" and vehicle is not None and vehicle != principal.vehicle_id:
            return problem(403, "forbidden")
        request[PRINCIPAL] = principal
        return await handler(request)
    return authenticate


def strict_query_middleware(spec_key):
    @web.middleware
    async def strict_query(request: web.Request, handler):
        """A query parameter the operation does not have is an error naming it, not ignored."""
        resource = getattr(request.match_info.route, "resource", None)
        operation = request.app[spec_key].get("paths", {}).get(getattr(resource, "canonical", None), {}).get(
            request.method.lower())
        if operation is not None and request.query:
            known = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
            unknown = sorted(set(request.query) - known)
            if unknown:
                return problem(400, "invalid input: unknown query parameter " + ", ".join(unknown),
                               [FieldError(field=f"query.{name}", message="unknown parameter") for name in unknown])
        return await handler(request)
    return strict_query


__all__ = ["ApiView", "BaseModel", "CORE", "Conflict", "Denied", "OPTIONS", "TOKENS", "allow",
           "authenticate_middleware", "strict_query_middleware", "finite", "invalid", "json_errors", "ok", "problem"]
