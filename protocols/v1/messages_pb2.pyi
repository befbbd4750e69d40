from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArtifactFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_FORMAT_UNSPECIFIED: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_ONNX: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_TFLITE: _ClassVar[ArtifactFormat]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_CLASSIFICATION: _ClassVar[Task]
    TASK_REGRESSION: _ClassVar[Task]
    TASK_MULTILABEL: _ClassVar[Task]

class UpdateState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPDATE_STATE_UNSPECIFIED: _ClassVar[UpdateState]
    UPDATE_STATE_IDLE: _ClassVar[UpdateState]
    UPDATE_STATE_DOWNLOADING: _ClassVar[UpdateState]
    UPDATE_STATE_VERIFYING: _ClassVar[UpdateState]
    UPDATE_STATE_LOADING: _ClassVar[UpdateState]
    UPDATE_STATE_SELF_TEST: _ClassVar[UpdateState]
    UPDATE_STATE_ACTIVE: _ClassVar[UpdateState]
    UPDATE_STATE_FAILED: _ClassVar[UpdateState]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_UPDATE_STARTED: _ClassVar[EventKind]
    EVENT_KIND_DOWNLOADED: _ClassVar[EventKind]
    EVENT_KIND_VERIFIED: _ClassVar[EventKind]
    EVENT_KIND_VERIFICATION_FAILED: _ClassVar[EventKind]
    EVENT_KIND_SELF_TEST_PASSED: _ClassVar[EventKind]
    EVENT_KIND_SELF_TEST_FAILED: _ClassVar[EventKind]
    EVENT_KIND_ACTIVATED: _ClassVar[EventKind]
    EVENT_KIND_ROLLED_BACK: _ClassVar[EventKind]
    EVENT_KIND_ERROR: _ClassVar[EventKind]
    EVENT_KIND_STARTED: _ClassVar[EventKind]
ARTIFACT_FORMAT_UNSPECIFIED: ArtifactFormat
ARTIFACT_FORMAT_ONNX: ArtifactFormat
ARTIFACT_FORMAT_TFLITE: ArtifactFormat
TASK_UNSPECIFIED: Task
TASK_CLASSIFICATION: Task
TASK_REGRESSION: Task
TASK_MULTILABEL: Task
UPDATE_STATE_UNSPECIFIED: UpdateState
UPDATE_STATE_IDLE: UpdateState
UPDATE_STATE_DOWNLOADING: UpdateState
UPDATE_STATE_VERIFYING: UpdateState
UPDATE_STATE_LOADING: UpdateState
UPDATE_STATE_SELF_TEST: UpdateState
UPDATE_STATE_ACTIVE: UpdateState
UPDATE_STATE_FAILED: UpdateState
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_UPDATE_STARTED: EventKind
EVENT_KIND_DOWNLOADED: EventKind
EVENT_KIND_VERIFIED: EventKind
EVENT_KIND_VERIFICATION_FAILED: EventKind
EVENT_KIND_SELF_TEST_PASSED: EventKind
EVENT_KIND_SELF_TEST_FAILED: EventKind
EVENT_KIND_ACTIVATED: EventKind
EVENT_KIND_ROLLED_BACK: EventKind
EVENT_KIND_ERROR: EventKind
EVENT_KIND_STARTED: EventKind

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class IoSchema(_message.Message):
    __slots__ = ("inputs", "outputs", "task", "class_labels", "n_features", "feature_names", "accepts_missing", "columns")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABELS_FIELD_NUMBER: _ClassVar[int]
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_MISSING_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    task: Task
    class_labels: _containers.RepeatedScalarFieldContainer[str]
    n_features: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    accepts_missing: bool
    columns: _containers.RepeatedCompositeFieldContainer[ColumnSpec]
    def __init__(self, inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., task: _Optional[_Union[Task, str]] = ..., class_labels: _Optional[_Iterable[str]] = ..., n_features: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ..., accepts_missing: _Optional[bool] = ..., columns: _Optional[_Iterable[_Union[ColumnSpec, _Mapping]]] = ...) -> None: ...

