"""Writes what each step metered and commanded to the ledger: meter samples
(idempotent on (source, ts)) and the setpoints sent. A failed write keeps its
rows queued for the next step, so a database outage loses nothing.

The dispatcher awaits `observe_async`: the rows are built and written in a worker
thread (`asyncio.to_thread`), so the event loop keeps serving the VEN, the API and
the stations while 10,000 rows go in (~0.3 s at fleet scale), and the step still
returns only once they are written. `observe` is the same, synchronously."""
from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from aggregator.chargers.port import Ack, MeterSample
from aggregator.store.db import insert_meter_readings
from aggregator.store.models import MeterReading, SetpointRecord

log = logging.getLogger(__name__)
SHUTDOWN = "shutdown"   # event_id of the setpoints sent when the service stops


class LedgerWriter:
    def __init__(self, engine, metrics=None):
        self.engine = engine
        self.metrics = metrics
        self.pending: list = []   # MeterSample (a reading to write) or dict (a setpoint row)

    def _queue(self, report) -> None:
        # the samples themselves: they become ledger rows where they are written
        self.pending.extend(report.samples)
        # the shutdown hold is recorded as such (event_id "shutdown"): where the service left each station
        event_id = SHUTDOWN if getattr(report, "stop", False) else report.committed_event
        # setpoints as plain rows for one bulk INSERT (ORM objects cost ~0.1 ms each at 10,000 a step)
        self.pending.extend({"vehicle_id": setpoint.station_id, "issued_at": report.at,
                             "power_kw": setpoint.power_kw, "event_id": event_id}
                            for setpoint, result in report.commands if result.ack is Ack.ACCEPTED)

    def observe(self, report) -> None:
        self._queue(report)
        self.flush()

    async def observe_async(self, report) -> None:
        self._queue(report)
        await self.flush_async()

    async def drain(self, budget_s: float, retry_s: float = 1.0) -> bool:
        """Retry the queued rows until written or `budget_s` has passed (shutdown)."""
        deadline = time.monotonic() + budget_s
        while not self.flush():
            if time.monotonic() + retry_s > deadline:
                log.error("shutdown: %d ledger rows could not be written", len(self.pending))
                return False
            await asyncio.sleep(retry_s)
        return True

    def flush(self) -> bool:
        if not self.pending:
            return True
        rows, self.pending = self.pending, []
        return self._settle(rows, self._attempt(rows))

    async def flush_async(self) -> bool:
        """`flush` with the write in a worker thread. The queue is taken and given back
        (on failure) here, on the loop; the thread only writes its own batch. A subclass
        that redefines `flush` (the fenced writer) keeps its own, synchronous path, and so
        does an in-memory SQLite database (each thread would see its own, empty one)."""
        if type(self).flush is not LedgerWriter.flush or _in_memory(self.engine):
            return self.flush()
        if not self.pending:
            return True
        rows, self.pending = self.pending, []
        try:
            error = await asyncio.to_thread(self._attempt, rows)
        except BaseException:   # cancelled while writing: keep the rows for the next flush
            self.pending = rows + self.pending
            raise
        return self._settle(rows, error)

    def _attempt(self, rows: list) -> SQLAlchemyError | None:
        """Write `rows` in one transaction (any thread); the database error, if any."""
        try:
            with self._transaction() as db:
                write_rows(db, rows)
                db.commit()
            return None
        except SQLAlchemyError as err:
            return err

    def _settle(self, rows: list, error: SQLAlchemyError | None) -> bool:
        if error is None:
            return True
        self.pending = rows + self.pending
        if self.metrics is not None:
            self.metrics.database_errors.inc()
        log.error("ledger write failed (%s); %d rows kept for retry", error.__class__.__name__, len(rows))
        return False

    def _transaction(self):
        """Where the rows are written (a leaseholder writes in a fenced transaction)."""
        return Session(self.engine)


def _in_memory(engine) -> bool:
    url = getattr(engine, "url", None)
    return url is not None and url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def write_rows(db: Session, rows: list) -> None:
    """Meter readings (idempotent on (source, ts)) and setpoint rows, in one transaction."""
    # readings built without the ORM's instrumentation (a quarter of the cost: 10,000 samples a step at
    # fleet scale); they are only read by `insert_meter_readings`, never added to a session
    construct = MeterReading.model_construct
    readings = [construct(source=s.station_id, ts=s.ts, energy_import_kwh=s.energy_import_kwh,
                          energy_export_kwh=s.energy_export_kwh, power_kw=s.power_kw, soc_pct=s.soc_pct)
                for s in rows if isinstance(s, MeterSample)]
    readings.extend(r for r in rows if isinstance(r, MeterReading))
    setpoints = [r for r in rows if isinstance(r, dict)]
    insert_meter_readings(db, readings)
    if setpoints:
        db.execute(insert(SetpointRecord), setpoints)
