"""Database edge of the bidding package: session history in, bid records in and out."""
from __future__ import annotations

import json
from datetime import datetime

import numpy as np
from sqlmodel import Session, select

from aggregator.store.db import as_utc
from aggregator.store.models import Bid as BidRow
from aggregator.store.models import PlugSession, Vehicle

from .bids import Bid
from .history import SessionTable, epoch

__all__ = ["load_sessions", "save_bid", "load_bids", "fleet_nameplate_kw"]


def load_sessions(engine, until: datetime | None = None, sites: set[int] | None = None,
                  kinds: set[str] | None = None) -> SessionTable:
    """Every plug-in session (arrived before `until`) joined with its vehicle."""
    with Session(engine) as s:
        q = select(PlugSession, Vehicle).join(Vehicle, Vehicle.id == PlugSession.vehicle_id)
        if until is not None:
            q = q.where(PlugSession.arrived_at < until)
        rows = s.exec(q).all()
    if sites is not None:
        rows = [(p, v) for p, v in rows if v.site in sites]
    if kinds is not None:
        rows = [(p, v) for p, v in rows if v.kind in kinds]
    if not rows:
        return SessionTable.empty()
    col = lambda f: np.array([f(p, v) for p, v in rows])  # noqa: E731
    return SessionTable(
        vehicle_id=col(lambda p, v: v.id).astype(object), kind=col(lambda p, v: v.kind).astype(object),
        site=col(lambda p, v: v.site), arrived_s=col(lambda p, v: epoch(as_utc(p.arrived_at))),
        departs_s=col(lambda p, v: epoch(as_utc(p.departs_at))),
        left_s=col(lambda p, v: np.nan if p.left_at is None else epoch(as_utc(p.left_at))),
        energy_at_arrival_kwh=col(lambda p, v: p.energy_at_arrival_kwh), need_kwh=col(lambda p, v: p.need_kwh),
        capacity_kwh=col(lambda p, v: v.capacity_kwh), floor_kwh=col(lambda p, v: v.floor_kwh),
        max_charge_kw=col(lambda p, v: v.max_charge_kw), max_discharge_kw=col(lambda p, v: v.max_discharge_kw),
        eta_charge=col(lambda p, v: v.eta_charge), eta_discharge=col(lambda p, v: v.eta_discharge))


def fleet_nameplate_kw(table: SessionTable) -> float:
    """Sum of the discharge limits of every vehicle in the history (the naive bid)."""
    if len(table) == 0:
        return 0.0
    _, first = np.unique(table.vehicle_id.astype(str), return_index=True)
    return float(table.max_discharge_kw[first].sum())


def save_bid(engine, bid: Bid) -> int:
    row = BidRow(program=bid.program, strategy=bid.strategy, window_start=bid.window_start,
                 window_end=bid.window_end, created_at=bid.created_at, price_per_kw=bid.price_per_kw,
                 quantity_json=json.dumps(list(bid.quantity_kw)),
                 forecast_json=json.dumps({"day": bid.day.isoformat(),
                                           "hour_starts": [t.isoformat() for t in bid.hour_starts],
                                           "p50": list(bid.p50_kw), "p90": list(bid.p90_kw),
                                           "mean": list(bid.mean_kw)}),
                 history_json=json.dumps(bid.history, sort_keys=True),
                 params_json=json.dumps(bid.parameters, sort_keys=True))
    with Session(engine) as s:
        s.add(row)
        s.commit()
        s.refresh(row)
        return int(row.id)


def load_bids(engine, program: str | None = None) -> list[Bid]:
    from datetime import date
    with Session(engine) as s:
        q = select(BidRow).order_by(BidRow.window_start, BidRow.id)
        if program:
            q = q.where(BidRow.program == program)
        rows = s.exec(q).all()
    out = []
    for r in rows:
        fc = json.loads(r.forecast_json)
        out.append(Bid(program=r.program, day=date.fromisoformat(fc["day"]),
                       hour_starts=tuple(as_utc(datetime.fromisoformat(t)) for t in fc["hour_starts"]),
                       quantity_kw=tuple(json.loads(r.quantity_json)), price_per_kw=r.price_per_kw,
                       p50_kw=tuple(fc["p50"]), p90_kw=tuple(fc["p90"]), mean_kw=tuple(fc["mean"]),
                       strategy=r.strategy, created_at=as_utc(r.created_at), history=json.loads(r.history_json),
                       parameters=json.loads(r.params_json), id=r.id))
    return out
