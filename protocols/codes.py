"""The error codes that travel on the wire, in one enumeration.

A device puts them in `ReportedState.last_error.code` and `LifecycleEvent.error.code`; the chunk server
starts `ArtifactChunk.error` with one ("not_entitled: ..."). Each exception class that can end up on
the wire carries its code as `code = ErrorCode.X` (a StrEnum, so it compares and serialises as the plain
string). Codes are part of the contract: add new ones freely, never rename or reuse one (EVOLUTION.md).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # verification (protocols.trust): the device refused signed metadata or artifact bytes
    VERIFICATION_FAILED = "verification_failed"
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    ROLLBACK = "rollback"  # retired: agents no longer send it (the assignment counter orders installs)
    DIGEST_MISMATCH = "digest_mismatch"
    SIZE_MISMATCH = "size_mismatch"
    REVOKED = "revoked"  # a key a root version has revoked
    WRONG_FLEET = "wrong_fleet"  # signed metadata of another fleet
    WRONG_DEVICE = "wrong_device"  # an assignment addressed to another device
    REPLAY = "replay"  # an assignment counter not above the last one accepted
    NOT_ASSIGNED = "not_assigned"  # a manifest the assignment does not name
    TOO_LARGE = "too_large"  # a signed command over its size bounds (protocols.commands), refused unread

    # the agent (edge_agent.errors)
    AGENT_ERROR = "agent_error"
    BAD_CONFIG = "bad_config"
    STORE_FAILED = "store_failed"
    MALFORMED_PAYLOAD = "malformed_payload"
    NO_MODEL = "no_model"
    BAD_INPUT = "bad_input"
    NO_COMPATIBLE_ARTIFACT = "no_compatible_artifact"
    DOWNLOAD_FAILED = "download_failed"
    LOAD_FAILED = "load_failed"
    SELF_TEST_FAILED = "self_test_failed"
    PROBATION_FAILED = "probation_failed"  # the agent rolled back by itself: errors or a crash loop on probation
    RUNTIME_CRASHED = "runtime_crashed"  # loading the model killed the process (or its child): runtime shunned

    # the cloud's chunk server (prefix of ArtifactChunk.error)
    MALFORMED_REQUEST = "malformed_request"
    DEVICE_MISMATCH = "device_mismatch"
    UNKNOWN_ARTIFACT = "unknown_artifact"
    NOT_ENTITLED = "not_entitled"
    TOO_MANY_INDEXES = "too_many_indexes"
    BAD_INDEX = "bad_index"
    ARTIFACT_UNAVAILABLE = "artifact_unavailable"


# codes that mean "signed metadata or artifact bytes were refused" (reported as VERIFICATION_FAILED events)
VERIFICATION_CODES = frozenset(
    {
        ErrorCode.VERIFICATION_FAILED,
        ErrorCode.MALFORMED,
        ErrorCode.UNKNOWN_KEY,
        ErrorCode.BAD_SIGNATURE,
        ErrorCode.EXPIRED,
        ErrorCode.ROLLBACK,
        ErrorCode.DIGEST_MISMATCH,
        ErrorCode.SIZE_MISMATCH,
        ErrorCode.REVOKED,
        ErrorCode.WRONG_FLEET,
        ErrorCode.WRONG_DEVICE,
        ErrorCode.REPLAY,
        ErrorCode.NOT_ASSIGNED,
        ErrorCode.TOO_LARGE,
    }
)


def chunk_error(code: ErrorCode, why: str) -> str:
    """The text of ArtifactChunk.error: `<code>: <why>`."""
    return f"{code.value}: {why}"


def chunk_error_code(error: str) -> str:
    """The code at the head of an ArtifactChunk.error text ('' when there is none)."""
    return error.partition(":")[0].strip()
