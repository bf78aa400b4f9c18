"""``v2x settle``: settle events from the ledger, store versioned runs, report.

The I/O edge of the settlement package: reads the events from the VEN's event
store (``ven_event`` / ``ven_event_interval``: the one record of events, at
executed times), what the fleet committed to from ``commitment`` and the
``MeterReading`` ledger, turns them into plain ``SettlementInputs`` for the
pure engine, saves new versions through ``store.py`` and renders the results
(text table, CSV, JSON, PNG).

Ledger conventions used here (see ``aggregator/store/models.py``):

* committed export kW of an event interval = the time-weighted
  ``max(0, -import_ceiling_kw)`` of the event's ``commitment`` pieces of kind
  "event" over it (the parts another event governed count 0); no piece with a
  ceiling = no commitment (``None``): opted-out and test events commit nothing;
* an open-ended interval is settled up to the end of its commitment;
* device metering: every ``MeterReading.source`` except the premise meter and
  the aggregate ``"fleet"`` row is a charger meter (``"fleet"`` is used only
  when no charger rows exist, so nothing is counted twice);
* premise baseline (``--baseline caiso|pjm|nyiso``): the premise meter's
  readings (``--premise-source``) become hourly loads over the lookback;
* test events are skipped unless asked for by id; a season counts its non-test,
  non-cancelled events, an opted-out event as 0 kW (ConnectedSolutions).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlmodel import Session, select

from aggregator.settlement.baseline import PRESETS, InsufficientData, LoadProfile
from aggregator.settlement.calendar import DayCalendar, LabelConvention, holidays_for, local_date, local_day_bounds
from aggregator.settlement.delivery import MeterDataError, RegisterReading, RegisterSeries, interval_loads
from aggregator.settlement.engine import DeviceMetering, PremiseBaseline, SettlementInputs, settle_event
from aggregator.settlement.payments import (
    CONNECTED_SOLUTIONS_RESIDENTIAL_RATE, EventParticipation, SeasonResult, connected_solutions_season)
from aggregator.settlement.performance import EventInterval, EventSettlement, committed_export_kw
from aggregator.settlement.store import latest_settlement, save_settlement
from aggregator.store.db import as_utc
from aggregator.store.models import Commitment, MeterReading
from ven.store import VenEvent, VenEventInterval

FLEET_SOURCE = "fleet"


@dataclass(frozen=True)
class SettleOptions:
    timezone: str = "America/New_York"
    baseline: str | None = None              # None = device metering; else a key of baseline.PRESETS
    premise_source: str = "premise"
    load_curtailment_only: bool = False
    baseline_slot: timedelta = timedelta(hours=1)
    max_credit_ratio: float | None = None
    season_months: tuple[int, ...] = (6, 7, 8, 9)      # ConnectedSolutions summer
    rate_per_kw_season: float = CONNECTED_SOLUTIONS_RESIDENTIAL_RATE
    meter_margin: timedelta = timedelta(hours=1)       # readings fetched around an event
    include_test_events: bool = False


@dataclass
class SettleReport:
    settlements: list[EventSettlement] = field(default_factory=list)   # current version per event
    new_versions: list[tuple[str, int]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    opted_out: set[str] = field(default_factory=set)
    season: SeasonResult | None = None
    season_year: int | None = None


# ------------------------------------------------------------------ ledger -> inputs

def _intervals(session: Session, event_id: str) -> tuple[EventInterval, ...]:
    rows = session.exec(select(VenEventInterval).where(VenEventInterval.event_id == event_id)
                        .order_by(VenEventInterval.uid)).all()
    pieces = [(as_utc(c.start), as_utc(c.end), c.import_ceiling_kw) for c in session.exec(
        select(Commitment).where(Commitment.event_id == event_id, Commitment.kind == "event")).all()]
    out = []
    for row in rows:
        start = as_utc(row.start)
        if row.end is not None:
            end = as_utc(row.end)
        else:   # open-ended: as far as it was committed
            ends = [e for s, e, _ in pieces if e > start]
            if not ends:
                continue
            end = max(ends)
        if end <= start:
            continue
        out.append(EventInterval(row.uid, start, end, _committed_over(pieces, start, end)))
    return tuple(out)


def _committed_over(pieces: list[tuple[datetime, datetime, float | None]], start: datetime,
                    end: datetime) -> float | None:
    """Time-weighted committed export over [start, end); None if nothing was committed in it."""
    total, any_commitment = 0.0, False
    for s, e, ceiling in pieces:
        overlap = (min(e, end) - max(s, start)).total_seconds()
        if overlap <= 0 or ceiling is None:
            continue
        any_commitment = True
        total += committed_export_kw(ceiling) * overlap
    return total / (end - start).total_seconds() if any_commitment else None


def _readings(session: Session, start: datetime, end: datetime,
              sources: Sequence[str] | None = None) -> dict[str, list[RegisterReading]]:
    query = select(MeterReading).where(MeterReading.ts >= start, MeterReading.ts <= end)
    if sources is not None:
        query = query.where(MeterReading.source.in_(list(sources)))  # type: ignore[attr-defined]
    out: dict[str, list[RegisterReading]] = {}
    for row in session.exec(query.order_by(MeterReading.ts)).all():
        out.setdefault(row.source, []).append(
            RegisterReading(as_utc(row.ts), row.energy_import_kwh, row.energy_export_kwh))
    return out


def _device_method(session: Session, intervals, options: SettleOptions) -> DeviceMetering:
    readings = _readings(session, intervals[0].start - options.meter_margin, intervals[-1].end + options.meter_margin)
    readings.pop(options.premise_source, None)
    chargers = {s: r for s, r in readings.items() if s != FLEET_SOURCE}
    if not chargers and FLEET_SOURCE in readings:
        chargers = {FLEET_SOURCE: readings[FLEET_SOURCE]}
    return DeviceMetering(chargers)


def _baseline_method(session: Session, event_id: str, intervals, options: SettleOptions,
                     tz: ZoneInfo) -> PremiseBaseline:
    spec = PRESETS[options.baseline](load_curtailment_only=options.load_curtailment_only)  # type: ignore[index]
    event_day = local_date(intervals[0].start, tz)
    first_day = event_day - timedelta(days=spec.lookback_days + 1)
    start = local_day_bounds(first_day, tz)[0]
    end = local_day_bounds(local_date(intervals[-1].end, tz), tz)[1]
    rows = _readings(session, start - options.meter_margin, end + options.meter_margin,
                     [options.premise_source]).get(options.premise_source, [])
    series = RegisterSeries(rows, options.premise_source)
    slots = []
    t = start
    while t < end:
        slots.append((t, t + options.baseline_slot))
        t += options.baseline_slot
    profile = LoadProfile(options.baseline_slot, interval_loads(series, slots))
    other_days = set()
    for record in session.exec(select(VenEvent).where(VenEvent.event_id != event_id)).all():
        if record.test_event:
            continue
        for interval in _intervals(session, record.event_id):
            other_days.add(local_date(interval.start, tz))
    calendar = DayCalendar(holidays=holidays_for(range(first_day.year, event_day.year + 1)))
    return PremiseBaseline(spec, profile, calendar, frozenset(other_days))


def _in_season(intervals, year: int, options: SettleOptions, tz: ZoneInfo) -> bool:
    first = intervals[0].start.astimezone(tz)
    return first.year == year and first.month in options.season_months


# ------------------------------------------------------------------ the building block

def device_settlement(session: Session, event_id: str, options: SettleOptions = SettleOptions(),
                      computed_at: datetime | None = None) -> EventSettlement:
    """Committed vs delivered at the chargers' meters for one event, computed and not
    stored (a preview, e.g. the demo's summary). Raises ``LookupError`` for an event
    without intervals."""
    intervals = _intervals(session, event_id)
    if not intervals:
        raise LookupError(f"no intervals for event {event_id!r} in the ledger")
    inputs = SettlementInputs(event_id, intervals, _device_method(session, intervals, options), options.timezone)
    return settle_event(inputs, computed_at or datetime.now(timezone.utc))


def settle_from_ledger(session: Session, event_id: str | None = None, season: int | None = None,
                       options: SettleOptions = SettleOptions(),
                       computed_at: datetime | None = None) -> SettleReport:
    """Settle one event, a season's events, or (neither given) every event.

    New versions are saved (flushed; the caller commits). An event that cannot
    be settled (no intervals, bad or missing meter data) is reported in
    ``errors`` and does not stop the others. Raises ``LookupError`` for an
    unknown ``event_id``.
    """
    computed_at = computed_at or datetime.now(timezone.utc)
    tz = ZoneInfo(options.timezone)
    if options.baseline is not None and options.baseline not in PRESETS:
        raise ValueError(f"unknown baseline {options.baseline!r}; choose from {sorted(PRESETS)}")
    if event_id is not None:
        record = session.get(VenEvent, event_id)
        if record is None:
            raise LookupError(f"no event {event_id!r} in the ledger")
        records = [record]
    else:
        records = list(session.exec(select(VenEvent).order_by(VenEvent.event_id)).all())
        if not options.include_test_events:
            records = [r for r in records if not r.test_event]

    report = SettleReport(season_year=season)
    participations: list[EventParticipation] = []
    for record in records:
        intervals = _intervals(session, record.event_id)
        if not intervals:
            report.errors[record.event_id] = "event has no intervals"
            continue
        if season is not None and not _in_season(intervals, season, options, tz):
            continue
        try:
            method = (_device_method(session, intervals, options) if options.baseline is None
                      else _baseline_method(session, record.event_id, intervals, options, tz))
            inputs = SettlementInputs(record.event_id, intervals, method, options.timezone,
                                      options.max_credit_ratio)
            previous = latest_settlement(session, record.event_id)
            result = settle_event(inputs, computed_at, previous)
        except (InsufficientData, MeterDataError, ValueError) as err:
            report.errors[record.event_id] = str(err)
            continue
        if result is not previous:
            save_settlement(session, result)
            report.new_versions.append((result.event_id, result.version))
        report.settlements.append(result)
        opted_out = record.opt_state == "optOut"
        if opted_out:
            report.opted_out.add(record.event_id)
        if season is not None and record.status != "cancelled" and not record.test_event:
            participations.append(EventParticipation(
                record.event_id, result.totals.hours, result.totals.delivered_kwh, opted_out=opted_out))
    report.settlements.sort(key=lambda s: s.intervals[0].start)
    if season is not None:
        report.season = connected_solutions_season(participations, options.rate_per_kw_season)
    return report


# ------------------------------------------------------------------ rendering

def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: SettleReport, labels: LabelConvention | str = LabelConvention.HOUR_BEGINNING) -> str:
    """Human-readable table: per event a header line, then one line per interval."""
    out = io.StringIO()
    for s in report.settlements:
        t = s.totals
        flag = " (opted out)" if s.event_id in report.opted_out else ""
        out.write(f"event {s.event_id}{flag}  v{s.version}  method={s.method}  "
                  f"committed {_f(t.committed_avg_kw)} kW  delivered {_f(t.delivered_avg_kw)} kW  "
                  f"ratio {_f(t.ratio, 3)}  min coverage {t.min_coverage:.2f}\n")
        out.write(f"  {'uid':>3}  {'label':<10} {'start (UTC)':<20} {'committed kW':>12} "
                  f"{'delivered kW':>12} {'ratio':>6} {'coverage':>8}\n")
        for r in s.intervals:
            out.write(f"  {r.uid:>3}  {r.label(labels):<10} {r.start:%Y-%m-%d %H:%M:%S}  {_f(r.committed_kw):>12} "
                      f"{_f(r.delivered_kw):>12} {_f(r.ratio, 3):>6} {r.coverage:>8.2f}\n")
    if report.season is not None:
        season = report.season
        out.write(f"season {report.season_year}: {len(season.events)} events, average "
                  f"{season.average_kw:.2f} kW x ${season.rate_per_kw_season:.2f}/kW = ${season.payment:.2f}\n")
    for event_id, message in sorted(report.errors.items()):
        out.write(f"event {event_id}: NOT SETTLED: {message}\n")
    if not report.settlements and not report.errors:
        out.write("no events to settle\n")
    return out.getvalue()


CSV_FIELDS = ("event_id", "version", "method", "uid", "label", "start_utc", "end_utc", "committed_kw",
              "delivered_kw", "credited_kw", "ratio", "coverage", "baseline_kw", "metered_kw")


def write_csv(report: SettleReport, path: str | Path,
              labels: LabelConvention | str = LabelConvention.HOUR_BEGINNING) -> None:
    """One row per event interval (current version of each event)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for s in report.settlements:
            for r in s.intervals:
                writer.writerow([s.event_id, s.version, s.method, r.uid, r.label(labels), r.start.isoformat(),
                                 r.end.isoformat(), r.committed_kw, r.delivered_kw, r.credited_kw, r.ratio,
                                 r.coverage, r.baseline_kw, r.metered_kw])


def report_dict(report: SettleReport) -> dict:
    season = None
    if report.season is not None:
        season = {"year": report.season_year, "average_kw": report.season.average_kw,
                  "rate_per_kw_season": report.season.rate_per_kw_season, "payment": report.season.payment,
                  "events": [{"event_id": e, "credited_kw": kw} for e, kw in report.season.events]}
    return {"settlements": [s.to_dict() for s in report.settlements],
            "new_versions": [{"event_id": e, "version": v} for e, v in report.new_versions],
            "season": season, "errors": report.errors}


def write_json(report: SettleReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report_dict(report), indent=2))


