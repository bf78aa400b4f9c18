"""Benchmark (not a test): from an oadrDistributeEvent arriving at the VEN to every
setpoint issued, for simulated fleets of 1,000 and 10,000 EVs.

Real peers on 127.0.0.1: the openleadr VTN simulator issues a LOAD_DISPATCH event
starting now; our VEN (openleadr transport, our rules engine, event store in
SQLite, the aggregator's intake) receives it on a 1 s poll; a control loop steps
the dispatcher (allocator + setpoints to every simulated charger) every
`tick`. Measured with `time.perf_counter()`:

  arrive   the poll's HTTP answer carrying the distribute has been read
  answered the oadrCreatedEvent went out (rules, opt decision, store, commitment)
  issued   the last EV's charger got its setpoint for the event (the step then writes the
           ledger; the whole step's time is shown too)

The poll wait (event queued -> poll) is excluded, as asked. Run: `v2x bench ven`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import random
import socket
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fleet(n: int, now: datetime, seed: int = 1):
    from aggregator.chargers.simulated import SimulatedCharger
    from aggregator.fleet import PlugIn, VehicleSpec
    rng = random.Random(seed)
    out = []
    for i in range(n):
        capacity = rng.choice((40.0, 60.0, 75.0, 100.0))
        kw = rng.choice((7.4, 11.0))
        spec = VehicleSpec(f"ev-{i:05d}", "car", capacity, 0.2 * capacity, kw, kw, 0.92, 0.92)
        energy = capacity * rng.uniform(0.45, 0.9)
        session = PlugIn(spec.id, now - timedelta(hours=1), now + timedelta(hours=rng.uniform(3, 10)),
                         need_kwh=min(capacity, energy + rng.uniform(0, 10)))
        out.append((spec, session, SimulatedCharger(spec, energy, now), energy))
    return out


async def run_once(n: int, vtn, folder: Path, tick: timedelta = timedelta(milliseconds=50)) -> dict:
    from aggregator.config import ProgramSettings
    from aggregator.dispatch.dispatcher import Dispatcher
    from aggregator.event_intake import EventIntake
    from aggregator.metrics import Metrics
    from aggregator.store.db import make_engine
    from ven.client import VenClient

    now = datetime.now(timezone.utc)
    engine = make_engine(f"sqlite:///{folder / f'bench-{n}-{time.monotonic_ns()}.db'}")
    dispatcher = Dispatcher(engine, Metrics(), meter_interval=timedelta(seconds=30))
    fleet = _fleet(n, now)
    dispatcher.plug_in_many(list(fleet))
    await dispatcher.step(now)                         # first meter read and idle plan
    last_setpoint = [0.0]

    def timed(charger):
        original = charger.apply_setpoint

        async def apply_setpoint(power_kw: float) -> None:
            await original(power_kw)
            last_setpoint[0] = time.perf_counter()
        charger.apply_setpoint = apply_setpoint
    for _spec, _session, charger, _energy in fleet:
        timed(charger)
    program = ProgramSettings()
    intake = EventIntake(dispatcher, engine, program, lambda: datetime.now(timezone.utc))
    ven = VenClient(vtn.url, f"bench-{n}-{random.randrange(1 << 30)}", intake,
                    lambda: dispatcher.status.fleet_power_kw, report_sampling=timedelta(seconds=60))
    marks: dict[str, float] = {}

    def on_receive(content: str) -> None:
        if "oadrDistributeEvent" in content and "oadrEvent" in content and "arrive" not in marks:
            marks["arrive"] = time.perf_counter()

    def on_send(content: str) -> None:
        if "oadrCreatedEvent" in content and "arrive" in marks and "answered" not in marks:
            marks["answered"] = time.perf_counter()

    ven.client.add_hook("after_receive_xml", on_receive)
    ven.client.add_hook("before_send_xml", on_send)
    await ven.start()
    stop = asyncio.Event()
    step_s: list[float] = []

    async def control_loop():
        while not stop.is_set():
            t = datetime.now(timezone.utc)
            for _spec, _session, charger, _energy in fleet:
                charger.advance(t)
            started = time.perf_counter()
            await dispatcher.step(t)
            if "answered" in marks and "issued" not in marks and dispatcher.committed_at(t) is not None:
                marks["issued"] = last_setpoint[0]            # the last EV got its setpoint here
                step_s.append(time.perf_counter() - started)  # the whole step, ledger writes included
                stop.set()
            await asyncio.sleep(tick.total_seconds())

    loop_task = asyncio.create_task(control_loop())
    export_kw = 0.3 * sum(spec.max_discharge_kw for spec, *_ in fleet)
    start = datetime.now(timezone.utc)
    vtn.dispatch_event(ven.ven_id, start, [(timedelta(minutes=15), export_kw)] * 4,
                       market_context=program.market_context)
    try:
        await asyncio.wait_for(stop.wait(), 120)
    finally:
        stop.set()
        await loop_task
        await ven.stop()
        engine.dispose()
    issued = sum(1 for _spec, _session, charger, _e in fleet if charger.setpoint_kw != 0.0)
    return {"evs": n, "answer_s": marks["answered"] - marks["arrive"], "issued_s": marks["issued"] - marks["arrive"],
            "step_s": step_s[0], "setpoints": issued, "plan": dispatcher.status.last_plan.method
            if dispatcher.status.last_plan else "-"}


async def _bench(sizes: list[int], repeat: int) -> list[dict]:
    from sim.vtn import UtilityVtn
    vtn = UtilityVtn(port=_free_port(), report_interval=timedelta(seconds=60))
    with contextlib.redirect_stdout(io.StringIO()):
        await vtn.start()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="v2x-bench-") as folder:
            for n in sizes:
                for _ in range(repeat):
                    results.append(await run_once(n, vtn, Path(folder)))
    finally:
        await vtn.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="v2x bench ven", description=__doc__.splitlines()[0])
    parser.add_argument("--evs", type=int, nargs="+", default=[1000, 10000], help="fleet sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size")
    args = parser.parse_args(argv or [])
    logging.getLogger("openleadr").setLevel(logging.ERROR)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)   # a 10,000-EV step delays a poll; expected
    results = asyncio.run(_bench(args.evs, args.repeat))
    print(f"{'EVs':>7} {'arrive->answered':>17} {'arrive->all setpoints':>22} {'whole step':>14} plan")
    for r in results:
        print(f"{r['evs']:>7} {r['answer_s'] * 1e3:>14.1f} ms {r['issued_s'] * 1e3:>19.1f} ms "
              f"{r['step_s'] * 1e3:>11.1f} ms {r['plan']}")
    worst = max((r["issued_s"] for r in results if r["evs"] >= 10000), default=None)
    if worst is not None:
        print(f"target < 1 s at 10,000 EVs: worst {worst:.3f} s -> {'met' if worst < 1 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
