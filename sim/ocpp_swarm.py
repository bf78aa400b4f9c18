"""A swarm of simulated OCPP 2.1 stations in their own process (for `v2x bench ocpp`:
the CSMS process is then what is measured, not the stations' work).

    python -m sim.ocpp_swarm --url ws://127.0.0.1:9000/ocpp/ --first 0 --count 5000

Stations `CS-<first>` .. `CS-<first+count-1>` connect (boot, status, transaction,
charging needs), answer profiles like `sim.ocpp_station.OcppStation` (lean: the
same handlers without the station-side schema check, so the stations' process is
not what limits the CSMS's figures), and the
process prints `READY <count> <seconds>` on stdout once every queued message has
been answered. It closes them and exits when stdin closes (or on SIGTERM).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import signal
import sys
import time
from datetime import datetime, timedelta, timezone

import websockets

from aggregator.fleet import VehicleSpec
from sim.station import SimulatedStation


def station_id(i: int) -> str:
    return f"CS-{i:05d}"


def make_clients(first: int, count: int, now: datetime, *, dynamic: bool = True):
    from sim.ocpp_station import OcppStation
    clients = []
    for i in range(first, first + count):
        spec = VehicleSpec(f"ev-{i:05d}", "bench", 60.0, 6.0, 11.0, 11.0, 0.92, 0.92, 0)
        clients.append(OcppStation(SimulatedStation(station_id(i), spec, 30.0, now), now + timedelta(hours=8), 50.0,
                                   dynamic=dynamic, lean=True))
    return clients


async def run(url: str, first: int, count: int, concurrency: int, dynamic: bool) -> None:
    import ocpp.messages
    ocpp.messages.ASYNC_VALIDATION = False   # no thread hop per message
    clients = make_clients(first, count, datetime.now(timezone.utc), dynamic=dynamic)
    limit = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def connect(client):
        async with limit:
            for attempt in range(5):
                try:
                    await client.connect(url, open_timeout=120)
                    return
                except (OSError, websockets.InvalidMessage, websockets.InvalidHandshake):
                    await asyncio.sleep(0.2 * (attempt + 1))
            await client.connect(url, open_timeout=120)
    await asyncio.gather(*(connect(c) for c in clients))
    await asyncio.gather(*(c.outbox.join() for c in clients))
    print(f"READY {count} {time.perf_counter() - started:.3f}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(4096) else None)
    await stop.wait()
    accepted = sum(c.profiles_received + c.updates_received for c in clients)
    print(f"DONE {accepted}", flush=True)
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.ocpp_swarm")
    parser.add_argument("--url", required=True, help="the CSMS URL without the station id")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200, help="connections opening at once")
    parser.add_argument("--absolute", action="store_true", help="stations that take Absolute profiles only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(run(args.url, args.first, args.count, args.concurrency, not args.absolute))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