def plot_png(report: SettleReport, path: str | Path,
             labels: LabelConvention | str = LabelConvention.HOUR_BEGINNING) -> None:
    """One event: committed vs delivered kW per interval. Several events: the
    per-event averages (the season view), with the season average if known."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5), dpi=100)
    ax = figure.add_subplot()
    settlements = report.settlements
    if len(settlements) == 1:
        s = settlements[0]
        x = list(range(len(s.intervals)))
        ax.bar([i - 0.2 for i in x], [r.committed_kw or 0.0 for r in s.intervals], 0.4, label="committed kW")
        ax.bar([i + 0.2 for i in x], [r.delivered_kw for r in s.intervals], 0.4, label="delivered kW")
        ax.set_xticks(x, [r.label(labels) for r in s.intervals], rotation=45, ha="right")
        ratio = _f(s.totals.ratio, 3)
        ax.set_title(f"Event {s.event_id} v{s.version} ({s.method}) - performance ratio {ratio}")
    else:
        x = list(range(len(settlements)))
        ax.bar([i - 0.2 for i in x], [s.totals.committed_avg_kw or 0.0 for s in settlements], 0.4,
               label="committed kW (avg)")
        ax.bar([i + 0.2 for i in x], [s.totals.event_avg_kw for s in settlements], 0.4,
               label="delivered kW (event avg)")
        ticks = [f"{s.event_id}\n{s.intervals[0].start.astimezone(ZoneInfo(s.timezone)):%Y-%m-%d}"
                 + (" (opted out)" if s.event_id in report.opted_out else "") for s in settlements]
        ax.set_xticks(x, ticks, rotation=45, ha="right")
        title = "Events"
        if report.season is not None:
            ax.axhline(report.season.average_kw, color="black", linestyle="--",
                       label=f"season average {report.season.average_kw:.1f} kW")
            title = f"Season {report.season_year}"
        ax.set_title(title)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_ylabel("kW (export positive)")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")


# ------------------------------------------------------------------ CLI glue

def add_settle_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``v2x settle``."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--event", metavar="ID", help="settle one event (also a test event)")
    which.add_argument("--season", metavar="YEAR", type=int,
                       help="settle a summer season's events and the ConnectedSolutions season average")
    parser.add_argument("--csv", metavar="PATH", help="write per-interval rows as CSV")
    parser.add_argument("--png", metavar="PATH", help="plot committed vs delivered as PNG")
    parser.add_argument("--json", metavar="PATH", help="write the full results as JSON")
    parser.add_argument("--timezone", default=None,
                        help="program timezone, IANA name (default: program.timezone from the configuration)")
    parser.add_argument("--labels", choices=[c.value for c in LabelConvention],
                        default=LabelConvention.HOUR_BEGINNING.value, help="interval labels")
    parser.add_argument("--baseline", choices=sorted(PRESETS), default=None,
                        help="settle against a premise baseline instead of the chargers' meters")
    parser.add_argument("--premise-source", default=SettleOptions.premise_source,
                        help="MeterReading.source of the premise meter (baseline methods)")
    parser.add_argument("--load-curtailment-only", action="store_true",
                        help="count premise export as zero load (baseline methods)")
    parser.add_argument("--rate-per-kw", type=float, default=CONNECTED_SOLUTIONS_RESIDENTIAL_RATE,
                        help="season payment rate, $/kW-season")
    return parser


def options_from_args(args: argparse.Namespace) -> SettleOptions:
    return SettleOptions(timezone=args.timezone, baseline=args.baseline,
                         premise_source=args.premise_source, load_curtailment_only=args.load_curtailment_only,
                         rate_per_kw_season=args.rate_per_kw)


def run_settle(args: argparse.Namespace, settings, *, out=None, err=None,
               computed_at: datetime | None = None) -> int:
    """Run ``v2x settle``. 0 = everything asked for settled; 1 = an event could
    not be settled, the event is unknown, or there was nothing to settle."""
    from aggregator.store.db import make_engine

    out = out or sys.stdout
    err = err or sys.stderr
    if args.timezone is None:
        args.timezone = settings.program.timezone
    try:
        ZoneInfo(args.timezone)
    except Exception:
        print(f"v2x settle: unknown timezone {args.timezone!r}", file=err)
        return 1
    engine = make_engine(settings.database.url)
    try:
        with Session(engine) as session:
            try:
                report = settle_from_ledger(session, event_id=args.event, season=args.season,
                                            options=options_from_args(args), computed_at=computed_at)
            except LookupError as error:
                print(f"v2x settle: {error.args[0]}", file=err)
                return 1
            session.commit()
    finally:
        engine.dispose()
    labels = LabelConvention(args.labels)
    out.write(format_table(report, labels))
    if args.csv:
        write_csv(report, args.csv, labels)
    if args.json:
        write_json(report, args.json)
    if args.png and report.settlements:
        plot_png(report, args.png, labels)
    if report.errors:
        print(f"v2x settle: {len(report.errors)} event(s) not settled", file=err)
        return 1
    return 0 if report.settlements else 1
