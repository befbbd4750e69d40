"""Settings of the cloud stack (`edgefleet up`): one pydantic-settings class, overridable by EDGEFLEET_* env.

Development defaults run everything on one machine with nothing to install: a SQLite file, the embedded
MQTT broker, keys created on first start. `environment="production"` refuses those conveniences, since
each of them is unsafe or single-process only (see `CloudSettings.check_production`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud.errors import ConfigurationError

EMBEDDED = "embedded"
DEFAULT_CHUNK_SIZE_BYTES = 64 * 1024


class CloudSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path(".edgefleet")
    # None: derived from data_dir (see the validator); set explicitly to override
    database_url: str | None = None
    mqtt_url: str = EMBEDDED  # "embedded" starts an in-process broker; else mqtt://host:port or mqtts://
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_tls_ca: Path | None = None
    # What enrolled devices are told (POST /api/v1/enroll): the broker URL they should use (None: the
    # cloud's own, e.g. the embedded broker's) and the CA that signed its certificate (None: mqtt_tls_ca)
    device_mqtt_url: str | None = None
    device_tls_ca: Path | None = None
    # The cloud keeps a persistent MQTT session (cloud.mqtt.client_id): its client id is mqtt_client_id, or
    # "edgefleet-cloud-<fleet>-<worker_name>" (None: host + a digest of data_dir); the broker keeps what
    # devices send for mqtt_session_expiry_s while the worker is away
    mqtt_client_id: str | None = None
    worker_name: str | None = None
    mqtt_session_expiry_s: int = Field(default=86_400, ge=0)
    mqtt_reconnect_max_s: float = Field(default=30.0, gt=0)  # longest wait between reconnect attempts
    keys_dir: Path | None = None
    artifacts_dir: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)  # 0 picks a free port
    # The console API in this many processes of its own, sharing the listening socket (cloud.api.processes): the
    # cloud's own workers (ingestion, controller, alerts) then never hold its interpreter lock; 0 serves it from
    # a thread of the cloud's process. `edgefleet up` runs 1 unless this is set.
    api_processes: int = Field(default=0, ge=0, le=16)
    embedded_mqtt_port: int = Field(default=0, ge=0, le=65535)  # the embedded broker's port; 0 picks a free one
    # where the embedded broker listens: loopback by default; 0.0.0.0 lets devices on the LAN reach it (plain
    # TCP with device passwords: a lab, not production)
    embedded_mqtt_host: str = "127.0.0.1"
    # the embedded broker checks device credentials and the ACL as Mosquitto does (off: anyone, anywhere),
    # and disconnects devices revoked meanwhile every embedded_broker_recheck_s (and at once on revoke)
    embedded_broker_auth: bool = True
    embedded_broker_recheck_s: float = Field(default=30.0, gt=0)
    chunk_size_bytes: int = Field(default=DEFAULT_CHUNK_SIZE_BYTES, ge=1024, le=1024 * 1024)
    share_group: str | None = None  # MQTT 5 shared subscription group, so several workers split ingestion
    # publish each artifact once, retained, on the fleet-wide topics (devices then ask only for gaps)
    artifact_fanout: bool = True
    fanout_sweep_interval_s: float = Field(default=30.0, gt=0)  # how often unneeded retained chunks are cleared
    # publish each signed manifest once, retained, on the fleet-wide topic; devices whose agent reads it by
    # digest then get desired states without it (off: every desired state carries its manifest)
    manifest_by_digest: bool = True
    mqtt_max_queued: int = Field(default=4096, ge=16)  # outgoing messages paho may hold (chunks are 64 KiB)
    # a publish that finds that queue full while online waits this long for the broker's acks to make room
    # (a deploy to 10,000 devices publishes 10,000 desired states at once), then fails
    mqtt_queue_full_wait_s: float = Field(default=30.0, ge=0)
    ingest_batch_size: int = Field(default=200, ge=1)
    ingest_queue_max: int = Field(default=10_000, ge=1)
    # the console API answers 413 to a larger request body, before reading it (cloud.api.limits)
    max_request_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The console API keeps list answers (devices, models, deployments, rollouts) this long; a write through
    # the API or console empties them at once, other writers (ingestion, controller) show within this time.
    # It keeps what the database says of an API token id for api_token_cache_s (a revocation through the API
    # applies at once, one made on the database within this time). 0 turns either off.
    api_read_cache_s: float = Field(default=1.0, ge=0, le=60)
    api_token_cache_s: float = Field(default=2.0, ge=0, le=60)
    # /healthz answers from a cache at most this old: one database query and one round of probes a period,
    # whatever the request rate (cloud.api.routes.health); 0 checks on every request
    health_cache_s: float = Field(default=1.0, ge=0, le=10)
    # the paths anyone may call without a token (/healthz, open /metrics, sign-in, static assets, /docs): a
    # client address gets public_burst requests at once and public_requests_per_s on average, then 429
    # with Retry-After, held back public_refusal_hold_s so a flooder's connections slow down (cloud.api.public_limit)
    public_requests_per_s: float = Field(default=20.0, gt=0)
    public_burst: int = Field(default=100, ge=1)
    public_refusal_hold_s: float = Field(default=1.0, ge=0, le=10)
    # bearer tokens whose id the API has not admitted yet (made-up ones, mostly) cost a database lookup each: a
    # client address gets auth_lookup_burst such lookups at once and auth_lookups_per_s on average, then 429
    # with Retry-After before any lookup; tokens already admitted and repeats of a refused one are not counted
    # (cloud.api.auth_budget)
    auth_lookups_per_s: float = Field(default=2.0, gt=0)
    auth_lookup_burst: int = Field(default=20, ge=1)
    # refused enrollments per client address per minute before it gets 429 (cloud.api.throttle)
    enroll_refusals_per_minute: int = Field(default=10, ge=1)
    # Freshness (see README "Trust"): a signed statement must lapse eventually so a stolen or withheld one
    # stops working, and must never lapse on a device that does nothing wrong, so the cloud re-signs well
    # before expiry. A manifest says what a release is and changes rarely: 90 days. An assignment says what a
    # device should run now: 7 days, so a device offline for a week still installs what it finds retained.
    manifest_valid_days: float = Field(default=90.0, gt=0)
    assignment_valid_s: int = Field(default=7 * 86_400, ge=60)
    refresh_interval_s: float = Field(default=60.0, gt=0)  # how often the refresher looks
    rollout_tick_s: float = Field(default=10.0, gt=0)  # how often the rollout controller judges open waves
    # the cloud's own retrain triggers (cloud.training.autoretrain): how often it looks (0: never; cron can run
    # `edgefleet pipeline check` instead), and what a winning challenger does: wait for approval or go canary
    retrain_check_s: float = Field(default=0.0, ge=0)
    retrain_on_win: Literal["approval", "canary"] = "approval"
    # a challenger's canary that completes on every device running its model moves `champion` and
    # `production` to it (cloud.rollout.promotion); false: only `edgefleet pipeline promote` moves them
    promote_on_canary: bool = True
    # GET /metrics (Prometheus): fleet figures name devices' models and counts, so production wants a viewer
    # token (a scraper's bearer token file); None means "production: yes, development: no". False leaves it
    # open, for a scraper on a trusted network.
    metrics_require_token: bool | None = None
    # label cardinality: the N most common model versions get their own series, the rest are "other"
    metrics_max_model_versions: int = Field(default=20, ge=1, le=500)
    metrics_telemetry_lookback_s: int = Field(default=300, ge=10)  # per-model figures cover windows this recent
    # alerts (cloud.monitoring.alerts): drift and field-accuracy alerts are evaluated every alert_interval_s
    # (0: never) and shown in the console and /metrics; with a webhook URL each raise and clear is also POSTed
    # there as JSON signed with HMAC-SHA256 of alert_webhook_signing_key (required with a URL)
    alert_interval_s: float = Field(default=60.0, ge=0)
    # the evaluation in a process of its own, started again if it ends (cloud.monitoring.alert_process): it then
    # never holds the cloud's interpreter lock (seconds per tick on a big fleet); `edgefleet up` turns it on
    alert_process: bool = False
    alert_drift_lookback_s: int = Field(default=3_600, ge=60)
    alert_accuracy_lookback_s: int = Field(default=7 * 86_400, ge=60)
    alert_accuracy_drop: float = Field(default=0.05, ge=0, le=1)
    alert_webhook_url: str | None = None
    alert_webhook_signing_key: SecretStr | None = None
    alert_webhook_queue: int = Field(default=1_000, ge=1)
    metrics_max_alert_devices: int = Field(default=20, ge=0, le=500)  # devices named as metric labels
    # while a drift alert holds, the devices it names get signed sampler hints (cloud.monitoring.hints) on
    # their `cmd` topic that expire after this long (refreshed every third of it, at the alert ticks: keep it
    # above 3 x alert_interval_s); 0: no hints
    sampler_hint_ttl_s: float = Field(default=900.0, ge=0)

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None) -> str | None:
        from cloud.db import normalise_database_url

        return None if value is None else normalise_database_url(value)

    @model_validator(mode="after")
    def _derive_paths(self) -> CloudSettings:
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'edgefleet.db'}"
        if self.keys_dir is None:
            self.keys_dir = self.data_dir / "keys"
        if self.artifacts_dir is None:
            self.artifacts_dir = self.data_dir / "artifacts"
        if self.alert_webhook_url is not None:
            if not self.alert_webhook_url.startswith(("https://", "http://")):
                raise ConfigurationError(f"alert_webhook_url must be an http(s) URL, got {self.alert_webhook_url!r}")
            key = self.alert_webhook_signing_key
            if key is None or not key.get_secret_value():
                raise ConfigurationError("alert_webhook_url is set without alert_webhook_signing_key: receivers could "
                                         "not tell the cloud's alerts from forged ones; set "
                                         "EDGEFLEET_ALERT_WEBHOOK_SIGNING_KEY")  # fmt: skip
        if self.environment == "production":
            self.check_production()
        return self

    @property
    def uses_embedded_broker(self) -> bool:
        return self.mqtt_url == EMBEDDED

    @property
    def database(self) -> str:
        """The database URL, always set once validated."""
        assert self.database_url is not None
        return self.database_url

    def check_production(self) -> None:
        """Refuse what is fine on a laptop and unsafe in production, saying what to set instead."""
        problems: list[str] = []
        if self.uses_embedded_broker:
            problems.append("mqtt_url is 'embedded' (one process, no TLS): set EDGEFLEET_MQTT_URL")
        elif self.mqtt_url.startswith("mqtt://") and not _is_loopback(self.mqtt_url):
            problems.append("mqtt_url is plain mqtt:// to another host: use mqtts://")
        if self.mqtt_username is None and not self.uses_embedded_broker:
            problems.append("no MQTT credentials: set EDGEFLEET_MQTT_USERNAME and EDGEFLEET_MQTT_PASSWORD")
        webhook = self.alert_webhook_url
        if webhook is not None and webhook.startswith("http://") and not _is_loopback(webhook):
            problems.append("alert_webhook_url is plain http:// to another host: use https://")
        if self.database.startswith("sqlite"):
            problems.append("database_url is SQLite (one process only): use postgresql://")
        if problems:
            raise ConfigurationError("refusing production settings:\n  - " + "\n  - ".join(problems))

    @property
    def creates_operator_token_on_start(self) -> bool:
        """Development writes an admin token to <data_dir>/operator.token; production wants one made on purpose."""
        return self.environment == "development"

    @property
    def metrics_needs_token(self) -> bool:
        return self.environment == "production" if self.metrics_require_token is None else self.metrics_require_token

    @property
    def creates_keys_on_start(self) -> bool:
        """Development creates missing signing keys; production expects them provisioned (root key offline)."""
        return self.environment == "development"


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
