"""Benchmark (not a test): from an oadrDistributeEvent arriving at the VEN to the
commitment in force and the fleet's plan for it, for synthetic fleets of 1,000 and
10,000 EVs.

Real peers on 127.0.0.1: the utility VTN simulator (`sim.vtn`) issues a
LOAD_DISPATCH event starting now; our VEN (openleadr transport, our rules
engine, event store in SQLite) receives it on a 1 s poll and hands it across
the VEN port to the aggregator's intake (`EventIntake` over a `CommitmentBook`
in the same database and a fleet view of a synthetic fleet from `sim.fleets`).
Only public seams are used: the VEN port, the commitment book the dispatcher
reads, and the allocator's public API (`aggregator.allocator`).
Measured with `time.perf_counter()`:

  arrive     the poll's HTTP answer carrying the distribute has been read
  answered   the oadrCreatedEvent went out (rules, opt decision, event store)
  committed  the commitment is written to the book the dispatcher reads
  planned    the allocator's plan for the first event interval (every EV's setpoint)
             computed from what the book holds (what the dispatcher's next step does
             before it commands the stations)

The poll wait (event queued -> poll) is excluded. Run: `v2x bench ven`.
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

import numpy as np

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SyntheticFleetView:
    """A `FleetView` (and the VEN's telemetry) over a synthetic fleet (`sim.fleets.random_fleet`),
    the bound from the allocator's public closed form."""

    def __init__(self, n: int, now: datetime, seed: int = 1):
        from sim.fleets import random_fleet
        self.fleet = random_fleet(n, seed=seed, max_departure_h=10.0)
        self.now = now

    def fleet_power_kw(self) -> float:
        return 0.0

    def export_bound_kw(self, now: datetime, durations_h: np.ndarray) -> np.ndarray:
        from aggregator.allocator import deliverable_export_bound_kw
        return deliverable_export_bound_kw(self.fleet, np.asarray(durations_h, dtype=float))

    def available_export_kw(self) -> float:
        return float(self.export_bound_kw(self.now, np.array([0.25]))[0])

    def stored_energy_kwh(self) -> float:
        return float(self.fleet.energy_kwh.sum())

    def plugged_in(self) -> int:
        return len(self.fleet.ids)

    def availability(self) -> list[tuple[datetime, float]]:
        return [(self.now + timedelta(hours=float(h)), float(kw))
                for h, kw in zip(self.fleet.departure_h, self.fleet.max_discharge_kw)]


def _plan(view: SyntheticFleetView, book, now: datetime, interval: timedelta, count: int):
    """The plan for the committed intervals, from the book (what the dispatcher reads)."""
    from aggregator.allocator import Targets, allocate
    ceilings = np.full(count, np.nan)
    for _event_id, committed in book.intervals():
        k = int((committed.start - now) / interval)
        if 0 <= k < count and committed.import_ceiling_kw == committed.import_ceiling_kw:
            ceilings[k] = committed.import_ceiling_kw
    return allocate(view.fleet, Targets(np.full(count, interval.total_seconds() / 3600), ceilings))


async def run_once(n: int, vtn, folder: Path) -> dict:
    from aggregator.commitment_book import CommitmentBook
    from aggregator.config import ProgramSettings
    from aggregator.event_intake import EventIntake
    from aggregator.store.db import make_engine
    from ven.client import VenClient

    now = datetime.now(timezone.utc)
    engine = make_engine(f"sqlite:///{folder / f'bench-{n}-{time.monotonic_ns()}.db'}")
    view = SyntheticFleetView(n, now)
    book = CommitmentBook(engine)
    program = ProgramSettings()
    intake = EventIntake(book, view, program, lambda: datetime.now(timezone.utc))
    ven = VenClient(vtn.url, f"bench-{n}-{random.randrange(1 << 30)}", intake, view, store_engine=engine,
                    market_context=program.market_context, report_sampling=timedelta(seconds=60))
    marks: dict[str, float] = {}
    version = book.version

    def on_receive(content: str) -> None:
        if "oadrDistributeEvent" in content and "oadrEvent" in content and "arrive" not in marks:
            marks["arrive"] = time.perf_counter()

    def on_send(content: str) -> None:
        if "oadrCreatedEvent" in content and "arrive" in marks and "answered" not in marks:
            marks["answered"] = time.perf_counter()
            if book.version != version:
                marks["committed"] = marks["answered"]   # written before the answer left

    ven.client.add_hook("after_receive_xml", on_receive)
    ven.client.add_hook("before_send_xml", on_send)
    await ven.start()
    interval, count = timedelta(minutes=15), 4
    export_kw = 0.3 * float(view.fleet.max_discharge_kw.sum())
    start = datetime.now(timezone.utc)
    vtn.dispatch_event(ven.ven_id, start, [(interval, export_kw)] * count, market_context=program.market_context)
    plan = None
    try:
        deadline = time.monotonic() + 120
        while "answered" not in marks or book.version == version:
            if time.monotonic() > deadline:
                raise TimeoutError("the event never reached the commitment book")
            await asyncio.sleep(0.005)
        marks.setdefault("committed", time.perf_counter())
        plan = _plan(view, book, start, interval, count)
        marks["planned"] = time.perf_counter()
    finally:
        await ven.stop()
        engine.dispose()
    return {"evs": n, "answer_s": marks["answered"] - marks["arrive"],
            "committed_s": marks["committed"] - marks["arrive"], "planned_s": marks["planned"] - marks["arrive"],
            "setpoints": int(np.count_nonzero(plan.setpoint_kw[:, 0])), "plan": plan.method}


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
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)   # a poll cancelled by stop() is not news
    results = asyncio.run(_bench(args.evs, args.repeat))
    print(f"{'EVs':>7} {'arrive->answered':>17} {'arrive->committed':>18} {'arrive->planned':>16} "
          f"{'setpoints':>10} plan")
    for r in results:
        print(f"{r['evs']:>7} {r['answer_s'] * 1e3:>14.1f} ms {r['committed_s'] * 1e3:>15.1f} ms "
              f"{r['planned_s'] * 1e3:>13.1f} ms {r['setpoints']:>10} {r['plan']}")
    worst = max((r["planned_s"] for r in results if r["evs"] >= 10000), default=None)
    if worst is not None:
        print(f"target < 1 s at 10,000 EVs (arrive -> plan): worst {worst:.3f} s -> {'met' if worst < 1 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
