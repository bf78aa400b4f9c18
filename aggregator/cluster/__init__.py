"""Several instances on one PostgreSQL (REFERENCE §9; README "Deployment and scale-out").

- `lease.py`: one lease per partition (the VEN account an instance serves) with a fencing
  token; every write of the leaseholder's dispatcher is fenced (refused once the lease
  has a newer token).
- `commands.py`: the command path to whichever instance holds a station's socket:
  the `station_command` table plus LISTEN/NOTIFY (`notify.py`), and that instance's
  `Gateway`, which refuses a command carrying an older token.
- `relay.py`: station events from the instance holding the socket to the leaseholder.
- `fenced_ledger.py`: the leaseholder's ledger writer.
- `runner.py`: `v2x run` with `[cluster] enabled` (standby until it holds the lease).
"""
