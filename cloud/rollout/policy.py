"""What an operator asks of a staged rollout, as the API and the CLI take it (validated, bounded), turned
into the pure core's `Strategy` and `GatePolicy`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from cloud.rollout.gates import GatePolicy
from cloud.rollout.progress import OnBreach
from cloud.rollout.waves import Strategy, StrategyKind


class GateRequest(BaseModel):
    max_install_failure_share: float = Field(default=0.0, ge=0, le=1)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_error_rate_increase: float = Field(default=0.005, ge=0, le=1)
    max_p95_ratio: float = Field(default=1.5, ge=1, le=100)
    min_p95_increase_us: float = Field(default=250.0, ge=0, le=60_000_000)
    max_prediction_psi: float = Field(default=0.25, ge=0, le=10)
    shift_significance: float = Field(default=0.01, gt=0, le=1)
    min_shadow_agreement: float = Field(default=0.9, ge=0, le=1)
    min_devices: int = Field(default=1, ge=0, le=10_000)  # 0 with min_inferences 0: judge on installs only
    min_inferences: int = Field(default=200, ge=0, le=10_000_000)
    # the false rollback probability of an early breach, per gate and wave (cloud.rollout.gates); 0: off
    early_breach_alpha: float = Field(default=1e-3, ge=0, le=0.1)

    def policy(self) -> GatePolicy:
        return GatePolicy(**self.model_dump())


class RolloutPolicy(BaseModel):
    strategy: Literal["all_at_once", "canary", "waves"] = "canary"
    canary: float = Field(default=0.05, gt=0, le=100_000)  # a count >= 1 or a share below 1
    first_wave: float = Field(default=0.1, gt=0, le=100_000)
    growth: float = Field(default=2.0, ge=1, le=100)
    dwell_s: float = Field(default=300, ge=0, le=7 * 86_400)
    include_offline: bool = True
    share: float | None = Field(default=None, gt=0, le=1)  # roll out to only this share of the targets
    gates: GateRequest = Field(default_factory=GateRequest)
    on_breach: Literal["rollback", "pause"] = "rollback"
    max_wait_s: int = Field(default=3600, ge=1, le=7 * 86_400)
    # devices whose agent is older (or has not said its version) are skipped as agent_too_old
    min_agent_version: str = Field(default="", max_length=64)

    @model_validator(mode="after")
    def _strategy_is_possible(self) -> RolloutPolicy:
        self.strategy_spec()  # raises ValueError (-> 422) for a fractional count
        if self.min_agent_version:
            from packaging.version import InvalidVersion, Version

            try:
                Version(self.min_agent_version)
            except InvalidVersion:
                raise ValueError(f"{self.min_agent_version!r} is not a version (e.g. 0.4.0)") from None
        return self

    def strategy_spec(self) -> Strategy:
        return Strategy(StrategyKind(self.strategy), canary=self.canary, first_wave=self.first_wave,
                        growth=self.growth, dwell_s=self.dwell_s, include_offline=self.include_offline)  # fmt: skip

    @property
    def breach(self) -> OnBreach:
        return OnBreach(self.on_breach)


def strategy_of(stored: dict[str, Any]) -> Strategy:
    return Strategy(**{**stored, "kind": StrategyKind(stored.get("kind", "all_at_once"))})


def stored_strategy(strategy: Strategy) -> dict[str, Any]:
    return {**asdict(strategy), "kind": strategy.kind.value}
