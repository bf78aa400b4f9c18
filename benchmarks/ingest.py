"""Benchmark (not a test): telemetry ingestion at fleet scale. 10,000 simulated vehicles each
report a meter sample every 10 s (phases spread over the 10 s) for `--duration` seconds of
simulated reporting (default 180 s: 180,000 rows), into PostgreSQL through the service's own
path: each sample goes into the fleet registry (`FleetRegistry.on_station_event`), every
step the dispatcher's hand-over (`drain_samples` -> `StepReport`) reaches the ledger writer
(`LedgerWriter.observe` -> `flush` -> `insert_meter_readings`, one transaction per step),
as in `v2x run`. Every step is `--tick` of simulated time (default 0.5 s, the service's loop).

Pace (`--speed`): by default (0) **as fast as the writer allows**: the simulated clock moves
on one tick as soon as the previous step is committed, so the rows/s figure is the writer's
sustained capacity. `--speed 1` runs in real time (10,000 vehicles every 10 s offer 1,000
rows/s), `--speed 6` offers 6,000 rows/s, and so on; the writer keeps up if the rows/s
sustained equals the offered rate and the lag stays bounded.

Write lag of a sample: from the moment it was taken (its timestamp, mapped to the wall clock:
in real time its timestamp itself; flat out, the moment the simulated clock passed it, i.e. the
start of the step that carries it) to the commit that wrote it. Includes the wait for the next
step, the registry, the writer and the database.

Replays: 1 % of each step's samples are handed to the writer a second time in the next step
(what a station replaying its outbox after a reconnect, or a retry after an unacknowledged
commit, produces); the ledger must absorb them. After the run the database is counted: lost =
samples taken but not in the ledger; duplicated = rows beyond one per (source, ts), plus rows
whose values differ from the first write of that (source, ts).

Each run writes into a fresh PostgreSQL schema (dropped after). The database: `--database-url`,
else V2X_DATABASE_URL when it is PostgreSQL, else V2X_TEST_POSTGRES_URL. Targets: >= 5,000
rows/s sustained, write lag p99 <= 2 s, 0 lost, 0 duplicated, in the median and the worst of
`--runs` runs (default 3). Run: `v2x bench ingest` (part of `make bench`).
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone

TARGET_ROWS_S = 5000.0
TARGET_P99_S = 2.0
REPLAY_SHARE = 0.01


def _database_url(given: str | None) -> str:
    for url in (given, os.environ.get("V2X_DATABASE_URL"), os.environ.get("V2X_TEST_POSTGRES_URL")):
        if url and url.startswith("postgresql"):
            return url
    raise SystemExit("v2x bench ingest needs PostgreSQL: give --database-url postgresql://... "
                     "(or set V2X_DATABASE_URL / V2X_TEST_POSTGRES_URL)")


def _schema_url(base: str, schema: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[index]


def run_once(base_url: str, vehicles: int, period_s: float, duration_s: float, tick_s: float, speed: float,
             seed: int) -> dict:
    from sqlalchemy import create_engine, text

    from aggregator.chargers.port import MeterSample
    from aggregator.dispatch.dispatcher import StepReport
    from aggregator.dispatch.ledger_writer import LedgerWriter
    from aggregator.fleet_state.registry import FleetRegistry, StationSpec
    from aggregator.store.db import make_engine, normalise_url

    rng = random.Random(seed)
    schema = f"bench_ingest_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalise_url(base_url))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine = None
    try:
        engine = make_engine(_schema_url(base_url, schema))
        registry = FleetRegistry(engine)
        ids = [f"cp-{i:05d}" for i in range(vehicles)]
        for sid in ids:
            registry.register_station(StationSpec(sid, site=0, max_charge_kw=11.0, max_discharge_kw=11.0))
        # (the registry's fleet-state write-through, stations and sessions, is not measured here)
        writer = LedgerWriter(engine)
        start = datetime(2026, 7, 15, 18, tzinfo=timezone.utc) if speed <= 0 else datetime.now(timezone.utc)
        phase = [period_s * i / vehicles for i in range(vehicles)]
        power = [rng.uniform(-11.0, 11.0) for _ in ids]
        registers = [[0.0, 0.0] for _ in ids]
        rounds = int(duration_s / period_s)
        pointer, total = 0, rounds * vehicles
        taken: dict[tuple[str, datetime], float] = {}   # sample -> wall time taken (unacknowledged)
        lags: list[float] = []
        sent = replayed = 0
        replay_next: list[MeterSample] = []
        wall_start = time.time()
        sim_t = 0.0
        while sim_t < rounds * period_s:
            sim_t += tick_s
            if speed > 0:
                wait = wall_start + sim_t / speed - time.time()
                if wait > 0:
                    time.sleep(wait)
            step_wall = time.time()
            now = start + timedelta(seconds=sim_t)
            batch: list[MeterSample] = []
            # report p is vehicle p % n's report number p // n, taken at phase + number * period
            while pointer < total:
                i, k = pointer % vehicles, pointer // vehicles
                t_rel = phase[i] + k * period_s
                if t_rel > sim_t:
                    break
                pointer += 1
                reg = registers[i]
                kwh = power[i] * period_s / 3600
                if kwh > 0:
                    reg[0] += kwh
                else:
                    reg[1] -= kwh
                ts = start + timedelta(seconds=t_rel)
                sample = MeterSample(ids[i], ts, round(reg[0], 6), round(reg[1], 6), power[i], 50.0)
                batch.append(sample)
                taken[(sample.station_id, ts)] = (wall_start + t_rel / speed) if speed > 0 else step_wall
            for sample in batch:
                registry.on_station_event(sample)
            sent += len(batch)
            report = StepReport(now, None, registry.drain_samples() + replay_next, None, None)
            replayed += len(replay_next)
            replay_next = rng.sample(batch, int(len(batch) * REPLAY_SHARE)) if batch else []
            writer.observe(report)
            if not writer.pending:    # everything handed over so far is committed
                committed = time.time()
                lags.extend(committed - t for t in taken.values())
                taken.clear()
        if replay_next:
            writer.observe(StepReport(start, None, replay_next, None, None))
            replayed += len(replay_next)
        if not writer.pending:
            committed = time.time()
            lags.extend(committed - t for t in taken.values())
            taken.clear()
        wall = time.time() - wall_start
        with engine.connect() as conn:
            rows, distinct = conn.execute(text(
                "SELECT count(*), count(DISTINCT (source, ts)) FROM meterreading")).one()
            # the first write stays: a replay must not have changed a row's registers
            changed = conn.execute(text(
                "SELECT count(*) FROM meterreading WHERE soc_pct IS DISTINCT FROM 50.0")).scalar_one()
        lags.sort()
        return {"vehicles": vehicles, "sent": sent, "replayed": replayed, "rows": rows, "wall_s": wall,
                "rows_s": rows / wall if wall > 0 else float("nan"),
                "lag_p50": _percentile(lags, 0.5), "lag_p99": _percentile(lags, 0.99),
                "lost": sent - distinct, "duplicated": rows - distinct + changed,
                "unwritten": len(writer.pending)}
    finally:
        if engine is not None:
            engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT met"


def table(results: list[dict], speed: float) -> str:
    pace = "as fast as the writer allows" if speed <= 0 else f"{speed:g} x real time"
    med = lambda key: statistics.median(r[key] for r in results)  # noqa: E731
    worst_low = lambda key: min(r[key] for r in results)  # noqa: E731
    worst_high = lambda key: max(r[key] for r in results)  # noqa: E731
    lines = [f"ingestion: {results[0]['vehicles']:,} vehicles, a sample every 10 s, {len(results)} runs, {pace}",
             f"{'':<22} {'median':>10} {'worst':>10}  {'target':<12} verdict (worst run)",
             f"{'rows/s sustained':<22} {med('rows_s'):>10,.0f} {worst_low('rows_s'):>10,.0f}  {'>= 5,000':<12} "
             f"{verdict(worst_low('rows_s') >= TARGET_ROWS_S)}",
             f"{'write lag p50 (s)':<22} {med('lag_p50'):>10.3f} {worst_high('lag_p50'):>10.3f}  {'':<12}",
             f"{'write lag p99 (s)':<22} {med('lag_p99'):>10.3f} {worst_high('lag_p99'):>10.3f}  {'<= 2 s':<12} "
             f"{verdict(worst_high('lag_p99') <= TARGET_P99_S)}",
             f"{'lost rows':<22} {med('lost'):>10.0f} {worst_high('lost'):>10.0f}  {'0':<12} "
             f"{verdict(worst_high('lost') == 0)}",
             f"{'duplicated rows':<22} {med('duplicated'):>10.0f} {worst_high('duplicated'):>10.0f}  {'0':<12} "
             f"{verdict(worst_high('duplicated') == 0)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="v2x bench ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=10000)
    parser.add_argument("--period", type=float, default=10.0, help="seconds between a vehicle's samples")
    parser.add_argument("--duration", type=float, default=180.0,
                        help="seconds of simulated reporting per run (default 180: 3 minutes)")
    parser.add_argument("--tick", type=float, default=0.5, help="simulated seconds per step (the service's loop)")
    parser.add_argument("--speed", type=float, default=0.0,
                        help="0: as fast as the writer allows (default); 1: real time; k: k x real time")
    parser.add_argument("--runs", type=int, default=3, help="runs (median and worst are printed)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (a schema is made and dropped per run)")
    parser.add_argument("--quick", action="store_true", help="30 s of reporting, 2 runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.runs = 30.0, 2
    logging.getLogger("aggregator").setLevel(logging.ERROR)
    url = _database_url(args.database_url)
    results = []
    for run in range(args.runs):
        r = run_once(url, args.vehicles, args.period, args.duration, args.tick, args.speed, seed=run)
        results.append(r)
        print(f"run {run + 1}: {r['sent']:,} samples (+{r['replayed']:,} replayed) -> {r['rows']:,} rows in "
              f"{r['wall_s']:.1f} s = {r['rows_s']:,.0f} rows/s; lag p50 {r['lag_p50']:.3f} s, p99 "
              f"{r['lag_p99']:.3f} s; lost {r['lost']}, duplicated {r['duplicated']}"
              f"{'' if not r['unwritten'] else ', %d still queued' % r['unwritten']}", flush=True)
    print()
    print(table(results, args.speed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
