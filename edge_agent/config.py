"""AgentSettings: the agent's configuration, from a TOML file (`--config`), overridden by environment
variables prefixed EDGEFLEET_AGENT_ (e.g. EDGEFLEET_AGENT_MQTT_URL; lists and dicts as JSON).

A setting that cannot be used raises ConfigError with one line per bad field, naming it.

Plain stdlib (dataclass + tomllib + json) rather than pydantic-settings: on a 1 GB board pydantic's core
costs ~15 MB of resident memory for one file read at start (benchmarks/agent.py measures it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from edge_agent.errors import ConfigError
from edge_agent.update.context import ProbationPolicy
from protocols.topics import TopicError, validate_device_id

if typing.TYPE_CHECKING:
    from protocols.roots import RootOfTrust

ENV_PREFIX = "EDGEFLEET_AGENT_"
TRUST_MEMO = "trust.verified"  # in state_dir: the digest of the trust.chain bytes whose signatures passed
MQTT_SCHEMES = ("mqtt", "mqtts")  # what PahoTransport speaks


class Secret:
    """A string kept out of reprs and logs (the broker password)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _bounds(*, gt: float | None = None, ge: float | None = None, le: float | None = None) -> dict[str, float | None]:
    return {"gt": gt, "ge": ge, "le": le}


