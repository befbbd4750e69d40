"""A simulation scenario as a TOML file: who the devices are, what data they see, and what happens when.

    [scenario]      name, duration_s (the timeline's length), seed, telemetry_interval_s, sample_rate (the
                    share of predictions each device samples), sample_bytes_per_day (the sampler's budget;
                    default a device's, scaled to the scenario's windows), accuracy_window_s (the report's windows),
                    broker (embedded | mosquitto: one the run starts, so broker_restart restarts it)
    [model]         what the cloud trains and deploys: estimator (logreg | mlp | random_forest), dataset
    [networks.NAME] a custom link: base (a named profile to start from), latency_ms, jitter_ms, loss,
                    bandwidth_kbps, disconnects_per_hour, outage_s (simulator.netem.NetworkProfile)
    [[groups]]      name, count, labels, hardware (architecture, cpu_model, cpu_count, memory_mb, os),
                    network (wired, wifi-good, wifi-poor, 4g, 3g, satellite, intermittent or a custom
                    one; none: straight to the broker), [groups.data]: rate_hz (inferences per device per
                    second), noise (per-device gaussian noise, in units of each feature's std),
                    label_delay_s (none: a label comes with each prediction; else the labels of sampled
                    predictions arrive this long after, as feedback), labelled (the share that ever does)
    [[events]]      at_s and action, one of
                      deploy          the model to `group` (default: every device)
                      drift           `group`'s data: `features` (indexes; default the `top` most varied),
                                      `shift` (std units), `scale`, `kind` sudden | gradual (over
                                      `ramp_s`) | recurring (on for `period_s`, off for `period_s`)
                      disconnect      `devices` of `group` lose their link for `offline_s`
                      crash           `devices` of `group` crash; restarted after `restart_after_s`
                      broker_restart  the run's broker (embedded or its own mosquitto) stops and starts again
                      disk_full       `devices` of `group` cannot write model bytes (for `for_s`; 0: to the end)
                      clock_skew      `devices` of `group` get their wall clock moved by `offset_s` (signed)
                      corrupt         `devices` of `group` get one byte flipped in each of their next
                                      `chunks` artifact chunks (between broker and device)
                      label_shift     `group`'s class prior: `prior` maps class labels to relative weights
                                      (others 1), `kind` sudden | gradual (over `ramp_s`)

`load_scenario(path)` parses and validates; every problem is a `ScenarioError` whose message names the
file and the field (`events[2].group: no group named 'feild'`). The scenario is data only: running it is
`simulator.scenario_run`'s.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocols.topics import TopicError, validate_device_id
from protocols.v1 import messages_pb2 as pb
from simulator.netem import PROFILES, NetworkProfile

__all__ = ["Event", "Group", "Scenario", "ScenarioError", "load_scenario", "parse_scenario"]

DATASETS = ("digits",)  # bundled with scikit-learn: no download


class ScenarioError(ValueError):
    """The scenario file cannot be used; the message says where and why, one problem per line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hardware(_Strict):
    architecture: str = ""
    cpu_model: str = ""
    cpu_count: int = Field(0, ge=0)
    memory_mb: int = Field(0, ge=0)
    os: str = ""

    def facts(self) -> pb.DeviceFacts:
        return pb.DeviceFacts(architecture=self.architecture, cpu_model=self.cpu_model, cpu_count=self.cpu_count,
                              memory_total_bytes=self.memory_mb << 20, os=self.os)  # fmt: skip


class DataSpec(_Strict):
    rate_hz: float = Field(2.0, ge=0, le=100)
    noise: float = Field(0.0, ge=0, le=10)
    label_delay_s: float | None = Field(None, ge=0, le=24 * 3600)
    labelled: float = Field(1.0, ge=0, le=1)


