"""Programme definitions the bidder knows (pure data): window, season, payment schedule.

Prices are illustrative defaults, in $ per kW per event hour unless stated; a
programme's own tariff replaces them.  ConnectedSolutions figures from REFERENCE §5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aggregator.settlement.payments import CONNECTED_SOLUTIONS_RESIDENTIAL_RATE, DEFAULT_FACTOR

from .history import Window
from .sizing import LinearPayoff, Payoff, PerformanceFactorPayoff, SeasonAveragePayoff

__all__ = ["Program", "PROGRAMS", "get_program"]


@dataclass(frozen=True)
class Program:
    name: str
    description: str
    window: Window
    payoff: Payoff
    months: tuple[int, ...] = (6, 7, 8, 9)
    events_per_season: int = 30
    telemetry_loss: float = 0.02      # sizing derate: share of delivery expected uncredited
    max_credit_ratio: float | None = 1.0   # settlement credits at most this x the commitment

    @property
    def price_per_kw(self) -> float:
        pay = self.payoff
        if isinstance(pay, LinearPayoff):
            return pay.p
        if isinstance(pay, PerformanceFactorPayoff):
            return pay.rate
        return pay.rate_per_kw_season / max(pay.n_events, 1)

    def revenue_and_penalty(self, q: np.ndarray, delivered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-hour revenue and penalty ($) for commitments q and credited delivery (kW, 1-h intervals)."""
        q = np.asarray(q, dtype=float)
        c = np.asarray(delivered, dtype=float)
        k = float(getattr(self.payoff, "k", 0.0))
        penalty = k * np.maximum(0.0, q - c)
        return self.payoff(q, c) + penalty, penalty


_WINDOW = Window(16.0, 3, "America/New_York")

PROGRAMS: dict[str, Program] = {p.name: p for p in (
    Program("dr-capacity", "paid $2/kW-h delivered up to the commitment, $6/kW-h short (Q* = P75 quantile)",
            _WINDOW, LinearPayoff(p=2.0, k=6.0)),
    Program("strict-p90", "paid $1/kW-h delivered up to the commitment, $9/kW-h short (Q* = P90)",
            _WINDOW, LinearPayoff(p=1.0, k=9.0)),
    Program("capacity-pf", "$2/kW-h committed x the settlement package's default performance factor, $1/kW-h short",
            _WINDOW, PerformanceFactorPayoff(rate=2.0, factor=DEFAULT_FACTOR, k=1.0)),
    Program("connected-solutions", "ConnectedSolutions residential: $275/kW-summer x average kW over all events "
            "(30 events assumed), credited up to the dispatched commitment, $3/kW-h aggregator shortfall penalty",
            _WINDOW, SeasonAveragePayoff(CONNECTED_SOLUTIONS_RESIDENTIAL_RATE, 30, k=3.0)),
)}


def get_program(name: str) -> Program:
    try:
        return PROGRAMS[name]
    except KeyError:
        raise ValueError(f"unknown programme {name!r}; known: {', '.join(PROGRAMS)}") from None
