"""Handlers for `v2x bid`, `v2x backtest` and `v2x report participation` (I/O edge)."""
from __future__ import annotations

import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

__all__ = ["run_bid", "run_backtest", "run_participation", "progress_bar"]


def progress_bar(stream=sys.stderr, width: int = 30):
    t0 = time.monotonic()

    def show(done: int, total: int, label) -> None:
        filled = int(width * done / max(total, 1))
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label} {time.monotonic() - t0:5.1f}s")
        if done == total:
            stream.write("\n")
        stream.flush()
    return show


def run_bid(args, settings) -> int:
    from aggregator.store.db import make_engine

    from .bids import make_bid
    from .forecast import ForecastOptions, forecast, history_days, profile_cache
    from .plots import forecast_png
    from .programs import get_program
    from .store import fleet_nameplate_kw, load_sessions, save_bid
    try:
        program = get_program(args.program)
        day = date.fromisoformat(args.date)
    except ValueError as err:
        print(f"v2x bid: {err}", file=sys.stderr)
        return 2
    engine = make_engine(settings.database.url)
    try:
        table = load_sessions(engine, until=program.window.start_on(day))
        if len(table) == 0:
            print("v2x bid: no session history in the database (write a season with `python -m sim.history`)",
                  file=sys.stderr)
            return 1
        options = ForecastOptions(n_samples=args.samples, lookback_days=args.lookback_days, seed=args.seed,
                                  telemetry_loss_rate=args.telemetry_loss)
        fc = forecast(profile_cache(table, program.window), history_days(table, program.window), program.window, day, options)
        bid = make_bid(program, fc, datetime.now(timezone.utc), fleet_nameplate_kw(table), args.strategy,
                       {"source": "database", "sessions": len(table)})
        bid_id = save_bid(engine, bid)
    finally:
        engine.dispose()
    print(f"bid #{bid_id} {program.name} on {day} ({program.description})")
    print(f"forecast from {len(fc.pool)} historical days, {fc.samples.shape[0]} whole-day samples")
    print(f"{'hour':>6} {'P90 kW':>8} {'P50 kW':>8} {'mean kW':>8} {'bid kW':>8} {'price':>7}")
    for h in range(program.window.hours):
        print(f"{program.window.label(h):>6} {bid.p90_kw[h]:8.1f} {bid.p50_kw[h]:8.1f} {bid.mean_kw[h]:8.1f} "
              f"{bid.quantity_kw[h]:8.1f} {bid.price_per_kw:7.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bid_{program.name}_{day}"
    Path(f"{stem}.json").write_text(bid.to_json())
    from .bids import bids_to_csv
    Path(f"{stem}.csv").write_text(bids_to_csv([bid]))
    forecast_png(fc, bid, Path(f"{stem}.png"))
    print(f"wrote {stem}.json, {stem}.csv and {stem}.png")
    return 0


def run_backtest(args, settings) -> int:
    from sim.history import generate_history, load_archetype, season_dates

    from .backtest import event_days, run_backtest as backtest
    from .forecast import ForecastOptions
    from .plots import backtest_png
    from .programs import get_program
    from .store import fleet_nameplate_kw
    try:
        program = get_program(args.program)
        arch = load_archetype(args.scenario)
    except ValueError as err:
        print(f"v2x backtest: {err}", file=sys.stderr)
        return 2
    start, end = season_dates(args.season)
    table = generate_history(arch, start, end, seed=args.seed)
    days = event_days(args.season, program, seed=args.seed)
    if args.days:
        days = days[: args.days]
    print(f"{arch.name}: {len(table)} sessions of {arch.vehicles} vehicles {start}..{end}; "
          f"{len(days)} {program.name} events")
    result = backtest(table, program, args.season, arch.name, fleet_nameplate_kw(table), days=days,
                      forecast_options=ForecastOptions(n_samples=args.samples, seed=args.seed),
                      telemetry_loss_rate=args.telemetry_loss, seed=args.seed, progress=progress_bar())
    print(f"\n{'strategy':<10} {'events':>6} {'committed kWh':>13} {'delivered kWh':>13} {'revenue $':>10} "
          f"{'penalties $':>11} {'net $':>10} {'perf. ratio':>11} {'short':>5}")
    for r in result.summary():
        print(f"{r['strategy']:<10} {r['events']:>6} {r['committed_kwh']:>13.0f} {r['delivered_kwh']:>13.0f} "
              f"{r['revenue']:>10.0f} {r['penalties']:>11.0f} {r['net']:>10.0f} {r['performance_ratio']:>11.3f} "
              f"{r['events_short']:>5}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"backtest_{arch.name}_{program.name}_{args.season}.png"
    backtest_png(result, png)
    print(f"wrote {png}")
    return 0


def run_participation(args, settings) -> int:
    from aggregator.store.db import make_engine

    from .participation import format_table, load_events, participation, write_csv
    from .plots import participation_png
    from .store import load_sessions
    engine = make_engine(settings.database.url)
    try:
        table = load_sessions(engine)
        rep = participation(table, args.season, args.timezone)
        rep.events = load_events(engine, args.season)
    finally:
        engine.dispose()
    print(format_table(rep))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rep, out / f"participation_{args.season}.csv")
    participation_png(rep, out / f"participation_{args.season}.png")
    print(f"wrote {out / f'participation_{args.season}.csv'} and {out / f'participation_{args.season}.png'}")
    return 0


def add_arguments(sub) -> None:
    """The three subcommands, on the `v2x` subparsers."""
    programs = "dr-capacity, strict-p90, capacity-pf, connected-solutions"   # bidding/programs.py
    bid = sub.add_parser("bid", help="forecast the fleet's flexibility for a programme window and size a bid")
    bid.add_argument("--program", required=True, help=f"programme ({programs})")
    bid.add_argument("--date", required=True, help="event day, YYYY-MM-DD")
    bid.add_argument("--strategy", default="optimal", choices=["optimal", "mean", "nameplate"])
    bid.add_argument("--samples", type=int, default=2000, help="whole-day forecast samples (default 2000)")
    bid.add_argument("--lookback-days", type=int, default=42)
    bid.add_argument("--telemetry-loss", type=float, default=0.02, help="per-EV telemetry loss simulated")
    bid.add_argument("--seed", type=int, default=0)
    bid.add_argument("--out", default="out", help="folder for the JSON, CSV and PNG (default: out)")
    bid.set_defaults(func=run_bid)
    bt = sub.add_parser("backtest", help="simulate a season of programme events: our sizing vs nameplate vs mean")
    bt.add_argument("--scenario", required=True, help="scenario archetype (school_bus_depot, workplace, residential_evenings)")
    bt.add_argument("--season", type=int, required=True, help="year")
    bt.add_argument("--program", default="dr-capacity", help=f"programme ({programs})")
    bt.add_argument("--days", type=int, default=None, help="only the first N event days")
    bt.add_argument("--samples", type=int, default=1000)
    bt.add_argument("--telemetry-loss", type=float, default=0.02)
    bt.add_argument("--seed", type=int, default=0)
    bt.add_argument("--out", default="out")
    bt.set_defaults(func=run_backtest)
    rep = sub.add_parser("report", help="programme reports")
    rsub = rep.add_subparsers(dest="report", required=True)
    part = rsub.add_parser("participation", help="plug-in rates, availability, overrides, events (table, CSV, PNG)")
    part.add_argument("--season", type=int, required=True)
    part.add_argument("--timezone", default="America/New_York")
    part.add_argument("--out", default="out")
    part.set_defaults(func=run_participation)
