"""The one settings object of a Cairn process.

Values come, highest priority first, from `CAIRN_*` environment variables (nested keys with
`__`, e.g. `CAIRN_TRANSFERS__MAX_ACTIVE=50`), then from an optional TOML or YAML config file
named by `CAIRN_CONFIG`, then from the defaults below. Everything is validated when the process
starts; `load_settings` turns pydantic's errors into one message per wrong value naming the
variable to fix.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kernel.errors import ConfigurationError

ENV_PREFIX = "CAIRN_"


class TrustedIssuer(BaseModel):
    """An external token issuer: keys from its JWKS URL, or PEM public keys given inline."""

    issuer: str
    jwks_url: str | None = None
    public_keys: list[str] = Field(default_factory=list)
    audience: str | None = None
    # The VO every token of this issuer belongs to (None: the token's own `vo` claim), and the
    # claim that carries its groups (e.g. `wlcg.groups`, `eduperson_entitlement`).
    vo: str | None = None
    groups_claim: str = "groups"


class TransferSettings(BaseModel):
    """How the transfer daemons share work and pace themselves (`CAIRN_TRANSFERS__*`)."""

    # A claimed request is held this long unless renewed; a crashed worker's work is taken
    # over by another once it runs out. Leases are renewed every lease_s / 4 while work runs.
    lease_s: float = Field(60.0, ge=1)
    # Transfers one worker runs at once over all links, and per SE (as source or destination).
    global_limit: int = Field(64, ge=1)
    per_se_limit: int = Field(32, ge=1)
    # Bounds of the optimizer's per-link decision.
    link_min_active: int = Field(2, ge=1)
    link_max_active: int = Field(32, ge=1)
    # Requests a worker holds claimed beyond the ones running, waiting for a slot on their link
    # (their destination replicas registered already), and at most how many one claim takes.
    prefetch: int = Field(128, ge=0)
    claim_batch: int = Field(256, ge=1)
    # While copies run, what ended is settled (one bulk write per step) at most this often.
    settle_every_s: float = Field(1.0, ge=0)
    # Exponential backoff of transient failures: base * 2^(attempt-1), at most cap.
    retry_base_s: float = Field(10.0, ge=0)
    retry_cap_s: float = Field(3600.0, ge=0)
    copy_timeout_s: float = Field(3600.0, gt=0)
    # Files of at most this many bytes are copied through the worker by the protocol's own
    # client where both SEs allow it (root:// with XrdCl) rather than by TPC; 0: always TPC.
    route_below_bytes: int = Field(16 << 20, ge=0)
    # Stager: how often a bring-online request is polled, and how long staged files stay pinned.
    stage_poll_s: float = Field(10.0, gt=0)
    pin_lifetime_s: float = Field(3600.0, gt=0)
    # Reaper: how many deletion requests it claims per cycle (on FerretDB each claim scans the
    # queue: fewer, larger batches), and how many replicas it looks at per SE and pass.
    reaper_batch: int = Field(1000, ge=1)
    idle_sleep_s: float = Field(1.0, gt=0)
    # A replica count noted on an SE's usage record and not settled after this long is its
    # call's no more (it died): the workers' sweep settles it (`catalogue.usage_intents`).
    usage_settle_after_s: float = Field(60.0, gt=0)
    # A directory move renews its marks after each batch of records it moves; one whose marks were
    # not renewed for this long died (or stalled), and the workers' sweep finishes its move
    # (`catalogue.directory_move_repair`). API servers and workers must agree on it.
    directory_move_lease_s: float = Field(600.0, ge=1)
    # Reaper: a `copying` replica whose upload has been silent this long (killed, its host gone,
    # and no retry took it over) is undone, its bytes deleted (`transfers.abandoned_uploads`); 0: never.
    abandoned_upload_s: float = Field(86400.0, ge=0)


class RuleSettings(BaseModel):
    """How the rule daemons pace themselves (`CAIRN_RULES__*`)."""

    # A rule is worked on by one daemon at a time under a lease this long.
    lease_s: float = Field(60.0, ge=1)
    # How often a replicating rule's locks are checked against their transfers.
    poll_s: float = Field(5.0, gt=0)
    # Locks read and written per database round trip.
    batch: int = Field(1000, ge=1)
    # Attempts of each transfer a rule asks for before its lock becomes stuck.
    transfer_attempts: int = Field(5, ge=1)
    # A rule stuck for longer than this (and not repaired meanwhile) is suspended.
    suspend_after_s: float = Field(24 * 3600.0, gt=0)
    # A rule whose evaluation raised this many passes in a row is suspended (its error kept).
    suspend_after_failures: int = Field(5, ge=1)
    # A rule whose evaluation or cleaning raised k passes in a row is taken again no sooner than
    # poll_s * 2**(k-1) later, at most this long (`rules.backoff`).
    backoff_max_s: float = Field(600.0, gt=0)
    idle_sleep_s: float = Field(1.0, gt=0)
    # Change feed events older than this, and passed by every consumer, are trimmed.
    feed_retention_s: float = Field(7 * 24 * 3600.0, ge=0)


class AuditSettings(BaseModel):
    """The auditor (storage against catalogue) and suspicious replicas."""

    lease_s: float = Field(60.0, ge=1)
    # Files younger than this on storage may be writes not yet registered: never called dark.
    dark_grace_s: float = Field(24 * 3600.0, ge=0)
    # Audit every SE this often on its own (0: only when an operator asks).
    interval_s: float = Field(0.0, ge=0)
    # Catalogue replicas read per page of the sorted walk.
    page: int = Field(10_000, ge=1, le=100_000)
    # On a live listing, ask the SE for each matched file's adler32 where it computes it itself
    # (XRootD, WebDAV, S3): one request per file, so off unless asked.
    checksums: bool = False
    # Reports of a replica missing on storage (downloads, transfers) that mark it lost.
    suspicious_threshold: int = Field(3, ge=1)
    idle_sleep_s: float = Field(5.0, gt=0)


class ProductionSettings(BaseModel):
    """The transformation daemons (`productions.daemons`)."""

    # A transformation is worked on by one instance of each daemon at a time under a lease this
    # long (and the change feed's follower under one): a killed instance's work waits for it.
    lease_s: float = Field(60.0, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    # Where this installation keeps its state (database files of the embedded default,
    # the built-in issuer's signing key, the disk SEs of `cairn up`).
    var_dir: Path = Path("var")
    mongodb_uri: str | None = None
    database: str = Field("cairn", pattern=r"^[A-Za-z0-9_-]{1,60}$")
    # How long a request waits for the database before answering 503.
    db_timeout_ms: int = Field(3000, ge=100, le=120_000)

    api_host: str = "127.0.0.1"
    api_port: int = Field(8700, ge=0, le=65535)
    # Clients use this to reach the API; defaults to http://api_host:api_port.
    api_url: str | None = None
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # How long a request's body may take to arrive (408 after): a client that announces a body
    # and trickles it would hold a handler and its buffer for as long as it liked.
    body_read_s: float = Field(120.0, gt=0, le=86400)
    # A connection with no request in progress (idle between requests, or whose request's headers
    # have not all come: a client trickling them) is closed this long after its last request
    # ended, or after it opened.
    keepalive_s: float = Field(75.0, gt=0, le=86400)

    token_issuer: str = "cairn"
    token_audience: str = "cairn"
    token_lifetime_s: int = Field(12 * 3600, ge=60)
    # How long a revocation is kept whose tokens' expiry is unknown (by jti alone, or of a user):
    # at least the longest lifetime of a token this installation accepts (`cairn token issue`
    # signs up to 366 days). A subject's tokens without `iat` are refused for as long.
    token_revocation_keep_s: int = Field(367 * 86400, ge=3600)
    signing_key_file: Path | None = None
    trusted_issuers: list[TrustedIssuer] = Field(default_factory=list)

    # Secrets for storage plugins, per SE name (e.g. {"S3-CERN": {"access_key": ..., "secret_key": ...}});
    # merged over the non-secret options the SE's protocol carries in the catalogue.
    storage_credentials: dict[str, dict[str, str]] = Field(default_factory=dict)

    transfers: TransferSettings = Field(default_factory=TransferSettings)
    rules: RuleSettings = Field(default_factory=RuleSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    productions: ProductionSettings = Field(default_factory=ProductionSettings)

    # The site this process runs at (clients prefer replicas on its SEs).
    site: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("mongodb_uri")
    @classmethod
    def _uri_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFileSource(settings_cls))

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def resolved_signing_key_file(self) -> Path:
        return self.signing_key_file or self.var_dir / "keys" / "issuer-ed25519.pem"


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads the file named by CAIRN_CONFIG (TOML or YAML), if any."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._data = read_config_file(os.environ.get(ENV_PREFIX + "CONFIG"))

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def read_config_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"CAIRN_CONFIG: no such file {path!r}")
    text = file.read_text()
    # Imported here: most processes (every CLI command) read no file, and yaml costs ~8 ms to load.
    import tomllib

    import yaml

    try:
        data = tomllib.loads(text) if file.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"CAIRN_CONFIG: {path} is not valid: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"CAIRN_CONFIG: {path} must hold a mapping of settings")
    return data


# Settings whose values a message never repeats (tokens, keys, storage credentials...), and the
# password of a URI's user, which it masks: such messages reach terminals and logs.
_SECRET_NAMES = re.compile(r"token|secret|passw|key|credential", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(://[^/@:\s]*):[^/@\s]*@")


def _shown(loc: list[str], value: Any) -> str:
    """What a message about a wrong value says of the value."""
    if isinstance(value, dict):
        return ""
    if any(_SECRET_NAMES.search(part) for part in loc):
        return " (the value is not shown: it may be a secret)"
    masked = _URI_PASSWORD.sub(r"\1:***@", repr(value))
    return f" (got {masked})"


def describe_validation_error(exc: ValidationError) -> str:
    """One line per wrong value, naming the environment variable that sets it (never repeating
    a secret: `_shown`)."""
    lines = ["invalid settings:"]
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        env_name = ENV_PREFIX + "__".join(loc).upper()
        lines.append(f"  {env_name}: {err['msg']}{_shown(loc, err.get('input'))}")
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings; raise ConfigurationError with a readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()
