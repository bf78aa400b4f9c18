"""API bearer tokens: issued once (`v2x tokens create`), stored as a SHA-256 hash.

A token is 256 random bits, so a plain SHA-256 is enough to keep the stored value
useless to a reader of the database (no salt or slow hash is needed for random
secrets, unlike passwords), and it lets a request be matched by one indexed lookup."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from aggregator.store.models import ApiToken, Vehicle

ROLES = ("driver", "operator", "utility")
PREFIX = "v2x_"


@dataclass(frozen=True)
class Principal:
    """Who a request is from."""
    token_id: int
    role: str
    vehicle_id: str | None = None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine, role: str, vehicle_id: str | None = None, label: str = "",
                 now: datetime | None = None) -> tuple[str, int]:
    """A new token (returned once, never stored) and its row id. A driver token names a vehicle
    of the catalogue; other roles name none."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if role == "driver" and not vehicle_id:
        raise ValueError("a driver token needs --vehicle")
    if role != "driver" and vehicle_id:
        raise ValueError(f"a {role} token is not bound to a vehicle (drop --vehicle)")
    token = PREFIX + secrets.token_urlsafe(32)
    with Session(engine) as db:
        if vehicle_id is not None and db.get(Vehicle, vehicle_id) is None:
            raise ValueError(f"no vehicle {vehicle_id!r} in the catalogue")
        row = ApiToken(token_hash=token_hash(token), role=role, vehicle_id=vehicle_id, label=label,
                       created_at=now or datetime.now(timezone.utc))
        db.add(row)
        db.commit()
        db.refresh(row)
        return token, row.id


def revoke_token(engine, token_id: int, now: datetime | None = None) -> bool:
    with Session(engine) as db:
        row = db.get(ApiToken, token_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = now or datetime.now(timezone.utc)
        db.add(row)
        db.commit()
        return True


def list_tokens(engine) -> list[ApiToken]:
    with Session(engine) as db:
        return list(db.exec(select(ApiToken).order_by(ApiToken.id)).all())


class TokenStore:
    """Resolves a presented token to its principal (a database lookup by hash)."""

    def __init__(self, engine):
        self.engine = engine

    def principal(self, token: str) -> Principal | None:
        """None for an unknown or revoked token. Raises SQLAlchemyError when the database is down."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        digest = token_hash(token)
        with Session(self.engine) as db:
            row = db.exec(select(ApiToken).where(ApiToken.token_hash == digest)).first()
        if row is None or row.revoked_at is not None:
            return None
        return Principal(row.id, row.role, row.vehicle_id)


__all__ = ["PREFIX", "ROLES", "Principal", "SQLAlchemyError", "TokenStore", "create_token", "list_tokens",
           "revoke_token", "token_hash"]
