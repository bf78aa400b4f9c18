"""PNG writers (matplotlib, Agg backend): I/O edge, no arithmetic of its own."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["forecast_png", "backtest_png", "participation_png"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def forecast_png(fc, bid, path: Path) -> None:
    """Per window hour: the forecast distribution (violin), P50, P90 and the chosen quantity."""
    plt = _plt()
    H = fc.window.hours
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(H)
    if fc.samples.shape[0]:
        ax.violinplot([fc.samples[:, h] for h in range(H)], positions=x, showextrema=False)
    ax.plot(x, bid.p50_kw, "o--", label="P50 (median)")
    ax.plot(x, bid.p90_kw, "s--", label="P90 (exceeded 90 %)")
    ax.plot(x, bid.quantity_kw, "D-", color="black", label=f"bid ({bid.strategy})")
    ax.set_xticks(x, [fc.window.label(h) for h in range(H)])
    ax.set_xlabel(f"hour beginning ({fc.window.timezone})")
    ax.set_ylabel("deliverable export, kW")
    ax.set_title(f"{bid.program} {bid.day}: forecast from {len(fc.pool)} historical days")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def backtest_png(result, path: Path) -> None:
    """Cumulative net revenue per strategy over the season and the per-event performance ratio."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in result.strategies:
        rows = [e for e in result.events if e.strategy == name]
        a1.plot([e.day for e in rows], np.cumsum([e.revenue - e.penalty for e in rows]), label=name)
        a2.plot([e.day for e in rows], [e.ratio for e in rows], ".", label=name)
    a1.set_ylabel("cumulative revenue - penalties, $")
    a1.set_title(f"{result.scenario} / {result.program}, {result.season}")
    a2.set_ylabel("performance ratio (delivered / committed)")
    a2.axhline(1.0, color="grey", lw=0.8)
    for a in (a1, a2):
        a.legend()
        a.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def participation_png(report, path: Path) -> None:
    """Plug-in rate and available discharge kW by hour of day, weekday vs weekend, per fleet type."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    hours = np.arange(24)
    for (kind, weekend), row in sorted(report.by_hour.items()):
        style = "--" if weekend else "-"
        label = f"{kind} {'weekend' if weekend else 'weekday'}"
        a1.plot(hours, row["plug_rate"], style, label=label)
        a2.plot(hours, row["available_kw"], style, label=label)
    a1.set_ylabel("share of vehicles plugged in")
    a2.set_ylabel("available discharge kW (mean)")
    for a in (a1, a2):
        a.set_xlabel("local hour of day")
        a.legend(fontsize=7)
    a1.set_title(f"participation {report.season}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
