"""Simulation for demos, tests and benchmarks: simulated fleets, stations and the utility VTN (not part of the product)."""
