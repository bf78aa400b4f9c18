"""Participation report (pure core + a small DB edge in `load_events`): plug-in rate and
available discharge kW by hour of day and day of week, overrides and early departures,
per site and fleet type; events opted in/out and why, committed per event (from the
VEN's event store and the commitments, when the database has them)."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from .history import SessionTable, epoch

__all__ = ["ParticipationReport", "participation", "load_events", "write_csv", "format_table"]


@dataclass
class ParticipationReport:
    season: int
    by_hour: dict = field(default_factory=dict)          # (kind, weekend) -> {"plug_rate": (24,), "available_kw": (24,)}
    by_weekday: dict = field(default_factory=dict)       # kind -> (7,) plug rate 16-19 h local
    groups: list[dict] = field(default_factory=list)     # per (site, kind): sessions, overrides, early departures
    events: list[dict] = field(default_factory=list)     # per event: opt, reason, committed, delivered


def participation(table: SessionTable, season: int, tz: str = "America/New_York",
                  months: tuple[int, ...] = (6, 7, 8, 9)) -> ParticipationReport:
    """Sampled on the hour over every day of the season's months: a vehicle counts as
    plugged in when a session covers the instant; available discharge kW is its
    discharge limit while plugged in and above its reserve floor at arrival."""
    z = ZoneInfo(tz)
    rep = ParticipationReport(season)
    days = [d for m in months for d in _days(season, m)]
    kinds = sorted(set(table.kind.astype(str)))
    end = table.end_s
    for kind in kinds:
        sub = np.flatnonzero(table.kind.astype(str) == kind)
        fleet = len(set(table.vehicle_id[sub].astype(str)))
        arr, en = table.arrived_s[sub], end[sub]
        avail = np.where(table.energy_at_arrival_kwh[sub] > table.floor_kwh[sub], table.max_discharge_kw[sub], 0.0)
        acc = {False: np.zeros((24, 2)), True: np.zeros((24, 2))}
        counts = {False: 0, True: 0}
        wk = np.zeros((7, 2))
        for d in days:
            weekend = d.weekday() >= 5
            counts[weekend] += 1
            for h in range(24):
                t = epoch(datetime(d.year, d.month, d.day, h, tzinfo=z))
                on = (arr <= t) & (en > t)
                acc[weekend][h] += (on.sum() / max(fleet, 1), avail[on].sum())
                if 16 <= h < 19:
                    wk[d.weekday()] += (on.sum() / max(fleet, 1), 1)
        for weekend in (False, True):
            if counts[weekend]:
                a = acc[weekend] / counts[weekend]
                rep.by_hour[(kind, weekend)] = {"plug_rate": a[:, 0], "available_kw": a[:, 1]}
        rep.by_weekday[kind] = wk[:, 0] / np.maximum(wk[:, 1], 1)
    in_season = np.array([datetime.fromtimestamp(t, z).month in months and datetime.fromtimestamp(t, z).year == season
                          for t in table.arrived_s], dtype=bool) if len(table) else np.zeros(0, bool)
    for site in sorted(set(table.site.tolist())):
        for kind in kinds:
            m = in_season & (table.site == site) & (table.kind.astype(str) == kind)
            if not m.any():
                continue
            rep.groups.append({"site": int(site), "kind": kind, "vehicles": len(set(table.vehicle_id[m].astype(str))),
                               "sessions": int(m.sum()), "overrides": int(table.override[m].sum()),
                               "early_departures": int(table.early_departure[m].sum()),
                               "mean_dwell_h": float(np.mean((end[m] - table.arrived_s[m]) / 3600))})
    return rep


def _days(year: int, month: int) -> list[date]:
    d, out = date(year, month, 1), []
    while d.month == month:
        out.append(d)
        d += timedelta(days=1)
    return out


def load_events(engine, season: int) -> list[dict]:
    """Events the VEN stored for the season: opt state and reason, committed export per event
    (mean over its commitment pieces) and metered fleet export over the event when the
    ledger has readings of source "fleet"."""
    from sqlmodel import Session, select

    from aggregator.store.db import as_utc
    from aggregator.store.models import Commitment, MeterReading
    from ven.store import VenEvent, VenEventInterval
    out = []
    lo = datetime(season, 1, 1, tzinfo=timezone.utc)
    hi = datetime(season + 1, 1, 1, tzinfo=timezone.utc)
    with Session(engine) as s:
        for ev in s.exec(select(VenEvent)).all():
            ivs = s.exec(select(VenEventInterval).where(VenEventInterval.event_id == ev.event_id)).all()
            if not ivs:
                continue
            start = min(as_utc(i.start) for i in ivs)
            if not lo <= start < hi:
                continue
            end = max(as_utc(i.end) if i.end else as_utc(i.start) for i in ivs)
            pieces = s.exec(select(Commitment).where(Commitment.event_id == ev.event_id,
                                                     Commitment.kind == "event")).all()
            hours = sum((as_utc(p.end) - as_utc(p.start)).total_seconds() / 3600 for p in pieces)
            committed_kwh = sum(max(0.0, -(p.import_ceiling_kw or 0.0)) * (as_utc(p.end) - as_utc(p.start)).total_seconds() / 3600
                                for p in pieces if p.import_ceiling_kw is not None)
            reads = s.exec(select(MeterReading).where(MeterReading.source == "fleet", MeterReading.ts >= start,
                                                      MeterReading.ts <= end).order_by(MeterReading.ts)).all()
            delivered = None
            if len(reads) >= 2 and end > start:
                net = (reads[-1].energy_export_kwh - reads[0].energy_export_kwh) - (reads[-1].energy_import_kwh - reads[0].energy_import_kwh)
                delivered = net / ((as_utc(reads[-1].ts) - as_utc(reads[0].ts)).total_seconds() / 3600)
            out.append({"event_id": ev.event_id, "start": start.isoformat(), "status": ev.status,
                        "opt": ev.opt_state, "reason": ev.reason,
                        "committed_kw": committed_kwh / hours if hours else None, "delivered_kw": delivered})
    return sorted(out, key=lambda e: e["start"])


def format_table(rep: ParticipationReport) -> str:
    lines = [f"Participation, summer {rep.season}", "",
             f"{'site':>4} {'fleet type':<16} {'vehicles':>8} {'sessions':>8} {'overrides':>9} {'early dep.':>10} {'dwell h':>7}"]
    for g in rep.groups:
        lines.append(f"{g['site']:>4} {g['kind']:<16} {g['vehicles']:>8} {g['sessions']:>8} {g['overrides']:>9} "
                     f"{g['early_departures']:>10} {g['mean_dwell_h']:>7.1f}")
    lines += ["", "plug-in rate 16-19 h by day of week (Mon..Sun)"]
    for kind, row in rep.by_weekday.items():
        lines.append(f"  {kind:<16} " + " ".join(f"{x:5.2f}" for x in row))
    lines += ["", "available discharge kW by hour (weekday), 12..20 h"]
    for (kind, weekend), row in rep.by_hour.items():
        if not weekend:
            lines.append(f"  {kind:<16} " + " ".join(f"{x:6.0f}" for x in row["available_kw"][12:21]))
    lines += ["", f"events: {len(rep.events)}"]
    if rep.events:
        opted = sum(1 for e in rep.events if e["opt"] == "optIn")
        lines.append(f"  opted in {opted}, opted out {len(rep.events) - opted}")
        for e in rep.events:
            c = "-" if e["committed_kw"] is None else f"{e['committed_kw']:.1f}"
            d = "-" if e["delivered_kw"] is None else f"{e['delivered_kw']:.1f}"
            lines.append(f"  {e['start'][:16]} {e['event_id']:<20} {e['opt']:<7} committed {c:>7} kW  delivered {d:>7} kW  {e['reason']}")
    else:
        lines.append("  (the database holds no events for this season)")
    return "\n".join(lines)


def write_csv(rep: ParticipationReport, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["section", "kind", "weekend", "hour", "plug_rate", "available_kw"])
        for (kind, weekend), row in rep.by_hour.items():
            for h in range(24):
                w.writerow(["by_hour", kind, int(weekend), h, round(float(row["plug_rate"][h]), 4),
                            round(float(row["available_kw"][h]), 2)])
        w.writerow([])
        w.writerow(["section", "site", "kind", "vehicles", "sessions", "overrides", "early_departures", "mean_dwell_h"])
        for g in rep.groups:
            w.writerow(["group", g["site"], g["kind"], g["vehicles"], g["sessions"], g["overrides"],
                        g["early_departures"], round(g["mean_dwell_h"], 2)])
        w.writerow([])
        w.writerow(["section", "event_id", "start", "opt", "reason", "committed_kw", "delivered_kw"])
        for e in rep.events:
            w.writerow(["event", e["event_id"], e["start"], e["opt"], e["reason"], e["committed_kw"], e["delivered_kw"]])
