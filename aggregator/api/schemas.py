"""What the HTTP API accepts and returns (pydantic models; the OpenAPI document is made from them).

Units as everywhere: kW, kWh, UTC datetimes; positive power = the vehicle imports.
Inputs forbid unknown fields and non-finite numbers, so a mistake is named, not ignored."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from aggregator.config import iana_timezone

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:@-]{1,128}$")]
Role = Literal["driver", "operator", "utility"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Out(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)


# -- errors ------------------------------------------------------------------------------------
class FieldError(_Out):
    field: str = Field(description="where: body.departs_at, query.limit, path.vehicle_id, ...")
    message: str


class Problem(_Out):
    """Every 4xx/5xx answer."""
    error: str
    fields: list[FieldError] = Field(default_factory=list)


# -- who am I ----------------------------------------------------------------------------------
class Me(_Out):
    role: Role
    vehicle_id: str | None = None


# -- vehicles ----------------------------------------------------------------------------------
class VehicleIn(_In):
    """A vehicle in the catalogue (operators)."""
    kind: str = Field(min_length=1, max_length=64)
    capacity_kwh: float = Field(gt=0, le=2000)
    floor_kwh: float = Field(ge=0, le=2000, description="reserve: never discharged below this")
    max_charge_kw: float = Field(ge=0, le=1000)
    max_discharge_kw: float = Field(ge=0, le=1000)
    eta_charge: float = Field(gt=0, le=1)
    eta_discharge: float = Field(gt=0, le=1)
    site: int = Field(default=0, ge=0, le=1_000_000)


class SessionNow(_Out):
    """The vehicle's open plug-in session, as the plan sees it now."""
    station_id: str
    arrived_at: datetime
    departs_at: datetime
    need_kwh: float
    target_soc_pct: float
    energy_kwh: float | None = Field(description="estimated battery energy now; null when unknown")
    soc_pct: float | None
    soc_reported: bool = Field(description="false: SoC is estimated from the meter, not reported")
    power_kw: float | None
    online: bool
    no_export: str | None = Field(description="why the vehicle is not discharged: boost, opt-out or null")


class Vehicle(_Out):
    id: str
    kind: str
    capacity_kwh: float
    floor_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    eta_charge: float
    eta_discharge: float
    site: int
    session: SessionNow | None = None


class DriverRequest(_In):
    """What a driver (or an operator for them) changes on a plugged-in vehicle. Give the target
    either as `target_soc_pct` or as `need_kwh`, not both."""
    departs_at: AwareDatetime | None = Field(default=None, description="when the vehicle leaves (with a UTC offset)")
    target_soc_pct: float | None = Field(default=None, ge=0, le=100, description="charge wanted at departure, %")
    need_kwh: float | None = Field(default=None, ge=0, le=2000, description="energy wanted at departure, kWh")
    reserve_kwh: float | None = Field(default=None, ge=0, le=2000,
                                      description="never discharged below this (this session from the next plan, and later plug-ins)")
    boost: bool = Field(default=False, description="charge now, to full (or to the target), no export; false undoes it")
    opt_out: bool = Field(default=False, description="no discharging for the rest of this session; false undoes it")


# -- stations ----------------------------------------------------------------------------------
class StationIn(_In):
    site: int = Field(default=0, ge=0, le=1_000_000)
    max_charge_kw: float = Field(default=22.0, ge=0, le=1000)
    max_discharge_kw: float = Field(default=0.0, ge=0, le=1000, description="0 = charge-only")


class Station(_Out):
    id: str
    site: int
    max_charge_kw: float
    max_discharge_kw: float
    online: bool
    available: bool = Field(description="accepting commands (false after a rejected or unanswered one)")
    vehicle_id: str | None
    power_kw: float | None
    last_sample_at: datetime | None


# -- sessions ----------------------------------------------------------------------------------
class PlugSession(_Out):
    id: int | None
    vehicle_id: str
    station_id: str | None
    arrived_at: datetime
    departs_at: datetime
    energy_at_arrival_kwh: float
    need_kwh: float
    left_at: datetime | None
    energy_at_departure_kwh: float | None
    closed_reason: str | None


# -- fleet and sites ---------------------------------------------------------------------------
SiteNumber = Annotated[int, Field(ge=0, le=1_000_000)]
Timezone = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(iana_timezone)]
# Bodies are strict: JSON true is not 1 kW, 2.0 is not site 2 (a mistake is named, not guessed at).
LimitKw = Annotated[float, Field(ge=0, le=1_000_000, strict=True)]
_NO_LIMIT = "kW; null: no limit"


class SiteIn(_In):
    """A new site (operators). Its limits bind every plan from the next one: the sites' net import
    never above `import_limit_kw`, its net export never above `export_limit_kw`."""
    id: int = Field(ge=0, le=1_000_000, strict=True, description="the site number its stations and vehicles carry (`site`)")
    name: str = Field(min_length=1, max_length=128)
    timezone: Timezone | None = Field(default=None, description="IANA time zone; default: the programme's")
    import_limit_kw: LimitKw | None = Field(default=None, description="transformer or supply contract, " + _NO_LIMIT)
    export_limit_kw: LimitKw | None = Field(default=None, description="interconnection agreement, " + _NO_LIMIT)
    notes: str = Field(default="", max_length=2000)


