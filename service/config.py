"""Settings: one TOML file plus environment overrides, validated once at startup.

Precedence (highest first): environment variables (``CARDIAC_CDS_`` prefix, ``__`` between
nested keys, e.g. ``CARDIAC_CDS_AUTH__ENABLED=false``), then the TOML file, then the defaults
below. With no file, the embedded ``default-config.toml`` (a local development profile) is used.

Nothing here is read at import time: ``load_settings`` is called by the CLI and by tests, and the
resulting object is passed down explicitly.
"""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = Path(__file__).with_name("default-config.toml")

# Asymmetric algorithms only: CDS Hooks 2.0 forbids `none` and every HMAC algorithm.
JwtAlgorithm = Literal["ES384", "RS384", "ES256", "RS256", "ES512", "RS512", "PS384"]
RECOMMENDED_ALGORITHMS: tuple[JwtAlgorithm, ...] = ("ES384", "RS384")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _base_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


class FhirServerAllowance(_Section):
    """A FHIR base URL a client may name as `fhirServer`; nothing else is ever contacted."""

    base_url: str
    # Open servers (the public sandbox without SMART launch) send no fhirAuthorization.
    allow_without_token: bool = False

    _check_url = field_validator("base_url")(_base_url)


class TrustedClient(_Section):
    """A CDS client (EHR) allowed to call the service, identified by its JWT `iss`."""

    issuer: str
    jwks_url: str | None = None
    jwks_file: Path | None = None
    # `jku` header values accepted for this issuer; a token naming another jku is rejected.
    allowed_jku: list[str] = Field(default_factory=list)
    algorithms: list[JwtAlgorithm] = Field(default_factory=lambda: list(RECOMMENDED_ALGORITHMS))
    fhir_servers: list[FhirServerAllowance] = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs_keys(self) -> TrustedClient:
        if not (self.jwks_url or self.jwks_file or self.allowed_jku):
            raise ValueError(
                f"trusted client {self.issuer!r} needs jwks_url, jwks_file or allowed_jku"
            )
        return self


class AuthSettings(_Section):
    enabled: bool = True
    clients: list[TrustedClient] = Field(default_factory=list)
    clock_skew_seconds: int = Field(default=30, ge=0, le=300)
    # Tokens living longer than this are refused: it bounds the jti replay cache.
    max_token_lifetime_seconds: int = Field(default=600, ge=30, le=3600)
    # In-process replay cache only (no cache.redis_url): tokens remembered at once, ~100 bytes
    # each. Full, it refuses new tokens (fail closed): size it for peak calls per second times
    # the clients' token lifetime (500 calls/s x 600 s = 300,000), or use Redis.
    replay_cache_max_entries: int = Field(default=500_000, ge=1000)
    jwks_cache_seconds: int = Field(default=300, ge=0)
    # An unknown `kid` triggers a JWKS refetch at most this often per URL (key rotation
    # without letting forged tokens make the service hammer the client's JWKS endpoint).
    jwks_min_refresh_seconds: int = Field(default=30, ge=0)
    # Only used when `enabled = false`: FHIR servers reachable by unauthenticated calls.
    unauthenticated_fhir_servers: list[FhirServerAllowance] = Field(default_factory=list)
    # Development only: trust a key pair generated under `state_dir/dev-client/`, so the
    # `dev-token` command can sign requests. Refused when environment = "production".
    dev_client: bool = False
    # FHIR servers the dev client may name as `fhirServer` (default none: demos use prefetch).
    dev_client_fhir_servers: list[FhirServerAllowance] = Field(default_factory=list)


class CorsSettings(_Section):
    origins: list[str] = Field(default_factory=list)


class FhirAccessSettings(_Section):
    # Whole-request budget for fetching missing prefetch keys (CDS Hooks asks for ~500 ms
    # answers; Da Vinci CRD allows 5 s at p90).
    deadline_seconds: float = Field(default=2.5, gt=0, le=30)
    max_pages: int = Field(default=5, ge=1, le=50)
    max_connections: int = Field(default=20, ge=1)
    # One FHIR response larger than this is not read (a gap): bounds memory per request.
    max_response_bytes: int = Field(default=10_485_760, ge=65_536)


class LimitsSettings(_Section):
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # What one call may carry (413 with an OperationOutcome naming the limit): a hook call is
    # answered in milliseconds only if its work is bounded.
    max_json_depth: int = Field(default=64, ge=16)  # FHIR in a Bundle nests ~15 deep
    max_array_items: int = Field(default=10_000, ge=100)  # any one JSON array
    max_draft_orders: int = Field(default=100, ge=1)  # context.draftOrders entries
    max_feedback_items: int = Field(default=500, ge=1)  # feedback[] per call


class StorageSettings(_Section):
    url: str = "sqlite:///var/cardiac-ct-cds.db"
    audit_retention_days: int = Field(
        default=2555, ge=1
    )  # ~7 years, a common payer-dispute horizon
    audit_queue_size: int = Field(default=10_000, ge=100)
    # Audit records written per transaction by the background writer.
    audit_batch_size: int = Field(default=200, ge=1, le=10_000)
    # Longest wait between write attempts while the database is unreachable.
    retry_max_seconds: float = Field(default=30.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("storage.url must be sqlite:///path or postgresql+psycopg://...")
        return value


class CacheSettings(_Section):
    # None: in-process caches (single replica). A redis:// URL shares them across replicas.
    redis_url: str | None = None
    # Prefix of every Redis key, so several deployments (or test runs) can share one Redis.
    key_prefix: str = Field(default="cardiac-ct-cds", min_length=1, pattern=r"^[A-Za-z0-9:._-]+$")


class MetricsSettings(_Section):
    # Prometheus text exposition at http://host:port/metrics, on its own listener: never on the
    # EHR-facing port, never behind a CDS client's token. Loopback by default; in Kubernetes
    # listen on 0.0.0.0 and let the NetworkPolicy admit only the scraper.
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=1, le=65535)


