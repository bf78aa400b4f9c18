"""A CSMS on 127.0.0.1 (port 0) in front of a fleet registry on SQLite, and the
scenario's stations as OCPP clients."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from aggregator.fleet_state.registry import FleetRegistry
from aggregator.ocpp.credentials import StationDirectory
from aggregator.ocpp.csms import Csms
from aggregator.store.db import make_engine
from sim.ocpp_station import OcppSimulatedFleet


class Recorder:
    """A sink that records every station event and forwards it to the registry."""

    def __init__(self, registry):
        self.registry = registry
        self.events = []

    def on_station_event(self, event):
        self.events.append(event)
        self.registry.on_station_event(event)

    def register_station(self, spec):
        self.registry.register_station(spec)

    def of(self, kind, station_id=None):
        return [e for e in self.events if isinstance(e, kind) and (station_id is None or e.station_id == station_id)]


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'ocpp.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


async def start_world(engine, now, *, charge_only=frozenset(), behaviours=None, security_profile=0,
                      ssl_context=None, directory=None, command_timeout=2.0, limit=None, **csms_options):
    registry = FleetRegistry(engine)
    fleet = OcppSimulatedFleet("default", now, charge_only=set(charge_only), behaviours=behaviours,
                               sample_interval=__import__("datetime").timedelta(seconds=5))
    if limit:
        fleet.clients = dict(list(fleet.clients.items())[:limit])
    registry.register_vehicles(fleet.specs)
    sink = Recorder(registry)
    csms = Csms(sink, directory or StationDirectory(fleet.directory_entries()), security_profile=security_profile,
                ssl_context=ssl_context, port=0, command_timeout=command_timeout, **csms_options)
    await csms.start()
    return registry, sink, csms, fleet
