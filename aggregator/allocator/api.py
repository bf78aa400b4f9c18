"""`allocate`: validation, method choice, solve, and the Plan."""

from __future__ import annotations

import time

import numpy as np

from .bound import lowest_import_kw
from .cluster import aggregate, bin_groups, exact_groups, split_equal, split_plan
from .fleet import FleetArrays, validity_mask
from .heuristics import ceiling_blocks, plan_rule
from .horizon import Problem, build_problem, energy_at, simulate
from .lp import solve_units
from .exchange import exchange_exports
from .repair import repair_blocks, within_limits
from .timegrid import coarsen, expand, period_edges
from .types import AllocatorOptions, Plan, Targets

__all__ = ["allocate", "default_max_units"]

_TOL = 1e-6
#: longest merged LP period of the cluster path (hours; timegrid.py).  2 h
#: kept the split within 0.01 pp of the unmerged LP at 1,000 EVs x 96 on the
#: benchmark's event family while cutting the LP from 96 periods to ~23
MERGE_HOURS = 2.0
#: a short commitment block whose EVs x LP periods (REPAIR_MERGE_HOURS grid)
#: are at most this is re-planned per EV (repair.py; ~550 EVs on a day-long
#: horizon of 18 periods)
REPAIR_MAX_SIZE = 10_000
#: the same for the EVs at sites with export headroom when the whole block is
#: larger (50 EVs behind no site limit x 16-18 periods: 0.04-0.06 s)
REPAIR_SITE_MAX_SIZE = 2_000
#: ... and for a block falling short of its closed-form bound by more than
#: 2 % of its committed energy (a poor plan, not an over-commitment:
#: sites-precharge 10,000 x 96 seed 1, ~1,000 EVs: 4.3 pp -> 0, +1 s); a
#: poor block larger than this is re-planned on the EVs plugged in during its
#: short intervals plus the block EVs with the most to give, REPAIR_MAX_SIZE
#: in all (sites-precharge 100,000 x 96 seed 1, ~9,700 block EVs: 441 + 114
#: EVs, 2.8 pp -> 0, and the cluster LP is skipped: 3.8 -> 2.1 s)
REPAIR_POOR_MAX_SIZE = 30_000
#: longest merged LP period of the per-EV re-plans (the cluster LP keeps
#: MERGE_HOURS): 4 h (18 periods instead of 23 on the day-long benchmark
#: fleets) halved the ~1,000-EV re-plan of sites-precharge 10,000 x 96 seed 1
#: (GLOP 1.23 -> 0.55 s; seed 2, 391 EVs: 0.18 -> 0.11 s), both still without
#: shortfall; same plan quality on the event and pre-charge families at 1,000
#: EVs, seeds 1-10
REPAIR_MERGE_HOURS = 4.0


def default_max_units(n: int) -> int:
    """Cluster-LP size used by method "cluster" when `cluster_bins` is not set."""
    if n <= 2_000:
        return 120
    if n <= 20_000:
        return 200
    return 300


def _score(prob: Problem, P: np.ndarray) -> tuple[float, float, float]:
    """Lexicographic plan quality: (departure shortfall, commitment shortfall, cost).

    Remembered per plan array (the last few, by identity: no plan is changed
    in place once scored), since the same candidate is compared several times."""
    memo = prob.cache.setdefault("score", [])
    for Q, sc in memo:
        if Q is P:
            return sc
    sc = _score_of(prob, P)
    memo.append((P, sc))
    del memo[:-4]
    return sc


