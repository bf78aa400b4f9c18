"""The VEN's outgoing report queue, persisted (`ven_report_outbox`).

openleadr keeps generated reports in an in-memory `asyncio.Queue`: a restart
after a VTN outage loses every report still owed. `ReportQueue` takes its
place on our client (`ven.oadr.VenOpenADRClient.pending_reports`):

- `put(report)` appends the report to the table (one row, in order of `id`)
  and to memory; a failed write keeps it in memory and is logged, it never
  raises into openleadr's report job;
- `head()` waits for the oldest report and returns it without removing it;
  `done(report)` removes it once the VTN took it (row deleted);
- a new queue on the same database and VTN URL starts with the rows left,
  oldest first, so a restarted VEN delivers every owed report once, in order.

Without an engine it is a plain in-memory queue (tests, the benchmark).
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from datetime import datetime, timedelta, timezone

from openleadr import objects
from sqlmodel import Session, delete, select

from ven.store import VenReportOutbox

log = logging.getLogger(__name__)


def _dt(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_dt(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed


def _td(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _parse_td(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def report_to_json(report: objects.Report) -> str:
    """The values-carrying part of an outgoing (oadrUpdateReport) report."""
    return json.dumps({
        "report_specifier_id": report.report_specifier_id, "report_name": report.report_name,
        "report_request_id": report.report_request_id, "created_date_time": _dt(report.created_date_time),
        "dtstart": _dt(report.dtstart), "duration": _td(report.duration),
        "data_collection_mode": report.data_collection_mode,
        "intervals": [{"dtstart": _dt(i.dtstart), "duration": _td(i.duration), "r_id": i.report_payload.r_id,
                       "value": i.report_payload.value, "confidence": i.report_payload.confidence,
                       "accuracy": i.report_payload.accuracy} for i in (report.intervals or [])]})


def report_from_json(text: str) -> objects.Report:
    data = json.loads(text)
    intervals = [objects.ReportInterval(
        dtstart=_parse_dt(i["dtstart"]), duration=_parse_td(i["duration"]),
        report_payload=objects.ReportPayload(r_id=i["r_id"], value=i["value"], confidence=i["confidence"],
                                             accuracy=i["accuracy"])) for i in data["intervals"]]
    return objects.Report(report_specifier_id=data["report_specifier_id"], report_name=data["report_name"],
                          report_request_id=data["report_request_id"],
                          created_date_time=_parse_dt(data["created_date_time"]), dtstart=_parse_dt(data["dtstart"]),
                          duration=_parse_td(data["duration"]), intervals=intervals,
                          data_collection_mode=data["data_collection_mode"])


class ReportQueue:
    def __init__(self, engine=None, vtn_url: str = ""):
        self.engine = engine
        self.vtn_url = vtn_url
        self._items: deque[tuple[int | None, objects.Report]] = deque()
        self._changed = asyncio.Event()
        if engine is not None:
            with Session(engine) as db:
                rows = db.exec(select(VenReportOutbox).where(VenReportOutbox.vtn_url == vtn_url)
                               .order_by(VenReportOutbox.id)).all()
            for row in rows:
                try:
                    self._items.append((row.id, report_from_json(row.report_json)))
                except Exception:
                    log.exception("stored report %s cannot be read; dropped from the queue", row.id)
            if self._items:
                log.info("%d report(s) owed to the VTN from before the restart", len(self._items))

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    async def put(self, report: objects.Report) -> None:
        row_id = None
        if self.engine is not None:
            try:
                with Session(self.engine) as db:
                    row = VenReportOutbox(vtn_url=self.vtn_url, report_request_id=report.report_request_id or "",
                                          queued_at=datetime.now(timezone.utc), report_json=report_to_json(report))
                    db.add(row)
                    db.commit()
                    row_id = row.id
            except Exception:   # the report still goes out from memory; only a restart would lose it
                log.exception("could not persist report %s; kept in memory only", report.report_request_id)
        self._items.append((row_id, report))
        self._changed.set()

    def put_nowait(self, report: objects.Report) -> None:
        asyncio.get_running_loop().create_task(self.put(report))

    async def head(self) -> objects.Report:
        """The oldest report not yet taken by the VTN (waits for one)."""
        while not self._items:
            self._changed.clear()
            await self._changed.wait()
        return self._items[0][1]

    async def get(self) -> objects.Report:
        """Like `asyncio.Queue.get` (the report is removed from the queue and the table)."""
        report = await self.head()
        self.done(report)
        return report

    def done(self, report: objects.Report) -> None:
        """The VTN took `report` (the head): forget it."""
        if not self._items or self._items[0][1] is not report:
            return
        row_id, _ = self._items.popleft()
        if row_id is not None and self.engine is not None:
            try:
                with Session(self.engine) as db:
                    db.exec(delete(VenReportOutbox).where(VenReportOutbox.id == row_id))
                    db.commit()
            except Exception:   # a restart now would send it again: the VTN sees a duplicate, nothing is lost
                log.exception("could not mark report %s delivered", report.report_request_id)

    def owed(self) -> list[objects.Report]:
        return [report for _, report in self._items]
