"""settle_from_ledger / run_settle on a small ledger (SQLite, and PostgreSQL
when V2X_TEST_POSTGRES_URL is set)."""
from __future__ import annotations

import argparse
import csv
import io
import json
from datetime import date, datetime, timedelta

import pytest
from sqlmodel import Session, select

from aggregator.config import DatabaseSettings, Settings
from aggregator.settlement.report import (
    SettleOptions, add_settle_arguments, format_table, run_settle, settle_from_ledger)
from aggregator.settlement.store import SettlementRun, runs_for
from aggregator.store.db import insert_meter_readings
from aggregator.store.models import Commitment, MeterReading
from ven.store import VenEvent, VenEventInterval
from tests.settlement.builders import UTC, local, registers

H = timedelta(hours=1)
JUL = date(2025, 7, 15)
AUG = date(2025, 8, 5)
NOW = datetime(2025, 10, 15, tzinfo=UTC)


def add_event(session, event_id, day, hours, ceilings, opt="optIn", test=False, status="completed"):
    """The VEN's record of the event and, when the fleet executed it (opted in, not a test),
    the commitment the aggregator wrote for it."""
    session.add(VenEvent(event_id=event_id, modification_number=0, status=status, signal_name="SIMPLE",
                         signal_type="level", opt_state=opt, test_event=test, received_at=local(day, 8),
                         updated_at=local(day, 8), event_json="{}"))
    session.flush()
    for uid, (hour, ceiling) in enumerate(zip(hours, ceilings)):
        session.add(VenEventInterval(event_id=event_id, uid=uid, start=local(day, hour), end=local(day, hour + 1),
                                     value=1.0))
        if opt == "optIn" and not test:
            session.add(Commitment(event_id=event_id, start=local(day, hour), end=local(day, hour + 1),
                                   requested=1.0, import_ceiling_kw=ceiling, baseline_kw=0.0))


def add_meter(session, source, start, end, power, step=timedelta(minutes=5), until=None):
    rows = registers(start, end, power, step)
    if until is not None:
        rows = [r for r in rows if r.ts <= until]
    insert_meter_readings(session, [MeterReading(source=source, ts=r.ts, energy_import_kwh=r.import_kwh,
                                                 energy_export_kwh=r.export_kwh, power_kw=0.0) for r in rows])


def cp2_power(t):
    return 5.0 if t >= local(JUL, 18) else -8.0     # exports 8 kW, imports 5 kW in the last hour


def build_ledger(engine, cp2_until=None):
    """evt-jul: committed 20/20/10 kW; cp-1 exports 7 kW, cp-2 exports 8 kW then
    imports 5 kW -> delivered 15/15/2 kW. evt-aug: opted out, chargers idle.
    evt-test: a test event. evt-oct: outside the summer season."""
    with Session(engine) as session:
        add_event(session, "evt-jul", JUL, (16, 17, 18), (-20.0, -20.0, -10.0))
        add_event(session, "evt-aug", AUG, (16, 17), (-20.0, -20.0), opt="optOut")
        add_event(session, "evt-test", date(2025, 7, 20), (16,), (-20.0,), test=True)
        add_event(session, "evt-oct", date(2025, 10, 1), (16,), (-20.0,))
        add_meter(session, "cp-1", local(JUL, 15), local(JUL, 20), lambda t: -7.0 if t >= local(JUL, 16) else 0.0)
        add_meter(session, "cp-2", local(JUL, 15), local(JUL, 20), cp2_power, until=cp2_until)
        # an aggregate row that must not be added on top of the chargers
        add_meter(session, "fleet", local(JUL, 15), local(JUL, 20), lambda t: -1000.0)
        add_meter(session, "cp-1", local(AUG, 15), local(AUG, 19), lambda t: 0.0)
        session.commit()


