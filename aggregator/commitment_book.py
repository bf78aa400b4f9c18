"""The commitments in force: what the dispatcher must deliver, per event and piece.

Written by the event intake, read by the dispatcher each step (`version`
changes on every write, so the dispatcher knows when to re-plan), and settled
afterwards. Persisted in the `commitment` table (each row references the VEN's
`ven_event`, the one record of events): loaded on start, written through on
every change (unchanged sets are not rewritten). The baseline of an event's
delta / capacity / percent-offset signals, frozen when it was first accepted,
is kept with its rows.

Without an engine the book is kept in memory only (simulations, tests).
A failed write is retried `attempts` times with a short back-off and then
raises `CommitmentWriteFailed`; memory changes only once the database has.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, delete, select

from aggregator.commitment import CommittedInterval
from aggregator.store.db import as_utc
from aggregator.store.models import Commitment
from ven.port import WriteFailed

log = logging.getLogger(__name__)


class CommitmentWriteFailed(WriteFailed):
    """The commitment table could not be written, after the retries."""


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def _none_to_nan(value: float | None) -> float:
    return float("nan") if value is None else value


class CommitmentBook:
    def __init__(self, engine=None, attempts: int = 3, backoff_s: float = 0.05,
                 sleep: Callable[[float], None] = time.sleep):
        self.engine = engine
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._by_event: dict[str, list[CommittedInterval]] = {}
        self._baselines: dict[str, float] = {}
        self.version = 0
        if engine is not None:
            self._load()

    def _load(self) -> None:
        with Session(self.engine) as db:
            rows = db.exec(select(Commitment).order_by(Commitment.event_id, Commitment.start, Commitment.id)).all()
        for row in rows:
            self._by_event.setdefault(row.event_id, []).append(CommittedInterval(
                as_utc(row.start), as_utc(row.end), _none_to_nan(row.requested),
                _none_to_nan(row.import_ceiling_kw), row.kind))
            self._baselines[row.event_id] = row.baseline_kw
        if self._by_event:
            self.version += 1
            log.info("loaded the commitments of %d events", len(self._by_event))

    # -- reads -----------------------------------------------------------------------------
    def intervals(self) -> list[tuple[str, CommittedInterval]]:
        return [(event_id, c) for event_id, intervals in self._by_event.items() for c in intervals]

    def of(self, event_id: str) -> list[CommittedInterval]:
        return list(self._by_event.get(event_id, ()))

    def event_ids(self) -> set[str]:
        return set(self._by_event)

    def baseline_kw(self, event_id: str) -> float | None:
        """The baseline frozen when the event was first accepted (None: never committed)."""
        return self._baselines.get(event_id)

    # -- writes ----------------------------------------------------------------------------
    def set(self, event_id: str, intervals: list[CommittedInterval], baseline_kw: float = 0.0) -> None:
        intervals = list(intervals)
        if event_id in self._by_event and self._baselines.get(event_id) == baseline_kw \
                and _same(self._by_event[event_id], intervals):
            return
        self._write(event_id, intervals, baseline_kw)
        self._by_event[event_id] = intervals
        self._baselines[event_id] = baseline_kw
        self.version += 1

    def withdraw(self, event_id: str) -> None:
        if event_id not in self._by_event:
            return
        self._write(event_id, [], None)
        del self._by_event[event_id]
        self._baselines.pop(event_id, None)
        self.version += 1

    def _write(self, event_id: str, intervals: list[CommittedInterval], baseline_kw: float | None) -> None:
        if self.engine is None:
            return
        for attempt in range(1, self.attempts + 1):
            try:
                with Session(self.engine) as db:
                    db.exec(delete(Commitment).where(Commitment.event_id == event_id))
                    for c in intervals:
                        db.add(Commitment(event_id=event_id, start=c.start, end=c.end,
                                          requested=_nan_to_none(c.requested),
                                          import_ceiling_kw=_nan_to_none(c.import_ceiling_kw),
                                          baseline_kw=baseline_kw, kind=c.kind))
                    db.commit()
                return
            except SQLAlchemyError as err:
                if attempt == self.attempts:
                    raise CommitmentWriteFailed(f"writing the commitment of {event_id} failed after {attempt} "
                                                f"attempts: {err.__class__.__name__}: {err}") from err
                log.warning("writing the commitment of %s failed (attempt %d/%d), retrying: %s", event_id,
                            attempt, self.attempts, err)
                self._sleep(self.backoff_s * 2 ** (attempt - 1))


def _same(a: list[CommittedInterval], b: list[CommittedInterval]) -> bool:
    """Equal, NaN included (NaN means "no commitment" and equals itself here)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if (x.start, x.end, x.kind) != (y.start, y.end, y.kind):
            return False
        for u, v in ((x.requested, y.requested), (x.import_ceiling_kw, y.import_ceiling_kw)):
            if not (u == v or (math.isnan(u) and math.isnan(v))):
                return False
    return True
