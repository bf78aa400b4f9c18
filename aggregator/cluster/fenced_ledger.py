"""The ledger writer of a leaseholder: the same rows as `LedgerWriter`, written in a fenced
transaction (aggregator/cluster/lease.py). A deposed leader's rows are refused and dropped,
never merged with its successor's: the successor's stations carry the same registers on."""
from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from aggregator.cluster.lease import Fenced, Lease
from aggregator.dispatch.ledger_writer import LedgerWriter
from aggregator.store.db import insert_meter_readings
from aggregator.store.models import MeterReading

log = logging.getLogger(__name__)


class FencedLedgerWriter(LedgerWriter):
    def __init__(self, engine, lease: Lease, metrics=None, on_fenced=lambda: None):
        super().__init__(engine, metrics)
        self.lease = lease
        self.on_fenced = on_fenced
        self.refused = 0

    def flush(self) -> bool:
        if not self.pending:
            return True
        rows = self.pending
        readings = [r for r in rows if isinstance(r, MeterReading)]
        others = [r for r in rows if not isinstance(r, MeterReading)]
        try:
            with self.lease.fenced() as db:
                insert_meter_readings(db, readings)
                db.add_all(others)
                db.commit()
            self.pending = self.pending[len(rows):]
            return True
        except Fenced as err:
            self.refused += len(rows)
            self.pending = self.pending[len(rows):]
            log.error("ledger rows refused, %d dropped: %s", len(rows), err)
            self.on_fenced()
            return False
        except SQLAlchemyError as err:
            if self.metrics is not None:
                self.metrics.database_errors.inc()
            log.error("ledger write failed (%s); %d rows kept for retry", err.__class__.__name__, len(rows))
            return False
