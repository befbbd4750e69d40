"""The database tables of the ML metadata store and the fleet, one model family per resource (SQLModel).

Named `tables`, not `models`: in this product a "model" is an ML model.

Family pattern: `XBase` (shared fields) -> `XCreate` (what a caller supplies) / `X` (the table) /
`XPublic` (what the API returns). Times are epoch milliseconds (`*_ms`) in BIGINT columns, so both
dialects store the same thing; structured values are JSON columns. The unique keys carry idempotency:
ingestion inserts with `cloud.db.insert_ignore`, so a repeated (device_id, seq) lands once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from cloud.db.bounds import MAX_DEPLOYMENT_DEVICES, DeviceId, LabelSelector, Text
from cloud.db.statuses import DeploymentStatus, RunStatus, TargetStatus
from cloud.types import now_ms


def _json(**kwargs: Any) -> Any:
    return Field(sa_type=JSON, **kwargs)


def _ms(**kwargs: Any) -> Any:
    return Field(sa_type=BigInteger, **kwargs)


# ---------------------------------------------------------------- ML metadata store


class DatasetBase(SQLModel):
    name: str
    n_rows: int = Field(sa_type=BigInteger)
    n_features: int
    kind: str = "bundled"  # bundled (a named reference set) | field (rows from the fleet, bytes in the store)
    provenance: dict[str, Any] = _json(default_factory=dict)  # devices, window, model versions, label source


class DatasetCreate(DatasetBase):
    content_hash: str


class Dataset(DatasetBase, table=True):
    content_hash: str = Field(primary_key=True, max_length=128)
    created_at_ms: int = _ms(default_factory=now_ms)


class DatasetPublic(DatasetBase):
    content_hash: str
    created_at_ms: int


class PipelineRunBase(SQLModel):
    pipeline: str
    code_version: str = ""
    parameters: dict[str, Any] = _json(default_factory=dict)
    dataset_hash: str | None = Field(default=None, foreign_key="dataset.content_hash")


class PipelineRunCreate(PipelineRunBase):
    pass


class PipelineRun(PipelineRunBase, table=True):
    id: str = Field(primary_key=True, max_length=64)
    status: str = RunStatus.RUNNING
    metrics: dict[str, float] = _json(default_factory=dict)
    step_timings_s: dict[str, float] = _json(default_factory=dict)
    error: str | None = None
    started_at_ms: int = _ms(default_factory=now_ms)
    finished_at_ms: int | None = _ms(default=None)


class PipelineRunPublic(PipelineRunBase):
    id: str
    status: str
    metrics: dict[str, float]
    step_timings_s: dict[str, float]
    error: str | None
    started_at_ms: int
    finished_at_ms: int | None


class ModelVersionBase(SQLModel):
    model_id: str = Field(index=True)
    version: str
    sequence: int = Field(sa_type=BigInteger)
    run_id: str | None = Field(default=None, foreign_key="pipelinerun.id")
    metrics: dict[str, float] = _json(default_factory=dict)
    lineage: dict[str, str] = _json(default_factory=dict)


class ModelVersion(ModelVersionBase, table=True):
    __table_args__ = (
        UniqueConstraint("model_id", "sequence", name="uq_modelversion_sequence"),
        UniqueConstraint("model_id", "version", name="uq_modelversion_version"),
    )
    id: int | None = Field(default=None, primary_key=True)
    signed_manifest: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    signing_key_id: str = ""
    created_at_ms: int = _ms(default_factory=now_ms)


class ModelVersionPublic(ModelVersionBase):
    id: int
    signing_key_id: str
    created_at_ms: int


class ArtifactBase(SQLModel):
    name: str
    format: str  # "onnx" | "tflite"
    runtime: str
    quantization: str = "none"
    size_bytes: int = Field(sa_type=BigInteger)


class ArtifactRecord(ArtifactBase, table=True):
    # The same bytes may belong to several model versions (a re-registered build), hence the pair.
    sha256: str = Field(primary_key=True, max_length=64)
    model_version_id: int = Field(primary_key=True, foreign_key="modelversion.id")
    storage_path: str = ""  # where the store keeps it (informational: the store addresses by sha256)


class ArtifactPublic(ArtifactBase):
    sha256: str


# ---------------------------------------------------------------- fleet


class DeviceBase(SQLModel):
    labels: dict[str, str] = _json(default_factory=dict)
    online: bool = False
    last_seen_ms: int | None = _ms(default=None)
    agent_version: str = ""
    runtimes: list[str] = _json(default_factory=list)
    # the device's DeviceFacts as JSON (architecture, os, python_version, runtimes, cpu_*, memory_*,
    # temperature_c, throttled, disk_free_bytes); {} until an agent that reports them does
    facts: dict[str, Any] = _json(default_factory=dict)
    # messages the device's outbox spool dropped while full, totals since its spool file was created:
    # {"events", "telemetry", "samples", "as_of_ms" (end of the telemetry window that said so)}; {} if none
    spool_dropped: dict[str, int] = _json(default_factory=dict)
    active_model_id: str | None = None
    active_version: str | None = None
    active_sequence: int | None = _ms(default=None)
    active_artifact_sha256: str | None = None
    update_state: str = "unknown"  # idle | downloading | ... | active | failed (UpdateState, lower case)
    last_error_code: str | None = None
    last_error_message: str | None = None
    deployment_id: str | None = None  # the deployment of the desired state the cloud last published
    desired_generation: int = _ms(default=0)
    reported_generation: int = _ms(default=0)  # the desired generation the device last answered


class Device(DeviceBase, table=True):
    id: str = Field(primary_key=True, max_length=64)
    reported_seq: int = _ms(default=0)
    reported_ts_ms: int = _ms(default=0)
    registered_at_ms: int = _ms(default_factory=now_ms)
    # ReportedState.capabilities of the device's last report (protocols.capabilities); [] for an agent
    # that names none, which the cloud then sends everything as before
    capabilities: list[str] = _json(default_factory=list)


class DevicePublic(DeviceBase):
    id: str
    registered_at_ms: int


class DeploymentBase(SQLModel):
    device_ids: list[str] = _json(default_factory=list)  # explicit targets
    labels: dict[str, str] = _json(default_factory=dict)  # selector: every label must match
    strategy: str = "all_at_once"


class DeploymentCreate(DeploymentBase):
    """What a caller asks for; bounded (cloud.db.bounds) so a request is refused before planning starts."""

    model_id: Text
    version: Text | None = None  # None: the latest version of model_id
    device_ids: list[DeviceId] = Field(default_factory=list, max_length=MAX_DEPLOYMENT_DEVICES)
    labels: LabelSelector = Field(default_factory=dict)
    strategy: Text = "all_at_once"
    # a label selector that matches no device yet is refused unless asked for: it waits for devices
    # that enroll (or report) with those labels later
    wait_for_devices: bool = False


class Deployment(DeploymentBase, table=True):
    id: str = Field(primary_key=True, max_length=64)
    model_version_id: int = Field(foreign_key="modelversion.id", index=True)
    model_id: str
    version: str
    status: str = DeploymentStatus.IN_PROGRESS
    chunk_size_bytes: int
    created_at_ms: int = _ms(default_factory=now_ms)


class DeploymentPublic(DeploymentBase):
    id: str
    model_id: str
    version: str
    status: str
    created_at_ms: int


class DeploymentTargetBase(SQLModel):
    generation: int = _ms()
    status: str = TargetStatus.PENDING
    error_code: str | None = None
    error_message: str | None = None
    updated_at_ms: int = _ms(default_factory=now_ms)


class DeploymentTarget(DeploymentTargetBase, table=True):
    deployment_id: str = Field(primary_key=True, foreign_key="deployment.id")
    device_id: str = Field(primary_key=True, foreign_key="device.id", index=True)
    # "model@version" the device itself named as its previous model when it reported this deployment's model
    # active ("" until then, or if it ran none): what a rollback of this deployment returns it to
    previous_model: str = ""


class DeploymentTargetPublic(DeploymentTargetBase):
    device_id: str


# ---------------------------------------------------------------- what devices send


class TelemetryRecord(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("device_id", "seq", name="uq_telemetry_device_seq"),)
    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(index=True)
    seq: int = _ms()
    window_start_ms: int = _ms()
    window_end_ms: int = _ms(index=True)
    model_id: str = ""
    model_version: str = ""
    model_sequence: int = _ms(default=0)
    inference_count: int = _ms(default=0)
    error_count: int = _ms(default=0)
    latency_p50_us: float = 0.0
    latency_p95_us: float = 0.0
    latency_histogram: dict[str, list[float]] = _json(default_factory=dict)  # {"bounds": [...], "counts": [...]}
    labelled_count: int = _ms(default=0)
    correct_count: int = _ms(default=0)
    feature_counts: dict[str, list[int]] = _json(default_factory=dict)  # feature index -> bin counts
    # {"labels"|"bin_edges", "counts"} and, from agents that send it, "confidence" (rows per confidence bin)
    prediction_counts: dict[str, Any] = _json(default_factory=dict)
    cpu_percent: float = 0.0
    rss_bytes: int = _ms(default=0)
    shadow_compared: int = _ms(default=0)  # rows a device on probation also ran through the previous model
    shadow_agreed: int = _ms(default=0)  # ... of which both models gave the same answer
    shadow_dropped: int = _ms(default=0)  # rows sampled for shadowing but dropped (the shadow queue was full)
    received_at_ms: int = _ms(default_factory=now_ms)


class EventRecord(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("device_id", "seq", name="uq_event_device_seq"),)
    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(index=True)
    seq: int = _ms()
    ts_ms: int = _ms()
    kind: str  # EventKind without its prefix, lower case: "activated", "self_test_failed", ...
    deployment_id: str = ""
    model_id: str = ""
    model_version: str = ""
    error_code: str | None = None
    error_message: str | None = None


class SampleRecord(SQLModel, table=True):
    """One sampled inference; a SampleBatch of n samples becomes n rows sharing (device_id, batch_seq)."""

    __table_args__ = (UniqueConstraint("device_id", "batch_seq", "position", name="uq_sample_device_seq"),)
    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(index=True)
    batch_seq: int = _ms()
    position: int
    model_id: str = ""
    model_version: str = ""
    input: list[float] = _json(default_factory=list)
    prediction: str = ""
    label: str | None = None
    ts_ms: int = _ms()
    prediction_id: str = Field(default="", index=True)  # the device's id, else "{batch_seq}:{position}"
    # the odds the sampler kept this row with (weight 1 / p: Horvitz-Thompson); None: an older agent's
    inclusion_probability: float | None = None
    confidence: float | None = None  # classifiers: the top-class probability, when the agent sent it


class FeedbackRecord(SQLModel, table=True):
    """A label that arrived after its prediction (API or the device's feedback topic); the first one for a
    (device, prediction) wins, so redeliveries change nothing."""

    __table_args__ = (UniqueConstraint("device_id", "prediction_id", name="uq_feedback_device_prediction"),)
    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(index=True)
    prediction_id: str
    label: str
    ts_ms: int = _ms()
    received_at_ms: int = _ms()
    source: str = "api"  # api | mqtt


class AlertRecord(SQLModel, table=True):
    """A drift or accuracy alert of one model version (cloud.monitoring.alerts): one row per alert key,
    active until the evaluation no longer finds it, then cleared (kept, with when); raised again, the same
    row. Workers evaluate alike; a raise or clear is a conditional UPDATE, so exactly one announces it."""

    __table_args__ = (UniqueConstraint("key", name="uq_alert_key"),)
    id: int | None = Field(default=None, primary_key=True)
    key: str  # "{kind}:{model_id}@{version}"
    kind: str  # drift | accuracy
    model_id: str = Field(index=True)
    model_version: str
    active: bool = Field(default=True, index=True)
    summary: str = ""
    devices: list[str] = _json(default_factory=list)  # the devices driving it, most first (at most a few)
    detail: dict[str, Any] = _json(default_factory=dict)
    raised_at_ms: int = _ms()
    updated_at_ms: int = _ms()
    cleared_at_ms: int | None = Field(default=None, sa_type=BigInteger)


class EventPublic(SQLModel):
    device_id: str
    seq: int
    ts_ms: int
    kind: str
    deployment_id: str
    model_id: str
    model_version: str
    error_code: str | None
    error_message: str | None


class AssignmentRecord(SQLModel, table=True):
    """The signed assignment last published to a device (one row per device), kept so that the refresher
    knows when it lapses and a republish sends the very same bytes. A table of its own rather than columns
    on Device, so a database made before assignments existed gains it with `create_tables`."""

    device_id: str = Field(primary_key=True, max_length=64)
    deployment_id: str = Field(index=True)
    counter: int = _ms()
    manifest_sha256: str = ""
    root_version: int = _ms(default=0)  # the root version whose director key signed it
    issued_at_ms: int = _ms()
    expires_at_ms: int = _ms(index=True)
    signed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class FanoutRecord(SQLModel, table=True):
    """An artifact whose chunks are kept retained on the fleet-wide topics (`cloud.rollout.fanout`): one row
    per (fleet, artifact, chunk size), claimed by the one process that publishes them, deleted by the one
    that clears them once no open deployment needs them."""

    fleet: str = Field(primary_key=True, max_length=32)
    sha256: str = Field(primary_key=True, max_length=64)
    chunk_size: int = Field(primary_key=True, sa_type=BigInteger)
    size_bytes: int = _ms()
    claimed_at_ms: int = _ms()  # a claim that never got published is taken over after a while
    published_at_ms: int = _ms(default=0)  # 0: claimed, being published
    used_at_ms: int = _ms(default=0)  # last time a desired state pointed devices at it


class CloudMember(SQLModel, table=True):
    """A running cloud process that answers chunk requests, seen every few seconds (`cloud.mqtt.ownership`):
    without MQTT 5 shared subscriptions every process hears every request, and the live members split the
    devices between them."""

    member_id: str = Field(primary_key=True, max_length=128)
    fleet: str = Field(max_length=32, index=True)
    seen_at_ms: int = _ms()


# ---------------------------------------------------------------- retraining: aliases and run inputs


class ModelAlias(SQLModel, table=True):
    """Where an alias (champion, challenger, production) of a model points now; every move is an AliasMove."""

    model_id: str = Field(primary_key=True, max_length=255)
    alias: str = Field(primary_key=True, max_length=64)
    version: str
    updated_at_ms: int = _ms(default_factory=now_ms)


class AliasMove(SQLModel, table=True):
    """Append-only history of alias moves: who pointed which alias where, when and why."""

    id: int | None = Field(default=None, primary_key=True)
    model_id: str = Field(index=True)
    alias: str
    from_version: str | None = None  # None: the alias was new
    to_version: str
    actor: str
    reason: str = ""
    ts_ms: int = _ms(default_factory=now_ms)


class RunInput(SQLModel, table=True):
    """Every dataset version a pipeline run read, and in which role (reference, field_train, field_eval)."""

    run_id: str = Field(primary_key=True, foreign_key="pipelinerun.id", max_length=64)
    dataset_hash: str = Field(primary_key=True, foreign_key="dataset.content_hash", max_length=128)
    role: str = Field(primary_key=True, max_length=32)


class Candidate(SQLModel, table=True):
    """A trained challenger on its way through `pipeline compile|evaluate|register`: the train step's output.
    `id` is the sha256 of its document in the artifact store (which names the estimator's bytes by their
    sha256), so separate processes pass it on by name and a changed byte is refused; the later steps'
    outputs are kept here, so each step run again does nothing new."""

    id: str = Field(primary_key=True, max_length=64)
    model_id: str = Field(index=True)
    run_id: str = Field(foreign_key="pipelinerun.id", max_length=64, index=True)
    champion: str
    artifacts: dict[str, str] = _json(default_factory=dict)  # compiled: name -> sha256; "manifest" the fragment
    judgement: dict[str, Any] = _json(default_factory=dict)  # evaluated: outcome, reasons, both comparisons
    version: str | None = None  # registered as this model version
    created_at_ms: int = _ms(default_factory=now_ms)