def test_settles_one_event_from_the_ledger(engine):
    build_ledger(engine)
    with Session(engine) as session:
        report = settle_from_ledger(session, event_id="evt-jul", computed_at=NOW)
        session.commit()
    (result,) = report.settlements
    assert [r.delivered_kw for r in result.intervals] == pytest.approx([15.0, 15.0, 2.0])
    assert [r.committed_kw for r in result.intervals] == [20.0, 20.0, 10.0]
    assert [r.ratio for r in result.intervals] == pytest.approx([0.75, 0.75, 0.2])
    assert result.totals.ratio == pytest.approx(32.0 / 50.0)
    assert [r.label() for r in result.intervals] == ["HB 16:00", "HB 17:00", "HB 18:00"]
    assert report.new_versions == [("evt-jul", 1)]
    assert "evt-jul" in format_table(report) and "0.640" in format_table(report)
    with Session(engine) as session:
        (run,) = runs_for(session, "evt-jul")
        assert run.version == 1 and run.performance_ratio == pytest.approx(0.64)
        assert run.to_settlement() == result


def test_late_meter_data_creates_version_2_and_keeps_version_1(engine):
    build_ledger(engine, cp2_until=local(JUL, 18, 30))
    with Session(engine) as session:
        v1 = settle_from_ledger(session, event_id="evt-jul", computed_at=NOW).settlements[0]
        session.commit()
    assert v1.intervals[2].delivered_kw == pytest.approx(7.0 - 2.5)
    assert v1.intervals[2].coverage == pytest.approx(0.5)

    with Session(engine) as session:      # the rest of cp-2's readings arrive
        add_meter(session, "cp-2", local(JUL, 15), local(JUL, 20), cp2_power)
        session.commit()
    with Session(engine) as session:
        report = settle_from_ledger(session, event_id="evt-jul", computed_at=NOW + H)
        session.commit()
    v2 = report.settlements[0]
    assert (v2.version, v2.supersedes) == (2, 1)
    assert report.new_versions == [("evt-jul", 2)]
    assert v2.intervals[2].delivered_kw == pytest.approx(2.0)

    with Session(engine) as session:      # nothing new: no version 3
        again = settle_from_ledger(session, event_id="evt-jul", computed_at=NOW + 2 * H)
        session.commit()
        assert again.new_versions == [] and again.settlements[0].version == 2
        runs = runs_for(session, "evt-jul")
    assert [r.version for r in runs] == [1, 2]
    assert runs[0].to_settlement().intervals[2].delivered_kw == pytest.approx(4.5)
    assert runs[0].delivered_kwh == pytest.approx(34.5)
    assert runs[1].delivered_kwh == pytest.approx(32.0)


def test_season_counts_opted_out_events_as_zero(engine):
    build_ledger(engine)
    with Session(engine) as session:
        report = settle_from_ledger(session, season=2025, computed_at=NOW,
                                    options=SettleOptions(rate_per_kw_season=275.0))
        session.commit()
    assert [s.event_id for s in report.settlements] == ["evt-jul", "evt-aug"]     # in time order
    assert dict(report.season.events) == pytest.approx({"evt-jul": 32.0 / 3, "evt-aug": 0.0})
    assert report.season.average_kw == pytest.approx(16.0 / 3)
    assert report.season.payment == pytest.approx(275.0 * 16.0 / 3)
    assert "(opted out)" in format_table(report)


def test_unknown_event_and_event_without_data(engine):
    build_ledger(engine)
    with Session(engine) as session:
        with pytest.raises(LookupError):
            settle_from_ledger(session, event_id="nope")
        session.add(VenEvent(event_id="empty", modification_number=0, status="far", signal_name="SIMPLE",
                             signal_type="level", received_at=NOW, updated_at=NOW, event_json="{}"))
        session.commit()
        report = settle_from_ledger(session, event_id="empty")
    assert report.errors == {"empty": "event has no intervals"}


def test_premise_baseline_from_the_ledger(engine):
    """A premise meter at 100 kW for weeks; on the event day 40 kW during the
    event -> CAISO baseline 100 kW (adjustment 1.0), reduction 60 kW."""
    build_ledger(engine)
    event_window = (local(JUL, 16), local(JUL, 19))
    with Session(engine) as session:
        add_meter(session, "premise", local(date(2025, 5, 25), 0), local(JUL, 23),
                  lambda t: 40.0 if event_window[0] <= t < event_window[1] else 100.0, step=H)
        session.commit()
        report = settle_from_ledger(session, event_id="evt-jul", computed_at=NOW,
                                    options=SettleOptions(baseline="caiso"))
        session.commit()
    (result,) = report.settlements
    assert result.method == "caiso-10-in-10"
    assert [r.baseline_kw for r in result.intervals] == pytest.approx([100.0] * 3)
    assert [r.delivered_kw for r in result.intervals] == pytest.approx([60.0] * 3)
    selected = result.details["selected_days"]
    assert len(selected) == 10 and "2025-07-04" not in selected
    assert all(date.fromisoformat(d).weekday() < 5 for d in selected)


