"""What the VEN knows, for operators: `v2x events` (table or JSON) from the event store."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlmodel import Session, select

from ven.store import EventStore, VenEvent, VenEventInterval, _utc_dt


def _dispatched_now(db, event_id: str, now: datetime) -> bool:
    """The aggregator acts on the event now: a commitment of it in force at `now` (the book the
    dispatcher reads; test, opted-out, cancelled and not yet started events have none in force)."""
    from aggregator.store.models import Commitment   # the aggregator's table, read for operators only
    rows = db.exec(select(Commitment).where(Commitment.event_id == event_id)).all()
    return any(_utc_dt(r.start) <= now < _utc_dt(r.end) and r.import_ceiling_kw is not None for r in rows)


def list_events(engine, now: datetime | None = None) -> list[dict]:
    """Every stored event, newest first, with its intervals at executed (absolute) times and
    whether the aggregator is dispatching it now (`dispatched`)."""
    now = now or datetime.now(timezone.utc)
    store = EventStore(engine)
    stored = store.load()
    out = []
    with Session(engine) as db:
        rows = db.exec(select(VenEvent).order_by(VenEvent.received_at.desc())).all()
        for row in rows:
            intervals = db.exec(select(VenEventInterval).where(VenEventInterval.event_id == row.event_id)
                                .order_by(VenEventInterval.uid)).all()
            event = stored[row.event_id]
            start = _utc_dt(intervals[0].start) if intervals else None
            out.append({
                "event_id": row.event_id, "status": row.status, "status_now": event.status(now),
                "modification_number": row.modification_number, "opt_state": row.opt_state,
                "response_code": row.response_code, "market_context": row.market_context,
                "test_event": row.test_event, "priority": row.priority,
                "signal": f"{row.signal_name}/{row.signal_type}", "units": event.event.units,
                "start_offset_s": row.start_offset_s,
                "randomized_start": start.isoformat() if start else None,
                "request_id": row.request_id, "reason": row.reason,
                "dispatched": bool(event.executable and not row.test_event and row.opt_state == "optIn"
                                   and _dispatched_now(db, row.event_id, now)),
                "intervals": [{"uid": i.uid, "start": _utc_dt(i.start).isoformat(),
                               "end": _utc_dt(i.end).isoformat() if i.end else None, "target": i.value}
                              for i in intervals]})
    return out


def format_events(events: list[dict]) -> str:
    if not events:
        return "no events known"
    lines = []
    for e in events:
        lines.append(f"{e['event_id']}  {e['status']} (now {e['status_now']})  mod {e['modification_number']}  "
                     f"{e['opt_state']} [{e['response_code']}]  {e['signal']}  priority {e['priority']}"
                     f"{'  TEST' if e['test_event'] else ''}  dispatched: {str(e['dispatched']).lower()}")
        lines.append(f"    market {e['market_context'] or '-'}  randomized start {e['randomized_start']} "
                     f"(+{e['start_offset_s']:.1f} s)  requestID {e['request_id']}")
        if e["reason"]:
            lines.append(f"    {e['reason']}")
        for i in e["intervals"]:
            lines.append(f"    {i['uid']:>3}  {i['start']}  ->  {i['end'] or 'open-ended'}  "
                         f"target {i['target']:g}{' ' + e['units'] if e['units'] else ''}")
    return "\n".join(lines)


def events_json(events: list[dict]) -> str:
    return json.dumps(events, indent=2)
