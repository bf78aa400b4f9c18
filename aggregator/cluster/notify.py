"""PostgreSQL LISTEN/NOTIFY for the cluster: channel names and a listener that reconnects.

NOTIFY reaches only sessions listening at that moment and carries no history, so
every message here is only a wake-up: the rows it points at are in a table, and
a listener that (re)connects calls `on_connect` to read what it missed.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger(__name__)


def channel(kind: str, name: str) -> str:
    """A valid unquoted identifier (< 64 bytes) for any instance or partition name."""
    return f"v2x_{kind}_{hashlib.sha1(name.encode()).hexdigest()[:20]}"


def notify(session, channel_name: str, payload: str = "") -> None:
    """Queue a NOTIFY in the session's transaction (delivered when it commits)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(channel_name, payload)))


def libpq_url(engine: Engine) -> str:
    """The engine's URL as psycopg's own connect() takes it."""
    return make_url(engine.url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """LISTEN on some channels on a dedicated connection; calls `on_notify(channel, payload)`
    for each notification and `on_connect()` after every (re)connection."""

    def __init__(self, engine: Engine, channels: list[str], on_notify: Callable[[str, str], None],
                 on_connect: Callable[[], None] = lambda: None, retry_s: float = 1.0):
        self.url = libpq_url(engine) if engine.dialect.name == "postgresql" else None
        self.channels = channels
        self.on_notify = on_notify
        self.on_connect = on_connect
        self.retry_s = retry_s
        self.connected = asyncio.Event()

    async def run(self) -> None:
        if self.url is None:        # SQLite: one machine, no notifications; the pollers do the work
            self.connected.set()
            self.on_connect()
            await asyncio.Event().wait()
        import psycopg
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    for name in self.channels:
                        await conn.execute(f"LISTEN {name}")
                    self.connected.set()
                    self.on_connect()
                    async for note in conn.notifies():
                        self.on_notify(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as err:   # the database went away: listen again, then read what was missed
                self.connected.clear()
                log.warning("LISTEN connection lost (%s); reconnecting", err.__class__.__name__)
                await asyncio.sleep(self.retry_s)
