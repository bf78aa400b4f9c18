"""Bulk LP build and solve (OR-Tools model_builder, GLOP or HiGHS).

The LP is built over *units*: single EVs (the per-EV LP) or clusters of EVs
(the cluster LP, see `cluster.py`).  Every array is produced with numpy and
handed to ``ModelBuilderHelper.fill_model_from_sparse_data`` as one scipy CSR
matrix -- there is no Python loop per variable or per constraint.

Per unit u and interval t (extended horizon, Tx intervals):
    0 <= c[u,t] <= cmax[u,t]        grid kWh/h charged   (average kW)
    0 <= d[u,t] <= dmax[u,t]        grid kW discharged   (magnitude)
    lb[u] <= e[u,t] <= cap[u]       energy at the end of interval t
    e[u,t] = e[u,t-1] + dur[t] * (etac[u] c[u,t] - d[u,t] / etad[u])   (e[u,-1] = e0[u])
    e[u,Tx-1] + z[u] >= need[u],  z >= 0   (departure shortfall, heavily penalised)
Per committed caller interval t:
    target[t] - over <= sum_u (c - d)[u,t] - s[t] + o[t] <= target[t],  s, o >= 0
Per site with a finite limit and every interval:
    -export_limit[s,t] <= sum_{u in site} (c - d)[u,t] <= import_limit[s,t]
Objective (minimise):
    w_dep * sum z + w_short * sum dur (s + o) + sum dur * price[site] (c - d)
    + wear * sum dur (c + d) + tiny * sum dur * start_time * c
The last term makes charging toward the need happen as early as possible
(robust under the receding horizon) and breaks ties between equal plans.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from ortools.linear_solver.python import model_builder_helper as mbh

from .horizon import Problem

__all__ = ["Units", "LPResult", "units_from_problem", "solve_units"]

#: objective coefficient per kWh charged per hour of delay (tie-breaker)
EARLY_CHARGE_EPS = 1e-6


@dataclass
class Units:
    """LP units: EVs or clusters.  All arrays (U,) except cmax/dmax (U, Tx)."""

    e0: np.ndarray
    cap: np.ndarray
    lb: np.ndarray
    need: np.ndarray
    cmax: np.ndarray
    dmax: np.ndarray
    etac: np.ndarray   # (U,) or (U, Tx)
    etad: np.ndarray   # (U,) or (U, Tx)
    site: np.ndarray
    e_lo: np.ndarray | None = None   # (U, Tx) optional end-of-interval energy bounds
    e_hi: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.e0.size)


@dataclass
class LPResult:
    power: np.ndarray           # (U, Tx) c - d
    charge: np.ndarray          # (U, Tx)
    discharge: np.ndarray       # (U, Tx)
    energy: np.ndarray          # (U, Tx) end-of-interval energy
    dep_short: np.ndarray       # (U,)
    status: str
    ok: bool
    build_seconds: float
    solve_seconds: float
    n_vars: int
    n_rows: int


def units_from_problem(prob: Problem) -> Units:
    emin, emax = prob.envelope()
    return Units(e0=prob.e0, cap=prob.cap, lb=prob.lb, need=prob.need, cmax=prob.cmax,
                 dmax=prob.dmax, etac=prob.etac, etad=prob.etad, site=prob.site, e_lo=emin, e_hi=emax)


def _build(units: Units, prob: Problem):
    U, Tx, T = units.n, prob.Tx, prob.T
    dur = prob.dur
    blk = 3 * Tx
    base = (np.arange(U, dtype=np.int64) * blk)[:, None]
    tt = np.arange(Tx, dtype=np.int64)[None, :]
    cidx = base + tt
    didx = base + Tx + tt
    eidx = base + 2 * Tx + tt
    nvu = U * blk
    zidx = nvu + np.arange(U, dtype=np.int64)
    sidx = nvu + U + np.arange(T, dtype=np.int64)
    oidx = sidx + T
    nv = nvu + U + 2 * T

    # ---- variable bounds and objective ------------------------------------------
    lo = np.zeros(nv)
    hi = np.empty(nv)
    obj = np.zeros(nv)
    cmax = np.maximum(units.cmax, 0.0)
    dmax = np.maximum(units.dmax, 0.0)
    hi[cidx.ravel()] = cmax.ravel()
    hi[didx.ravel()] = dmax.ravel()
    e_lo = units.e_lo if units.e_lo is not None else np.broadcast_to(units.lb[:, None], (U, Tx))
    e_hi = units.e_hi if units.e_hi is not None else np.broadcast_to(np.maximum(units.cap, units.lb)[:, None], (U, Tx))
    # a hair of slack keeps summed bounds that touch (forced charging) feasible in floating point
    e_lo = np.minimum(e_lo, e_hi) - 1e-7 * (1.0 + np.abs(e_lo))
    lo[eidx.ravel()] = e_lo.ravel()
    hi[eidx.ravel()] = np.maximum(e_hi, e_lo).ravel()
    hi[zidx] = np.inf
    committed = prob.committed
    hi[sidx] = np.where(committed, np.inf, 0.0)
    over = prob.over_kw
    hi[oidx] = np.where(committed, np.inf, 0.0) if over is not None else 0.0

    price = prob.price[units.site]                          # (U, Tx): each unit pays its site's price
    obj[cidx.ravel()] = (dur[None, :] * (price + prob.wear + EARLY_CHARGE_EPS * prob.start[None, :])).ravel()
    obj[didx.ravel()] = (dur[None, :] * (-price + prob.wear)).ravel()
    obj[zidx] = prob.w_dep
    obj[sidx] = prob.w_short * dur[:T]
    obj[oidx] = prob.w_short * dur[:T]

    rows, cols, vals = [], [], []
    rlo, rhi = [], []

    # ---- energy balance: U*Tx rows ------------------------------------------------
    r = (np.arange(U, dtype=np.int64)[:, None] * Tx + tt)
    rows += [r.ravel(), r[:, 1:].ravel(), r.ravel(), r.ravel()]
    cols += [eidx.ravel(), eidx[:, :-1].ravel(), cidx.ravel(), didx.ravel()]
    etac = units.etac if units.etac.ndim == 2 else units.etac[:, None]
    etad = units.etad if units.etad.ndim == 2 else units.etad[:, None]
    vals += [np.ones(U * Tx), -np.ones(U * (Tx - 1)),
             np.broadcast_to(-dur[None, :] * etac, (U, Tx)).ravel(),
             np.broadcast_to(dur[None, :] / etad, (U, Tx)).ravel()]
    b = np.zeros((U, Tx))
    b[:, 0] = units.e0
    rlo.append(b.ravel())
    rhi.append(b.ravel())
    nr = U * Tx

    # ---- departure need: U rows -----------------------------------------------------
    r = nr + np.arange(U, dtype=np.int64)
    rows += [r, r]
    cols += [eidx[:, -1], zidx]
    vals += [np.ones(U), np.ones(U)]
    rlo.append(units.need.astype(np.float64))
    rhi.append(np.full(U, np.inf))
    nr += U

    # ---- fleet commitment rows -------------------------------------------------------
    ct = np.flatnonzero(committed)
    if ct.size:
        k = ct.size
        r = nr + np.arange(k, dtype=np.int64)
        rr = np.broadcast_to(r[None, :], (U, k)).ravel()
        rows += [rr, rr, r, r]
        cols += [cidx[:, ct].ravel(), didx[:, ct].ravel(), sidx[ct], oidx[ct]]
        vals += [np.ones(U * k), -np.ones(U * k), -np.ones(k), np.ones(k)]
        tgt = prob.target[ct]
        rlo.append(tgt - over if over is not None else np.full(k, -np.inf))
        rhi.append(tgt)
        nr += k

    # ---- site rows -----------------------------------------------------------------
    lim_sites = np.flatnonzero((np.isfinite(prob.site_imp) | np.isfinite(prob.site_exp)).any(axis=1))
    for s in lim_sites:  # loop over sites (few), not over variables
        members = np.flatnonzero(units.site == s)
        if members.size == 0:
            continue
        r = nr + np.arange(Tx, dtype=np.int64)
        rr = np.broadcast_to(r[None, :], (members.size, Tx)).ravel()
        rows += [rr, rr]
        cols += [cidx[members].ravel(), didx[members].ravel()]
        vals += [np.ones(members.size * Tx), -np.ones(members.size * Tx)]
        rlo.append(-prob.site_exp[s])
        rhi.append(prob.site_imp[s].copy())
        nr += Tx

    A = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nr, nv)
    )
    model = mbh.ModelBuilderHelper()
    model.fill_model_from_sparse_data(lo, hi, obj, np.concatenate(rlo), np.concatenate(rhi), A)
    return model, (cidx, didx, eidx, zidx), nv, nr


def solve_units(units: Units, prob: Problem, solver: str = "glop", time_limit_s: float = 2.0,
                params: str | None = None) -> LPResult:
    """Build and solve the LP for `units`; never raises on infeasible targets."""
    t0 = time.perf_counter()
    model, (cidx, didx, eidx, zidx), nv, nr = _build(units, prob)
    t1 = time.perf_counter()
    helper = mbh.ModelSolverHelper(solver)
    helper.set_time_limit_in_seconds(max(0.01, float(time_limit_s)))
    if params:
        helper.set_solver_specific_parameters(params)
    helper.solve(model)
    t2 = time.perf_counter()
    status = mbh.SolveStatus(helper.status())
    ok = status == mbh.SolveStatus.OPTIMAL and helper.has_solution()
    U, Tx = units.n, prob.Tx
    if ok or helper.has_solution():
        x = np.asarray(helper.variable_values())
        c = np.clip(x[cidx], 0.0, None)
        d = np.clip(x[didx], 0.0, None)
        e = x[eidx]
        z = np.clip(x[zidx], 0.0, None)
    else:
        c = d = e = np.zeros((U, Tx))
        z = np.zeros(U)
    return LPResult(power=c - d, charge=c, discharge=d, energy=e, dep_short=z,
                    status=status.name, ok=bool(ok), build_seconds=t1 - t0,
                    solve_seconds=t2 - t1, n_vars=nv, n_rows=nr)
