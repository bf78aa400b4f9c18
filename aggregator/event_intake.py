"""The fleet side of the VEN port (`ven.port.FleetPort`): assess, execute, withdraw.

The VEN (`ven.engine`) applies every OpenADR rule and hands over resolved,
executable requests (executed times, open ends resolved, ramp-up and recovery
pieces, arbitration applied). This intake only maps signals and commits:

- `assess(request, now)`: the honest opt decision against the fleet's
  closed-form export bound (`FleetView.export_bound_kw`); a signal the program
  settings do not map is `supported=False` (the VEN answers 460);
- `execute(request)`: resolves each piece to a fleet import ceiling and writes
  it to the `CommitmentBook` (which the dispatcher reads). The baseline of
  delta / capacity / percent-offset signals is frozen when the event is first
  accepted (`FleetView.fleet_power_kw` then) and stored with the commitment,
  so the target does not follow the fleet's own response;
- `withdraw(event_id)`: the event is no longer executed.

A failed commitment write raises (`CommitmentWriteFailed`, a `WriteFailed`)
back to the VEN engine, which opts the event out and counts the error.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from aggregator.commitment import CommittedInterval, UnsupportedSignal, resolve_commitment
from aggregator.commitment_book import CommitmentBook
from aggregator.config import ProgramSettings
from aggregator.fleet_state.view import FleetView
from ven.event import Event, EventInterval
from ven.port import EVENT, Assessment, ExecutableRequest, RequestPiece

log = logging.getLogger(__name__)

BASELINE_SIGNALS = {("LOAD_DISPATCH", "delta"), ("LOAD_CONTROL", "x-loadControlCapacity"),
                    ("LOAD_CONTROL", "x-loadControlPercentOffset")}


@dataclass(frozen=True)
class SignalMapping:
    """How signals beyond LOAD_DISPATCH and SIMPLE become fleet targets."""
    # ELECTRICITY_PRICE/price: at or above each price threshold, export this many kW (highest met wins).
    price_export_kw: tuple[tuple[float, float], ...] = ((0.30, 100.0), (0.50, 200.0))


class EventIntake:
    def __init__(self, book: CommitmentBook, fleet: FleetView, program: ProgramSettings,
                 clock: Callable[[], datetime], signals: SignalMapping = SignalMapping(), arrivals=None):
        """`arrivals(start, durations_h, plugged_ids) -> kW per interval`: what vehicles not
        plugged in now are expected to add (the bidding forecast, `bidding.intake.ArrivalForecast`)."""
        self.book = book
        self.fleet = fleet
        self.arrivals = arrivals
        self.program = program
        self.clock = clock
        self.signals = signals
        self._frozen: dict[str, float] = {}   # baselines of events accepted in this process, not (yet) in the book

    # -- the VEN's fleet port ----------------------------------------------------------
    def assess(self, request: ExecutableRequest, now: datetime) -> Assessment:
        try:
            committed = self.resolve(request, self._baseline_kw(request.event_id, freeze=False))
        except UnsupportedSignal as err:
            return Assessment("optOut", str(err), supported=False)
        events = [(p, c) for p, c in zip(request.pieces, committed) if p.kind == EVENT]
        opt, reason = self._opt_decision(events, now)
        return Assessment(opt, reason)

    def execute(self, request: ExecutableRequest) -> None:
        baseline = self._baseline_kw(request.event_id, freeze=True)
        try:
            committed = self.resolve(request, baseline)
        except UnsupportedSignal as err:   # the VEN opted it out with 460; nothing to execute
            log.warning("not executing %s: %s", request.event_id, err)
            self.book.withdraw(request.event_id)
            return
        kept = [c for c, p in zip(committed, request.pieces)
                if p.kind == EVENT or c.import_ceiling_kw == c.import_ceiling_kw]   # no step toward nothing
        self.book.set(request.event_id, kept, baseline_kw=baseline)

    def withdraw(self, event_id: str) -> None:
        self.book.withdraw(event_id)

    def _baseline_kw(self, event_id: str, freeze: bool) -> float:
        """The fleet's load without the event: frozen when the event is first accepted."""
        stored = self.book.baseline_kw(event_id)
        if stored is not None:
            return stored
        if event_id in self._frozen:
            return self._frozen[event_id]
        baseline = float(self.fleet.fleet_power_kw())
        if freeze:
            self._frozen[event_id] = baseline
        return baseline

    # -- signal mapping -------------------------------------------------------------
    def resolve(self, request: ExecutableRequest, baseline_kw: float) -> list[CommittedInterval]:
        """Per-piece fleet import ceilings for every signal the program maps. A ramp-up or
        recovery step goes `weight` of the way from the baseline to its interval's target."""
        targets = self._targets(request, baseline_kw)
        out = []
        for piece, target in zip(request.pieces, targets):
            if piece.kind == EVENT:
                out.append(CommittedInterval(piece.start, piece.end, piece.value, target))
            else:
                ceiling = baseline_kw + (target - baseline_kw) * piece.weight
                out.append(CommittedInterval(piece.start, piece.end, float("nan"), ceiling, piece.kind))
        return out

    def _targets(self, request: ExecutableRequest, baseline: float) -> list[float]:
        name, kind, event_id = request.signal_name, request.signal_type, request.event_id
        values = [p.value for p in request.pieces]
        if name == "LOAD_CONTROL":
            if kind == "x-loadControlSetpoint":
                return [v if self.program.export_sign == "negative" else -v for v in values]
            if kind == "x-loadControlCapacity":        # share of the normal load allowed (0-1)
                return [baseline * v for v in values]
            if kind == "x-loadControlPercentOffset":   # percent less than the normal load
                return [baseline * (1 - v / 100) for v in values]
            raise UnsupportedSignal(f"event {event_id}: LOAD_CONTROL/{kind} is not mapped")
        if name == "ELECTRICITY_PRICE" and kind in ("price", "priceRelative", "priceMultiplier"):
            if kind != "price":
                raise UnsupportedSignal(f"event {event_id}: ELECTRICITY_PRICE/{kind} is not mapped")
            out = []
            for v in values:
                met = [kw for price, kw in self.signals.price_export_kw if v >= price]
                out.append(-max(met) if met else float("nan"))
            return out
        if name == "simple":    # 2.0a spelling, seen in the wild
            name = "SIMPLE"
        event = Event(event_id, request.modification_number, "far", name, kind,
                      tuple(EventInterval(i, p.start, p.end, p.value) for i, p in enumerate(request.pieces)))
        return [c.import_ceiling_kw for c in resolve_commitment(event, self.program, baseline_kw=baseline)]

    def _opt_decision(self, events: list[tuple[RequestPiece, CommittedInterval]], now: datetime) -> tuple[str, str]:
        asked = np.array([c.export_kw for _p, c in events])
        if asked.sum() == 0:
            return "optIn", "asks for no export"
        finite = [c for p, c in events if not p.open_ended]
        durations = np.array([(c.end - c.start).total_seconds() / 3600 for c in finite] or [0.25])
        bound = np.asarray(self.fleet.export_bound_kw(now, durations), dtype=float)
        start = min((c.start for _p, c in events), default=now)
        if self.arrivals is not None and start > now:   # a future event: count who is expected to plug in
            try:
                plugged = {vehicle for vehicle in self.fleet.plugged_vehicle_ids()}
                bound = bound + np.asarray(self.arrivals(start, durations, plugged), dtype=float)[:len(bound)]
            except Exception:   # a forecast failure must not block the answer: the plugged-in bound stands
                log.exception("arrival forecast failed; deciding on the plugged-in fleet only")
        if len(bound) < len(asked):   # an open-ended last interval: assume the last bound holds
            bound = np.concatenate([bound, np.repeat(bound[-1:] if len(bound) else [0.0], len(asked) - len(bound))])
        covered = float(np.minimum(asked, bound).sum() / asked.sum())
        shortfall = float(np.maximum(0.0, asked - bound).max())
        if covered <= 0.0:
            return "optOut", "the fleet can deliver none of the export asked"
        if covered < self.program.min_coverage_to_opt_in:
            return "optOut", f"fleet can cover {covered:.0%} of the export asked (< {self.program.min_coverage_to_opt_in:.0%})"
        if shortfall > 0:
            return "optIn", f"best effort: fleet can cover {covered:.0%}, up to {shortfall:.1f} kW short in an interval"
        return "optIn", f"fleet can cover the export asked (bound covers {covered:.0%})"