def _score_of(prob: Problem, P: np.ndarray) -> tuple[float, float, float]:
    e = energy_at(prob, P, P.shape[1], within_chargers=True)
    dep = float(np.sum(np.maximum(0.0, prob.need - e)))
    fleet = P[:, : prob.T].sum(axis=0)
    tgt = prob.target
    short = np.where(prob.committed, np.maximum(0.0, fleet - np.nan_to_num(tgt)), 0.0)
    if prob.over_kw is not None:
        short = short + np.where(prob.committed, np.maximum(0.0, np.nan_to_num(tgt) - prob.over_kw - fleet), 0.0)
    sk = float(np.sum(short * prob.dur[: prob.T]))
    cost = prob.wear * float(np.sum(np.abs(P) * prob.dur[None, :]))
    if prob.has_price:
        cost += float(np.sum(P * prob.price[prob.site] * prob.dur[None, :]))
    scale = 1e-6 * max(1.0, float(np.sum(prob.cap)))
    return (round(dep / scale), round(sk / scale), cost)


def _greedy_is_optimal(prob: Problem, P: np.ndarray) -> bool:
    """True when plan P cannot be improved on in the objective's first two
    terms and there is no price to optimise: no commitment shortfall, and no
    departure shortfall beyond what charging flat out from now cannot fix."""
    if prob.has_price:
        return False
    dep, short, _ = _score(prob, P)
    if short > 0:
        return False
    reach = np.minimum(prob.cap, prob.e0 + prob.etac * prob.pc * prob.dep)
    unavoidable = float(np.sum(np.maximum(0.0, prob.need - reach)))
    scale = 1e-6 * max(1.0, float(np.sum(prob.cap)))
    return dep <= round(unavoidable / scale)


def greedy_plan(prob: Problem) -> np.ndarray:
    """The event-aware greedy plan.  Under import ceilings the backward
    ceiling plan usually wins, but with uneven ceilings the forward
    least-laxity rule sometimes does, so both run and the better is kept."""
    P = plan_rule(prob, "greedy")
    blocks = ceiling_blocks(prob)
    if not blocks or all(np.ptp(prob.target[a:b]) <= 1e-9 * (1.0 + abs(prob.target[a])) for a, b in blocks):
        # constant ceilings: the backward plan beat the forward rule on every
        # benchmark fleet (legacy-flat, sites-flat, sites-over at T = 96, by
        # 4-50x in commitment shortfall), so the forward rule is not run
        return P
    Q = plan_rule(prob, "greedy", plan_ceilings=False)
    return Q if _score(prob, Q) < _score(prob, P) else P


def _site_limited_bound(prob: Problem, fleet: FleetArrays, durations: np.ndarray) -> np.ndarray:
    """(T,) lowest fleet import per interval taken alone, with the site limits
    applied: a site never exports more than its export limit, and never
    imports more than its import limit (even where its EVs' needs would force
    more charging: those needs then fall short instead)."""
    per = lowest_import_kw(fleet, durations, per_ev=True)  # (N, T)
    T = per.shape[1]
    exp, imp = prob.site_exp[:, :T], prob.site_imp[:, :T]
    if not (np.isfinite(exp).any() or np.isfinite(imp).any()):
        return per.sum(axis=0)
    by_site = prob.by_site(per)
    return np.minimum(np.maximum(by_site, -exp), imp).sum(axis=0)


def _repair(prob: Problem, P: np.ndarray, budget_s: float, exchange: bool = True) -> tuple[np.ndarray, int]:
    """Short commitment blocks of plan P re-planned per EV (see repair.py), within what
    is left of the time budget (at least 50 ms), then (with ``exchange``)
    what is still short moved between intervals and EVs (exchange.py)."""
    P, n_rep = repair_blocks(prob, P, _score, REPAIR_MAX_SIZE, max(0.05, budget_s), merge_hours=REPAIR_MERGE_HOURS,
                             site_max_size=REPAIR_SITE_MAX_SIZE, poor_max_size=REPAIR_POOR_MAX_SIZE)
    if not exchange:
        return P, n_rep
    Q, moves = exchange_exports(prob, P)
    if moves and within_limits(prob, Q, np.arange(prob.n)) and _score(prob, Q) < _score(prob, P):
        return Q, n_rep + 1
    return P, n_rep


