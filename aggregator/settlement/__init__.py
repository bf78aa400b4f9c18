"""Settlement: what the fleet delivered against what it committed, and what it earns.

Pure core (no I/O, no clock — time is passed in):

- ``calendar``     local days, DST, holidays, hour-beginning/ending labels
- ``delivery``     energy over an interval from cumulative meter registers
- ``baseline``     one parameterised customer-baseline engine (CAISO/PJM/NYISO presets)
- ``performance``  committed vs delivered per interval and event; result types
- ``engine``       settle one event (device metering or premise baseline), versioned re-settlement
- ``payments``     capacity payment with a performance factor; ConnectedSolutions season

Edges:

- ``store``        the ``SettlementRun`` table (versioned runs) and its queries
- ``report``       ``settle_from_ledger``, table/CSV/JSON/PNG output, the ``v2x settle`` command
"""
