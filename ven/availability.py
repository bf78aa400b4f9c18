"""EiOpt availability (pure part + announcer): when can the fleet deliver?

From the plug-in sessions (each EV's departure and discharge power), the fleet
can export at least `min_export_kw` from now until the departure at which the
remaining discharge power falls below it. That window is announced with
oadrCreateOpt (optIn, vavailability); when it moves by more than `tolerance`
(EVs leave early, chargers drop, EVs arrive), the old opt is cancelled with
oadrCancelOpt and the new window announced. Future arrivals are unknown here,
so only the window starting now is announced.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


def availability_window(sessions: list[tuple[datetime, float]], now: datetime, min_export_kw: float,
                        horizon: timedelta = timedelta(hours=24)) -> Window | None:
    """`sessions`: (departs_at, discharge kW) of each connected EV. None if the fleet
    cannot give `min_export_kw` now."""
    remaining = sum(kw for departs, kw in sessions if departs > now)
    if remaining < min_export_kw or remaining <= 0:
        return None
    for departs, kw in sorted((s for s in sessions if s[0] > now), key=lambda s: s[0]):
        remaining -= kw
        if remaining < min_export_kw or remaining <= 1e-9:
            return Window(now, min(departs, now + horizon))
    return Window(now, now + horizon)


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


class AvailabilityAnnouncer:
    """Keeps one availability opt at the VTN in line with the fleet."""

    def __init__(self, client, market_context: str | None, min_export_kw: float = 1.0,
                 tolerance: timedelta = timedelta(minutes=5)):
        self.client = client
        self.market_context = market_context
        self.min_export_kw = min_export_kw
        self.tolerance = tolerance
        self.opt_id: str | None = None
        self.window: Window | None = None

    def _moved(self, new: Window | None) -> bool:
        if (new is None) != (self.window is None):
            return True
        if new is None:
            return False
        return abs(new.end - self.window.end) > self.tolerance

    async def refresh(self, sessions: list[tuple[datetime, float]], now: datetime) -> bool:
        """Announce, re-announce or withdraw; returns True if anything was sent."""
        from openleadr import objects
        new = availability_window(sessions, now, self.min_export_kw)
        if not self._moved(new):
            return False
        if self.opt_id is not None:
            await self.client.cancel_opt(self.opt_id)
            log.info("availability changed: cancelled opt %s", self.opt_id)
            self.opt_id = None
        self.window = new
        if new is None:
            return True
        start, end = _minute(new.start), _minute(new.end)
        availability = objects.Vavailability(components=[
            objects.VavailabilityComponent(dtstart=start, duration=max(end - start, timedelta(minutes=1)))])
        opt_id = await self.client.create_opt(
            opt_type="optIn", opt_reason="participating", targets=[objects.Target(ven_id=self.client.ven_id)],
            vavailability=availability, market_context=self.market_context)
        self.opt_id = opt_id or None
        log.info("announced availability %s -> %s (opt %s)", start.isoformat(), end.isoformat(), self.opt_id)
        return True