class Group(_Strict):
    name: str
    count: int = Field(ge=1, le=10_000)
    labels: dict[str, str] = Field(default_factory=dict)
    hardware: Hardware | None = None
    network: str | None = None  # a profile's name; None: no shaping
    data: DataSpec = Field(default_factory=DataSpec)

    @model_validator(mode="after")
    def _names(self) -> Group:
        try:
            validate_device_id(self.name)
            for key, value in self.labels.items():
                validate_device_id(key)
                validate_device_id(value)
        except TopicError as exc:
            raise ValueError(f"group names, label keys and values follow the device-id rules: {exc}") from None
        return self

    def device_ids(self) -> list[str]:
        return [f"{self.name}-{n:04d}" for n in range(1, self.count + 1)]


class _EventBase(_Strict):
    at_s: float = Field(ge=0)
    group: str | None = None  # None: every device


class Deploy(_EventBase):
    action: Literal["deploy"]


class Drift(_EventBase):
    action: Literal["drift"]
    features: list[int] = Field(default_factory=list)
    top: int = Field(3, ge=1)
    shift: float = 1.5
    scale: float = Field(1.0, gt=0)
    kind: Literal["sudden", "gradual", "recurring"] = "sudden"
    ramp_s: float = Field(10.0, gt=0)
    period_s: float = Field(5.0, gt=0)

    def strength(self, since_s: float) -> float:
        """How much of the drift applies since_s after it began: 0..1."""
        if since_s < 0:
            return 0.0
        if self.kind == "gradual":
            return min(1.0, since_s / self.ramp_s)
        if self.kind == "recurring":
            return 1.0 if int(since_s // self.period_s) % 2 == 0 else 0.0
        return 1.0


class Disconnect(_EventBase):
    action: Literal["disconnect"]
    devices: int = Field(1, ge=1)
    offline_s: float = Field(5.0, gt=0)


class Crash(_EventBase):
    action: Literal["crash"]
    devices: int = Field(1, ge=1)
    restart_after_s: float = Field(3.0, ge=0)


class BrokerRestart(_EventBase):
    action: Literal["broker_restart"]


class DiskFull(_EventBase):
    action: Literal["disk_full"]
    devices: int = Field(1, ge=1)
    for_s: float = Field(0.0, ge=0)  # 0: until the end


class ClockSkew(_EventBase):
    action: Literal["clock_skew"]
    devices: int = Field(1, ge=1)
    offset_s: float = Field(ge=-10 * 365 * 86_400, le=10 * 365 * 86_400)


class Corrupt(_EventBase):
    action: Literal["corrupt"]
    devices: int = Field(1, ge=1)
    chunks: int = Field(1, ge=1)


class LabelShift(_EventBase):
    action: Literal["label_shift"]
    prior: dict[str, float] = Field(min_length=1)
    kind: Literal["sudden", "gradual"] = "sudden"
    ramp_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _weights(self) -> LabelShift:
        if any(w < 0 for w in self.prior.values()):
            raise ValueError("prior: weights must not be negative")
        return self

    def weights(self, since_s: float) -> dict[str, float]:
        """The class weights since_s after the shift began (a gradual one moves from 1 to its weight)."""
        strength = 1.0 if self.kind == "sudden" else max(0.0, min(1.0, since_s / self.ramp_s))
        return {label: 1.0 + (w - 1.0) * strength for label, w in self.prior.items()}


Event = Annotated[
    Deploy | Drift | Disconnect | Crash | BrokerRestart | DiskFull | ClockSkew | Corrupt | LabelShift,
    Field(discriminator="action"),
]
_ACTIONS = ("deploy", "drift", "disconnect", "crash", "broker_restart", "disk_full", "clock_skew", "corrupt",
            "label_shift")  # fmt: skip


class CustomNetwork(_Strict):
    """A profile of the scenario's own: `base`'s figures (or zeros) with the fields it gives replaced."""

    base: str | None = None
    latency_ms: float | None = None
    jitter_ms: float | None = None
    loss: float | None = None
    bandwidth_kbps: float | None = None
    disconnects_per_hour: float | None = None
    outage_s: float | None = None

    def profile(self) -> NetworkProfile:
        start = PROFILES[self.base] if self.base is not None else NetworkProfile()
        changes = {k: v for k, v in self.model_dump(exclude={"base"}).items() if v is not None}
        return NetworkProfile.model_validate({**start.model_dump(), **changes})


class ScenarioInfo(_Strict):
    name: str
    duration_s: float = Field(gt=0, le=24 * 3600)
    seed: int = 0
    telemetry_interval_s: float = Field(5.0, gt=0)
    sample_rate: float = Field(0.05, ge=0, le=1)
    # the sampler's daily byte budget per device; default: a device's (2 MB) scaled by how much shorter this
    # scenario's windows are than a device's 60 s, so each simulated window may ship what a real one would
    sample_bytes_per_day: int | None = Field(None, ge=0)
    accuracy_window_s: float = Field(10.0, gt=0)
    broker: Literal["embedded", "mosquitto"] = "embedded"  # a mosquitto of the run's own (simulator.broker)


class ModelSpec(_Strict):
    estimator: Literal["logreg", "mlp", "random_forest"] = "logreg"
    dataset: Literal[DATASETS] = "digits"  # type: ignore[valid-type]


class Scenario(_Strict):
    scenario: ScenarioInfo
    model: ModelSpec = Field(default_factory=ModelSpec)
    networks: dict[str, CustomNetwork] = Field(default_factory=dict)
    groups: list[Group] = Field(min_length=1)
    events: list[Event] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        problems = []
        names = [g.name for g in self.groups]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"groups: the name {name!r} is used twice")
        for name, custom in self.networks.items():
            if custom.base is not None and custom.base not in PROFILES:
                problems.append(f"networks.{name}.base: no profile named {custom.base!r} (profiles: "
                                f"{', '.join(PROFILES)})")  # fmt: skip
            else:
                try:
                    custom.profile()
                except ValidationError as exc:
                    problems.extend(f"networks.{name}.{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        known = [*PROFILES, *self.networks]
        for n, group in enumerate(self.groups):
            if group.network is not None and group.network not in known:
                problems.append(f"groups[{n}].network: no profile named {group.network!r} (profiles: "
                                f"{', '.join(known)})")  # fmt: skip
        by_name = {g.name: g for g in self.groups}
        for n, event in enumerate(self.events):
            where = f"events[{n}]"
            if event.group is not None and event.group not in by_name:
                problems.append(f"{where}.group: no group named {event.group!r} (groups: {', '.join(names)})")
            if event.at_s > self.scenario.duration_s:
                problems.append(f"{where}.at_s: {event.at_s:g} is after the end (duration_s = "
                                f"{self.scenario.duration_s:g})")  # fmt: skip
            size = by_name[event.group].count if event.group in by_name else self.size
            if isinstance(event, Disconnect | Crash | DiskFull | ClockSkew | Corrupt) and event.devices > size:
                problems.append(f"{where}.devices: {event.devices} but the group has only {size}")
        if self.size > 10_000:
            problems.append(f"groups: {self.size} devices in all; at most 10,000")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def size(self) -> int:
        return sum(g.count for g in self.groups)

    def profile(self, name: str) -> NetworkProfile:
        custom = self.networks.get(name)
        return custom.profile() if custom is not None else PROFILES[name]

    @property
    def shaped(self) -> bool:
        """Whether the devices connect through the shaping proxy (a network profile or a corrupt event)."""
        return any(g.network for g in self.groups) or any(isinstance(e, Corrupt) for e in self.events)

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)

    def devices_of(self, group: str | None) -> list[str]:
        chosen = self.groups if group is None else [self.group(group)]
        return [d for g in chosen for d in g.device_ids()]


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["loc"]:
                lines.append(f"{source}: {_where(error['loc'])}: {message}")
            else:  # the cross-field checks: one line per problem, each naming its own field
                lines.extend(f"{source}: {problem}" for problem in message.split("; "))
        raise ScenarioError("\n".join(lines)) from None


def load_scenario(path: Path) -> Scenario:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read the scenario {path}: {exc.strerror or exc}") from None
    return parse_scenario(text, str(path))


def _where(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]" if parts else f"[{item}]"]
        elif item in _ACTIONS:
            continue  # the discriminator's branch: the action is already in the file
        else:
            parts.append(str(item))
    return ".".join(parts)
