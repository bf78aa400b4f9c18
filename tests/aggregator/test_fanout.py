"""The dispatcher's fan-out: every command resolves (late ones time out, a failing driver
is offline for that station only), and no garbage collection runs while commands are in
flight (resumed afterwards, also when fan-outs overlap)."""
import asyncio
import gc
from datetime import datetime, timedelta, timezone

from aggregator.chargers.port import Ack, CommandResult, Setpoint
from aggregator.dispatch.fanout import fan_out

NOW = datetime(2026, 7, 1, 17, tzinfo=timezone.utc)


class Port:
    def __init__(self, delays):
        self.delays = delays
        self.gc_seen = []

    async def command(self, setpoint):
        self.gc_seen.append(gc.isenabled())
        delay = self.delays[setpoint.station_id]
        if delay is None:
            raise RuntimeError("driver bug")
        await asyncio.sleep(delay)
        self.gc_seen.append(gc.isenabled())
        return CommandResult(setpoint.station_id, Ack.ACCEPTED)


def _setpoints(ids):
    return [Setpoint(i, 1.0, NOW, NOW + timedelta(minutes=1)) for i in ids]


async def test_every_command_resolves_and_collection_is_paused_meanwhile():
    assert gc.isenabled()
    port = Port({"a": 0.0, "b": 0.01, "slow": 5.0, "bug": None})
    results = await fan_out(port, _setpoints(["a", "b", "slow", "bug"]), deadline_s=0.2)
    assert [r.ack for r in results] == [Ack.ACCEPTED, Ack.ACCEPTED, Ack.TIMED_OUT, Ack.OFFLINE]
    assert "driver bug" in results[3].detail
    assert port.gc_seen and not any(port.gc_seen)
    assert gc.isenabled()


async def test_overlapping_fan_outs_resume_collection_only_after_the_last():
    port = Port({"x": 0.05, "y": 0.2})
    first = asyncio.ensure_future(fan_out(port, _setpoints(["x"]), deadline_s=1))
    second = asyncio.ensure_future(fan_out(port, _setpoints(["y"]), deadline_s=1))
    await first
    assert not gc.isenabled()   # the second is still in flight
    await second
    assert gc.isenabled()


async def test_collection_left_off_by_someone_else_stays_off():
    gc.disable()
    try:
        await fan_out(Port({"a": 0.0}), _setpoints(["a"]), deadline_s=1)
        assert not gc.isenabled()
    finally:
        gc.enable()
