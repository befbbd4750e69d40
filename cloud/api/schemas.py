"""Response shapes the API adds on top of the table families in cloud.db.tables."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from cloud.db.bounds import DeviceId, LabelSelector, Text
from cloud.db.tables import (
    ArtifactPublic,
    DeploymentCreate,
    DeploymentPublic,
    DeploymentTargetPublic,
    ModelVersionPublic,
)
from cloud.identity.enrollment import DEFAULT_TTL_S, MAX_TTL_S
from cloud.identity.tokens import Role
from cloud.rollout.policy import RolloutPolicy

MAX_FEEDBACK_ITEMS = 10_000  # labels in one POST /feedback


class ErrorBody(BaseModel):
    error: str  # stable machine code (CloudError.code)
    detail: str


class ModelSummary(BaseModel):
    model_id: str
    latest_version: str
    latest_sequence: int
    versions: int


class ModelVersionDetail(ModelVersionPublic):
    artifacts: list[ArtifactPublic]
    manifest: dict[str, Any]  # the signed manifest's content, minus the bulky self-test and reference


class DeploymentDetail(DeploymentPublic):
    """A deployment with its targets counted by status and the first page of them (at most `target_limit`,
    100 by default, in device id order); the rest behind `targets_next`, a page of the paged target list
    (GET /deployments/{id}/targets, whose Link headers lead on): never every target of a 10,000-device one."""

    counts: dict[str, int]  # targets per status (all of them)
    target_count: int = 0  # all targets (the sum of counts)
    targets: list[DeploymentTargetPublic]  # the first page only
    targets_next: str | None = None  # the URL of the targets after that page; None when `targets` holds all
    waiting: str | None = None  # why an unfinished deployment has not finished, in one line


class Health(BaseModel):
    status: str  # "ok" | "degraded"
    database: str
    components: dict[str, Any]


class TokenCreate(BaseModel):
    name: Text = Field(min_length=1, max_length=128)
    role: Role
    ttl_days: float | None = Field(default=None, gt=0, le=3650)  # None: never expires


class TokenPublic(BaseModel):
    """A token as lists show it: never its secret or the secret's hash."""

    id: str
    name: str
    role: str
    created_at_ms: int
    created_by: str
    expires_at_ms: int | None
    revoked_at_ms: int | None


class TokenCreated(TokenPublic):
    token: str  # the full token text, shown this once


class AuditEntryPublic(BaseModel):
    id: int
    at_ms: int
    actor: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]


class EnrollmentTokenCreate(BaseModel):
    device_id: DeviceId | None = None  # when set, only this device may enroll with the token
    labels: LabelSelector = Field(default_factory=dict)  # fixed on the device: its reports cannot change them
    ttl_s: int = Field(default=DEFAULT_TTL_S, ge=60, le=MAX_TTL_S)


class EnrollmentTokenPublic(BaseModel):
    """An enrollment token as lists show it: never its secret or the secret's hash."""

    id: str
    labels: dict[str, str]
    device_id: str | None
    created_at_ms: int
    expires_at_ms: int
    used_at_ms: int | None
    used_by: str | None


class EnrollmentTokenCreated(EnrollmentTokenPublic):
    token: str  # the full token text, shown this once


class EnrollRequest(BaseModel):
    token: str = Field(max_length=256)
    device_id: DeviceId


class EnrollAnswer(BaseModel):
    """What a device needs to join the fleet, sent once: the password is not stored anywhere readable."""

    device_id: str
    fleet: str
    mqtt_url: str
    username: str
    password: str
    labels: dict[str, str]
    trust_chain: str  # base64 of the TrustChain bytes (trust.chain) the device pins
    tls_ca: str | None  # PEM of the CA that signed the broker's certificate, when there is one


class DeviceRevoked(BaseModel):
    device_id: str
    revoked: bool  # False: its credentials were already revoked


class RolloutCreate(BaseModel):
    """A staged rollout: what to deploy where (as for a deployment) and how (`rollout`)."""

    deployment: DeploymentCreate
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)


class RolloutPlanView(BaseModel):
    model_id: str
    version: str
    targets: int
    waves: list[list[str]]
    skipped: dict[str, str]  # device id -> why it is left out
    offline: list[str] = Field(default_factory=list)  # planned but offline now: their wave waits for them


class RolloutDecisionView(BaseModel):
    at_ms: int
    wave: int  # 0-based index of the wave open at the time; -1 before the first
    action: str
    actor: str
    detail: dict[str, Any]


class GateSampleView(BaseModel):
    at_ms: int
    wave: int
    decision: str
    values: dict[str, float | None]


class RolloutView(BaseModel):
    deployment_id: str
    model_id: str
    version: str
    state: str
    reason: str
    strategy: dict[str, Any]
    gates: dict[str, Any]
    on_breach: str
    wave_sizes: list[int]
    current_wave: int
    wave_opened_ms: int | None
    wave_passed_ms: int | None
    devices_done: int  # targets in opened waves that installed the model
    devices_failed: int
    skipped: dict[str, str]
    last_verdict: dict[str, Any]
    created_at_ms: int
    updated_at_ms: int
    decisions: list[RolloutDecisionView] = Field(default_factory=list)


class ExperimentCreate(BaseModel):
    model_id: Text
    version_a: Text
    version_b: Text
    device_ids: list[DeviceId] = Field(default_factory=list, max_length=10_000)
    labels: LabelSelector = Field(default_factory=dict)
    share_b: float = Field(default=0.5, gt=0, lt=1)
    metric: Literal["accuracy", "error_rate"] = "accuracy"
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    min_trials: int = Field(default=100, ge=1, le=100_000_000)


class ArmView(BaseModel):
    arm: str
    version: str
    devices: int  # devices that sent telemetry for this arm
    assigned: int  # devices in this arm
    trials: int
    successes: int
    rate: float | None
    interval: tuple[float, float] | None  # 95 % Wilson interval


class ExperimentView(BaseModel):
    id: str
    model_id: str
    metric: str
    state: str
    winner: str | None  # the arm promoted, once promoted
    leader: str | None  # the arm significantly better now, if any
    p_value: float | None
    alpha: float
    min_trials: int
    arms: list[ArmView]
    created_at_ms: int
    ended_at_ms: int | None


class PromoteRequest(BaseModel):
    arm: Literal["a", "b"] | None = None  # None: the significant winner (409 while there is none)


class FeedbackItem(BaseModel):
    device_id: DeviceId
    prediction_id: Text = Field(min_length=1)  # the device's id, or "{batch_seq}:{position}" of its sample
    label: Text = Field(min_length=1)  # the true class label, or a regression target as text
    ts_ms: int | None = Field(default=None, ge=0)  # when the truth became known (default: now)


class FeedbackCreate(BaseModel):
    labels: list[FeedbackItem] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)


class FeedbackStored(BaseModel):
    received: int
    stored: int  # new labels; the rest were already recorded (the first label of a prediction wins)


class AccuracyLinePublic(BaseModel):
    key: str  # the model version, device id or window start (ms), by the request's `by`
    labelled: int
    correct: int | None
    accuracy: float | None
    low: float | None  # 95 % interval
    high: float | None
    mean_abs_error: float | None = None
