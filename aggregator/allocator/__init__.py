"""The allocator: how much each parked EV charges or discharges in every interval.

Pure core: plain numpy in, plain numpy out, no I/O, no clock of its own.

Units: power kW, energy kWh, time in hours relative to the plan start (t = 0).
Sign: positive = the vehicle imports (charges), negative = it exports.

Public API
----------
FleetArrays, FleetValidationError, validate_fleet   -- input and its checks (fleet.py)
Targets, AllocatorOptions, Plan                     -- targets, options, result (types.py)
allocate(fleet, targets, options) -> Plan           -- the planner (api.py)
deliverable_export_bound_kw(fleet, durations_h[, site_export_limit_kw])
                                                    -- O(N) closed-form export bound (bound.py)

Methods (``AllocatorOptions.method``)
-------------------------------------
"lp"           per-EV LP (identical EVs merged losslessly) built in bulk from
               scipy CSR and solved by GLOP or HiGHS (lp.py).
"cluster"      EVs binned by (departure, headroom, need/room, discharge ratio,
               site) into a few hundred units, unit LP with per-site rows,
               event-aware split that keeps every site within its limits
               and, inside commitments, follows the LP's per-site totals
               (cluster.py).  Long horizons: the unit LP runs on merged
               periods (uncommitted stretches with equal limits and prices,
               timegrid.py), its plan spread back onto the intervals.
"greedy"       event-aware rule; also the fallback when the solver exceeds
               ``time_budget_s`` (method reported as "greedy-fallback").
"proportional", "llf"  baselines (heuristics.py).
"auto"         "lp" when the fleet has at most ``lp_max_evs`` distinct EVs,
               else the greedy plan when it meets every commitment and need
               (no prices; also after its short block is re-planned per EV,
               see below); else, with every caller interval committed and
               no prices, the better of the commitment split rule (which
               does not use a unit plan there; method "split-rule") and
               greedy -- under import ceilings alone greedy only -- without
               the cluster LP; else the best of the cluster splits and
               greedy.  "auto" and "cluster" then re-plan per EV any
               commitment block that falls short (repair.py): all its EVs
               when few (EVs x LP periods <= 10,000: an event late in a
               day, after most EVs left), else the EVs at the sites with
               export headroom in its short intervals (<= 2,000), or up to
               30,000 for a block of at most a quarter of the fleet that
               misses its closed-form bound by > 2 % of its commitment
               (a larger one: the EVs plugged in during its short intervals
               and those that can give most in its other intervals, up to
               10,000); the re-plan is kept only when it is better.  What an export
               block still misses is then exchanged (exchange.py, <= 50 ms,
               up to 100,000 EVs x intervals): EVs that can give more in a
               short interval move export (or charging) there from another
               interval of the block, and EVs with energy to spare -- or
               that charge it back after the block -- give what that other
               interval then misses; kept only when better (skipped for a
               block already at its closed-form bound).

Objective order: departure energy (hard when feasible) >> commitment shortfall
>> price >> battery wear >> fairness (identical EVs get identical shares;
charging toward the need happens as early as possible).

Sites
-----
``FleetArrays.site`` puts every EV behind a site (index 0..S-1).
``Targets.site_import_limit_kw`` / ``site_export_limit_kw`` are (S,) constant
or (S, T) per-interval limits (a feeder derated for an hour, the headroom a
building load leaves on the transformer); inf = no limit, and EVs at a site
index without a row are behind no limit.  ``Targets.price`` is (T,) or (S, T)
(sites on different tariffs).  Site limits are hard: every method keeps every
site within its limits in every interval, and a site at its export limit
hands the rest of the ask to the other sites.  When an import limit is below
what departure needs force, the needs fall short (reported per EV) rather
than the limit being exceeded.  Malformed limits or prices raise ValueError
naming the site and the interval.

When a commitment exceeds what the fleet can do
-----------------------------------------------
``allocate`` never raises on an infeasible commitment.  It delivers as much
of it as the fleet can without leaving a driver short whose need is
reachable and without exceeding any charger, battery or site limit, and
reports the rest per interval in ``Plan.shortfall_kw`` (kW above the ceiling).
``Plan.bound_kw`` is the site-limited closed-form bound on what each interval
alone could reach, and ``bound.shortfall_lower_bound_kwh`` the shortfall no
plan can avoid, so the caller can tell an over-commitment (unavoidable) from
a poor plan.  Drivers come first: energy their departure needs is never
spent on a commitment.
"""

from .api import allocate
from .bound import deliverable_export_bound_kw
from .fleet import FleetArrays, FleetValidationError, validate_fleet
from .types import AllocatorOptions, Plan, Targets

__all__ = [
    "AllocatorOptions",
    "FleetArrays",
    "FleetValidationError",
    "Plan",
    "Targets",
    "allocate",
    "deliverable_export_bound_kw",
    "validate_fleet",
]
