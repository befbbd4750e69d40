"""Signed fake releases for the agent's tests and benchmarks, with keys made in memory (no cloud code).

Keys come from `protocols.signing` (the pure half the cloud signs through too); only root.pub is written,
because devices read their pinned root key from a file. The fake model is real code behind the
runtime's own interface (`FunctionModel`): the artifact bytes are a JSON spec, and every label it
predicts carries the release tag, so a test can tell which model answered.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import RuntimeLoadError
from edge_agent.serving.runtime import FunctionModel, Prediction
from protocols import SCHEMA_VERSION
from protocols.chunking import ChunkLayout
from protocols.signing import Signer, delegate, raw_public
from protocols.v1 import messages_pb2 as pb

N_FEATURES = 3
EDGES = [0.0, 0.25, 0.5, 0.75, 1.0]
DELEGATION_DAYS = 365.0


@dataclass(frozen=True)
class Keys:
    signer: Signer
    root_public: bytes
    root_path: Path  # root.pub, the raw public key a device pins


def make_keys(directory: Path, *, valid_days: float = DELEGATION_DAYS) -> Keys:
    """A root key and a targets key it delegates to, in memory; writes directory/root.pub."""
    root, targets = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    delegation = delegate(root, raw_public(targets), now_ms=int(time.time() * 1000), valid_days=valid_days)
    directory.mkdir(parents=True, exist_ok=True)
    root_path = directory / "root.pub"
    root_path.write_bytes(raw_public(root))
    return Keys(Signer(targets, delegation), raw_public(root), root_path)


def model_bytes(tag: str, *, threshold: float = 0.5, broken: bool = False, delay_s: float = 0.0, pad: int = 0) -> bytes:
    spec = {"tag": tag, "threshold": threshold, "broken": broken, "delay_s": delay_s, "pad": "x" * pad}
    return json.dumps(spec).encode()


def labels_of(tag: str) -> list[str]:
    return [f"{tag}:neg", f"{tag}:pos"]


def fake_load_model(artifact: pb.Artifact, data: bytes, io: pb.IoSchema) -> FunctionModel:
    try:
        spec = json.loads(data)
    except ValueError as exc:
        raise RuntimeLoadError(f"not a fake model: {exc}") from None
    if spec["broken"]:
        raise RuntimeLoadError("this artifact cannot be loaded")
    tag, threshold, delay_s = spec["tag"], spec["threshold"], spec["delay_s"]
    neg, pos = labels_of(tag)

    def predict(x: np.ndarray) -> Prediction:
        if delay_s:
            time.sleep(delay_s)
        return Prediction([pos if row[0] > threshold else neg for row in x], None, None)

    return FunctionModel(io.n_features, predict, runtime=artifact.runtime)


@dataclass
class Release:
    signed: pb.SignedManifest
    manifest: pb.Manifest
    artifacts: dict[str, bytes]

    @property
    def sha256(self) -> str:
        return self.manifest.artifacts[0].sha256

    @property
    def tag(self) -> str:
        return self.manifest.version

    @classmethod
    def of(cls, signed: pb.SignedManifest, artifacts: list[bytes]) -> Release:
        """A release of a manifest signed elsewhere (e.g. a real ONNX model's) and the bytes it names."""
        blobs = {hashlib.sha256(blob).hexdigest(): blob for blob in artifacts}
        return cls(signed, pb.Manifest.FromString(signed.manifest), blobs)


def make_release(
    signer: Signer,
    tag: str,
    sequence: int,
    *,
    model_id: str = "demo",
    data: bytes | None = None,
    runtime: str = "onnxruntime",
    expires_at_ms: int = 0,
    wrong_self_test: bool = False,
    size_bytes: int | None = None,
    extra: list[tuple[str, bytes]] | None = None,
) -> Release:
    """A signed manifest for the fake model `tag`; `extra` adds (runtime, bytes) artifacts after it."""
    data = model_bytes(tag) if data is None else data
    artifacts = {}
    manifest = pb.Manifest(
        model_id=model_id,
        version=tag,
        sequence=sequence,
        created_at_ms=int(time.time() * 1000),
        expires_at_ms=expires_at_ms,
        io=pb.IoSchema(
            inputs=[pb.TensorSpec(name="x", dtype="float32", shape=[-1, N_FEATURES])],
            task=pb.TASK_CLASSIFICATION,
            class_labels=labels_of(tag),
            n_features=N_FEATURES,
        ),
    )
    for i, (rt, blob) in enumerate([(runtime, data), *(extra or [])]):
        sha = hashlib.sha256(blob).hexdigest()
        artifacts[sha] = blob
        manifest.artifacts.add(
            name=f"model-{i}.bin",
            sha256=sha,
            size_bytes=len(blob) if size_bytes is None or i else size_bytes,
            runtime=rt,
            predicted_output="label",
        )
    neg, pos = labels_of(tag)
    expected = [neg, pos] if wrong_self_test else [pos, neg]
    manifest.self_test.vectors.add(input=[0.9, 0.1, 0.1], expected_label=expected[0])
    manifest.self_test.vectors.add(input=[0.1, 0.9, 0.9], expected_label=expected[1])
    manifest.self_test.min_label_agreement = 1.0
    for index in range(N_FEATURES):
        manifest.reference.features.add(index=index, name=f"f{index}", bin_edges=EDGES, counts=[1, 1, 1, 1])
    manifest.reference.predictions.labels.extend(labels_of(tag))
    manifest.reference.predictions.counts.extend([2, 2])
    return Release(signer.sign(manifest), manifest, artifacts)


def location_of(data: bytes, chunk_size: int) -> pb.ArtifactLocation:
    return ChunkLayout.for_bytes(data, chunk_size).location()


def desired_state(
    device_id: str,
    signed: pb.SignedManifest | Release,
    generation: int,
    deployment_id: str = "dep-1",
    chunk_size: int = 16,
    artifacts: list[bytes] | None = None,
) -> pb.DesiredState:
    """The DesiredState deploying a release (or a signed manifest with the artifact bytes it names)."""
    if isinstance(signed, Release):
        artifacts, signed = list(signed.artifacts.values()), signed.signed
    return pb.DesiredState(
        schema_version=SCHEMA_VERSION,
        device_id=device_id,
        deployment_id=deployment_id,
        generation=generation,
        manifest=signed,
        artifacts=[location_of(data, chunk_size) for data in artifacts or []],
        issued_at_ms=int(time.time() * 1000),
    )


def chunk_of(data: bytes, index: int, chunk_size: int = 16) -> pb.ArtifactChunk:
    return ChunkLayout.for_bytes(data, chunk_size).chunk(data, index)
