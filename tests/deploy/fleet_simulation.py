"""Drive a ``Metrics`` registry through a short, troubled DR event.

Values are realistic for a 40-EV fleet on 20 chargers during an active
ConnectedSolutions event that goes badly: 100 kW committed, about 80 kW
delivered, the VTN link down, telemetry stale, the allocator slow and
failing, a database write error. Every dashboard panel has data in this
state and every alert expression is true, so the dashboard test can demand a
non-empty answer from each of them.
"""
from __future__ import annotations

import math
import threading
import time

from aggregator.metrics import Metrics

PROGRAM = "ma-connectedsolutions"


class EventSimulation:
    def __init__(self, metrics: Metrics, program: str = PROGRAM, clock=time.time):
        self.m = metrics
        self.program = program
        self.clock = clock
        self.t = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self, dt: float) -> None:
        """Advance the simulated fleet by ``dt`` seconds of wall time."""
        m, p = self.m, self.program
        self.t += dt
        wobble = math.sin(self.t)
        export_w = 80_000 + 3_000 * wobble
        import_w = 4_000 + 500 * wobble
        m.set_event_state("active")
        m.committed_export_watts.labels(program=p).set(100_000)
        m.planned_export_watts.labels(program=p).set(95_000)
        m.shortfall_watts.labels(program=p).set(5_000)
        m.fleet_export_watts.set(export_w)
        m.fleet_import_watts.set(import_w)
        m.export_energy.inc(export_w * dt)
        m.import_energy.inc(import_w * dt)
        m.delivered_energy.labels(program=p).inc(export_w * dt)
        m.committed_energy.labels(program=p).inc(100_000 * dt)
        m.performance_ratio.labels(program=p).set(export_w / 100_000)
        m.available_discharge_watts.set(150_000 - 1_000 * self.t)
        m.plugged_in.set(40)
        m.set_soc_distribution([0.15, 0.35, 0.55, 0.75, 0.9] * 8)
        m.stored_energy.set(40 * 45 * 3.6e6 - export_w * self.t)
        for opt, count in (("optIn", 1), ("optOut", 0), ("none", 0)):
            m.events_known.labels(opt=opt).set(count)
        now = self.clock()
        m.ven_connected.set(0)                                  # the VTN went away mid-event
        m.ven_last_poll.set(now - 600)
        m.ven_poll_latency.observe(2.5 + 0.1 * wobble)          # polls time out
        m.ven_response_latency.observe(0.04)
        m.reports_sent.inc(4)
        m.last_telemetry.set(now - 300)                         # meter readings stopped arriving
        m.solve_seconds.labels(method="lp").observe(3.2)        # slow solves
        m.solve_seconds.labels(method="greedy").observe(0.012)
        m.allocator_failures.inc()
        m.chargers_total.set(20)
        m.chargers_connected.set(18)
        m.database_errors.inc()

    def _run(self, period: float) -> None:
        last = time.monotonic()
        while not self._stop.wait(period):
            now = time.monotonic()
            self.step(now - last)
            last = now

    def start(self, period: float = 0.25) -> "EventSimulation":
        self.step(period)
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