def allocate(fleet: FleetArrays, targets: Targets, options: AllocatorOptions = AllocatorOptions()) -> Plan:
    """Plan every plugged-in EV's power for the caller's intervals.

    Validates the fleet first: invalid EVs get zero power, are listed in
    ``Plan.infeasible_ids`` and explained in ``Plan.errors``; the rest is
    planned.  Never raises on infeasible targets or needs -- the plan is then
    best effort and reports ``shortfall_kw`` per interval and
    ``departure_shortfall_kwh`` per EV.  Malformed inputs (shape mismatches)
    raise ValueError.

    Objective order: departure energy (hard when feasible) >> commitment
    shortfall >> price >> battery wear >> fairness.  The plan covers the
    caller's intervals plus coarse tail interval(s) up to the latest departure
    (so needs beyond the horizon are guaranteed); only the caller's T columns
    are returned.  Re-solve at every interval boundary (receding horizon).
    """
    t_start = time.perf_counter()
    n_all = len(fleet)
    T = targets.n_intervals
    ok, errors = validity_mask(fleet, 0.0, targets.n_sites)
    valid = fleet if ok.all() else fleet.subset(ok)
    bad_ids = tuple(str(x) for x in fleet.ids[~ok])
    n = len(valid)

    def full_fleet(power, setpoint, dep_short, energy):
        """Per-EV outputs over the caller's whole fleet, the invalid EVs idle
        (column-major like the plans when every EV is valid: the dispatcher
        reads the first interval's column)."""
        if ok.all():
            return power, setpoint, dep_short, energy
        out = (np.zeros((n_all, T)), np.zeros((n_all, T)), np.zeros(n_all),
               np.tile(fleet.energy_kwh[:, None], (1, T + 1)))
        for full, part in zip(out, (power, setpoint, dep_short, energy)):
            full[ok] = part
        return out

    target = targets.import_kw
    if n == 0:
        power_all, setpoint_all, dep_short_all, energy_all = full_fleet(
            np.zeros((0, T)), np.zeros((0, T)), np.zeros(0), np.zeros((0, T + 1)))
        fleet_kw = np.zeros(T)
        return Plan(power_kw=power_all, fleet_kw=fleet_kw,
                    shortfall_kw=np.where(np.isnan(target), 0.0, np.maximum(0.0, fleet_kw - np.nan_to_num(target))),
                    departure_shortfall_kwh=dep_short_all, bound_kw=np.zeros(T), method="empty",
                    build_seconds=time.perf_counter() - t_start, solve_seconds=0.0,
                    infeasible_ids=bad_ids, errors=tuple(errors), setpoint_kw=setpoint_all,
                    ids=fleet.ids, energy_kwh=energy_all)

    prob = build_problem(valid, targets, options)
    method = options.method
    notes: list[str] = []
    status = ""
    n_units = 0
    split_s = 0.0
    labels = K = None
    auto = method == "auto"
    if method == "auto":
        # distinct energies alone already rule the per-EV LP out on large fleets
        if np.unique(prob.e0).size > options.lp_max_evs:
            method = "cluster"
        else:
            labels, K = exact_groups(prob)
            method = "lp" if K <= options.lp_max_evs else "cluster"

    t_built = time.perf_counter()
    build_s = t_built - t_start
    solve_s = 0.0
    G = None
    if auto and method == "cluster":
        # the event-aware greedy plan first (O(N T)): when it already meets
        # every commitment, leaves no driver short beyond what charging flat
        # out cannot fix and there are no prices to optimise, no plan is
        # better and the cluster LP is skipped
        t1 = time.perf_counter()
        G = greedy_plan(prob)
        split_s += time.perf_counter() - t1
        repaired = False
        if REPAIR_MAX_SIZE > 0 and not prob.has_price and not (prob.T and prob.committed.all()) \
                and not _greedy_is_optimal(prob, G):
            # where the cluster LP would run next: a short block the few EVs
            # behind it (or at sites with export headroom) can fix, re-planned
            # per EV -- when that makes the greedy plan optimal the cluster LP
            # is skipped as well (sites-event 1,000 x 16: 7 of 10 seeds)
            t1 = time.perf_counter()
            # (no exchange here: it made no greedy plan optimal on the benchmark)
            G2, n_rep = _repair(prob, G, options.time_budget_s - (time.perf_counter() - t_start), exchange=False)
            split_s += time.perf_counter() - t1
            if n_rep and _greedy_is_optimal(prob, G2):
                G, repaired = G2, True
        if repaired or _greedy_is_optimal(prob, G):
            method = "greedy"
            notes.append("auto: the greedy plan meets every commitment and need"
                         + (" once its short block is re-planned per EV" if repaired else "") + "; cluster LP skipped")
        elif prob.T and prob.committed.all() and not prob.has_price:
            # every caller interval committed, no prices: inside commitments
            # the split's rule does not use the unit plan (only the tail after
            # the horizon would, where forced charging serves the needs), so
            # its plan is the same without the LP -- measured identical on
            # every benchmark flat / 130 % fleet, where the LP-following
            # site split never beat it or the greedy plan; the LP is skipped.
            # (Only where some interval asks for export: under import
            # ceilings alone the rule, made for export blocks, lost to the
            # greedy backward ceiling plan on every benchmark fleet -- 7-13 pp
            # from the LP optimum on sites-flat / sites-over 1,000 x 96 -- so
            # only the greedy plan runs there)
            Q = None
            if np.any(prob.target < 0):
                t1 = time.perf_counter()
                capped_any = bool(np.isfinite(prob.site_exp[:, : prob.T]).any())
                Q = split_plan(prob, np.zeros(n, dtype=np.int64), 1, np.zeros((1, prob.Tx)),
                               follow_sites=False, keep_block_req=capped_any)
                split_s += time.perf_counter() - t1
            if Q is not None and _score(prob, Q) < _score(prob, G):
                G = Q
                method = "split-rule"
            else:
                method = "greedy"
            notes.append("auto: every interval committed and no prices; cluster LP skipped, best of the "
                         "commitment split rule and the greedy plan kept")
    if method in ("lp", "cluster"):
        if method == "lp":
            if labels is None:
                labels, K = exact_groups(prob)
        lp_prob, edges = prob, None
        if method == "cluster":
            # long horizons: uncommitted stretches with the same limits and
            # prices become one LP period each (timegrid.py)
            e_ = period_edges(prob, MERGE_HOURS)
            if e_.size - 1 < prob.Tx:
                edges = e_
                lp_prob = coarsen(prob, edges)
                notes.append(f"cluster LP on {edges.size - 1} periods for {prob.Tx} intervals")
            max_units = options.cluster_bins or default_max_units(n)
            labels, K = bin_groups(lp_prob, max_units)
        n_units = K
        t0 = time.perf_counter()
        units = aggregate(lp_prob, labels, K)
        budget = options.time_budget_s - (time.perf_counter() - t_start)
        res = solve_units(units, lp_prob, options.solver, max(budget, 0.01), options.solver_params)
        build_s += time.perf_counter() - t0 - res.solve_seconds
        solve_s = res.solve_seconds
        status = res.status
        if res.ok:
            t1 = time.perf_counter()
            if method == "lp":
                P = split_equal(res.power, labels, K)
            else:
                # portfolio: the split cluster plan and the event-aware
                # greedy plan are both feasible; keep the better by
                # (departure shortfall, commitment shortfall, cost)
                unit_power = res.power if edges is None else expand(prob, edges, labels, K, res.charge, res.discharge)
                P = split_plan(prob, labels, K, unit_power, keep_block_req=False)
                if np.isfinite(prob.site_exp[:, : prob.T]).any() and prob.committed.mean() >= 0.5:
                    # (only where most intervals are committed: on the event
                    # families it never won, and costs as much as the split)
                    # following the LP's site totals inside commitments wins on
                    # events; on flat and over-committed targets the plain
                    # split that never exports below what an EV must hold at
                    # the block end wins (sites-over 1,000 x 16: 0.52-0.74 pp
                    # -> 0.08-0.29 pp from the LP optimum): keep the better
                    Q = split_plan(prob, labels, K, unit_power, follow_sites=False, keep_block_req=True)
                    if _score(prob, Q) < _score(prob, P):
                        P = Q
                if G is None:
                    G = greedy_plan(prob)
                if _score(prob, G) < _score(prob, P):
                    P = G
                    notes.append("cluster portfolio: greedy plan beat the split cluster plan")
                    method = "cluster/greedy"
            split_s += time.perf_counter() - t1
        else:
            notes.append(f"{method} solver status {res.status} within {options.time_budget_s:g} s: greedy fallback")
            t1 = time.perf_counter()
            P = greedy_plan(prob) if G is None else G
            split_s += time.perf_counter() - t1
            method = "greedy-fallback"
    elif G is not None:
        P = G
    else:
        t1 = time.perf_counter()
        P = greedy_plan(prob) if method == "greedy" else plan_rule(prob, method)
        solve_s = time.perf_counter() - t1

    if (auto or options.method == "cluster") and method != "lp" and REPAIR_MAX_SIZE > 0:
        # a short commitment block that few EVs can serve: re-plan it per EV
        t1 = time.perf_counter()
        P, n_rep = _repair(prob, P, options.time_budget_s - (time.perf_counter() - t_start))
        split_s += time.perf_counter() - t1
        if n_rep:
            notes.append(f"{n_rep} short commitment block(s) served by few EVs re-planned per EV")

    # ---- sanitize and report ---------------------------------------------------------
    P = np.clip(P, -prob.dmax, prob.cmax)
    E = simulate(prob, P)
    dip = np.any(E[:, 1:] < np.minimum(prob.lb, prob.e0)[:, None] - 1e-9, axis=1)
    if dip.any():
        # solver noise: the LP's hair of slack on energy bounds lets an EV at
        # its floor export a few mW; such exports are dropped
        Pd = P[dip]
        P[dip] = np.where((Pd < 0) & (Pd > -1e-4), 0.0, Pd)
        E = simulate(prob, P)
    dep_short = np.maximum(0.0, prob.need - E[:, -1])
    dep_short[dep_short < _TOL * np.maximum(1.0, prob.need)] = 0.0
    power = P[:, :T]
    fleet_kw = power.sum(axis=0)
    shortfall = np.where(np.isnan(target), 0.0, np.maximum(0.0, fleet_kw - np.nan_to_num(target)))
    # solver noise only: relative to the fleet's power, but never more than 5 mW (tests compare at 1e-5 kW)
    shortfall[shortfall < min(_TOL * max(1.0, float(np.abs(fleet_kw).max(initial=0.0))), 5e-6)] = 0.0
    frac = prob.frac[:, :T]
    with np.errstate(divide="ignore", invalid="ignore"):
        setpoint = np.where(frac > 0, power / np.where(frac > 0, frac, 1.0), 0.0)
    bound = _site_limited_bound(prob, valid, targets.durations_h)

    power_all, setpoint_all, dep_short_all, energy_all = full_fleet(power, setpoint, dep_short, E[:, : T + 1])
    return Plan(power_kw=power_all, fleet_kw=fleet_kw, shortfall_kw=shortfall,
                departure_shortfall_kwh=dep_short_all, bound_kw=bound, method=method,
                build_seconds=build_s, solve_seconds=solve_s, infeasible_ids=bad_ids,
                errors=tuple(errors), setpoint_kw=setpoint_all, ids=fleet.ids, energy_kwh=energy_all,
                split_seconds=split_s, solver_status=status, n_clusters=n_units, notes=tuple(notes))
