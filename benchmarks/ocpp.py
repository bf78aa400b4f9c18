"""`v2x bench ocpp`: N simulated OCPP 2.1 stations connected over WebSockets on
127.0.0.1 to one CSMS. The stations run in separate processes (`sim.ocpp_swarm`,
`--workers` of them), so this process is the CSMS alone and its figures are the
CSMS's: connect time (until every station has connected, booted and its
transaction is known), setpoint fan-out until every station acknowledged (the dispatcher's own
`fan_out`; total;
p50 / p99 / max of per-station latency), and memory per connection (this
process's resident-set growth / N); the CSMS process's CPU seconds during the steady
fan-out tell its own work from waiting on the stations. Each size runs `--runs` times (median and
worst reported); the fan-out is two rounds (the first installs each station's
Dynamic TxProfile, the second is an UpdateDynamicSchedule: the steady state),
both reported. Target on the 2-core machine: 1,000 stations fanned out in <= 1 s;
10,000: goal <= 5 s. `--profile FILE` writes a cProfile of the CSMS during the
fan-outs of the first run."""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from aggregator.chargers.port import Ack, Setpoint
from aggregator.ocpp.credentials import StationDirectory, StationEntry
from aggregator.ocpp.csms import Csms
from aggregator.dispatch.fanout import fan_out
from sim.ocpp_swarm import station_id

TARGET_S = {1000: 1.0, 10000: 5.0}


class _NullSink:
    def on_station_event(self, event):
        pass


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


async def _read_line(proc, timeout: float) -> str:
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    return line.decode().strip()


class _Timed:
    """The CSMS as the dispatcher's fan-out sees it, noting each command's latency."""

    def __init__(self, csms: Csms):
        self.csms, self.latencies = csms, []

    async def command(self, setpoint: Setpoint):
        t0 = time.perf_counter()
        result = await self.csms.command(setpoint)
        self.latencies.append(time.perf_counter() - t0)
        return result


async def _fan_out(csms: Csms, ids: list[str], power_kw: float, now: datetime) -> dict:
    """The dispatcher's own fan-out (`aggregator.dispatch.fanout.fan_out`) to every station."""
    until = now + timedelta(minutes=5)
    port = _Timed(csms)
    setpoints = [Setpoint(s, power_kw, now, until) for s in ids]
    started, cpu = time.perf_counter(), time.process_time()
    results = await fan_out(port, setpoints, deadline_s=60.0)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    latencies = sorted(port.latencies) or [float("nan")]
    return {"total": total, "cpu": cpu, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "max": latencies[-1],
            "acked": sum(r.ack is Ack.ACCEPTED for r in results)}


async def _until(count, n: int, what: str, started: float, limit_s: float = 1800) -> None:
    """Wait until count() reaches n; give up after `limit_s`."""
    while (done := count()) < n:
        if time.perf_counter() - started > limit_s:
            raise RuntimeError(f"only {done} of {n} stations {what} after {limit_s:g} s")
        await asyncio.sleep(0.05)


async def _progress(csms: Csms, n: int, started: float, every_s: float = 15) -> None:
    """A long connect shows where it is (stderr)."""
    while True:
        await asyncio.sleep(every_s)
        with_tx = sum(1 for s in csms.states.values() if s.transaction_id)
        print(f"  ... {time.perf_counter() - started:.0f} s: {len(csms.connections)}/{n} connected, {with_tx} with a "
              f"transaction, {csms.resyncs_done} re-synchronised, {csms.resyncs_failed} re-syncs given up",
              file=sys.stderr, flush=True)


