"""Fleet state: the registry of stations, vehicles and open sessions (fed by
station events, written through to the database) and the read-only view the
VEN, the API and opt decisions use."""
from aggregator.fleet_state.registry import FleetRegistry, StationSpec
from aggregator.fleet_state.view import FleetView

__all__ = ["FleetRegistry", "FleetView", "StationSpec"]
