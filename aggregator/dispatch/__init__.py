"""The control loop: commitments + fleet state -> allocator -> charger setpoints -> ledger."""
