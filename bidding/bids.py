"""Bid records (pure): the quantity per hour, the price, the forecast percentiles,
and the history and parameters used; JSON and CSV export."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta

import numpy as np

from .forecast import Forecast
from .programs import Program
from .sizing import size_hours

__all__ = ["Bid", "make_bid", "STRATEGIES", "quantities", "bids_to_csv"]

STRATEGIES = ("optimal", "mean", "nameplate")


def quantities(strategy: str, program: Program, fc: Forecast, nameplate_kw: float) -> np.ndarray:
    """Per-hour kW for a sizing strategy: ours ("optimal": the programme's payoff
    maximised on the derated forecast), the forecast mean, or the nameplate."""
    H = fc.window.hours
    if fc.samples.shape[0] == 0:
        return np.zeros(H) if strategy != "nameplate" else np.full(H, nameplate_kw)
    if strategy == "optimal":
        return size_hours(fc.samples, program.payoff, program.telemetry_loss)
    if strategy == "mean":
        return np.maximum(0.0, fc.mean)
    if strategy == "nameplate":
        return np.full(H, float(nameplate_kw))
    raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")


@dataclass(frozen=True)
class Bid:
    program: str
    day: date
    hour_starts: tuple[datetime, ...]     # UTC
    quantity_kw: tuple[float, ...]
    price_per_kw: float
    p50_kw: tuple[float, ...]
    p90_kw: tuple[float, ...]             # exceeded with 90 % probability
    mean_kw: tuple[float, ...]
    strategy: str
    created_at: datetime
    history: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    id: int | None = None

    @property
    def window_start(self) -> datetime:
        return self.hour_starts[0]

    @property
    def window_end(self) -> datetime:
        return self.hour_starts[-1] + timedelta(hours=1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["day"] = self.day.isoformat()
        d["hour_starts"] = [t.isoformat() for t in self.hour_starts]
        d["created_at"] = self.created_at.isoformat()
        d["window_start"] = self.window_start.isoformat()
        d["window_end"] = self.window_end.isoformat()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Bid":
        return cls(program=d["program"], day=date.fromisoformat(d["day"]),
                   hour_starts=tuple(datetime.fromisoformat(t) for t in d["hour_starts"]),
                   quantity_kw=tuple(d["quantity_kw"]), price_per_kw=float(d["price_per_kw"]),
                   p50_kw=tuple(d["p50_kw"]), p90_kw=tuple(d["p90_kw"]), mean_kw=tuple(d["mean_kw"]),
                   strategy=d["strategy"], created_at=datetime.fromisoformat(d["created_at"]),
                   history=dict(d.get("history") or {}), parameters=dict(d.get("parameters") or {}), id=d.get("id"))

    def rows(self) -> list[dict]:
        return [{"program": self.program, "day": self.day.isoformat(), "hour_start_utc": t.isoformat(),
                 "quantity_kw": round(q, 3), "price_per_kw": self.price_per_kw, "p50_kw": round(a, 3),
                 "p90_kw": round(b, 3), "mean_kw": round(m, 3), "strategy": self.strategy}
                for t, q, a, b, m in zip(self.hour_starts, self.quantity_kw, self.p50_kw, self.p90_kw, self.mean_kw)]


def bids_to_csv(bids: list[Bid]) -> str:
    buf = io.StringIO()
    rows = [r for b in bids for r in b.rows()]
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["program"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def make_bid(program: Program, fc: Forecast, created_at: datetime, nameplate_kw: float,
             strategy: str = "optimal", history: dict | None = None) -> Bid:
    q = quantities(strategy, program, fc, nameplate_kw)
    params = {"n_samples": fc.options.n_samples, "lookback_days": fc.options.lookback_days,
              "same_day_type": fc.options.same_day_type, "opt_out_rate": fc.options.opt_out_rate,
              "forecast_telemetry_loss_rate": fc.options.telemetry_loss_rate, "seed": fc.options.seed,
              "sizing_telemetry_derate": program.telemetry_loss, "payoff": repr(program.payoff),
              "window": {"start_hour": fc.window.start_hour, "hours": fc.window.hours, "timezone": fc.window.timezone}}
    hist = {"pool_days": len(fc.pool), "first_day": fc.pool[0].isoformat() if fc.pool else None,
            "last_day": fc.pool[-1].isoformat() if fc.pool else None, **(history or {})}
    r = lambda a: tuple(round(float(x), 3) for x in a)  # noqa: E731
    return Bid(program=program.name, day=fc.day, hour_starts=tuple(fc.window.hour_starts(fc.day)),
               quantity_kw=r(q), price_per_kw=program.price_per_kw, p50_kw=r(fc.p50), p90_kw=r(fc.p90),
               mean_kw=r(fc.mean), strategy=strategy, created_at=created_at, history=hist, parameters=params)
