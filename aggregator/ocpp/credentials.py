"""Stations allowed to connect, and their passwords (security profile 2), hashed.

Passwords are stored as salted scrypt hashes; `v2x stations add` prints a new
station's password once. OCPP asks for 16-40 characters (passwords are
generated as 32 URL-safe characters)."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlmodel import Session, select

from aggregator.store.models import StationCredential

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(bytes.fromhex(digest)))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def new_password() -> str:
    return secrets.token_urlsafe(24)   # 32 characters


@dataclass(frozen=True)
class StationEntry:
    station_id: str
    password_hash: str | None = None
    site: int = 0
    max_charge_kw: float = 22.0
    max_discharge_kw: float = 0.0


class StationDirectory:
    """The stations the CSMS accepts (an unknown id is refused at the handshake).
    In memory; `from_database` / `add_to_database` read and write the credential table."""

    def __init__(self, entries: list[StationEntry] | None = None):
        self.entries: dict[str, StationEntry] = {e.station_id: e for e in entries or []}
        self._verified: dict[str, str] = {}   # station -> password hash it last verified against (cache)

    def get(self, station_id: str) -> StationEntry | None:
        return self.entries.get(station_id)

    def add(self, entry: StationEntry) -> None:
        self.entries[entry.station_id] = entry
        self._verified.pop(entry.station_id, None)

    def check_password(self, station_id: str, password: str) -> bool:
        entry = self.entries.get(station_id)
        if entry is None or entry.password_hash is None:
            return False
        key = hashlib.sha256(f"{entry.password_hash}\0{password}".encode()).hexdigest()
        if self._verified.get(station_id) == key:   # a reconnect storm must not cost one scrypt each
            return True
        if verify_password(password, entry.password_hash):
            self._verified[station_id] = key
            return True
        return False

    @classmethod
    def from_database(cls, engine) -> "StationDirectory":
        with Session(engine) as db:
            rows = db.exec(select(StationCredential)).all()
        return cls([StationEntry(r.station_id, r.password_hash, r.site, r.max_charge_kw, r.max_discharge_kw)
                    for r in rows])


def add_station(engine, station_id: str, *, site: int = 0, max_charge_kw: float = 22.0,
                max_discharge_kw: float = 0.0, password: str | None = None) -> str:
    """Register (or re-key) a station; returns its new password (shown once, stored hashed)."""
    password = password or new_password()
    with Session(engine) as db:
        row = db.get(StationCredential, station_id) or StationCredential(station_id=station_id)
        row.password_hash = hash_password(password)
        row.site, row.max_charge_kw, row.max_discharge_kw = site, max_charge_kw, max_discharge_kw
        row.created_at = row.created_at or datetime.now(timezone.utc)
        db.add(row)
        db.commit()
    return password