def parse(argv):
    parser = add_settle_arguments(argparse.ArgumentParser(prog="v2x settle"))
    return parser.parse_args(argv)


def test_run_settle_writes_csv_json_png(engine, database_url, tmp_path):
    build_ledger(engine)
    settings = Settings(database=DatabaseSettings(url=database_url))
    paths = {k: tmp_path / f"season.{k}" for k in ("csv", "json", "png")}
    out, err = io.StringIO(), io.StringIO()
    code = run_settle(parse(["--season", "2025", "--csv", str(paths["csv"]), "--json", str(paths["json"]),
                             "--png", str(paths["png"])]), settings, out=out, err=err, computed_at=NOW)
    assert code == 0, err.getvalue()
    assert "season 2025: 2 events" in out.getvalue()
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["event_id"], r["uid"]) for r in rows] == [
        ("evt-jul", "0"), ("evt-jul", "1"), ("evt-jul", "2"), ("evt-aug", "0"), ("evt-aug", "1")]
    assert float(rows[0]["delivered_kw"]) == pytest.approx(15.0)
    data = json.loads(paths["json"].read_text())
    assert data["season"]["average_kw"] == pytest.approx(16.0 / 3)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    one = tmp_path / "one.png"
    assert run_settle(parse(["--event", "evt-jul", "--png", str(one), "--labels", "hour-ending"]), settings,
                      out=out, err=err, computed_at=NOW) == 0
    assert one.read_bytes()[:4] == b"\x89PNG"
    assert "HE 17:00" in out.getvalue()
    with Session(engine) as session:
        runs = session.exec(select(SettlementRun).order_by(SettlementRun.event_id, SettlementRun.version)).all()
    # labels are presentation: no new version for evt-jul
    assert [(r.event_id, r.version) for r in runs] == [("evt-aug", 1), ("evt-jul", 1)]

    err = io.StringIO()
    assert run_settle(parse(["--event", "nope"]), settings, out=io.StringIO(), err=err) == 1
    assert "no event 'nope'" in err.getvalue()


def test_committed_export_is_what_the_fleet_committed_to_over_each_interval(engine):
    """An interval another event governed for half of it commits half; an open-ended
    interval is settled up to the end of its commitment."""
    day = date(2025, 7, 22)
    with Session(engine) as session:
        session.add(VenEvent(event_id="split", modification_number=0, status="completed", signal_name="LOAD_DISPATCH",
                             signal_type="setpoint", opt_state="optIn", received_at=local(day, 8),
                             updated_at=local(day, 8), event_json="{}"))
        session.flush()
        session.add(VenEventInterval(event_id="split", uid=0, start=local(day, 16), end=local(day, 17), value=40.0))
        session.add(VenEventInterval(event_id="split", uid=1, start=local(day, 17), end=None, value=10.0))
        session.add(Commitment(event_id="split", start=local(day, 16), end=local(day, 16, 30), requested=40.0,
                               import_ceiling_kw=-40.0, baseline_kw=0.0))
        session.add(Commitment(event_id="split", start=local(day, 17), end=local(day, 19), requested=10.0,
                               import_ceiling_kw=-10.0, baseline_kw=0.0))
        session.add(Commitment(event_id="split", start=local(day, 15, 45), end=local(day, 16), requested=None,
                               import_ceiling_kw=-20.0, baseline_kw=0.0, kind="ramp"))   # not an event interval
        add_meter(session, "cp-1", local(day, 15), local(day, 20), lambda t: -10.0)
        session.commit()
        report = settle_from_ledger(session, event_id="split", computed_at=NOW)
    (result,) = report.settlements
    assert [(r.start, r.end) for r in result.intervals] == [(local(day, 16), local(day, 17)),
                                                            (local(day, 17), local(day, 19))]
    assert [r.committed_kw for r in result.intervals] == pytest.approx([20.0, 10.0])
