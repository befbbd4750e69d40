"""Which device goes in which wave of a staged rollout, and which are left out and why. Pure: no I/O.

A strategy cuts the eligible targets into waves: `all_at_once` is one wave; `canary` is a first wave of
`canary` devices (a count when >= 1, else a share of the targets), then everyone else; `waves` starts
with `first_wave` devices and multiplies the size by `growth` each wave. The controller opens a wave only
after the previous one has passed its gates and has dwelt `dwell_s`.

The order is a stable hash of (seed, device id), the seed being the release ("model@version"):
reproducible (a dry run shows exactly what the real rollout will do), different from release to release
(the same devices are not always the canaries), and independent of the order the ids arrived in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from packaging.version import InvalidVersion, Version


class StrategyKind(StrEnum):
    ALL_AT_ONCE = "all_at_once"
    CANARY = "canary"
    WAVES = "waves"


class SkipReason(StrEnum):
    NO_RUNTIME = "no_runtime"  # the device lacks every runtime the release's artifacts need
    WRONG_ARCH = "wrong_arch"  # the release's artifacts are built for other CPU architectures
    AGENT_TOO_OLD = "agent_too_old"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Strategy:
    kind: StrategyKind = StrategyKind.ALL_AT_ONCE
    canary: float = 0.05  # canary: devices in the first wave (>= 1: a count; below 1: a share)
    first_wave: float = 0.1  # waves: the first wave's size (count or share, as for canary)
    growth: float = 2.0  # waves: each wave this many times the size of the one before
    dwell_s: float = 300.0  # a passed wave is watched this long before the next opens
    include_offline: bool = True  # offline devices wait for their retained assignment; False skips them

    def __post_init__(self) -> None:
        for name in ("canary", "first_wave"):
            value = getattr(self, name)
            if not (0 < value < 1 or (value >= 1 and float(value).is_integer())):
                raise ValueError(f"{name} is a share in (0, 1) or a whole count >= 1, not {value}")
        if not 1.0 <= self.growth <= 100.0:
            raise ValueError(f"growth must be between 1 and 100, not {self.growth}")
        if not 0 <= self.dwell_s <= 7 * 86_400:
            raise ValueError(f"dwell_s must be between 0 and one week, not {self.dwell_s}")


@dataclass(frozen=True)
class Candidate:
    """What the planner needs to know of one target device."""

    device_id: str
    online: bool = True
    runtimes: tuple[str, ...] = ()  # empty: not reported yet, assumed able
    agent_version: str = ""
    architecture: str = ""  # platform.machine() of the device ("aarch64"); empty: not reported, assumed able


@dataclass(frozen=True)
class Requirements:
    runtimes: frozenset[str] = frozenset()  # the release runs on a device with any one of these
    min_agent_version: str = ""
    # empty: any architecture (today's artifacts are arch-independent); a per-arch artifact names its own
    architectures: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WavePlan:
    waves: list[list[str]]
    skipped: dict[str, SkipReason] = field(default_factory=dict)

    @property
    def device_count(self) -> int:
        return sum(len(w) for w in self.waves)


def size_of(value: float, total: int) -> int:
    """A count (value >= 1) or a share of total (0 < value < 1, rounded up), within 1..total."""
    wanted = int(value) if value >= 1 else math.ceil(value * total)
    return max(1, min(total, wanted))


def wave_sizes(strategy: Strategy, total: int) -> list[int]:
    if total == 0:
        return []
    if strategy.kind is StrategyKind.ALL_AT_ONCE:
        return [total]
    if strategy.kind is StrategyKind.CANARY:
        first = size_of(strategy.canary, total)
        return [first] if first == total else [first, total - first]
    sizes, left, size = [], total, float(size_of(strategy.first_wave, total))
    while left > 0:
        step = max(1, min(left, round(size)))
        sizes.append(step)
        left -= step
        size *= strategy.growth
    return sizes


def stable_order(seed: str, device_ids: Iterable[str]) -> list[str]:
    def key(device_id: str) -> bytes:
        return hashlib.sha256(f"{seed}\0{device_id}".encode()).digest()

    return sorted(set(device_ids), key=key)


def skip_reason(candidate: Candidate, needs: Requirements, *, include_offline: bool) -> SkipReason | None:
    if needs.runtimes and candidate.runtimes and not needs.runtimes.intersection(candidate.runtimes):
        return SkipReason.NO_RUNTIME
    if needs.architectures and candidate.architecture and candidate.architecture not in needs.architectures:
        return SkipReason.WRONG_ARCH
    if needs.min_agent_version and _older(candidate.agent_version, needs.min_agent_version):
        return SkipReason.AGENT_TOO_OLD
    if not include_offline and not candidate.online:
        return SkipReason.OFFLINE
    return None


def plan_waves(seed: str, candidates: Sequence[Candidate], strategy: Strategy, needs: Requirements) -> WavePlan:
    skipped: dict[str, SkipReason] = {}
    eligible: list[str] = []
    for candidate in candidates:
        reason = skip_reason(candidate, needs, include_offline=strategy.include_offline)
        if reason is None:
            eligible.append(candidate.device_id)
        else:
            skipped[candidate.device_id] = reason
    ordered = stable_order(seed, eligible)
    waves, start = [], 0
    for size in wave_sizes(strategy, len(ordered)):
        waves.append(ordered[start : start + size])
        start += size
    return WavePlan(waves, skipped)


def _older(version: str, minimum: str) -> bool:
    """True if version is older than minimum (PEP 440 order: "0.9" < "0.10"); unknown or unparsable is old."""
    try:
        return Version(version) < Version(minimum)
    except InvalidVersion:
        return True
