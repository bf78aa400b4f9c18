"""Charger drivers: the `Charger` protocol (base.py) and its implementations."""
from aggregator.chargers.base import Charger, ChargerReading, ChargerUnavailable

__all__ = ["Charger", "ChargerReading", "ChargerUnavailable"]
