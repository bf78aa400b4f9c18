"""The allocator: how much each parked EV charges or discharges in every interval.

Pure core: plain numpy in, plain numpy out, no I/O, no clock of its own.

Units: power kW, energy kWh, time in hours relative to the plan start (t = 0).
Sign: positive = the vehicle imports (charges), negative = it exports.

Public API
----------
FleetArrays, FleetValidationError, validate_fleet   -- input and its checks (fleet.py)
Targets, AllocatorOptions, Plan                     -- targets, options, result (types.py)
allocate(fleet, targets, options) -> Plan           -- the planner (api.py)
deliverable_export_bound_kw(fleet, durations_h)     -- O(N) closed-form export bound (bound.py)

Methods (``AllocatorOptions.method``)
-------------------------------------
"lp"           per-EV LP (identical EVs merged losslessly) built in bulk from
               scipy CSR and solved by GLOP or HiGHS (lp.py).
"cluster"      EVs binned by (departure, headroom, need/room, discharge ratio,
               site) into a few hundred units, unit LP, event-aware split
               (cluster.py).
"greedy"       event-aware rule; also the fallback when the solver exceeds
               ``time_budget_s`` (method reported as "greedy-fallback").
"proportional", "llf"  baselines (heuristics.py).
"auto"         "lp" when the fleet has at most ``lp_max_evs`` distinct EVs,
               else "cluster".

Objective order: departure energy (hard when feasible) >> commitment shortfall
>> price >> battery wear >> fairness (identical EVs get identical shares;
charging toward the need happens as early as possible).
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