# `cardiac-ct-cds admin-password` output: scrypt parameters (log2 N, r, p), salt and key in
# unpadded base64 (the PHC string format passlib also uses for scrypt).
ADMIN_PASSWORD_HASH = re.compile(
    r"^\$scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,2}),p=(?P<p>\d{1,2})"
    r"\$(?P<salt>[A-Za-z0-9+/]{16,})\$(?P<key>[A-Za-z0-9+/]{32,})$"
)


class AdminSettings(_Section):
    """The rule owners' dashboard, on its own listener: never on the EHR-facing port, never
    reachable with a CDS client's JWT. HTTP Basic against `password_hash`, and/or a trusted
    authenticating reverse proxy (`trusted_proxy_header`, honoured only from `trusted_proxies`)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9465, ge=1, le=65535)
    username: str = Field(default="admin", pattern=r"^[^:\s]{1,100}$")
    password_hash: str | None = None
    trusted_proxy_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,100}$")
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    # Back-test runs: one subdirectory per run, each with a summary.json. None: not shown.
    backtest_dir: Path | None = None

    @field_validator("password_hash")
    @classmethod
    def _scrypt_hash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        found = ADMIN_PASSWORD_HASH.match(value)
        if not found or not (
            14 <= int(found["ln"]) <= 20
            and 1 <= int(found["r"]) <= 32
            and 1 <= int(found["p"]) <= 16
        ):
            raise ValueError(
                "admin.password_hash is not a hash made by `cardiac-ct-cds admin-password` "
                "($scrypt$ln=14..20,r=..,p=..$salt$key); never put the password itself here"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _not_everyone(cls, value: list[IPvAnyNetwork]) -> list[IPvAnyNetwork]:
        if any(network.prefixlen == 0 for network in value):
            raise ValueError(
                "admin.trusted_proxies: trusting every address means no authentication"
            )
        return value

    @model_validator(mode="after")
    def _needs_a_credential(self) -> AdminSettings:
        if self.trusted_proxy_header and not self.trusted_proxies:
            raise ValueError(
                "admin.trusted_proxy_header needs admin.trusted_proxies (the proxy addresses "
                "whose header is believed)"
            )
        if self.enabled and not (self.password_hash or self.trusted_proxy_header):
            raise ValueError(
                "admin.enabled = true needs a way to authenticate rule owners: "
                "admin.password_hash (make it with `cardiac-ct-cds admin-password`) or "
                "admin.trusted_proxy_header with admin.trusted_proxies; the dashboard never "
                "runs without authentication"
            )
        return self


# active: shown. silent: evaluated and audited with the card it would have shown, never returned
# to the EHR and never in coverage information. off: not evaluated.
TopicMode = Literal["active", "silent", "off"]


class RulesSettings(_Section):
    # Site overlay: YAML files here extend/override the bundled rule data (payers, code lists).
    extra_data_dir: Path | None = None
    # Per topic code, for every service (default: every topic active). Checked at startup.
    topic_modes: dict[str, TopicMode] = Field(default_factory=dict)
    # Per service id, then topic code: overrides topic_modes for that service.
    service_topic_modes: dict[str, dict[str, TopicMode]] = Field(default_factory=dict)

    def modes_for(self, service_id: str) -> dict[str, TopicMode]:
        """Topic -> mode for one service (topics not listed are active)."""
        return {**self.topic_modes, **self.service_topic_modes.get(service_id, {})}


class Settings(BaseSettings):
    """Validated service configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="CARDIAC_CDS_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    public_base_url: Annotated[str, Field(description="Base URL clients call; JWT `aud` check")]
    environment: Literal["development", "production", "test"] = "production"
    state_dir: Path = Path("var")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "json": one JSON object per line (time, level, logger, message) for log shippers.
    log_format: Literal["text", "json"] = "text"
    auth: AuthSettings = AuthSettings()
    cors: CorsSettings = CorsSettings()
    fhir: FhirAccessSettings = FhirAccessSettings()
    limits: LimitsSettings = LimitsSettings()
    storage: StorageSettings = StorageSettings()
    cache: CacheSettings = CacheSettings()
    rules: RulesSettings = RulesSettings()
    metrics: MetricsSettings = MetricsSettings()
    admin: AdminSettings = AdminSettings()

    _check_url = field_validator("public_base_url")(_base_url)

    @model_validator(mode="after")
    def _no_dev_shortcuts_in_production(self) -> Settings:
        if self.environment == "production" and self.auth.dev_client:
            raise ValueError("auth.dev_client is for development; set environment accordingly")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (passed as init kwargs), so deployments can override it.
        return env_settings, init_settings, file_secret_settings

    def service_url(self, path: str) -> str:
        """The absolute URL clients use for `path`: what a JWT `aud` must equal."""
        return f"{self.public_base_url}{path}"


class ConfigError(Exception):
    """The configuration file or environment is invalid; the message says where."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read `config_file` (or the embedded default), apply env and `overrides`, validate."""
    path = config_file or DEFAULT_CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    data.update(overrides)
    base = path.parent
    try:
        settings = Settings(**data)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return _resolve_paths(settings, base)


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    """Relative key files in the config are relative to the config file, not the cwd."""
    clients = [
        c.model_copy(update={"jwks_file": base / c.jwks_file})
        if c.jwks_file is not None and not c.jwks_file.is_absolute()
        else c
        for c in settings.auth.clients
    ]
    return settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"clients": clients})}
    )
