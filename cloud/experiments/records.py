"""The A/B experiment table: two versions of one model on a stable split of the targets, and how it ended."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import JSON, BigInteger
from sqlmodel import Field, SQLModel

from cloud.types import now_ms


class ExperimentState(StrEnum):
    RUNNING = "running"
    PROMOTED = "promoted"  # one arm's version went to every device of the experiment
    STOPPED = "stopped"  # ended without promoting: each device keeps its arm's version


class Metric(StrEnum):
    """The primary metric: a proportion per arm."""

    ACCURACY = "accuracy"  # correct / labelled inferences (needs field labels); higher is better
    ERROR_RATE = "error_rate"  # failed / attempted inferences; lower is better

    @property
    def higher_is_better(self) -> bool:
        return self is Metric.ACCURACY


class Experiment(SQLModel, table=True):
    __tablename__ = "experiment"

    id: str = Field(primary_key=True, max_length=32)
    model_id: str = Field(max_length=128)
    version_a: str = Field(max_length=64)
    version_b: str = Field(max_length=64)
    deployment_a: str = Field(foreign_key="deployment.id", max_length=64)
    deployment_b: str = Field(foreign_key="deployment.id", max_length=64)
    metric: str = Field(default=Metric.ACCURACY, max_length=16)
    alpha: float = 0.05
    min_trials: int = 100
    arms: dict[str, str] = Field(default_factory=dict, sa_type=JSON)  # device id -> "a" | "b"
    state: str = Field(default=ExperimentState.RUNNING, max_length=16)
    winner: str | None = Field(default=None, max_length=1)  # the arm promoted
    promoted_deployment: str | None = Field(default=None, max_length=64)
    created_at_ms: int = Field(sa_type=BigInteger, default_factory=now_ms)
    ended_at_ms: int | None = Field(default=None, sa_type=BigInteger)
