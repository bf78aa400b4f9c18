"""Configuration: a TOML file plus `V2X_*` environment variables.

Precedence: built-in defaults < config file < environment. Unknown keys and
invalid values stop start-up with a `ConfigError` naming the key.
"""
from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the offending key."""


def iana_timezone(value: str) -> str:
    """`value` if it names an IANA time zone, else a ValueError saying so."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone") from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VenSettings(_Strict):
    vtn_url: str = "http://127.0.0.1:8080/OpenADR2/Simple/2.0b"
    ven_name: str = "v2x-fleet"
    ven_id: str | None = None
    # Mutual TLS and XML signatures (all four together, or none): our certificate and
    # key (EC P-256), the CA that signed the VTN's certificate, and the VTN certificate's
    # fingerprint as the utility gave it (pins both its signatures and its TLS certificate).
    # Target matching (rule 22): events aimed at these resources, parties or groups are ours
    # (besides our venID and events with no target).
    resource_ids: list[str] = Field(default_factory=list)
    party_ids: list[str] = Field(default_factory=list)
    group_ids: list[str] = Field(default_factory=list)
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    vtn_fingerprint: str | None = None
    # The longest gap between two polls while the VEN backs off after transport failures or
    # refused messages (None: max(60 s, 10 of the VTN's poll periods)).
    max_poll_backoff_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _tls_complete(self) -> "VenSettings":
        given = {name: getattr(self, name) for name in ("cert_file", "key_file", "ca_file", "vtn_fingerprint")}
        missing = [name for name, value in given.items() if not value]
        if 0 < len(missing) < len(given):
            raise ValueError(f"TLS needs cert_file, key_file, ca_file and vtn_fingerprint together; missing {missing}")
        for name in ("cert_file", "key_file", "ca_file"):
            if given[name] and not Path(given[name]).is_file():
                raise ValueError(f"{name} {given[name]!r} does not exist")
        if given["vtn_fingerprint"] and not self.vtn_url.startswith("https://"):
            raise ValueError("TLS settings need an https:// vtn_url")
        return self

    @property
    def secure(self) -> bool:
        return bool(self.cert_file)

    @field_validator("vtn_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class DatabaseSettings(_Strict):
    url: str = "sqlite:///v2x.db"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value


class ProgramSettings(_Strict):
    """How a DR program's signals become fleet import targets."""
    market_context: str = "http://utility.example/programs/v2x-summer"
    # Other programs' market contexts we are enrolled in too (events for any other get optOut 453).
    additional_market_contexts: list[str] = Field(default_factory=list)
    # ELECTRICITY_PRICE/price: at or above each price ($/kWh), export this many kW (highest met wins).
    price_export_kw: list[tuple[float, float]] = Field(default_factory=lambda: [(0.30, 100.0), (0.50, 200.0)])
    timezone: str = "America/New_York"   # local time of the program: event windows, baselines, DST
    # LOAD_DISPATCH values: "negative" means a value < 0 asks for export (our
    # own sign: positive = import); "positive" means a value > 0 is the export asked.
    export_sign: Literal["negative", "positive"] = "positive"
    # SIMPLE level -> fleet export asked, kW (positive = export). Level 0 asks nothing.
    simple_level_export_kw: dict[str, float] = Field(
        default_factory=lambda: {"1": 100.0, "2": 200.0, "3": 300.0})
    # How far below the target (more export) the fleet may go, kW; None = no bound.
    max_over_delivery_kw: float | None = None
    # Opt out when the fleet's closed-form export bound covers less than this
    # share of what an event asks (best effort above it, shortfall reported).
    min_coverage_to_opt_in: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return iana_timezone(value)

    @field_validator("simple_level_export_kw")
    @classmethod
    def _levels(cls, value: dict[str, float]) -> dict[str, float]:
        for level, kw in value.items():
            if level not in {"1", "2", "3"}:
                raise ValueError(f"level {level!r} is not a SIMPLE level (1, 2 or 3)")
            if kw < 0:
                raise ValueError(f"level {level}: export must be >= 0 kW, got {kw}")
        return value


class MetricsSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


class ApiSettings(_Strict):
    """The HTTP API, web console and /healthz, /readyz, served by `v2x run` (aggregator/api)."""
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)


class FleetSettings(_Strict):
    scenario: str = "default"   # a scenario name shipped with the project, or a file path
    meter_interval_s: float = Field(default=5.0, gt=0)


