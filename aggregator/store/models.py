"""SQLModel tables. Units: kW, kWh, UTC datetimes; sign: positive = import.

The meter ledger is append-only and idempotent on (source, ts).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def _utc_column(**kwargs) -> Column:
    return Column(DateTime(timezone=True), **kwargs)


class Vehicle(SQLModel, table=True):
    id: str = Field(primary_key=True)
    kind: str
    capacity_kwh: float
    floor_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    eta_charge: float
    eta_discharge: float
    site: int = 0


class Station(SQLModel, table=True):
    """A charging station (one EVSE) the aggregator commands."""
    id: str = Field(primary_key=True)
    site: int = 0
    max_charge_kw: float = 22.0
    max_discharge_kw: float = 0.0     # 0 = charge-only (OCPP 2.0.1, or not bidirectional)
    online: bool = False
    last_seen: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))


class PlugSession(SQLModel, table=True):
    """One vehicle plugged into one station. At most one open session (left_at NULL) per vehicle."""
    __table_args__ = (Index("one_open_session_per_vehicle", "vehicle_id", unique=True,
                            sqlite_where=text("left_at IS NULL"), postgresql_where=text("left_at IS NULL")),)
    id: int | None = Field(default=None, primary_key=True)
    vehicle_id: str = Field(foreign_key="vehicle.id", index=True)
    station_id: str | None = Field(default=None, index=True)
    arrived_at: datetime = Field(sa_column=_utc_column(nullable=False))
    departs_at: datetime = Field(sa_column=_utc_column(nullable=False))
    energy_at_arrival_kwh: float
    need_kwh: float
    left_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    energy_at_departure_kwh: float | None = None
    closed_reason: str | None = None  # departed | replaced | reconciled
    # the driver's choices for this session (FleetRegistry.driver_update), kept across restarts
    opt_out: bool = False             # withdrawn from discharging
    boost_kwh: float | None = None    # a boost in force: charge at full power to this energy, no export
    boost_until: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))   # ... until then
    reserve_kwh: float | None = None  # never discharged below this (overrides the vehicle's floor)


class Commitment(SQLModel, table=True):
    """What the fleet committed to for an event (the event itself is the VEN's `ven_event` row).

    One row per piece at executed times, after priority arbitration: `kind` is
    "event" (an event interval), "ramp" (a ramp-up step) or "recovery". The
    baseline of delta / capacity / percent-offset signals is frozen when the
    event is first accepted and kept here, so later re-resolutions use it."""
    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(foreign_key="ven_event.event_id", index=True)
    start: datetime = Field(sa_column=_utc_column(nullable=False))
    end: datetime = Field(sa_column=_utc_column(nullable=False))
    requested: float | None = None   # what the VTN asked, in the signal's units; NULL for ramp/recovery steps
    import_ceiling_kw: float | None = None   # resolved fleet import ceiling; NULL = no commitment
    baseline_kw: float = 0.0         # fleet power when the event was first accepted, kW
    kind: str = "event"              # event | ramp | recovery


class Bid(SQLModel, table=True):
    """A DR bid (bidding/): quantity per hour of a programme window, its price, the forecast
    percentiles and the history and parameters used (JSON text; see bidding.bids.Bid)."""
    __tablename__ = "bid"
    id: int | None = Field(default=None, primary_key=True)
    program: str = Field(index=True)
    strategy: str = "optimal"
    window_start: datetime = Field(sa_column=_utc_column(nullable=False, index=True))
    window_end: datetime = Field(sa_column=_utc_column(nullable=False))
    created_at: datetime = Field(sa_column=_utc_column(nullable=False))
    price_per_kw: float
    quantity_json: str = Field(sa_column=Column(Text, nullable=False))    # [kW per hour]
    forecast_json: str = Field(sa_column=Column(Text, nullable=False))    # {"p50": [...], "p90": [...], "mean": [...]}
    history_json: str = Field(sa_column=Column(Text, nullable=False))
    params_json: str = Field(sa_column=Column(Text, nullable=False))


class SetpointRecord(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    vehicle_id: str = Field(index=True)
    event_id: str | None = Field(default=None, index=True)
    issued_at: datetime = Field(sa_column=_utc_column(nullable=False, index=True))
    power_kw: float


class MeterReading(SQLModel, table=True):
    """A charger meter sample: grid-side registers and instantaneous power."""
    __table_args__ = (UniqueConstraint("source", "ts"),)
    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(index=True)   # charger/vehicle id, or "fleet"
    ts: datetime = Field(sa_column=_utc_column(nullable=False, index=True))
    energy_import_kwh: float          # cumulative register, grid -> vehicle
    energy_export_kwh: float          # cumulative register, vehicle -> grid
    power_kw: float                   # signed, positive = import
    soc_pct: float | None = None


class StationCredential(SQLModel, table=True):
    """An OCPP station allowed to connect (`v2x stations add`): its limits and, for
    security profile 2, its password as a salted scrypt hash (never the password)."""
    __tablename__ = "station_credential"
    station_id: str = Field(primary_key=True)
    password_hash: str | None = None      # "scrypt$n$r$p$salt_hex$hash_hex"
    site: int = 0
    max_charge_kw: float = 22.0
    max_discharge_kw: float = 0.0
    created_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))


class ApiToken(SQLModel, table=True):
    """A bearer token of the HTTP API (`v2x tokens create`): its role, the vehicle a driver
    token is bound to, and the token as a SHA-256 hash (the token itself is shown once)."""
    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_column=Column(Text, nullable=False, unique=True))   # sha256 hex of the token
    role: str                               # driver | operator | utility
    vehicle_id: str | None = None           # drivers only: the one vehicle the token sees and changes
    label: str = ""
    created_at: datetime = Field(sa_column=_utc_column(nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))


class PartitionLease(SQLModel, table=True):
    """Who runs a partition's dispatcher and VEN (aggregator/cluster/lease.py): taken over only
    once `expires_at` has passed; every change of owner raises `fencing_token`."""
    __tablename__ = "partition_lease"
    partition: str = Field(primary_key=True)
    owner: str                              # instance id + a per-process suffix
    fencing_token: int = Field(sa_column=Column(BigInteger, nullable=False))
    acquired_at: datetime = Field(sa_column=_utc_column(nullable=False))
    expires_at: datetime = Field(sa_column=_utc_column(nullable=False))


class StationCommand(SQLModel, table=True):
    """A setpoint on its way to the instance holding the station's socket (aggregator/cluster/commands.py),
    stamped with the leaseholder's fencing token; the gateway refuses one older than the lease's."""
    __tablename__ = "station_command"
    id: int | None = Field(default=None, primary_key=True)
    partition: str = Field(index=True)
    fencing_token: int = Field(sa_column=Column(BigInteger, nullable=False))
    gateway: str = Field(index=True)       # instance id that holds the station's connection
    station_id: str
    power_kw: float
    valid_from: datetime = Field(sa_column=_utc_column(nullable=False))
    valid_until: datetime = Field(sa_column=_utc_column(nullable=False))
    created_at: datetime = Field(sa_column=_utc_column(nullable=False))
    done_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    ack: str | None = None                  # accepted | rejected | timed_out | offline | fenced
    detail: str | None = None


class StationConnection(SQLModel, table=True):
    """Which instance holds each connected station's socket (one row per connected station)."""
    __tablename__ = "station_connection"
    station_id: str = Field(primary_key=True)
    gateway: str = Field(index=True)
    since: datetime = Field(sa_column=_utc_column(nullable=False))


class StationEventRecord(SQLModel, table=True):
    """A station event relayed from the instance holding the socket to the partition's leaseholder
    (aggregator/cluster/relay.py); read in id order, pruned once old."""
    __tablename__ = "station_event_relay"
    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"),
                                                          primary_key=True, autoincrement=True))
    gateway: str
    station_id: str
    payload: str = Field(sa_column=Column(Text, nullable=False))    # JSON: {"type": ..., fields}
    created_at: datetime = Field(sa_column=_utc_column(nullable=False, index=True))
