"""The `v2x` command."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import timedelta
from pathlib import Path

from aggregator.config import ConfigError, Settings, default_config_text, load_settings
from sim.scenario import ScenarioError
from aggregator.settlement.report import add_settle_arguments, run_settle


def _demo(args, settings: Settings) -> int:
    from sim.demo import DemoFailure, DemoOptions, run_demo
    from aggregator.event_summary import format_drivers, format_table, write_csv, write_json, write_png

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.keep_database and not args.database and "V2X_DATABASE_URL" not in args.env:
        database = out / "demo.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        settings = settings.model_copy(update={"database": settings.database.model_copy(
            update={"url": f"sqlite:///{database}"})})
    print(f"ledger: {settings.database.url}")
    try:
        options = DemoOptions(profile_kw=tuple(args.profile or DemoOptions.profile_kw), interval=timedelta(seconds=args.interval_seconds),
                              pki_folder=out / "pki" if args.secure else None, chargers=args.chargers)
        result = asyncio.run(run_demo(settings, options))
    except (DemoFailure, ScenarioError) as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    summary = result.summary
    print()
    print(format_table(summary))
    print()
    print(format_drivers(summary))
    print(f"\nVTN received {len(result.vtn_reports)} TELEMETRY_USAGE values and opt responses "
          f"{[opt for _, _, opt in result.opt_responses]}")
    write_csv(summary, out / "demo_intervals.csv")
    write_png(summary, out / "demo_committed_vs_delivered.png")
    print(f"wrote {out / 'demo_intervals.csv'} and {out / 'demo_committed_vs_delivered.png'}")
    print(f"settle it: v2x --database {settings.database.url} settle --event {summary.event_id}")
    if args.json:
        write_json(summary, Path(args.json))
        print(f"wrote {args.json}")
    if summary.opt_state != "optIn":
        print(f"demo failed: the VEN answered {summary.opt_state}: {summary.note}", file=sys.stderr)
        return 1
    if not result.vtn_reports:
        print("demo failed: the VTN received no telemetry", file=sys.stderr)
        return 1
    if summary.drivers_short:
        print("demo failed: drivers stranded below a reachable need: "
              + ", ".join(d.vehicle_id for d in summary.drivers_short),
              file=sys.stderr)
        return 1
    return 0


def _run(args, settings: Settings) -> int:
    from aggregator.service import NoChargerDriver, run_service
    from ven.client import VenUnavailable
    try:
        asyncio.run(run_service(settings, simulated_fleet=args.simulated_fleet, say=lambda m: print(m, flush=True)))
    except (NoChargerDriver, VenUnavailable, ScenarioError) as err:
        print(f"v2x run: {err}", file=sys.stderr)
        return 1
    return 0


def _migrate(args, settings: Settings) -> int:
    """The explicit migration step (safe when several run at once: see aggregator/store/migrate.py)."""
    from aggregator.store.db import open_engine
    from aggregator.store.migrate import new_revision, upgrade
    engine = open_engine(settings.database.url)
    try:
        before, after = upgrade(engine)
        if before == after:
            print(f"{settings.database.url}: schema is current (revision {after})")
        else:
            print(f"{settings.database.url}: migrated from {before or 'an empty database'} to revision {after}")
        if args.new:
            new_revision(engine, args.new)
    finally:
        engine.dispose()
    return 0


def _bench(args, settings: Settings) -> int:
    if args.what == "ocpp":   # N stations on one CSMS: connect, fan-out until acknowledged, memory
        from benchmarks.ocpp import main as ocpp_bench
        return ocpp_bench(args.bench_args)
    if args.what == "ingest":   # meter samples of 10,000 vehicles into PostgreSQL (benchmarks/ingest.py)
        from benchmarks.ingest import main as ingest_bench
        return ingest_bench(args.bench_args)
    if args.what == "ven":   # oadrDistributeEvent arriving -> every setpoint issued (benchmarks/ven.py)
        from benchmarks.ven import main as ven_bench
        return ven_bench(args.bench_args)
    from benchmarks.allocator import main as allocator_bench
    return allocator_bench(args.bench_args)


def _stations(args, settings: Settings) -> int:
    """OCPP stations allowed to connect: `add` registers one and prints its password once."""
    from aggregator.ocpp.credentials import StationDirectory, add_station
    from aggregator.store.db import make_engine
    engine = make_engine(settings.database.url)
    try:
        if args.action == "add":
            password = add_station(engine, args.id, site=args.site, max_charge_kw=args.max_charge_kw,
                                   max_discharge_kw=args.max_discharge_kw)
            o = settings.ocpp
            scheme = "wss" if o.security_profile >= 2 else "ws"
            print(f"station {args.id} registered (site {args.site}, charge {args.max_charge_kw:g} kW, "
                  f"discharge {args.max_discharge_kw:g} kW)")
            print(f"URL:      {scheme}://{o.host}:{o.port}/ocpp/{args.id}   (subprotocol ocpp2.1 or ocpp2.0.1)")
            print(f"user:     {args.id}")
            print(f"password: {password}   (shown once; stored hashed; security profiles 1 and 2)")
        else:
            for entry in StationDirectory.from_database(engine).entries.values():
                print(f"{entry.station_id}\tsite {entry.site}\tcharge {entry.max_charge_kw:g} kW\t"
                      f"discharge {entry.max_discharge_kw:g} kW")
    finally:
        engine.dispose()
    return 0


def _tokens(args, settings: Settings) -> int:
    """HTTP API tokens: `create` prints a new token once (stored hashed), `list`, `revoke`."""
    from aggregator.api.tokens import create_token, list_tokens, revoke_token
    from aggregator.store.db import make_engine
    engine = make_engine(settings.database.url)
    try:
        if args.action == "create":
            try:
                token, token_id = create_token(engine, args.role, args.vehicle, args.label)
            except ValueError as err:
                print(f"v2x tokens create: {err}", file=sys.stderr)
                return 2
            scope = f" for vehicle {args.vehicle}" if args.vehicle else ""
            print(f"token {token_id}: role {args.role}{scope}")
            print(f"{token}")
            print("(shown once; stored hashed. Send it as 'Authorization: Bearer <token>', "
                  "or open /console/driver.html#token=<token>)", file=sys.stderr)
        elif args.action == "revoke":
            if not revoke_token(engine, args.id):
                print(f"v2x tokens revoke: no active token {args.id}", file=sys.stderr)
                return 1
            print(f"token {args.id} revoked")
        else:
            for row in list_tokens(engine):
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                print(f"{row.id}\t{row.role}\t{row.vehicle_id or '-'}\t{state}\t{row.label}")
    finally:
        engine.dispose()
    return 0


def _config(args, settings: Settings) -> int:
    if args.defaults:
        print(default_config_text())
    else:
        print(settings.model_dump_json(indent=2))
    return 0


def _profile(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of kW: {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("the profile needs at least one interval")
    return values


def _events(args, settings: Settings) -> int:
    """The events the VEN knows (its event store), as a table or JSON."""
    from aggregator.store.db import make_engine
    from ven.listing import events_json, format_events, list_events
    engine = make_engine(settings.database.url)
    try:
        events = list_events(engine)
    finally:
        engine.dispose()
    print(events_json(events) if args.json else format_events(events))
    return 0


def _certs(args, settings: Settings) -> int:
    """A development PKI (EC P-256): CA, VTN and VEN certificates and keys, with fingerprints."""
    from ven.pki import create_dev_pki
    pki = create_dev_pki(args.out, ven_name=settings.ven.ven_name, vtn_names=tuple(args.vtn_name))
    print(f"wrote {pki.ca_cert}, {pki.vtn_cert} (+ key), {pki.ven_cert} (+ key) in {pki.folder}")
    print(f"VTN certificate fingerprint: {pki.vtn_fingerprint}   (pin it in the VEN)")
    print(f"VEN certificate fingerprint: {pki.ven_fingerprint}   (give it to the VTN operator)")
    return 0


def _add_bidding(sub) -> None:
    """`bid`, `backtest`, `report participation` (bidding/cli.py; handlers import lazily)."""
    from bidding.cli import add_arguments
    add_arguments(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="v2x", description="V2G demand-response aggregator (OpenADR 2.0b VEN)")
    parser.add_argument("--config", help="config file (TOML); also V2X_CONFIG")
    parser.add_argument("--database", help="database URL (overrides the config file and V2X_DATABASE_URL)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run one end-to-end DR event against a simulated VTN and fleet")
    demo.add_argument("--json", help="also write the summary as JSON to this path")
    demo.add_argument("--out", default="out", help="folder for the CSV, PNG and demo database (default: out)")
    demo.add_argument("--profile", type=_profile, default=None,
                      help="export asked per interval, kW, comma-separated (default: 150,250,350,450,450,350,250,150)")
    demo.add_argument("--interval-seconds", type=float, default=15.0, help="interval length (default: 15)")
    demo.add_argument("--secure", action="store_true",
                      help="mutual TLS + signed messages with a development PKI made in OUT/pki")
    demo.add_argument("--chargers", choices=["simulated", "ocpp"], default="simulated",
                      help="simulated stations in-process, or the same stations over real OCPP 2.1 connections")
    demo.add_argument("--keep-database", action="store_true", help="use the configured database, not out/demo.db")
    demo.set_defaults(func=_demo)
    run = sub.add_parser("run", help="run the aggregator against the configured VTN until SIGINT/SIGTERM")
    run.add_argument("--simulated-fleet", action="store_true",
                     help="command the configured scenario on simulated chargers (default: start the OCPP CSMS "
                          "and command whatever stations connect)")
    run.set_defaults(func=_run)
    settle = sub.add_parser("settle", help="settle an event or a season from the ledger (table, CSV, PNG, JSON)")
    add_settle_arguments(settle)
    settle.set_defaults(func=run_settle)
    migrate = sub.add_parser("migrate", help="bring the database to the current schema (Alembic); "
                             "other commands refuse a schema that is behind")
    migrate.add_argument("--new", metavar="MESSAGE", help="developers: autogenerate a revision after changing models")
    migrate.set_defaults(func=_migrate)
    bench = sub.add_parser("bench", help="benchmarks (print tables; not tests)")
    bench.add_argument("what", choices=["allocator", "ven", "ocpp", "ingest"], help="what to benchmark")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="passed to the benchmark (e.g. --quick)")
    bench.set_defaults(func=_bench)
    events = sub.add_parser("events", help="list the events the VEN knows (status, opt, intervals)")
    events.add_argument("--json", action="store_true", help="print JSON instead of a table")
    events.set_defaults(func=_events)
    certs = sub.add_parser("certs", help="create a development PKI (CA, VTN and VEN certificates, EC P-256)")
    certs.add_argument("--out", default="pki", help="folder for the certificates and keys (default: pki)")
    certs.add_argument("--vtn-name", action="append", default=[], help="extra DNS name for the VTN certificate")
    certs.set_defaults(func=_certs)
    stations = sub.add_parser("stations", help="OCPP stations allowed to connect (add one: prints its password once)")
    stations_sub = stations.add_subparsers(dest="action", required=True)
    add = stations_sub.add_parser("add", help="register a station id (or give it a new password)")
    add.add_argument("id", help="the station id (the last segment of its CSMS URL)")
    add.add_argument("--site", type=int, default=0)
    add.add_argument("--max-charge-kw", type=float, default=22.0)
    add.add_argument("--max-discharge-kw", type=float, default=0.0, help="0 = charge-only")
    stations_sub.add_parser("list", help="the registered stations")
    stations.set_defaults(func=_stations)
    tokens = sub.add_parser("tokens", help="HTTP API tokens (create one: prints it once; stored hashed)")
    tokens_sub = tokens.add_subparsers(dest="action", required=True)
    create = tokens_sub.add_parser("create", help="issue a token for a role")
    create.add_argument("--role", required=True, choices=["driver", "operator", "utility"],
                        help="driver: one vehicle; operator: the fleet; utility: events, performance, settlement")
    create.add_argument("--vehicle", metavar="ID", help="the driver's vehicle (drivers only)")
    create.add_argument("--label", default="", help="a note to recognise the token by")
    revoke = tokens_sub.add_parser("revoke", help="revoke a token by its number")
    revoke.add_argument("id", type=int)
    tokens_sub.add_parser("list", help="the tokens issued (numbers, roles, vehicles; never the tokens)")
    tokens.set_defaults(func=_tokens)
    _add_bidding(sub)
    config = sub.add_parser("config", help="validate and print the effective configuration")
    config.add_argument("--defaults", action="store_true", help="print the documented default config file")
    config.set_defaults(func=_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os
    args = build_parser().parse_args(argv)
    args.env = dict(os.environ)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import openleadr.client  # noqa: F401  (it sets its logger to INFO on import; quiet it after)
    logging.getLogger("openleadr").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    environ = dict(os.environ)
    if args.database:
        environ["V2X_DATABASE_URL"] = args.database
    try:
        settings = load_settings(args.config, environ)
    except ConfigError as err:
        print(f"v2x: {err}", file=sys.stderr)
        return 2
    from aggregator.store.migrate import SchemaOutOfDate
    try:
        return args.func(args, settings)
    except SchemaOutOfDate as err:   # the start-up check: the message names `v2x migrate`
        print(f"v2x {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