async def _one(n: int, workers: int, validate: bool, profiler: cProfile.Profile | None) -> dict:
    now = datetime.now(timezone.utc)
    ids = [station_id(i) for i in range(n)]
    entries = [StationEntry(sid, None, 0, 11.0, 11.0) for sid in ids]
    csms = Csms(_NullSink(), StationDirectory(entries), port=0, command_timeout=60, validate_outgoing=validate)
    await csms.start()
    gc.collect()
    rss0 = _rss_mb()
    procs = []
    share = -(-n // workers)
    started = time.perf_counter()
    progress = asyncio.get_running_loop().create_task(_progress(csms, n, started))
    try:
        for w in range(workers):
            first, count = w * share, min(share, n - w * share)
            if count <= 0:
                break
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sim.ocpp_swarm", "--url", csms.url, "--first", str(first), "--count",
                str(count), stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=os.getcwd()))
        for proc in procs:
            line = await _read_line(proc, 600)
            if not line.startswith("READY"):
                raise RuntimeError(f"station swarm failed: {line!r}")
        # connected, booted, transaction known (the stations' own bookkeeping is done too)
        await _until(lambda: sum(1 for s in csms.states.values() if s.transaction_id), n, "with a transaction",
                     started)
        connect_s = time.perf_counter() - started
        # let the connect-time re-syncs finish (or give up): the fan-out is measured alone
        await _until(lambda: csms.resyncs_done + csms.resyncs_failed, n, "re-synchronised", started)
        gc.collect()
        progress.cancel()
        per_conn_kb = (_rss_mb() - rss0) * 1024 / n
        if profiler:
            profiler.enable()
        first_round = await _fan_out(csms, ids, -5.0, now)     # installs each station's Dynamic profile
        steady = await _fan_out(csms, ids, -6.0, now)          # UpdateDynamicSchedule
        if profiler:
            profiler.disable()
    finally:
        progress.cancel()
        for proc in procs:
            if proc.returncode is None:
                proc.stdin.close()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        await csms.stop()
    return {"n": n, "connect_s": connect_s, "first": first_round, "steady": steady, "kb": per_conn_kb,
            "resync_failed": csms.resyncs_failed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="v2x bench ocpp")
    parser.add_argument("--stations", default="1000,10000", help="comma-separated station counts")
    parser.add_argument("--quick", action="store_true", help="1,000 stations, one run")
    parser.add_argument("--runs", type=int, default=3, help="runs per size (median and worst reported)")
    parser.add_argument("--workers", type=int, default=2,
                        help="station processes (2: one swarm process is slower than the CSMS at connecting)")
    parser.add_argument("--validate-outgoing", action="store_true",
                        help="also validate the CSMS's own CALLs against the JSON schemas (incoming CALLs from "
                             "stations are always validated)")
    parser.add_argument("--profile", help="write a cProfile of the CSMS during the first run's fan-outs here")
    args = parser.parse_args(argv)
    counts = [1000] if args.quick else [int(x) for x in args.stations.split(",")]
    runs = 1 if args.quick else args.runs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"CSMS alone in this process; stations in {args.workers} other process(es); fd limit {hard}")
    print(f"{'stations':>8} {'run':>4} {'connect s':>10} {'1st fan-out s':>14} {'fan-out s':>10} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'acked':>7} {'KiB/conn':>9} {'resync gave up':>15} {'CSMS cpu s':>10} "
          f"{'load 1m':>8}")
    for n in counts:
        if n + 200 > hard:
            print(f"{n:>8} skipped: the CSMS needs {n + 200} file descriptors, the hard limit is {hard}")
            continue
        results = []
        for run in range(runs):
            profiler = cProfile.Profile() if args.profile and run == 0 else None
            r = asyncio.run(_one(n, args.workers, args.validate_outgoing, profiler))
            if profiler:
                profiler.dump_stats(args.profile)
            s = r["steady"]
            # resident-set growth means something in the first run only: later ones reuse freed memory
            kib = f"{r['kb']:.1f}" if run == 0 else "-"
            print(f"{n:>8} {run + 1:>4} {r['connect_s']:>10.2f} {r['first']['total']:>14.3f} {s['total']:>10.3f} "
                  f"{s['p50'] * 1e3:>8.1f} {s['p99'] * 1e3:>8.1f} {s['max'] * 1e3:>8.1f} {s['acked']:>7} "
                  f"{kib:>9} {r['resync_failed']:>15} {s['cpu']:>10.2f} {os.getloadavg()[0]:>8.2f}", flush=True)
            results.append(r)
        steady = sorted(r["steady"]["total"] for r in results)
        first = sorted(r["first"]["total"] for r in results)
        target = TARGET_S.get(n)
        median, worst = statistics.median(steady), steady[-1]
        verdict = ""
        if target:
            verdict = (f"target <= {target:g} s: median {'MET' if median <= target else 'NOT met'}, "
                       f"worst {'MET' if worst <= target else 'NOT met'}")
        print(f"{n:>8} fan-out (update) median {median:.3f} s, worst {worst:.3f} s; first fan-out (profile "
              f"install) median {statistics.median(first):.3f} s, worst {first[-1]:.3f} s; "
              f"connect median {statistics.median(r['connect_s'] for r in results):.2f} s; {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
