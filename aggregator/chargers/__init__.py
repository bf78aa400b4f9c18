"""Charger drivers behind one event-driven port (port.py): commands resolve to
acknowledgements, stations push sessions and meter samples."""
from aggregator.chargers.port import (Ack, ChargerPort, CommandResult, MeterSample, SessionEnded, SessionStarted,
                                      Setpoint, StationEvent, StationEventSink, StationOffline, StationOnline,
                                      VehicleIdentified, VehicleInfo)

__all__ = ["Ack", "ChargerPort", "CommandResult", "MeterSample", "SessionEnded", "SessionStarted", "Setpoint",
           "StationEvent", "StationEventSink", "StationOffline", "StationOnline", "VehicleIdentified", "VehicleInfo"]
