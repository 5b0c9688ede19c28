"""Settings of the hub, read from ``ALLIANCE_*`` environment variables.

Nothing here opens a database or builds an app; ``create_app`` does that with the
``Settings`` it is given, so tests and tools can make as many hubs as they like.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alliance.domain.errors import ConfigurationError
from alliance.domain.grading import GradingConfig
from alliance.domain.pin_hashing import PinKeyRing

ENV_PREFIX = "ALLIANCE_"
# The POS client's own settings share the prefix; the hub leaves them to it.
FOREIGN_PREFIXES = ("ALLIANCE_POS_",)
ISO_4217_LENGTH = 3
# How the hub reaches PostgreSQL: its own sessions (directly, or PgBouncer in session
# pooling), or PgBouncer's transaction pooling, where each transaction may run on another
# server session (see alliance.db).
DATABASE_POOLING_MODES = ("session", "transaction")
SWITCH_VALUES = ("on", "off")
LOG_FORMATS = ("json", "text")
MIN_METRICS_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Settings:
    """Every knob of the hub; each maps to ``ALLIANCE_<NAME>`` in the environment."""

    database_url: str | None = None
    instance_path: str | None = None
    environment: str = "development"
    secret_key: str | None = None
    alliance_currency: str = "EUR"
    alliance_time_zone: str = "UTC"
    points_expiry_months: int = 24
    hold_ttl_s: int = 900
    max_body_bytes: int = 1_048_576
    sqlite_busy_timeout_ms: int = 10_000
    database_pool_size: int = 5
    # "transaction" behind PgBouncer in transaction pooling: nothing may outlive a transaction.
    database_pooling: str = "session"
    database_connect_timeout_s: int = 5
    # Straight to the primary (not through PgBouncer), for ``alliance db``; default: database_url.
    migration_database_url: str | None = None
    # A streaming replica that report reads may use while its replay lag is within replica_max_lag_s.
    replica_database_url: str | None = None
    replica_max_lag_s: int = 5
    pii_keys: str | None = None
    pin_keys: str | None = None
    transfer_max_points: int = 5_000
    transfer_daily_max_points: int = 10_000
    transfer_min_membership_days: int = 30
    # A goodwill credit or correction of more points than this waits for a second person's approval.
    goodwill_approval_threshold_points: int = 1_000
    # Releasing or reversing a risk hold of more points than this needs a second person (four eyes).
    risk_approval_threshold_points: int = 5_000
    # A partner's credit state turns to warning (alerting its managers and finance) at this percent of its limit.
    credit_warning_percent: int = 80
    # An earn of at least this many points is sent to the member (the member.points_earned webhook event).
    member_points_notice_threshold: int = 1_000
    # A partner key expiring within this many days is announced to its partner (key.expiring).
    webhook_key_expiry_notice_days: int = 14
    statement_key: str | None = None
    statement_payment_terms_days: int = 14
    # The hub's Ed25519 key signing webhook deliveries (PEM), and extra public keys published during a rotation.
    webhook_key: str | None = None
    webhook_published_keys: str | None = None
    grading_weights: str = ("purchase_volume_minor=25,active_members=15,redemption_count=10,"
                            "complaint_rate_per_1000=20,median_resolution_hours=5,refund_rate=10,days_late=15")
    grading_bands: str = "A=75,B=50,C=25"
    grading_min_transactions: int = 10
    grading_min_active_members: int = 3
    grading_complaint_rate_alert: str = "5"
    partner_rate_per_s: int = 100
    partner_burst: int = 200
    partner_max_in_flight: int = 32
    # Reverse proxies in front of the hub that set X-Forwarded-For and -Proto (HAProxy: 1).
    proxy_hops: int = 0
    # Prometheus metrics: counted when on; GET /metrics answers only this bearer token.
    metrics: str = "on"
    metrics_token: str | None = None
    # One JSON object per log line, or text for a person at a terminal; and a line per request.
    log_format: str = "json"
    request_log: str = "on"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``ALLIANCE_*`` variables; unknown ones are an error."""
        environ = os.environ if environ is None else environ
        known = {settings_field.name: settings_field for settings_field in fields(cls) }
        # Each value has its own field's type (_convert reads the field's annotation), which no one
        # type for the whole dictionary can say: hence Any, and validated() checks what they mean.
        values: dict[str, Any] = {}
        for variable, raw in environ.items():
            if not variable.startswith(ENV_PREFIX) or variable.startswith(FOREIGN_PREFIXES):
                continue
            name = variable[len(ENV_PREFIX):].lower()
            if name not in known:
                raise ConfigurationError(f"unknown setting {variable}; see docs/configuration.md")
            values[name] = _convert(variable, raw, known[name].type)
        return cls(**values).validated()

    def with_overrides(self, **overrides: Any) -> "Settings":
        """A copy with some settings replaced, validated again."""
        return replace(self, **overrides).validated()

    def validated(self) -> "Settings":
        """Return self if every setting makes sense, else raise ``ConfigurationError``."""
        if self.environment not in {"development", "production", "test"}:
            raise ConfigurationError("ALLIANCE_ENVIRONMENT must be development, production or test")
        if (len(self.alliance_currency) != ISO_4217_LENGTH or not self.alliance_currency.isalpha()
                or not self.alliance_currency.isupper()):
            raise ConfigurationError("ALLIANCE_ALLIANCE_CURRENCY must be a three-letter ISO 4217 code such as EUR")
        try:
            ZoneInfo(self.alliance_time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"ALLIANCE_ALLIANCE_TIME_ZONE {self.alliance_time_zone!r} is not an IANA time zone") from None
        if self.environment == "production" and not self.secret_key:
            raise ConfigurationError("ALLIANCE_SECRET_KEY is required in production")
        if self.environment == "production" and not self.database_url:
            raise ConfigurationError("ALLIANCE_DATABASE_URL is required in production")
        if self.environment == "production" and not self.pii_keys:
            raise ConfigurationError("ALLIANCE_PII_KEYS is required in production (see 'alliance pii new-key-ring')")
        self._check_pin_keys()
        self._check_database_topology()
        for name in ("points_expiry_months", "hold_ttl_s", "max_body_bytes", "sqlite_busy_timeout_ms",
                     "database_pool_size", "database_connect_timeout_s", "transfer_max_points",
                     "transfer_daily_max_points"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"ALLIANCE_{name.upper()} must be a positive whole number")
        if self.environment == "production" and not self.statement_key:
            raise ConfigurationError(
                "ALLIANCE_STATEMENT_KEY is required in production (see 'alliance statements new-key')")
        self._check_webhook_keys()
        if not 0 <= self.statement_payment_terms_days <= 366:
            raise ConfigurationError("ALLIANCE_STATEMENT_PAYMENT_TERMS_DAYS must be between 0 and 366")
        self.grading_config()
        if not 1 <= self.credit_warning_percent <= 100:
            raise ConfigurationError("ALLIANCE_CREDIT_WARNING_PERCENT must be a whole number from 1 to 100")
        if self.member_points_notice_threshold <= 0:
            raise ConfigurationError("ALLIANCE_MEMBER_POINTS_NOTICE_THRESHOLD must be a positive whole number")
        if not 1 <= self.webhook_key_expiry_notice_days <= 365:
            raise ConfigurationError("ALLIANCE_WEBHOOK_KEY_EXPIRY_NOTICE_DAYS must be a whole number from 1 to 365")
        if self.goodwill_approval_threshold_points < 0:
            raise ConfigurationError("ALLIANCE_GOODWILL_APPROVAL_THRESHOLD_POINTS must not be negative")
        if self.risk_approval_threshold_points < 0:
            raise ConfigurationError("ALLIANCE_RISK_APPROVAL_THRESHOLD_POINTS must not be negative")
        if self.transfer_min_membership_days < 0:
            raise ConfigurationError("ALLIANCE_TRANSFER_MIN_MEMBERSHIP_DAYS must not be negative")
        if not 0 <= self.proxy_hops <= 5:
            raise ConfigurationError("ALLIANCE_PROXY_HOPS must be between 0 and 5 (the proxies in front of the hub)")
        self._check_observability()
        for name in ("partner_rate_per_s", "partner_burst", "partner_max_in_flight"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"ALLIANCE_{name.upper()} must not be negative (0 switches the limit off)")
        return self

    def _check_database_topology(self) -> None:
        if self.database_pooling not in DATABASE_POOLING_MODES:
            raise ConfigurationError("ALLIANCE_DATABASE_POOLING must be session or transaction "
                                     "(transaction behind PgBouncer's transaction pooling)")
        if self.replica_max_lag_s < 0:
            raise ConfigurationError("ALLIANCE_REPLICA_MAX_LAG_S must not be negative")
        if (self.migration_database_url or self.replica_database_url) and not self.database_url:
            raise ConfigurationError("ALLIANCE_MIGRATION_DATABASE_URL and ALLIANCE_REPLICA_DATABASE_URL need "
                                     "ALLIANCE_DATABASE_URL (the primary) as well")

    def _check_observability(self) -> None:
        for name, allowed in (("metrics", SWITCH_VALUES), ("request_log", SWITCH_VALUES), ("log_format", LOG_FORMATS)):
            if getattr(self, name) not in allowed:
                raise ConfigurationError(f"ALLIANCE_{name.upper()} must be {' or '.join(allowed)}")
        if self.metrics_token is not None and len(self.metrics_token) < MIN_METRICS_TOKEN_LENGTH:
            raise ConfigurationError(f"ALLIANCE_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} characters "
                                     "(a random secret; Prometheus sends it as a bearer token)")

    def _check_webhook_keys(self) -> None:
        from alliance.domain.webhook_signing import load_published_keys, load_webhook_private_key

        if self.environment == "production" and not self.webhook_key:
            raise ConfigurationError("ALLIANCE_WEBHOOK_KEY is required in production (see 'alliance webhooks new-key')")
        if self.webhook_key:
            load_webhook_private_key(self.webhook_key)
        load_published_keys(self.webhook_published_keys or "")

    def _check_pin_keys(self) -> None:
        if not self.pin_keys:
            if self.environment == "production":
                raise ConfigurationError(
                    "ALLIANCE_PIN_KEYS is required in production (see 'alliance pins new-key-ring')")
            return
        try:
            PinKeyRing.from_config(self.pin_keys)
        except ConfigurationError as error:
            raise ConfigurationError(f"ALLIANCE_PIN_KEYS: {error.detail}") from None

    def grading_config(self) -> GradingConfig:
        """The partner-grading configuration these settings describe (``ConfigurationError`` if invalid)."""
        return GradingConfig.from_settings(
            weights=self.grading_weights, bands=self.grading_bands, min_transactions=self.grading_min_transactions,
            min_active_members=self.grading_min_active_members,
            complaint_rate_alert_per_1000=self.grading_complaint_rate_alert,
        )


def _convert(variable: str, raw: str, annotation: object) -> object:
    if annotation in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"{variable} must be a whole number, got {raw!r}") from None
    return raw