@dataclass(frozen=True)
class AgentSettings:
    """Every field may come from the file, the environment or keyword arguments (which win, in that order)."""

    device_id: str
    # production refuses what only a lab should do: an anonymous broker, credentials over plain MQTT
    environment: Literal["development", "production"] = "development"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: Secret | None = None
    # 3.1.1: a device needs nothing from MQTT 5 (shared subscriptions are for cloud workers), every broker
    # speaks it, and the embedded amqtt broker cannot parse an MQTT 5 CONNECT that carries a will.
    mqtt_protocol: Literal["5", "3.1.1"] = "3.1.1"
    tls_ca: Path | None = None  # CA bundle for an mqtts:// broker
    trust_path: Path = Path("/etc/edgefleet/trust.chain")  # the fleet's TrustChain pinned at provisioning
    state_dir: Path = Path("/var/lib/edgefleet")
    grpc_address: str = "127.0.0.1:50051"  # "" disables the local gRPC API
    telemetry_interval_s: float = field(default=60.0, metadata=_bounds(gt=0))
    # a newly activated model's first window goes out as soon as it holds this many rows (0: at the
    # interval), so a staged rollout's gates see its first evidence in seconds, not up to an interval later
    telemetry_first_window_rows: int = field(default=10, metadata=_bounds(ge=0))
    sample_rate: float = field(default=0.01, metadata=_bounds(ge=0, le=1))
    sample_max_per_window: int = field(default=20, metadata=_bounds(ge=0))
    # bytes of samples a day (UTC), paced over the day's windows and persisted in state_dir: 2 MB a day is
    # 60 MB a month, a few per cent of a small 4G plan, and ~6,000 samples of 64 features
    sample_bytes_per_day: int = field(default=2_000_000, metadata=_bounds(ge=0))
    # the sampler multiplies the odds of rows worth a label: those the model is unsure of (top-class
    # probability below sample_low_confidence) and those in bins the last window over-filled
    sample_favour: float = field(default=4.0, metadata=_bounds(ge=1))
    sample_low_confidence: float = field(default=0.7, metadata=_bounds(ge=0, le=1))
    runtime_preference: list[str] = field(default_factory=lambda: ["onnxruntime", "tflite"])
    labels: dict[str, str] = field(default_factory=dict)
    chunk_window: int = field(default=8, metadata=_bounds(ge=1, le=256))
    chunk_timeout_s: float = field(default=10.0, metadata=_bounds(gt=0))
    chunk_max_retries: int = field(default=5, metadata=_bounds(ge=0, le=1000))
    # a manifest read by digest from the fleet-wide topic that has not come this long after subscribing is
    # reported as not_assigned (and still taken if it comes later)
    manifest_timeout_s: float = field(default=30.0, metadata=_bounds(gt=0))
    # upward QoS 1 messages wait on disk (state_dir/outbox.sqlite) until the broker has them; past this
    # many the oldest are dropped and counted (edge_agent.spool)
    outbox_max_messages: int = field(default=10_000, metadata=_bounds(ge=1))
    # an intermediate update state (the first of an update too) waits at most this many seconds, and one the
    # next supersedes meanwhile is never sent (the reported state is a latest-value shadow; edge_agent.outbox);
    # terminal states go at once. 0: every state travels at once
    report_hold_s: float = field(default=1.0, metadata=_bounds(ge=0, le=60))
    # to a cloud that reads batches, lifecycle events wait for the next terminal state to travel with, at most
    # this many seconds (a failure: at once); a crash loses those held. 0: every event travels at once, alone
    event_hold_s: float = field(default=10.0, metadata=_bounds(ge=0, le=600))
    # probation: after an activation the previous model stays loaded (memory: two models resident) for
    # probation_s, shadowing a share of the calls, and the agent rolls back by itself on a failed health
    # check; 0 lets the previous model go at once (no shadowing, no local rollback)
    probation_s: float = field(default=600.0, metadata=_bounds(ge=0))
    # share of calls also run through the previous model; 0: none
    shadow_rate: float = field(default=0.1, metadata=_bounds(ge=0, le=1))
    # regressors agree within this (relative and absolute)
    shadow_tolerance: float = field(default=1e-3, metadata=_bounds(ge=0))
    probation_max_error_rate: float = field(default=0.2, metadata=_bounds(ge=0, le=1))
    # the error rate counts from this many calls on
    probation_min_inferences: int = field(default=50, metadata=_bounds(ge=1))
    # this many starts while on probation is a crash loop
    probation_max_restarts: int = field(default=3, metadata=_bounds(ge=1))
    # the shadow's agreement with the previous model overwhelmingly below this (a sequential test whose
    # chance of ever rolling back a model that agrees this often is probation_shadow_alpha) rolls back,
    # cloud or no cloud; 0 (the default) never: a new model may be meant to answer differently (a retrained
    # challenger, renamed classes), which the cloud's gates know and the device does not
    probation_min_shadow_agreement: float = field(default=0.0, metadata=_bounds(ge=0, le=1))
    probation_shadow_alpha: float = field(default=1e-6, metadata=_bounds(gt=0, le=0.5))
    # load + self-test each new model in a child process first, so a runtime that segfaults kills only the
    # child (costs one interpreter start per update); the journal's load counter backs it up either way
    isolate_loads: bool = True

    def __post_init__(self) -> None:
        values, problems = _checked({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if problems:
            raise ConfigError(_explain(problems))
        for name, value in values.items():
            object.__setattr__(self, name, value)  # frozen: the checked, converted values

    def probation_policy(self) -> ProbationPolicy:
        return ProbationPolicy(
            self.probation_s, self.probation_max_error_rate, self.probation_min_inferences, self.probation_max_restarts,
            self.probation_min_shadow_agreement, self.probation_shadow_alpha,
        )  # fmt: skip

    def read_trust(self) -> RootOfTrust:
        """The pinned root of trust: the TrustChain file (`trust.chain` from `edgefleet keys init`), its
        first version self-signed, every later one signed by the one before. The fleet comes from it."""
        # here, not at the top: signature checks pull in cryptography, which only this and updates need
        from google.protobuf.message import DecodeError

        from protocols.roots import RootOfTrust
        from protocols.trust import VerificationError
        from protocols.v1 import messages_pb2 as pb

        try:
            data = self.trust_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"trust_path: cannot read {self.trust_path}: {exc.strerror or exc}") from None
        # The signatures are checked once per content of the file, not at every start: checking them loads
        # cryptography (~8 MB resident for the agent's lifetime). The memo only names a digest of bytes that
        # passed; other bytes (a new or tampered file) are checked in full.
        memo = self.state_dir / TRUST_MEMO
        digest = hashlib.sha256(data).hexdigest()
        try:
            verified = memo.read_text().strip() == digest
        except OSError:
            verified = False
        try:
            root = RootOfTrust.from_chain(pb.TrustChain.FromString(data), already_verified=verified)
        except (DecodeError, VerificationError) as exc:
            raise ConfigError(f"trust_path: {self.trust_path} is not a valid trust chain: {exc}") from None
        if not verified:
            with contextlib.suppress(OSError):  # no state dir yet, or read-only: the next start checks again
                memo.write_text(digest + "\n")
        return root


def field_names() -> list[str]:
    """The names a config file or EDGEFLEET_AGENT_* variable may set."""
    return [f.name for f in dataclasses.fields(AgentSettings)]


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> AgentSettings:
    """Settings from config_file (TOML; optional), the environment and overrides; ConfigError if unusable."""
    values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            values.update(tomllib.loads(path.read_text()))
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from None
    problems: list[str] = []
    values.update(_from_environment(os.environ, problems))
    values.update(overrides)
    known = set(field_names())
    problems += [f"{name}: unknown setting" for name in values if name not in known]
    if "device_id" not in values:
        problems.append("device_id: required (no default)")
    problems += _checked({k: v for k, v in values.items() if k in known})[1]
    if problems:
        raise ConfigError(_explain(problems))
    return AgentSettings(**values)


# ------------------------------------------------------------------------------------- checking values


def _explain(problems: list[str]) -> str:
    return "invalid agent settings:\n  " + "\n  ".join(problems)


def _from_environment(environ: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """EDGEFLEET_AGENT_<FIELD> (any case) for the known fields; lists and dicts are JSON."""
    by_upper = {key.upper(): value for key, value in environ.items()}
    values: dict[str, Any] = {}
    for name in field_names():
        raw = by_upper.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if name in ("runtime_preference", "labels"):
            try:
                values[name] = json.loads(raw)
            except ValueError:
                problems.append(f"{name}: {ENV_PREFIX}{name.upper()} must be JSON, got {raw!r}")
                continue
        else:
            values[name] = raw
    return values


@functools.cache
def _fields() -> tuple[dict[str, Any], dict[str, Any]]:
    # once per process: resolving the hints took 4.7 ms (loaded machine) per AgentSettings, a simulator
    # worker building 5,000 spent most of its start there
    hints = typing.get_type_hints(AgentSettings)
    return hints, {f.name: f.metadata for f in dataclasses.fields(AgentSettings)}


def _checked(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The values converted to their field's type and checked; one problem line per bad field."""
    hints, bounds = _fields()
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in values.items():
        if name not in hints:
            continue
        try:
            converted = _convert(hints[name], value)
            _check_bounds(converted, bounds[name])
            out[name] = _VALIDATORS.get(name, _same)(converted)
        except (TypeError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
    if not problems:
        try:
            _check_production({**_defaults(), **out})
        except ValueError as exc:
            problems.append(f"environment: {exc}")
    return out, problems


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(AgentSettings) if f.default is not dataclasses.MISSING}


def _convert(hint: Any, value: Any) -> Any:  # noqa: C901 - one branch per field type, flat
    """value as `hint` (the types AgentSettings uses); strings from the environment are parsed."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, _UnionType) and type(None) in args:
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is Literal:
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if text not in args:
            raise ValueError(f"expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
        return text
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str | os.PathLike):
            raise TypeError(f"expected a path, got {value!r}")
        return Path(value)
    if hint is Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise TypeError("expected a string")  # the value itself stays out of the message
        return Secret(value)
    if hint is bool:
        return _to_bool(value)
    if hint is int:
        return _to_int(value)
    if hint is float:
        return _to_float(value)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise TypeError(f"expected a list of strings, got {value!r}")
        return list(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise TypeError(f"expected a table of string values, got {value!r}")
        return dict(value)
    raise TypeError(f"no converter for {hint!r}")  # a new field type: teach _convert


_UnionType = type(int | None)
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a whole number, got {value!r}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    try:
        number = float(value) if isinstance(value, int | float | str) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _check_bounds(value: Any, bounds: Mapping[str, Any]) -> None:
    gt, ge, le = bounds.get("gt"), bounds.get("ge"), bounds.get("le")
    if gt is not None and not value > gt:
        raise ValueError(f"must be greater than {gt}, got {value!r}")
    if ge is not None and not value >= ge:
        raise ValueError(f"must be at least {ge}, got {value!r}")
    if le is not None and not value <= le:
        raise ValueError(f"must be at most {le}, got {value!r}")


def _same(value: Any) -> Any:
    return value


def _device_id(value: str) -> str:
    try:
        return validate_device_id(value)
    except TopicError as exc:
        raise ValueError(str(exc)) from None


def _mqtt_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in MQTT_SCHEMES or not parts.hostname:
        raise ValueError(f"expected a URL like mqtt://host:1883 (schemes {', '.join(MQTT_SCHEMES)}), got {value!r}")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}: {exc}") from None
    return value


def _grpc_address(value: str) -> str:
    if value:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected host:port (or empty to disable), got {value!r}")
    return value


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "device_id": _device_id,
    "mqtt_url": _mqtt_url,
    "grpc_address": _grpc_address,
}


def _check_production(values: Mapping[str, Any]) -> None:
    if values.get("environment") != "production":
        return
    problems = []
    if values.get("mqtt_username") is None or values.get("mqtt_password") is None:
        problems.append("an anonymous broker: set mqtt_username and mqtt_password (provision with --token)")
    url = urlsplit(values["mqtt_url"])
    if url.scheme != "mqtts" and url.hostname not in ("127.0.0.1", "localhost", "::1"):
        problems.append(f"plain mqtt:// to {url.hostname}: use mqtts:// (the broker's fleet CA as tls_ca)")
    if problems:
        raise ValueError("production refuses " + "; ".join(problems))