class ColumnSpec(_message.Message):
    __slots__ = ("name", "dtype", "categories", "accepts_missing", "refuses_unknown")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_MISSING_FIELD_NUMBER: _ClassVar[int]
    REFUSES_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    accepts_missing: bool
    refuses_unknown: bool
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., accepts_missing: _Optional[bool] = ..., refuses_unknown: _Optional[bool] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("name", "format", "sha256", "size_bytes", "quantization", "runtime", "runtime_requirement", "predicted_output", "scores_output", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_REQUIREMENT_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SCORES_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    name: str
    format: ArtifactFormat
    sha256: str
    size_bytes: int
    quantization: str
    runtime: str
    runtime_requirement: str
    predicted_output: str
    scores_output: str
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, name: _Optional[str] = ..., format: _Optional[_Union[ArtifactFormat, str]] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., quantization: _Optional[str] = ..., runtime: _Optional[str] = ..., runtime_requirement: _Optional[str] = ..., predicted_output: _Optional[str] = ..., scores_output: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SelfTestVector(_message.Message):
    __slots__ = ("input", "expected", "expected_label")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    input: _containers.RepeatedScalarFieldContainer[float]
    expected: _containers.RepeatedScalarFieldContainer[float]
    expected_label: str
    def __init__(self, input: _Optional[_Iterable[float]] = ..., expected: _Optional[_Iterable[float]] = ..., expected_label: _Optional[str] = ...) -> None: ...

class SelfTest(_message.Message):
    __slots__ = ("vectors", "abs_tolerance", "min_label_agreement")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ABS_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    MIN_LABEL_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[SelfTestVector]
    abs_tolerance: float
    min_label_agreement: float
    def __init__(self, vectors: _Optional[_Iterable[_Union[SelfTestVector, _Mapping]]] = ..., abs_tolerance: _Optional[float] = ..., min_label_agreement: _Optional[float] = ...) -> None: ...

class FeatureProfile(_message.Message):
    __slots__ = ("index", "name", "bin_edges", "counts", "categories")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BIN_EDGES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    bin_edges: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., bin_edges: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictionProfile(_message.Message):
    __slots__ = ("labels", "bin_edges", "counts")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BIN_EDGES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    bin_edges: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., bin_edges: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class ReferenceProfile(_message.Message):
    __slots__ = ("features", "predictions", "n_rows", "confidence", "label_rates")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LABEL_RATES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeatureProfile]
    predictions: PredictionProfile
    n_rows: int
    confidence: PredictionProfile
    label_rates: LabelRates
    def __init__(self, features: _Optional[_Iterable[_Union[FeatureProfile, _Mapping]]] = ..., predictions: _Optional[_Union[PredictionProfile, _Mapping]] = ..., n_rows: _Optional[int] = ..., confidence: _Optional[_Union[PredictionProfile, _Mapping]] = ..., label_rates: _Optional[_Union[LabelRates, _Mapping]] = ...) -> None: ...

class LabelRates(_message.Message):
    __slots__ = ("labels", "positives", "rows")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    positives: _containers.RepeatedScalarFieldContainer[int]
    rows: int
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., positives: _Optional[_Iterable[int]] = ..., rows: _Optional[int] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("model_id", "version", "sequence", "created_at_ms", "expires_at_ms", "artifacts", "io", "self_test", "reference", "source_model_sha256", "metrics", "lineage")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LineageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    IO_FIELD_NUMBER: _ClassVar[int]
    SELF_TEST_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: str
    sequence: int
    created_at_ms: int
    expires_at_ms: int
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    io: IoSchema
    self_test: SelfTest
    reference: ReferenceProfile
    source_model_sha256: str
    metrics: _containers.ScalarMap[str, float]
    lineage: _containers.ScalarMap[str, str]
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[str] = ..., sequence: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., io: _Optional[_Union[IoSchema, _Mapping]] = ..., self_test: _Optional[_Union[SelfTest, _Mapping]] = ..., reference: _Optional[_Union[ReferenceProfile, _Mapping]] = ..., source_model_sha256: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., lineage: _Optional[_Mapping[str, str]] = ...) -> None: ...

