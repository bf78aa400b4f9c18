"""The ledger writer of a leaseholder: the same rows as `LedgerWriter`, written in a fenced
transaction (aggregator/cluster/lease.py). A deposed leader's rows are refused and dropped,
never merged with its successor's: the successor's stations carry the same registers on."""
from __future__ import annotations

import logging

from aggregator.cluster.lease import Fenced, Lease
from aggregator.dispatch.ledger_writer import LedgerWriter

log = logging.getLogger(__name__)


class FencedLedgerWriter(LedgerWriter):
    def __init__(self, engine, lease: Lease, metrics=None, on_fenced=lambda: None):
        super().__init__(engine, metrics)
        self.lease = lease
        self.on_fenced = on_fenced
        self.refused = 0

    def _transaction(self):
        return self.lease.fenced()

    def flush(self) -> bool:
        rows = len(self.pending)
        try:
            return super().flush()
        except Fenced as err:
            self.refused += rows
            self.pending = self.pending[rows:]
            log.error("ledger rows refused, %d dropped: %s", rows, err)
            self.on_fenced()
            return False
