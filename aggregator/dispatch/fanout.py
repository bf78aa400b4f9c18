"""Send many stations their setpoints at once: concurrent with a bound, each
with a deadline, every command resolving to an acknowledgement (never raising).
One outstanding command per station is the OCPP rule; the port serialises per
station, this fans out across stations."""
from __future__ import annotations

import asyncio
import logging

from aggregator.chargers.port import Ack, ChargerPort, CommandResult, Setpoint

log = logging.getLogger(__name__)


async def fan_out(port: ChargerPort, setpoints: list[Setpoint], *, concurrency: int = 500,
                  deadline_s: float = 5.0) -> list[CommandResult]:
    limit = asyncio.Semaphore(concurrency)

    async def one(setpoint: Setpoint) -> CommandResult:
        async with limit:
            try:
                return await asyncio.wait_for(port.command(setpoint), deadline_s)
            except asyncio.TimeoutError:
                return CommandResult(setpoint.station_id, Ack.TIMED_OUT, f"no answer within {deadline_s:g} s")
            except Exception as err:   # a driver bug must not stop the other stations
                log.exception("command to %s failed", setpoint.station_id)
                return CommandResult(setpoint.station_id, Ack.OFFLINE, f"{err.__class__.__name__}: {err}")

    return list(await asyncio.gather(*(one(s) for s in setpoints)))