class KeyDelegation(_message.Message):
    __slots__ = ("key_id", "public_key", "role", "issued_at_ms", "not_after_ms")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key: bytes
    role: str
    issued_at_ms: int
    not_after_ms: int
    def __init__(self, key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., role: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., not_after_ms: _Optional[int] = ...) -> None: ...

class SignedDelegation(_message.Message):
    __slots__ = ("delegation", "root_key_id", "root_signature")
    DELEGATION_FIELD_NUMBER: _ClassVar[int]
    ROOT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ROOT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    delegation: bytes
    root_key_id: str
    root_signature: bytes
    def __init__(self, delegation: _Optional[bytes] = ..., root_key_id: _Optional[str] = ..., root_signature: _Optional[bytes] = ...) -> None: ...

class SignedManifest(_message.Message):
    __slots__ = ("schema_version", "manifest", "key_id", "signature", "delegations")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DELEGATIONS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    manifest: bytes
    key_id: str
    signature: bytes
    delegations: _containers.RepeatedCompositeFieldContainer[SignedDelegation]
    def __init__(self, schema_version: _Optional[int] = ..., manifest: _Optional[bytes] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ..., delegations: _Optional[_Iterable[_Union[SignedDelegation, _Mapping]]] = ...) -> None: ...

class RoleKey(_message.Message):
    __slots__ = ("key_id", "public_key", "role", "not_after_ms")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key: bytes
    role: str
    not_after_ms: int
    def __init__(self, key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., role: _Optional[str] = ..., not_after_ms: _Optional[int] = ...) -> None: ...

