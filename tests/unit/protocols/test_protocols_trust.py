"""Artifact bytes (protocols.trust.verify_artifact): each way downloaded bytes can differ from the manifest
is refused with its own error. Manifest, assignment and root checks are in test_protocols_assignment.py
and test_protocols_roots.py."""

from __future__ import annotations

import hashlib

import pytest

from protocols import trust
from protocols.codes import ErrorCode
from protocols.v1 import messages_pb2 as pb


def _artifact(data: bytes) -> pb.Artifact:
    return pb.Artifact(name="m.onnx", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def test_artifact_bytes_are_checked_for_size_then_digest() -> None:
    artifact = _artifact(b"model-bytes")
    trust.verify_artifact(artifact, b"model-bytes")
    with pytest.raises(trust.SizeMismatchError) as refused:
        trust.verify_artifact(artifact, b"model-bytes+")
    assert refused.value.code == ErrorCode.SIZE_MISMATCH
    with pytest.raises(trust.DigestMismatchError) as refused_digest:
        trust.verify_artifact(artifact, b"model-byteZ")
    assert refused_digest.value.code == ErrorCode.DIGEST_MISMATCH
