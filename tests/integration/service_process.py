"""Helpers for tests that run `v2x run --simulated-fleet` as a real process against the
utility VTN simulator: start it, wait on conditions, read the ledger it wrote."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

from sqlmodel import Session, select

from aggregator.store.models import MeterReading
from tests.conftest import free_port


def start_service(database_url: str, vtn_url: str, log_path, **env_extra: str) -> subprocess.Popen:
    env = {"PATH": "/usr/bin:/bin", "V2X_VTN_URL": vtn_url, "V2X_DATABASE_URL": database_url,
           "V2X_METRICS_PORT": str(free_port()), "PYTHONUNBUFFERED": "1", **env_extra}
    return subprocess.Popen([sys.executable, "-m", "aggregator.cli", "run", "--simulated-fleet"],
                            env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, cwd=os.getcwd())


async def wait_until(predicate, timeout: float, what: str, log_path=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log_path.read_text()[-3000:] if log_path is not None and log_path.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        await asyncio.sleep(0.2)


async def event_answered(vtn, intervals, log_path, lead: timedelta = timedelta(seconds=8)) -> tuple[str, datetime]:
    """Once the service has registered at the VTN: an event of `intervals` [(duration,
    kW)] starting `lead` from now, and the service's opt response to it. (event id, start)."""
    await wait_until(lambda: vtn.record.registered, 90, "registration", log_path)
    (ven_id,) = vtn.record.registered
    start = datetime.now(timezone.utc) + lead
    event_id = vtn.dispatch_event(ven_id, start, intervals)
    await wait_until(lambda: vtn.record.opt_responses, 30, "the opt response", log_path)
    return event_id, start


def stop_all(*processes) -> None:
    for process in processes:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def readings_by_source(engine) -> dict[str, list[MeterReading]]:
    with Session(engine) as db:
        rows = db.exec(select(MeterReading).order_by(MeterReading.source, MeterReading.ts)).all()
    out = defaultdict(list)
    for row in rows:
        out[row.source].append(row)
    return out


def register_net_export_kwh(rows: list[MeterReading], start: datetime, end: datetime) -> float:
    """Net export of one meter between two instants, straight from its registers (linear
    between readings); an independent check of settlement's delivery figure."""
    def at(t: datetime) -> float:
        points = [(utc(r.ts), r.energy_export_kwh - r.energy_import_kwh) for r in rows]
        if t <= points[0][0]:
            return points[0][1]
        for (t0, v0), (t1, v1) in zip(points, points[1:]):
            if t0 <= t <= t1:
                return v0 + (v1 - v0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0)
        return points[-1][1]
    return at(end) - at(start)
