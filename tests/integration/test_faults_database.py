"""The database unreachable for 30 s in the middle of an event, on real processes: a `v2x run
--simulated-fleet` subprocess reaches PostgreSQL only through a TCP proxy on 127.0.0.1 that the
test closes (every open connection cut, new ones refused, as when the database host goes down)
and opens again on the same port. The event goes on being delivered from the commitment in
memory, the meter readings and setpoints of the outage are queued and written once the database
is back: the ledger has every station's readings across the outage without a gap, the setpoints
issued during it, and each interval's delivery (settled from that ledger) as committed.

Catches: a ledger writer that drops rows on a failed write (gaps in the outage window, the
intervals settle short), a service that stops or stops dispatching when the database fails
(the process exits or the intervals are not delivered), setpoints not recorded."""
from __future__ import annotations

import asyncio
import signal
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from aggregator.event_summary import summarize_event
from aggregator.store.db import make_engine
from aggregator.store.models import SetpointRecord
from sim.vtn import UtilityVtn
from tests.conftest import free_port
from tests.integration.service_process import (event_answered, readings_by_source, start_service, stop_all, utc,
                                               wait_until)

pytestmark = pytest.mark.integration
INTERVAL = timedelta(seconds=25)
ASK_KW = 200.0
OUTAGE_FROM = timedelta(seconds=15)     # after the event's start
OUTAGE = timedelta(seconds=30)
SAMPLE_S = 5.0                          # the simulated stations' meter sample interval


class PausableProxy:
    """127.0.0.1:<port> -> PostgreSQL's unix socket. `pause()` closes the listener and cuts every
    open connection (new ones are refused); `resume()` listens on the same port again."""

    def __init__(self, unix_path: str):
        self.unix_path = unix_path
        self.port = free_port()
        self.server: asyncio.base_events.Server | None = None
        self.links: set = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def pause(self) -> None:
        self.server.close()
        for down, up in list(self.links):
            down.transport.abort()
            up.transport.abort()
        self.links.clear()

    async def resume(self) -> None:
        await self.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.pause()

    async def _client(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self.links.add(link)

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.links.discard(link)


def _through(database_url: str, port: int) -> tuple[str, str]:
    """The service's URL through the proxy, and PostgreSQL's unix socket path."""
    url = make_url(database_url)
    socket_dir = url.query.get("host", "/var/run/postgresql")
    proxied = url.set(host="127.0.0.1", port=port).difference_update_query(["host"])
    return proxied.render_as_string(hide_password=False), f"{socket_dir}/.s.PGSQL.{url.port or 5432}"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_database_unreachable_for_30_s_mid_event_loses_nothing(tmp_path, database_url):
    log_path = tmp_path / "service.log"

    async def scenario():
        vtn = UtilityVtn(port=free_port(), report_interval=timedelta(seconds=2))
        await vtn.start()
        proxy = PausableProxy("")
        service_url, proxy.unix_path = _through(database_url, proxy.port)
        await proxy.start()
        process = None
        try:
            process = start_service(service_url, vtn.url, log_path)
            event_id, start = await event_answered(vtn, [(INTERVAL, ASK_KW)] * 4, log_path)
            await wait_until(lambda: datetime.now(timezone.utc) > start + OUTAGE_FROM, 60, "the outage")
            down_at = datetime.now(timezone.utc)
            await proxy.pause()
            await asyncio.sleep(OUTAGE.total_seconds())
            assert process.poll() is None, "the service died while the database was down"
            await proxy.resume()
            up_at = datetime.now(timezone.utc)
            end = start + INTERVAL * 4
            await wait_until(lambda: datetime.now(timezone.utc) > end + timedelta(seconds=4), 120, "the event end")
            process.send_signal(signal.SIGTERM)   # the proxy runs in this loop: wait without blocking it
            await wait_until(lambda: process.poll() is not None, 40, "the service to stop", log_path)
            code = process.returncode
            return code, event_id, start, down_at, up_at, vtn.record
        finally:
            stop_all(process)
            await proxy.stop()
            await vtn.stop()

    code, event_id, start, down_at, up_at, record = asyncio.run(scenario())
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert "ledger write failed" in log, log[-3000:]             # the outage was real ...
    assert "ledger written" in log, log[-3000:]                   # ... and the stop wrote everything
    assert [opt for _, e, opt in record.opt_responses if e == event_id] == ["optIn"], log[-3000:]
    engine = make_engine(database_url)
    try:
        by_source = readings_by_source(engine)
        with Session(engine) as db:
            setpoints = db.exec(select(SetpointRecord).where(SetpointRecord.event_id == event_id)).all()
        summary = summarize_event(engine, event_id)
    finally:
        engine.dispose()
    end = start + INTERVAL * 4
    assert len(by_source) == 50
    for source, rows in by_source.items():
        stamps = [utc(r.ts) for r in rows if start - timedelta(seconds=SAMPLE_S) <= utc(r.ts) <= end]
        # every station's readings through the outage, written after it: none lost, no gap
        assert sum(1 for t in stamps if down_at <= t <= up_at) >= OUTAGE.total_seconds() / SAMPLE_S - 1, source
        gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
        assert max(gaps) <= SAMPLE_S + 2.5, (source, max(gaps))
        for before, after in zip(rows, rows[1:]):       # registers only grow: nothing replayed out of order
            assert after.energy_export_kwh >= before.energy_export_kwh - 1e-9, source
    # the re-plan at the boundary inside the outage was commanded and is in the ledger
    during = [s for s in setpoints if down_at <= utc(s.issued_at) <= up_at]
    assert len({s.vehicle_id for s in during}) >= 40, len(during)
    # the event was delivered throughout, settled from that ledger
    ratios = [i.delivered_export_kw / i.committed_export_kw for i in summary.intervals]
    assert len(ratios) == 4
    assert all(0.95 <= r <= 1.03 for r in ratios), (ratios, log[-3000:])
    assert any(utc(ts) > up_at for _, ts, _ in record.reports)   # the VTN hears from us after it
