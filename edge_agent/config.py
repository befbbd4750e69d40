"""AgentSettings: the agent's configuration, from a TOML file (`--config`), overridden by environment
variables prefixed EDGEFLEET_AGENT_ (e.g. EDGEFLEET_AGENT_MQTT_URL; lists and dicts as JSON).

A setting that cannot be used raises ConfigError with one line per bad field, naming it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from edge_agent.errors import ConfigError
from edge_agent.update.context import ProbationPolicy
from protocols.roots import RootOfTrust
from protocols.topics import TopicError, validate_device_id
from protocols.trust import VerificationError
from protocols.v1 import messages_pb2 as pb

MQTT_SCHEMES = ("mqtt", "mqtts")  # what PahoTransport speaks


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_AGENT_", extra="forbid", frozen=True)

    device_id: str
    # production refuses what only a lab should do: an anonymous broker, credentials over plain MQTT
    environment: Literal["development", "production"] = "development"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    # 3.1.1: a device needs nothing from MQTT 5 (shared subscriptions are for cloud workers), every broker
    # speaks it, and the embedded amqtt broker cannot parse an MQTT 5 CONNECT that carries a will.
    mqtt_protocol: Literal["5", "3.1.1"] = "3.1.1"
    tls_ca: Path | None = None  # CA bundle for an mqtts:// broker
    trust_path: Path = Path("/etc/edgefleet/trust.chain")  # the fleet's TrustChain pinned at provisioning
    state_dir: Path = Path("/var/lib/edgefleet")
    grpc_address: str = "127.0.0.1:50051"  # "" disables the local gRPC API
    telemetry_interval_s: float = Field(60.0, gt=0)
    sample_rate: float = Field(0.01, ge=0, le=1)
    sample_max_per_window: int = Field(20, ge=0)
    runtime_preference: list[str] = Field(default_factory=lambda: ["onnxruntime", "tflite"])
    labels: dict[str, str] = Field(default_factory=dict)
    chunk_window: int = Field(8, ge=1, le=256)
    chunk_timeout_s: float = Field(10.0, gt=0)
    chunk_max_retries: int = Field(5, ge=0, le=1000)
    # upward QoS 1 messages wait on disk (state_dir/outbox.sqlite) until the broker has them; past this
    # many the oldest are dropped and counted (edge_agent.spool)
    outbox_max_messages: int = Field(10_000, ge=1)
    # probation: after an activation the previous model stays loaded (memory: two models resident) for
    # probation_s, shadowing a share of the calls, and the agent rolls back by itself on a failed health
    # check; 0 lets the previous model go at once (no shadowing, no local rollback)
    probation_s: float = Field(600.0, ge=0)
    shadow_rate: float = Field(0.1, ge=0, le=1)  # share of calls also run through the previous model; 0: none
    shadow_tolerance: float = Field(1e-3, ge=0)  # regressors agree within this (relative and absolute)
    probation_max_error_rate: float = Field(0.2, ge=0, le=1)
    probation_min_inferences: int = Field(50, ge=1)  # the error rate counts from this many calls on
    probation_max_restarts: int = Field(3, ge=1)  # this many starts while on probation is a crash loop
    # load + self-test each new model in a child process first, so a runtime that segfaults kills only the
    # child (costs one interpreter start per update); the journal's load counter backs it up either way
    isolate_loads: bool = True

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        try:
            return validate_device_id(value)
        except TopicError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in MQTT_SCHEMES or not parts.hostname:
            raise ValueError(f"expected a URL like mqtt://host:1883 (schemes {', '.join(MQTT_SCHEMES)}), got {value!r}")
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}: {exc}") from None
        return value

    @field_validator("grpc_address")
    @classmethod
    def _grpc_address(cls, value: str) -> str:
        if value:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"expected host:port (or empty to disable), got {value!r}")
        return value

    @model_validator(mode="after")
    def _production(self) -> AgentSettings:
        if self.environment != "production":
            return self
        problems = []
        if self.mqtt_username is None or self.mqtt_password is None:
            problems.append("an anonymous broker: set mqtt_username and mqtt_password (provision with --token)")
        host = urlsplit(self.mqtt_url).hostname
        if urlsplit(self.mqtt_url).scheme != "mqtts" and host not in ("127.0.0.1", "localhost", "::1"):
            problems.append(f"plain mqtt:// to {host}: use mqtts:// (the broker's fleet CA as tls_ca)")
        if problems:
            raise ValueError("production refuses " + "; ".join(problems))
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
        # explicit arguments beat the environment, which beats the config file
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def probation_policy(self) -> ProbationPolicy:
        return ProbationPolicy(
            self.probation_s, self.probation_max_error_rate, self.probation_min_inferences, self.probation_max_restarts
        )

    def read_trust(self) -> RootOfTrust:
        """The pinned root of trust: the TrustChain file (`trust.chain` from `edgefleet keys init`), its
        first version self-signed, every later one signed by the one before. The fleet comes from it."""
        try:
            data = self.trust_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"trust_path: cannot read {self.trust_path}: {exc.strerror or exc}") from None
        try:
            return RootOfTrust.from_chain(pb.TrustChain.FromString(data))
        except (DecodeError, VerificationError) as exc:
            raise ConfigError(f"trust_path: {self.trust_path} is not a valid trust chain: {exc}") from None


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(settings)"
        lines.append(f"{field}: {error['msg']}")
    return "invalid agent settings:\n  " + "\n  ".join(lines)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> AgentSettings:
    """Settings from config_file (TOML; optional), the environment and overrides; ConfigError if unusable."""
    settings_cls: type[AgentSettings] = AgentSettings
    if config_file is not None:
        path = Path(config_file)
        try:
            tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from None
        config = SettingsConfigDict(**{**AgentSettings.model_config, "toml_file": path})  # type: ignore[typeddict-item]
        settings_cls = type("AgentSettingsFromFile", (AgentSettings,), {"model_config": config})
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
