"""Bidding and programme analytics: what the fleet can commit before the day.

- `history.py`: session history as arrays (`SessionTable`), `store.py` reads it from the database
- `forecast.py`: flexibility forecast as whole historical days resampled (day-level correlation
  kept), each EV's deliverable kW from the allocator's closed-form bound
- `sizing.py`: Q* = F⁻¹(p/(p+k)) and piecewise payment schedules; `programs.py` the programmes
- `bids.py`: bid records, JSON/CSV; `backtest.py`: a season sized, dispatched and settled
- `participation.py`: the programme evaluator's report; `intake.py`: arrivals expected during an
  event, for the VEN's opt decisions; `plots.py`, `cli.py`: PNGs and the `v2x` commands
"""