class OcppSettings(_Strict):
    """The CSMS: where stations connect (ws[s]://host:port/ocpp/<station id>) and how they authenticate.
    security_profile 0: none (development only), 1: HTTP Basic over ws (testing only),
    2: HTTP Basic over TLS (cert_file, key_file), 3: TLS client certificates (also ca_file)."""
    host: str = "127.0.0.1"
    port: int = Field(default=9000, ge=0, le=65535)
    security_profile: int = Field(default=1, ge=0, le=3)
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    command_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _tls(self) -> "OcppSettings":
        if self.security_profile >= 2 and not (self.cert_file and self.key_file):
            raise ValueError(f"security_profile {self.security_profile} needs cert_file and key_file")
        if self.security_profile == 3 and not self.ca_file:
            raise ValueError("security_profile 3 needs ca_file (the CA of the station certificates)")
        return self


class ClusterSettings(_Strict):
    """Several instances on one PostgreSQL (aggregator/cluster): each partition's dispatcher and VEN
    run on the one instance holding its lease; commands reach stations through the database."""
    enabled: bool = False
    instance_id: str | None = None      # None: $HOSTNAME (the pod name on Kubernetes), else the host name
    partition: str | None = None        # the VEN account (and site) this instance competes for; None: ven.ven_name
    lease_seconds: float = Field(default=15.0, ge=1.0, le=600.0)


class SiteSettings(_Strict):
    """A site seeded into the database at start (`[[sites]]`), unless the database has it already:
    after that the API edits it. Limits in kW; left out = no limit."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    id: int = Field(ge=0, le=1_000_000)          # the `site` number of its stations and vehicles
    name: str = Field(min_length=1, max_length=128)
    timezone: str | None = None                  # IANA; None: the programme's
    import_limit_kw: float | None = Field(default=None, ge=0, le=1_000_000)   # transformer / supply contract
    export_limit_kw: float | None = Field(default=None, ge=0, le=1_000_000)   # interconnection agreement
    notes: str = Field(default="", max_length=2000)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return None if value is None else iana_timezone(value)


class Settings(_Strict):
    ven: VenSettings = VenSettings()
    database: DatabaseSettings = DatabaseSettings()
    program: ProgramSettings = ProgramSettings()
    metrics: MetricsSettings = MetricsSettings()
    api: ApiSettings = ApiSettings()
    fleet: FleetSettings = FleetSettings()
    ocpp: OcppSettings = OcppSettings()
    cluster: ClusterSettings = ClusterSettings()
    sites: list[SiteSettings] = Field(default_factory=list)

    @field_validator("sites")
    @classmethod
    def _unique_sites(cls, value: list[SiteSettings]) -> list[SiteSettings]:
        seen: set[int] = set()
        for site in value:
            if site.id in seen:
                raise ValueError(f"site id {site.id} is listed twice")
            seen.add(site.id)
        return value


# Environment variable -> (section, key)
ENVIRONMENT = {
    "V2X_VTN_URL": ("ven", "vtn_url"),
    "V2X_VEN_NAME": ("ven", "ven_name"),
    "V2X_VEN_ID": ("ven", "ven_id"),
    "V2X_VEN_CERT": ("ven", "cert_file"),
    "V2X_VEN_KEY": ("ven", "key_file"),
    "V2X_VTN_CA": ("ven", "ca_file"),
    "V2X_VTN_FINGERPRINT": ("ven", "vtn_fingerprint"),
    "V2X_DATABASE_URL": ("database", "url"),
    "V2X_MARKET_CONTEXT": ("program", "market_context"),
    "V2X_EXPORT_SIGN": ("program", "export_sign"),
    "V2X_METRICS_PORT": ("metrics", "port"),
    "V2X_API_HOST": ("api", "host"),
    "V2X_API_PORT": ("api", "port"),
    "V2X_SCENARIO": ("fleet", "scenario"),
    "V2X_OCPP_PORT": ("ocpp", "port"),
    "V2X_CLUSTER_ENABLED": ("cluster", "enabled"),
    "V2X_INSTANCE_ID": ("cluster", "instance_id"),
    "V2X_PARTITION": ("cluster", "partition"),
    "V2X_LEASE_SECONDS": ("cluster", "lease_seconds"),
}


def default_config_text() -> str:
    return resources.files("aggregator.defaults").joinpath("v2x.toml").read_text()


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read the config file (if any; `V2X_CONFIG` names one too) and the environment."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get("V2X_CONFIG")
    data: dict = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    for variable, (section, key) in ENVIRONMENT.items():
        if variable in environ and environ[variable] != "":
            data.setdefault(section, {})[key] = environ[variable]
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            where = ".".join(str(part) for part in error["loc"])
            source = f" (from {path})" if path else ""
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown key '{where}'{source}")
            else:
                problems.append(f"'{where}': {error['msg']} (got {error.get('input')!r}){source}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
