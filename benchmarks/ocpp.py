"""`v2x bench ocpp`: N simulated OCPP 2.1 stations connected to one CSMS over
WebSockets on 127.0.0.1 (both in this process, one event loop: the figures
include the stations' own work). Prints connect time (connect + boot +
transaction + charging needs, all answered), setpoint fan-out until every
station acknowledged (p50 / p99 / max of per-station latency, and the total),
and memory per connection (resident-set growth / N, both ends included).
Target on the 2-core machine: 1,000 stations fanned out in <= 1 s."""
from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import time
from datetime import datetime, timedelta, timezone

from aggregator.chargers.port import Ack, Setpoint
from aggregator.fleet import VehicleSpec
from aggregator.ocpp.credentials import StationDirectory, StationEntry
from aggregator.ocpp.csms import Csms
from sim.ocpp_station import OcppStation
from sim.station import SimulatedStation

TARGET_S = {1000: 1.0}


class _NullSink:
    def on_station_event(self, event):
        pass


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


async def _one(n: int, validate: bool) -> dict:
    now = datetime.now(timezone.utc)
    entries, clients = [], []
    for i in range(n):
        sid = f"CS-{i:05d}"
        spec = VehicleSpec(f"ev-{i:05d}", "bench", 60.0, 6.0, 11.0, 11.0, 0.92, 0.92, 0)
        clients.append(OcppStation(SimulatedStation(sid, spec, 30.0, now), now + timedelta(hours=8), 50.0))
        entries.append(StationEntry(sid, None, 0, 11.0, 11.0))
    csms = Csms(_NullSink(), StationDirectory(entries), port=0, command_timeout=30, validate_outgoing=validate)
    await csms.start()
    gc.collect()
    rss0 = _rss_mb()
    started = time.perf_counter()
    limit = asyncio.Semaphore(500)

    async def connect(client):
        async with limit:
            await client.connect(csms.url, open_timeout=120)
    await asyncio.gather(*(connect(c) for c in clients))
    await asyncio.gather(*(c.outbox.join() for c in clients))
    connect_s = time.perf_counter() - started
    gc.collect()
    per_conn_kb = (_rss_mb() - rss0) * 1024 / n
    until = now + timedelta(minutes=5)
    latencies: list[float] = []

    async def command(client):
        t0 = time.perf_counter()
        result = await csms.command(Setpoint(client.station_id, -5.0, now, until))
        latencies.append(time.perf_counter() - t0)
        return result
    started = time.perf_counter()
    results = await asyncio.gather(*(command(c) for c in clients))
    fanout_s = time.perf_counter() - started
    accepted = sum(r.ack is Ack.ACCEPTED for r in results)
    await csms.stop()
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    latencies.sort()
    return {"n": n, "connect_s": connect_s, "fanout_s": fanout_s, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "max": latencies[-1],
            "accepted": accepted, "kb": per_conn_kb}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="v2x bench ocpp")
    parser.add_argument("--stations", default="1000,10000", help="comma-separated station counts")
    parser.add_argument("--quick", action="store_true", help="1,000 stations only")
    parser.add_argument("--no-validate-outgoing", action="store_true",
                        help="skip JSON-schema validation of the CSMS's own CALLs (incoming is always validated)")
    args = parser.parse_args(argv)
    counts = [1000] if args.quick else [int(x) for x in args.stations.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"{'stations':>8} {'connect s':>10} {'fan-out s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'acked':>7} {'KiB/conn':>9}  target")
    for n in counts:
        if 2 * n + 100 > hard:
            print(f"{n:>8} skipped: needs {2 * n + 100} file descriptors, the limit is {hard}")
            continue
        r = asyncio.run(_one(n, not args.no_validate_outgoing))
        target = TARGET_S.get(n)
        verdict = (("MET" if r["fanout_s"] <= target else "NOT met") + f" (<= {target:g} s)") if target else "reported"
        print(f"{n:>8} {r['connect_s']:>10.2f} {r['fanout_s']:>10.3f} {r['p50'] * 1e3:>8.1f} {r['p99'] * 1e3:>8.1f} "
              f"{r['max'] * 1e3:>8.1f} {r['accepted']:>7} {r['kb']:>9.1f}  {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
