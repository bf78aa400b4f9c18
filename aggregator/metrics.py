"""Prometheus metrics: the catalogue in one place (see README "Metrics").

Base units (watts, joules, seconds, ratios 0–1); no per-vehicle labels. The
ledger, not Prometheus, is the settlement record.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

SOC_BANDS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01))
EVENT_STATES = ("idle", "far", "near", "active", "completed", "cancelled")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SOLVE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """All metrics of one aggregator process, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.fleet_import_watts = Gauge("v2x_fleet_import_watts", "Fleet power drawn from the grid (metered), W", registry=r)
        self.fleet_export_watts = Gauge("v2x_fleet_export_watts", "Fleet power fed to the grid (metered), W", registry=r)
        self.committed_export_watts = Gauge(
            "v2x_committed_export_watts", "Export committed to the active DR event interval, W (0 outside events)",
            ["program"], registry=r)
        self.planned_export_watts = Gauge(
            "v2x_planned_export_watts", "Export the allocator planned for the current interval, W", ["program"], registry=r)
        self.import_energy = Counter("v2x_fleet_import_joules", "Energy drawn from the grid by the fleet (meters), J", registry=r)
        self.export_energy = Counter("v2x_fleet_export_joules", "Energy fed to the grid by the fleet (meters), J", registry=r)
        self.delivered_energy = Counter(
            "v2x_event_delivered_joules", "Export energy delivered during DR event intervals (meters), J",
            ["program"], registry=r)
        self.committed_energy = Counter(
            "v2x_event_committed_joules", "Export energy committed during DR event intervals, J", ["program"], registry=r)
        self.performance_ratio = Gauge(
            "v2x_event_performance_ratio", "Delivered / committed export energy of the current or last event, 0-1+",
            ["program"], registry=r)
        self.available_discharge_watts = Gauge(
            "v2x_available_discharge_watts", "Export the plugged-in fleet could deliver now without stranding drivers, W",
            registry=r)
        self.stored_energy = Gauge("v2x_fleet_stored_energy_joules", "Energy stored in plugged-in batteries, J", registry=r)
        self.plugged_in = Gauge("v2x_plugged_in_evs", "EVs plugged in", registry=r)
        self.soc_band = Gauge("v2x_plugged_in_evs_by_soc", "Plugged-in EVs per state-of-charge band", ["soc_band"], registry=r)
        self.event_state = Gauge("v2x_event_state", "1 for the state the VEN's most urgent event is in", ["state"], registry=r)
        self.events_known = Gauge("v2x_events_known", "Events known to the VEN by opt state", ["opt"], registry=r)
        self.ven_connected = Gauge("v2x_ven_connected", "1 while the last VTN exchange succeeded", registry=r)
        self.ven_last_poll = Gauge("v2x_ven_last_successful_poll_timestamp_seconds", "Unix time of the last good poll", registry=r)
        self.ven_poll_latency = Histogram(
            "v2x_ven_poll_duration_seconds", "Round trip of an OpenADR poll", buckets=LATENCY_BUCKETS, registry=r)
        self.ven_response_latency = Histogram(
            "v2x_ven_event_response_seconds", "From an oadrDistributeEvent arriving to our answer being ready",
            buckets=LATENCY_BUCKETS, registry=r)
        self.reports_sent = Counter("v2x_ven_reports_sent", "Telemetry report values handed to the VTN", registry=r)
        self.last_telemetry = Gauge(
            "v2x_telemetry_last_reading_timestamp_seconds", "Unix time of the newest meter reading in the ledger", registry=r)
        self.solve_seconds = Histogram(
            "v2x_allocator_solve_seconds", "Allocator build + solve time", ["method"], buckets=SOLVE_BUCKETS, registry=r)
        self.allocator_failures = Counter("v2x_allocator_failures", "Allocator runs that raised or fell back", registry=r)
        self.shortfall_watts = Gauge(
            "v2x_planned_shortfall_watts", "Planned export short of the commitment in the current interval, W",
            ["program"], registry=r)
        self.chargers_connected = Gauge("v2x_chargers_connected", "Chargers answering", registry=r)
        self.chargers_total = Gauge("v2x_chargers", "Chargers known", registry=r)
        self.database_errors = Counter("v2x_database_errors", "Failed database writes", registry=r)
        for state in EVENT_STATES:
            self.event_state.labels(state=state).set(1 if state == "idle" else 0)
        for low, high in SOC_BANDS:
            self.soc_band.labels(soc_band=band_label(low, high)).set(0)

    def set_event_state(self, state: str) -> None:
        for candidate in EVENT_STATES:
            self.event_state.labels(state=candidate).set(1 if candidate == state else 0)

    def set_soc_distribution(self, soc_fractions) -> None:
        for low, high in SOC_BANDS:
            count = sum(1 for soc in soc_fractions if low <= soc < high)
            self.soc_band.labels(soc_band=band_label(low, high)).set(count)

    def serve(self, host: str, port: int):
        """Serve /metrics; returns (server, thread) so the caller can shut it down."""
        return start_http_server(port, addr=host, registry=self.registry)


def band_label(low: float, high: float) -> str:
    return f"{low:.1f}-{min(high, 1.0):.1f}"
