#!/usr/bin/env python
"""Allocator benchmark: prints one table (not part of the pytest suite).

    v2x bench allocator            # full run (N = 100 ... 100,000), also `make bench`
    v2x bench allocator --quick    # N = 100 and 1,000 only

For every fleet size N and horizon T (15-minute intervals) and two scenarios

    flat   the same commitment in every interval: an export level where the
           fleet can sustain one (T = 16, 4 h), else a flat import ceiling
           (T = 96, 24 h: every EV has left long before the end, so the only
           flat commitment is a cap on charging -- peak shaving)
    event  a 2-hour export event in hours 2-4 of the horizon, nothing before
           (EVs must pre-charge in hours 0-2 to deliver it)

the commitment is set at the edge of what the fleet can do: the largest export
level (or lowest import ceiling) at which the closed-form bound
(bound.shortfall_lower_bound_kwh) shows no unavoidable shortfall, times --load.  Each configuration runs in its own
subprocess so that peak memory (max RSS) is per configuration.

Columns
    method     requested method; "used" is what allocate() reports
    build/solve  median seconds (solve includes the split / the rule)
    total      build + solve (+ split) median; the issue's targets apply here
    rss_MB     peak resident memory of the worker process after the timed runs
               of this method (includes the Python + numpy + OR-Tools baseline)
    short%     commitment shortfall, % of committed energy (sum |ceiling| x hours)
    gapLP      short% minus the full per-EV LP's short% (pp), where solved
    gapBnd     short% minus the bound's unavoidable short% (pp)
    depkWh     departure shortfall summed over EVs (kWh), minus the unavoidable
               part (needs not reachable even by charging flat out)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from aggregator.allocator import AllocatorOptions, allocate
from aggregator.allocator.bound import shortfall_lower_bound_kwh
from sim.fleets import event_targets, flat_targets, max_feasible_level_kw, random_fleet

DT = 0.25
FULL = [(100, 16), (1_000, 16), (10_000, 16), (100_000, 16), (1_000, 96), (10_000, 96)]
QUICK = [(100, 16), (1_000, 16)]
METHODS = ["auto", "greedy", "proportional", "llf"]
TARGET_S = {1_000: 0.2, 10_000: 0.5, 100_000: 3.0}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def scenario(name: str, T: int):
    if name == "flat":
        return lambda L: flat_targets(T, DT, -L)
    return lambda L: event_targets(T, DT, -L, 2.0, 4.0)


def unavoidable_dep_kwh(f) -> float:
    best = np.minimum(f.capacity_kwh, f.energy_kwh + f.eta_charge * f.max_charge_kw * f.departure_h)
    return float(np.sum(np.maximum(0.0, f.need_kwh - best)))


def worker(n: int, T: int, repeats: int, full_lp_max: int, load: float, seed: int, lp_budget: float) -> list[dict]:
    fleet = random_fleet(n, seed)
    dep0 = unavoidable_dep_kwh(fleet)
    rows = []
    for scen in ("flat", "event"):
        mk = scenario(scen, T)
        level = max_feasible_level_kw(fleet, mk)
        level = level * load if level > 0 else level / load  # load < 1 = easier either way
        tg = mk(level)
        committed = float(np.nansum(np.abs(tg.import_kw) * tg.durations_h))
        bound_pct = 100 * shortfall_lower_bound_kwh(fleet, tg) / committed
        results = {}
        for m in METHODS:
            opts = AllocatorOptions(method=m)
            b, s, tot, plans = [], [], [], []
            allocate(fleet, tg, opts)  # warm-up (imports, caches)
            for _ in range(repeats):
                t0 = time.perf_counter()
                plan = allocate(fleet, tg, opts)
                tot.append(time.perf_counter() - t0)
                b.append(plan.build_seconds)
                s.append(plan.solve_seconds + plan.split_seconds)
                plans.append(plan)
            plan = plans[-1]
            results[m] = dict(
                n=n, T=T, scenario=scen, method=m, used=plan.method, units=plan.n_clusters,
                build=statistics.median(b), solve=statistics.median(s), total=statistics.median(tot),
                rss=rss_mb(), short=100 * plan.shortfall_kwh(tg.durations_h) / committed,
                bound=bound_pct, dep=float(plan.departure_shortfall_kwh.sum()) - dep0, level=level,
            )
        lp_short = None
        if n <= full_lp_max:
            t0 = time.perf_counter()
            plan = allocate(fleet, tg, AllocatorOptions(method="lp", time_budget_s=lp_budget))
            el = time.perf_counter() - t0
            if plan.method == "lp":
                lp_short = 100 * plan.shortfall_kwh(tg.durations_h) / committed
                results["lp (full)"] = dict(
                    n=n, T=T, scenario=scen, method="lp (full)", used=plan.method, units=plan.n_clusters,
                    build=plan.build_seconds, solve=plan.solve_seconds, total=el, rss=rss_mb(),
                    short=lp_short, bound=bound_pct,
                    dep=float(plan.departure_shortfall_kwh.sum()) - dep0, level=level)
        for r in results.values():
            r["gap_lp"] = None if lp_short is None else r["short"] - lp_short
            r["gap_bound"] = r["short"] - r["bound"]
            rows.append(r)
    return rows


def fmt_row(r: dict) -> str:
    g = "    n/a" if r["gap_lp"] is None else f"{r['gap_lp']:7.3f}"
    return (f"{r['n']:>7d} {r['T']:>3d} {r['scenario']:<5s} {r['method']:<12s} {r['used']:<19s} {r['units']:>5d} "
            f"{r['build']:7.3f} {r['solve']:7.3f} {r['total']:7.3f} {r['rss']:7.0f} "
            f"{r['short']:7.3f} {g} {r['gap_bound']:7.3f} {r['dep']:8.1f}")


HEADER = (f"{'N':>7s} {'T':>3s} {'scen':<5s} {'method':<12s} {'used':<19s} {'units':>5s} "
          f"{'build':>7s} {'solve':>7s} {'total':>7s} {'rss_MB':>7s} {'short%':>7s} {'gapLP':>7s} {'gapBnd':>7s} {'depkWh':>8s}")


def check_targets(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["method"] != "auto":
            continue
        lim = TARGET_S.get(r["n"]) if r["T"] == 16 else None
        if lim is not None:
            ok = r["total"] <= lim
            out.append(f"time   N={r['n']:>7d} T={r['T']} {r['scenario']:<5s}: {r['total']:.3f} s <= {lim} s  "
                       f"{'MET' if ok else 'NOT MET'}")
        if r["n"] == 100_000:
            ok = r["rss"] <= 4096
            out.append(f"memory N={r['n']:>7d} T={r['T']} {r['scenario']:<5s}: {r['rss']:.0f} MB <= 4096 MB  "
                       f"{'MET' if ok else 'NOT MET'}")
        lim_gap = 0.1 if r["scenario"] == "flat" else 0.5
        for key, label in (("gap_lp", "LP"), ("gap_bound", "bound")):
            if r[key] is None:
                continue
            ok = r[key] <= lim_gap + 1e-9
            out.append(f"gap    N={r['n']:>7d} T={r['T']:>2d} {r['scenario']:<5s} vs {label:<5s}: {r[key]:.3f} pp <= {lim_gap} pp  "
                       f"{'MET' if ok else 'NOT MET'}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small N only (100 and 1,000, T = 16)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per method (median reported)")
    ap.add_argument("--full-lp-max", type=int, default=1_000,
                    help="solve the full per-EV LP reference up to this N (10,000 takes minutes)")
    ap.add_argument("--lp-budget", type=float, default=600.0, help="time budget of the reference LP (s)")
    ap.add_argument("--load", type=float, default=1.0, help="commitment as a fraction of the bound's max level")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--worker", nargs=2, type=int, metavar=("N", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        n, T = args.worker
        rows = worker(n, T, args.repeats, args.full_lp_max, args.load, args.seed, args.lp_budget)
        print(json.dumps(rows))
        return 0

    configs = QUICK if args.quick else FULL
    print(f"allocator benchmark: {os.cpu_count()} CPUs, repeats={args.repeats}, load={args.load}, "
          f"dt={DT} h, full LP up to N={args.full_lp_max}")
    print(HEADER)
    all_rows = []
    for n, T in configs:
        cmd = [sys.executable, "-m", "benchmarks.allocator", "--worker", str(n), str(T), "--repeats", str(args.repeats),
               "--full-lp-max", str(args.full_lp_max), "--load", str(args.load), "--seed", str(args.seed),
               "--lp-budget", str(args.lp_budget)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{n:>7d} {T:>3d} worker failed:\n{res.stderr[-2000:]}")
            continue
        rows = json.loads(res.stdout.strip().splitlines()[-1])
        for r in rows:
            print(fmt_row(r), flush=True)
        all_rows += rows
    print()
    print("targets (method auto = what the dispatcher gets):")
    for line in check_targets(all_rows):
        print("  " + line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(all_rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