class RootMetadata(_message.Message):
    __slots__ = ("fleet", "version", "issued_at_ms", "keys", "revoked_key_ids")
    FLEET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    fleet: str
    version: int
    issued_at_ms: int
    keys: _containers.RepeatedCompositeFieldContainer[RoleKey]
    revoked_key_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fleet: _Optional[str] = ..., version: _Optional[int] = ..., issued_at_ms: _Optional[int] = ..., keys: _Optional[_Iterable[_Union[RoleKey, _Mapping]]] = ..., revoked_key_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class KeySignature(_message.Message):
    __slots__ = ("key_id", "signature")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    signature: bytes
    def __init__(self, key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SignedRootMetadata(_message.Message):
    __slots__ = ("root", "signatures")
    ROOT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    root: bytes
    signatures: _containers.RepeatedCompositeFieldContainer[KeySignature]
    def __init__(self, root: _Optional[bytes] = ..., signatures: _Optional[_Iterable[_Union[KeySignature, _Mapping]]] = ...) -> None: ...

class TrustChain(_message.Message):
    __slots__ = ("schema_version", "roots")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROOTS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    roots: _containers.RepeatedCompositeFieldContainer[SignedRootMetadata]
    def __init__(self, schema_version: _Optional[int] = ..., roots: _Optional[_Iterable[_Union[SignedRootMetadata, _Mapping]]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("fleet", "device_id", "deployment_id", "counter", "manifest_sha256", "issued_at_ms", "expires_at_ms")
    FLEET_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    fleet: str
    device_id: str
    deployment_id: str
    counter: int
    manifest_sha256: str
    issued_at_ms: int
    expires_at_ms: int
    def __init__(self, fleet: _Optional[str] = ..., device_id: _Optional[str] = ..., deployment_id: _Optional[str] = ..., counter: _Optional[int] = ..., manifest_sha256: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class SignedAssignment(_message.Message):
    __slots__ = ("assignment", "key_id", "signature")
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    assignment: bytes
    key_id: str
    signature: bytes
    def __init__(self, assignment: _Optional[bytes] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ArtifactLocation(_message.Message):
    __slots__ = ("sha256", "size_bytes", "chunk_size", "total_chunks", "fanout_filter")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FANOUT_FILTER_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    chunk_size: int
    total_chunks: int
    fanout_filter: str
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., chunk_size: _Optional[int] = ..., total_chunks: _Optional[int] = ..., fanout_filter: _Optional[str] = ...) -> None: ...

class DesiredState(_message.Message):
    __slots__ = ("schema_version", "device_id", "deployment_id", "generation", "manifest", "artifacts", "issued_at_ms", "assignment", "trust", "cloud_capabilities")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    TRUST_FIELD_NUMBER: _ClassVar[int]
    CLOUD_CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    device_id: str
    deployment_id: str
    generation: int
    manifest: SignedManifest
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactLocation]
    issued_at_ms: int
    assignment: SignedAssignment
    trust: TrustChain
    cloud_capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, schema_version: _Optional[int] = ..., device_id: _Optional[str] = ..., deployment_id: _Optional[str] = ..., generation: _Optional[int] = ..., manifest: _Optional[_Union[SignedManifest, _Mapping]] = ..., artifacts: _Optional[_Iterable[_Union[ArtifactLocation, _Mapping]]] = ..., issued_at_ms: _Optional[int] = ..., assignment: _Optional[_Union[SignedAssignment, _Mapping]] = ..., trust: _Optional[_Union[TrustChain, _Mapping]] = ..., cloud_capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("schema_version", "sha256", "index", "total_chunks", "offset", "data", "request_id", "error")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    sha256: str
    index: int
    total_chunks: int
    offset: int
    data: bytes
    request_id: str
    error: str
    def __init__(self, schema_version: _Optional[int] = ..., sha256: _Optional[str] = ..., index: _Optional[int] = ..., total_chunks: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., request_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ArtifactChunkRequest(_message.Message):
    __slots__ = ("schema_version", "device_id", "request_id", "sha256", "indexes")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    device_id: str
    request_id: str
    sha256: str
    indexes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, schema_version: _Optional[int] = ..., device_id: _Optional[str] = ..., request_id: _Optional[str] = ..., sha256: _Optional[str] = ..., indexes: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("model_id", "version", "sequence", "artifact_sha256", "runtime")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: str
    sequence: int
    artifact_sha256: str
    runtime: str
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[str] = ..., sequence: _Optional[int] = ..., artifact_sha256: _Optional[str] = ..., runtime: _Optional[str] = ...) -> None: ...

class ErrorInfo(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ReportedState(_message.Message):
    __slots__ = ("schema_version", "device_id", "seq", "ts_ms", "active_model", "previous_model", "update_state", "deployment_id", "desired_generation", "last_error", "agent_version", "labels", "runtimes", "probation_until_ms", "facts", "capabilities")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MODEL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_STATE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DESIRED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    PROBATION_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    device_id: str
    seq: int
    ts_ms: int
    active_model: ModelRef
    previous_model: ModelRef
    update_state: UpdateState
    deployment_id: str
    desired_generation: int
    last_error: ErrorInfo
    agent_version: str
    labels: _containers.ScalarMap[str, str]
    runtimes: _containers.RepeatedScalarFieldContainer[str]
    probation_until_ms: int
    facts: DeviceFacts
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, schema_version: _Optional[int] = ..., device_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., active_model: _Optional[_Union[ModelRef, _Mapping]] = ..., previous_model: _Optional[_Union[ModelRef, _Mapping]] = ..., update_state: _Optional[_Union[UpdateState, str]] = ..., deployment_id: _Optional[str] = ..., desired_generation: _Optional[int] = ..., last_error: _Optional[_Union[ErrorInfo, _Mapping]] = ..., agent_version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., runtimes: _Optional[_Iterable[str]] = ..., probation_until_ms: _Optional[int] = ..., facts: _Optional[_Union[DeviceFacts, _Mapping]] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class RuntimeInfo(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeviceFacts(_message.Message):
    __slots__ = ("architecture", "os", "python_version", "runtimes", "cpu_count", "cpu_model", "memory_total_bytes", "memory_available_bytes", "temperature_c", "throttled", "disk_free_bytes")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    os: str
    python_version: str
    runtimes: _containers.RepeatedCompositeFieldContainer[RuntimeInfo]
    cpu_count: int
    cpu_model: str
    memory_total_bytes: int
    memory_available_bytes: int
    temperature_c: float
    throttled: str
    disk_free_bytes: int
    def __init__(self, architecture: _Optional[str] = ..., os: _Optional[str] = ..., python_version: _Optional[str] = ..., runtimes: _Optional[_Iterable[_Union[RuntimeInfo, _Mapping]]] = ..., cpu_count: _Optional[int] = ..., cpu_model: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., temperature_c: _Optional[float] = ..., throttled: _Optional[str] = ..., disk_free_bytes: _Optional[int] = ...) -> None: ...

class Presence(_message.Message):
    __slots__ = ("schema_version", "device_id", "online", "ts_ms", "agent_version")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    device_id: str
    online: bool
    ts_ms: int
    agent_version: str
    def __init__(self, schema_version: _Optional[int] = ..., device_id: _Optional[str] = ..., online: _Optional[bool] = ..., ts_ms: _Optional[int] = ..., agent_version: _Optional[str] = ...) -> None: ...

class LifecycleEvent(_message.Message):
    __slots__ = ("schema_version", "device_id", "seq", "ts_ms", "kind", "deployment_id", "model", "error", "batch")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    device_id: str
    seq: int
    ts_ms: int
    kind: EventKind
    deployment_id: str
    model: ModelRef
    error: ErrorInfo
    batch: _containers.RepeatedCompositeFieldContainer[LifecycleEvent]
    def __init__(self, schema_version: _Optional[int] = ..., device_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., kind: _Optional[_Union[EventKind, str]] = ..., deployment_id: _Optional[str] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., error: _Optional[_Union[ErrorInfo, _Mapping]] = ..., batch: _Optional[_Iterable[_Union[LifecycleEvent, _Mapping]]] = ...) -> None: ...

class Histogram(_message.Message):
    __slots__ = ("bounds", "counts")
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    bounds: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, bounds: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class FeatureSketch(_message.Message):
    __slots__ = ("index", "counts")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[int] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class TelemetryWindow(_message.Message):
    __slots__ = ("schema_version", "device_id", "seq", "window_start_ms", "window_end_ms", "model", "inference_count", "error_count", "latency_us", "latency_p50_us", "latency_p95_us", "labelled_count", "correct_count", "features", "predictions", "cpu_percent", "rss_bytes", "shadow_compared", "shadow_agreed", "shadow_dropped", "latency_bins", "feature_counts", "spool_dropped", "feature_counts_implied", "confidence_counts", "label_counts")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_US_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_US_FIELD_NUMBER: _ClassVar[int]
    LABELLED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CORRECT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_COMPARED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_AGREED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DROPPED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BINS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DROPPED_FIELD_NUMBER: _ClassVar[int]
    FEATURE_COUNTS_IMPLIED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    device_id: str
    seq: int
    window_start_ms: int
    window_end_ms: int
    model: ModelRef
    inference_count: int
    error_count: int
    latency_us: Histogram
    latency_p50_us: float
    latency_p95_us: float
    labelled_count: int
    correct_count: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureSketch]
    predictions: PredictionProfile
    cpu_percent: float
    rss_bytes: int
    shadow_compared: int
    shadow_agreed: int
    shadow_dropped: int
    latency_bins: _containers.RepeatedScalarFieldContainer[int]
    feature_counts: _containers.RepeatedScalarFieldContainer[int]
    spool_dropped: SpoolDrops
    feature_counts_implied: _containers.RepeatedScalarFieldContainer[int]
    confidence_counts: _containers.RepeatedScalarFieldContainer[int]
    label_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, schema_version: _Optional[int] = ..., device_id: _Optional[str] = ..., seq: _Optional[int] = ..., window_start_ms: _Optional[int] = ..., window_end_ms: _Optional[int] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., inference_count: _Optional[int] = ..., error_count: _Optional[int] = ..., latency_us: _Optional[_Union[Histogram, _Mapping]] = ..., latency_p50_us: _Optional[float] = ..., latency_p95_us: _Optional[float] = ..., labelled_count: _Optional[int] = ..., correct_count: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureSketch, _Mapping]]] = ..., predictions: _Optional[_Union[PredictionProfile, _Mapping]] = ..., cpu_percent: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., shadow_compared: _Optional[int] = ..., shadow_agreed: _Optional[int] = ..., shadow_dropped: _Optional[int] = ..., latency_bins: _Optional[_Iterable[int]] = ..., feature_counts: _Optional[_Iterable[int]] = ..., spool_dropped: _Optional[_Union[SpoolDrops, _Mapping]] = ..., feature_counts_implied: _Optional[_Iterable[int]] = ..., confidence_counts: _Optional[_Iterable[int]] = ..., label_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class SpoolDrops(_message.Message):
    __slots__ = ("events", "telemetry", "samples")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    events: int
    telemetry: int
    samples: int
    def __init__(self, events: _Optional[int] = ..., telemetry: _Optional[int] = ..., samples: _Optional[int] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("input", "prediction", "label", "ts_ms", "prediction_id", "inclusion_probability", "confidence")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    input: _containers.RepeatedScalarFieldContainer[float]
    prediction: str
    label: str
    ts_ms: int
    prediction_id: str
    inclusion_probability: float
    confidence: float
    def __init__(self, input: _Optional[_Iterable[float]] = ..., prediction: _Optional[str] = ..., label: _Optional[str] = ..., ts_ms: _Optional[int] = ..., prediction_id: _Optional[str] = ..., inclusion_probability: _Optional[float] = ..., confidence: _Optional[float] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("prediction_id", "label", "ts_ms")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    label: str
    ts_ms: int
    def __init__(self, prediction_id: _Optional[str] = ..., label: _Optional[str] = ..., ts_ms: _Optional[int] = ...) -> None: ...

class FeedbackBatch(_message.Message):
    __slots__ = ("schema_version", "device_id", "seq", "items")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    device_id: str
    seq: int
    items: _containers.RepeatedCompositeFieldContainer[Feedback]
    def __init__(self, schema_version: _Optional[int] = ..., device_id: _Optional[str] = ..., seq: _Optional[int] = ..., items: _Optional[_Iterable[_Union[Feedback, _Mapping]]] = ...) -> None: ...

class SampleBatch(_message.Message):
    __slots__ = ("schema_version", "device_id", "seq", "model", "samples")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    device_id: str
    seq: int
    model: ModelRef
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, schema_version: _Optional[int] = ..., device_id: _Optional[str] = ..., seq: _Optional[int] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class SamplerHint(_message.Message):
    __slots__ = ("model", "features", "bins")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    features: _containers.RepeatedScalarFieldContainer[int]
    bins: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., features: _Optional[_Iterable[int]] = ..., bins: _Optional[_Iterable[int]] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("fleet", "device_id", "counter", "issued_at_ms", "expires_at_ms", "sampler_hint")
    FLEET_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_HINT_FIELD_NUMBER: _ClassVar[int]
    fleet: str
    device_id: str
    counter: int
    issued_at_ms: int
    expires_at_ms: int
    sampler_hint: SamplerHint
    def __init__(self, fleet: _Optional[str] = ..., device_id: _Optional[str] = ..., counter: _Optional[int] = ..., issued_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., sampler_hint: _Optional[_Union[SamplerHint, _Mapping]] = ...) -> None: ...

class SignedCommand(_message.Message):
    __slots__ = ("schema_version", "command", "key_id", "signature")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    command: bytes
    key_id: str
    signature: bytes
    def __init__(self, schema_version: _Optional[int] = ..., command: _Optional[bytes] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...
