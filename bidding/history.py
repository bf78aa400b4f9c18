"""Session history as plain columns (pure): what the forecast, the backtest and the
participation report read. The database edge (`bidding.history_db`) and the
season generator (`sim.history`) both produce a `SessionTable`.

Times are UTC epoch seconds (float); energy kWh, power kW.  One row per plug-in
session with the vehicle's characteristics copied in (they rarely change and the
forecast must not join at every step).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["SessionTable", "Window", "epoch", "from_epoch", "OVERRIDE_NEED_FRACTION", "EARLY_DEPARTURE_S"]

#: A session whose need is at least this share of capacity counts as a driver override
#: ("charge me full"): the bound then leaves it almost nothing to export.
OVERRIDE_NEED_FRACTION = 0.995
#: Leaving this much before the announced departure counts as an early departure.
EARLY_DEPARTURE_S = 15 * 60.0


def epoch(ts: datetime) -> float:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.timestamp()


def from_epoch(s: float) -> datetime:
    return datetime.fromtimestamp(float(s), tz=timezone.utc)


@dataclass(frozen=True)
class SessionTable:
    """Plug-in sessions, one row each; every field an array of shape (N,)."""
    vehicle_id: np.ndarray          # object (str)
    kind: np.ndarray                # object (str)
    site: np.ndarray                # int
    arrived_s: np.ndarray
    departs_s: np.ndarray           # announced departure
    left_s: np.ndarray              # actual departure; NaN = still plugged in
    energy_at_arrival_kwh: np.ndarray
    need_kwh: np.ndarray
    capacity_kwh: np.ndarray
    floor_kwh: np.ndarray
    max_charge_kw: np.ndarray
    max_discharge_kw: np.ndarray
    eta_charge: np.ndarray
    eta_discharge: np.ndarray

    def __post_init__(self) -> None:
        n = len(np.asarray(self.vehicle_id))
        for f in fields(self):
            arr = np.asarray(getattr(self, f.name), dtype=object if f.name in ("vehicle_id", "kind")
                             else (np.int64 if f.name == "site" else np.float64)).reshape(-1)
            if arr.shape[0] != n:
                raise ValueError(f"SessionTable.{f.name} has {arr.shape[0]} rows, vehicle_id has {n}")
            object.__setattr__(self, f.name, arr)

    def __len__(self) -> int:
        return int(self.vehicle_id.shape[0])

    def subset(self, mask) -> "SessionTable":
        return SessionTable(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    @classmethod
    def concat(cls, tables: list["SessionTable"]) -> "SessionTable":
        if not tables:
            return cls.empty()
        return cls(**{f.name: np.concatenate([getattr(t, f.name) for t in tables]) for f in fields(cls)})

    @classmethod
    def empty(cls) -> "SessionTable":
        return cls(**{f.name: np.zeros(0) for f in fields(cls)})

    @property
    def end_s(self) -> np.ndarray:
        """When the vehicle was (or will be) gone: the actual departure, else the announced one,
        whichever is earlier (an early departure ends availability; the need applies then)."""
        return np.fmin(self.departs_s, np.where(np.isnan(self.left_s), np.inf, self.left_s))

    @property
    def override(self) -> np.ndarray:
        return self.need_kwh >= OVERRIDE_NEED_FRACTION * self.capacity_kwh

    @property
    def early_departure(self) -> np.ndarray:
        return np.nan_to_num(self.left_s, nan=np.inf) < self.departs_s - EARLY_DEPARTURE_S


@dataclass(frozen=True)
class Window:
    """A programme window: local clock hours on any day (e.g. 16:00-19:00 America/New_York)."""
    start_hour: float
    hours: int
    timezone: str = "America/New_York"

    def start_on(self, day: date) -> datetime:
        local = datetime.combine(day, time(0), tzinfo=ZoneInfo(self.timezone)) + timedelta(hours=self.start_hour)
        # re-localise so a DST day still starts at the same local clock hour
        local = local.replace(tzinfo=None).replace(tzinfo=ZoneInfo(self.timezone))
        return local.astimezone(timezone.utc)

    def hour_starts(self, day: date) -> list[datetime]:
        s = self.start_on(day)
        return [s + timedelta(hours=h) for h in range(self.hours)]

    def label(self, h: int) -> str:
        x = self.start_hour + h
        return f"{int(x):02d}:{int(round((x % 1) * 60)):02d}"
