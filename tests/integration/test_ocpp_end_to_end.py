"""End to end over real processes on 127.0.0.1: `v2x stations add` prints a station's
credentials; `v2x run` (no --simulated-fleet, OCPP security profile 2: HTTP Basic over
TLS with a development certificate) accepts an OCPP 2.1 station that uses them, refuses
a wrong password, dispatches a VTN's event to the station as a discharge, and the
station's meter values reach the ledger."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import websockets
from sqlmodel import Session, select

from aggregator.fleet import VehicleSpec
from aggregator.store.db import make_engine
from aggregator.store.models import MeterReading
from sim.ocpp_station import OcppStation
from sim.station import SimulatedStation
from sim.vtn import UtilityVtn
from tests.conftest import free_port

pytestmark = pytest.mark.integration
STATION = "CS-E2E-01"
INTERVAL = timedelta(seconds=8)


def _v2x(args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "aggregator.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=os.getcwd(), **kwargs)


async def _wait_until(predicate, timeout: float, what: str, log_path=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log_path.read_text()[-3000:] if log_path and log_path.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        await asyncio.sleep(0.2)


def test_stations_add_then_run_accepts_station_dispatches_and_meters(tmp_path):
    pki = tmp_path / "pki"
    ocpp_port = free_port()
    database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = {"PATH": "/usr/bin:/bin", "V2X_DATABASE_URL": database_url, "V2X_METRICS_PORT": str(free_port()),
           "PYTHONUNBUFFERED": "1", "V2X_CONFIG": str(tmp_path / "v2x.toml")}
    (tmp_path / "v2x.toml").write_text("")
    made = _v2x(["certs", "--out", str(pki)], env)
    assert made.returncode == 0, made.stderr
    (tmp_path / "v2x.toml").write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {ocpp_port}\nsecurity_profile = 2\n'
        f'cert_file = "{pki / "vtn.crt"}"\nkey_file = "{pki / "vtn.key"}"\n')
    added = _v2x(["stations", "add", STATION, "--max-charge-kw", "11", "--max-discharge-kw", "11"], env)
    assert added.returncode == 0, added.stderr
    password = re.search(r"^password:\s+(\S+)", added.stdout, re.M).group(1)
    url = re.search(r"^URL:\s+(\S+)", added.stdout, re.M).group(1)
    assert url == f"wss://127.0.0.1:{ocpp_port}/ocpp/{STATION}" and f"user:     {STATION}" in added.stdout
    log_path = tmp_path / "service.log"
    tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))

    async def scenario():
        vtn = UtilityVtn(port=free_port(), report_interval=timedelta(seconds=2))
        await vtn.start()
        service = None
        now = datetime.now(timezone.utc)
        spec = VehicleSpec("ev-e2e", "car", 60.0, 6.0, 11.0, 11.0, 0.92, 0.92, 0)
        station = OcppStation(SimulatedStation(STATION, spec, 40.0, now), now + timedelta(hours=8), 50.0,
                              sample_interval=timedelta(seconds=1))
        running = True

        async def physics():   # the station's world, in real time
            while running:
                station.advance(datetime.now(timezone.utc))
                await asyncio.sleep(0.25)
        try:
            service = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "run"],
                                       env={**env, "V2X_VTN_URL": vtn.url}, stdout=open(log_path, "ab"),
                                       stderr=subprocess.STDOUT, cwd=os.getcwd())
            await _wait_until(lambda: "OCPP CSMS on wss://" in log_path.read_text(), 60, "the CSMS", log_path)
            base = url.rsplit("/", 1)[0] + "/"
            # a wrong password is refused at the handshake
            with pytest.raises(websockets.InvalidStatus) as refused:
                await station.connect(base, password=password[:-1] + ("x" if password[-1] != "x" else "y"),
                                      ssl_context=tls)
            assert refused.value.response.status_code == 401
            # the printed credentials are accepted
            await station.connect(base, password=password, ssl_context=tls)
            mover = asyncio.get_running_loop().create_task(physics())
            await _wait_until(lambda: vtn.record.registered, 60, "registration", log_path)
            (ven_id,) = vtn.record.registered
            # boot, status, transaction and charging needs answered: the fleet knows the vehicle
            await _wait_until(lambda: len(station.answers) >= 4 and station.outbox.empty(), 30, "the session",
                              log_path)
            start = datetime.now(timezone.utc) + timedelta(seconds=4)
            event_id = vtn.dispatch_event(ven_id, start, [(INTERVAL, 5.0)] * 2)
            await _wait_until(lambda: vtn.record.opt_responses, 30, "the opt response", log_path)
            assert [opt for _, e, opt in vtn.record.opt_responses if e == event_id][:1] == ["optIn"]
            await _wait_until(lambda: datetime.now(timezone.utc) > start + INTERVAL * 2 + timedelta(seconds=2),
                              60, "the end of the event")
            running = False
            await mover
            assert any(kind in ("Dynamic", "Update", "Absolute") and kw < -1.0 for kind, kw in station.commands), \
                (station.commands, log_path.read_text()[-3000:])
            assert station.station.export_kwh > 0.005
        finally:
            running = False
            await station.disconnect()
            if service is not None and service.poll() is None:
                service.send_signal(signal.SIGTERM)
                try:
                    service.wait(30)
                except subprocess.TimeoutExpired:
                    service.kill()
                    service.wait()
            await vtn.stop()

    asyncio.run(scenario())
    engine = make_engine(database_url)
    try:
        with Session(engine) as db:
            rows = db.exec(select(MeterReading).where(MeterReading.source == STATION)
                           .order_by(MeterReading.ts)).all()
    finally:
        engine.dispose()
    assert len(rows) >= 10, log_path.read_text()[-3000:]
    assert rows[-1].energy_export_kwh > 0.005             # the discharge was metered into the ledger
    assert min(r.power_kw for r in rows) < -1.0
    assert len({r.ts for r in rows}) == len(rows)
