"""The staged-rollout tables: one `Rollout` per gated deployment, and the log of its decisions.

A Rollout holds the whole plan (waves of device ids, devices skipped and why), where the controller stands
(the open wave, when it opened, when it first passed its gates) and what each opened device ran before
(for the baseline and for rolling back). `revision` grows with every step: a step claims it with a
conditional update, so two cloud processes stepping the same rollout never both act
(`cloud.rollout.controller`). `RolloutDecision` is append-only: every wave opened, every verdict that
changed, every breach, pause, resume, cancel and rollback, with who decided and the gate values.
`RolloutGateSample` is the gate values over time, sampled.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger
from sqlmodel import Field, SQLModel

from cloud.db.statuses import RolloutState
from cloud.types import now_ms


class Rollout(SQLModel, table=True):
    __tablename__ = "rollout"

    deployment_id: str = Field(primary_key=True, foreign_key="deployment.id", max_length=64)
    strategy: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # cloud.rollout.waves.Strategy fields
    gates: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # cloud.rollout.gates.GatePolicy fields
    on_breach: str = Field(default="rollback", max_length=16)  # "rollback" or "pause"
    max_wait_s: int = Field(default=3600, sa_type=BigInteger)  # a wave without enough evidence this long pauses
    state: str = Field(default=RolloutState.RUNNING, max_length=16)
    reason: str = Field(default="", max_length=512)  # why it is paused, waiting or finished, in one line
    waves: list[list[str]] = Field(default_factory=list, sa_type=JSON)
    skipped: dict[str, str] = Field(default_factory=dict, sa_type=JSON)  # device id -> SkipReason
    previous: dict[str, str] = Field(default_factory=dict, sa_type=JSON)  # device id -> "model@version" or ""
    current_wave: int = Field(default=-1)  # index of the last opened wave; -1 before the first
    wave_opened_ms: int | None = Field(default=None, sa_type=BigInteger)
    wave_passed_ms: int | None = Field(default=None, sa_type=BigInteger)  # first PASS of the open wave
    last_verdict: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    last_sample_ms: int | None = Field(default=None, sa_type=BigInteger)  # of the newest RolloutGateSample
    revision: int = Field(default=0, sa_type=BigInteger)
    created_at_ms: int = Field(sa_type=BigInteger, default_factory=now_ms)
    updated_at_ms: int = Field(sa_type=BigInteger, default_factory=now_ms)


class RolloutDecision(SQLModel, table=True):
    __tablename__ = "rollout_decision"

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: str = Field(index=True, max_length=64)
    at_ms: int = Field(sa_type=BigInteger, default_factory=now_ms)
    wave: int = -1
    action: str = Field(max_length=32)  # cloud.rollout.progress.Action, or an operator's pause/resume/...
    actor: str = Field(default="controller", max_length=160)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class RolloutGateSample(SQLModel, table=True):
    """The open wave's gate values at one step, kept at most every `sample_every_ms` (and on every change of
    verdict): the time series the console draws."""

    __tablename__ = "rollout_gate_sample"

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: str = Field(index=True, max_length=64)
    at_ms: int = Field(sa_type=BigInteger)
    wave: int
    decision: str = Field(max_length=16)
    values: dict[str, float | None] = Field(default_factory=dict, sa_type=JSON)  # gate -> value