class SitePatch(_In):
    """What changes on a site (operators): the fields given; a limit given as null is removed."""
    name: str = Field(default=None, min_length=1, max_length=128)
    timezone: Timezone = Field(default=None, description="IANA time zone")
    import_limit_kw: LimitKw | None = Field(default=None, description="transformer or supply contract, " + _NO_LIMIT)
    export_limit_kw: LimitKw | None = Field(default=None, description="interconnection agreement, " + _NO_LIMIT)
    notes: str = Field(default=None, max_length=2000)


class Site(_Out):
    site: int = Field(description="the site number (`site` of its stations and vehicles)")
    configured: bool = Field(description="false: a number stations or vehicles carry, with no site record (no limits)")
    name: str | None
    timezone: str | None
    import_limit_kw: float | None = Field(description=_NO_LIMIT)
    export_limit_kw: float | None = Field(description=_NO_LIMIT)
    notes: str
    updated_at: datetime | None
    stations: int
    stations_online: int
    vehicles: int
    plugged_in: int
    power_kw: float = Field(description="net power at the site's stations now (positive = import)")


class SiteDetail(Site):
    """A site and what is live there now."""
    import_headroom_kw: float | None = Field(description="import limit minus power now; null: no limit")
    export_headroom_kw: float | None = Field(description="export limit plus power now; null: no limit")
    station_ids: list[str]
    plugged_vehicle_ids: list[str] | None = Field(description="vehicles plugged in now (operators; null for utility tokens)")


class Fleet(_Out):
    at: datetime
    stations: int
    stations_online: int
    plugged_in: int
    power_kw: float
    stored_energy_kwh: float
    available_export_kw: float
    sites: list[Site]


class Alert(_Out):
    severity: Literal["warning", "critical"]
    kind: str
    subject: str
    message: str


# -- events and their performance --------------------------------------------------------------
class EventInterval(_Out):
    uid: int
    start: datetime
    end: datetime | None
    value: float


class IntervalPerformance(_Out):
    uid: int
    start: datetime
    end: datetime
    committed_kw: float | None
    delivered_kw: float | None
    ratio: float | None
    coverage: float


class Performance(_Out):
    """Committed vs delivered at the chargers' meters (settlement's device method)."""
    source: Literal["settlement", "preview"]
    version: int | None
    committed_kwh: float | None
    delivered_kwh: float | None
    ratio: float | None
    intervals: list[IntervalPerformance]


class Event(_Out):
    event_id: str
    status: str
    opt_state: str
    signal_name: str
    signal_type: str
    market_context: str
    priority: int
    test_event: bool
    received_at: datetime
    start: datetime | None
    end: datetime | None
    intervals: list[EventInterval]
    performance: Performance | None = None


# -- programmes --------------------------------------------------------------------------------
class ProgrammeEventSummary(_Out):
    event_id: str
    status: str
    opt_state: str
    test_event: bool
    received_at: datetime
    start: datetime | None
    end: datetime | None
    settlement_version: int | None = Field(description="the latest stored settlement run; null: not settled")
    committed_kwh: float | None
    delivered_kwh: float | None
    ratio: float | None


class SignalSettings(_Out):
    """How the programmes' signals become fleet targets ([program] settings, read-only here)."""
    price_export_kw: list[tuple[float, float]] = Field(description="ELECTRICITY_PRICE: at >= $/kWh, export kW")
    simple_level_export_kw: dict[str, float] = Field(description="SIMPLE level -> export kW")
    max_over_delivery_kw: float | None
    min_coverage_to_opt_in: float


class Programme(_Out):
    market_context: str
    primary: bool = Field(description="the configured programme ([program] market_context): always enrolled")
    enrolled: bool = Field(description="events of this market context are accepted (others get optOut 453)")
    source: Literal["config", "api"] = Field(description="where the enrolment comes from")
    changed_at: datetime | None
    timezone: str = Field(description="programme local time: event windows, baselines (read-only)")
    export_sign: Literal["negative", "positive"] = Field(description="LOAD_DISPATCH sign convention (read-only)")
    baseline_method: str = Field(description="how performance is measured: device = the chargers' meters")
    signals: SignalSettings
    events_total: int
    settled_events: int
    committed_kwh: float | None = Field(description="over the settled events (latest run of each)")
    delivered_kwh: float | None
    ratio: float | None
    events: list[ProgrammeEventSummary] = Field(description="the latest events, newest first")


class EnrollmentIn(_In):
    """Enrol in (true) or withdraw from (false) a programme besides the primary one."""
    market_context: str = Field(pattern=r"^\S{1,512}$", description="the programme's OpenADR market context")
    enrolled: bool = Field(strict=True)


# -- settlement runs ---------------------------------------------------------------------------
class SettlementRun(_Out):
    id: int
    event_id: str
    version: int
    supersedes: int | None
    computed_at: datetime
    method: str
    timezone: str
    committed_kwh: float
    delivered_kwh: float
    committed_avg_kw: float | None
    delivered_avg_kw: float | None
    performance_ratio: float | None


class SettlementRunDetail(SettlementRun):
    intervals: list[IntervalPerformance]


# -- bids --------------------------------------------------------------------------------------
class Bid(_Out):
    id: int
    program: str
    strategy: str
    window_start: datetime
    window_end: datetime
    created_at: datetime
    price_per_kw: float
    quantity_kw: list[float]


# -- health ------------------------------------------------------------------------------------
class Health(_Out):
    status: Literal["ok"]


class Readiness(_Out):
    ready: bool
    database: bool
    schema_revision: str | None
    schema_expected: str
    ven_registered: bool | None = Field(description="null when no VEN is required")
    problems: list[str]
