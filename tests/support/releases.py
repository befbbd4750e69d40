"""Signed fake releases for the agent's tests and benchmarks, with keys made in memory (no cloud code).

Keys come from `protocols.signing` (the pure half the cloud signs through too): a root, a targets key that
signs manifests and a director key that signs per-device assignments, named in root version 1; only
trust.chain is written, because devices read the chain they pin from a file. The fake model is real code behind the
runtime's own interface (`FunctionModel`): the artifact bytes are a JSON spec, and every label it
predicts carries the release tag, so a test can tell which model answered.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import RuntimeLoadError
from edge_agent.serving.runtime import FunctionModel, Prediction
from protocols import SCHEMA_VERSION
from protocols.assignment import manifest_digest
from protocols.chunking import ChunkLayout
from protocols.roots import DIRECTOR_ROLE, ROOT_ROLE, TARGETS_ROLE, RootOfTrust
from protocols.signing import Signer, first_root, next_root, raw_public, role_key, sign_assignment, sign_root
from protocols.trust import key_id
from protocols.v1 import messages_pb2 as pb

N_FEATURES = 3
EDGES = [0.0, 0.25, 0.5, 0.75, 1.0]


FLEET = "test"


class FleetSigner(Signer):
    """Signs manifests like the cloud's targets key, and remembers its fleet so that a release can be
    assigned to devices (`desired_state`) without passing the keys around again."""

    keys: Keys


@dataclass(frozen=True)
class Keys:
    fleet: str
    root: Ed25519PrivateKey
    targets: Ed25519PrivateKey
    director: Ed25519PrivateKey
    chain: pb.TrustChain
    trust_path: Path  # trust.chain, what a device pins

    @property
    def signer(self) -> FleetSigner:
        signer = FleetSigner(self.targets)
        signer.keys = self
        return signer

    def pinned(self) -> RootOfTrust:
        return RootOfTrust.from_chain(self.chain)

    def assign(
        self,
        device_id: str,
        counter: int,
        signed: pb.SignedManifest | None,
        *,
        deployment_id: str = "dep-1",
        expires_at_ms: int | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> pb.SignedAssignment:
        """The director's signed assignment of `signed` (None: no model) to device_id, as `counter`."""
        now = int(time.time() * 1000)
        assignment = pb.Assignment(
            fleet=self.fleet,
            device_id=device_id,
            deployment_id=deployment_id,
            counter=counter,
            manifest_sha256="" if signed is None else manifest_digest(signed),
            issued_at_ms=now,
            expires_at_ms=0 if expires_at_ms is None else expires_at_ms,  # 0: no expiry (tests use fixed clocks)
        )
        return sign_assignment(key or self.director, assignment)


def make_keys(directory: Path, *, fleet: str = FLEET) -> Keys:
    """A fleet's root, targets and director keys in memory; writes directory/trust.chain (root v1)."""
    root, targets, director = (Ed25519PrivateKey.generate() for _ in range(3))
    metadata = first_root(
        fleet,
        [
            role_key(raw_public(root), ROOT_ROLE),
            role_key(raw_public(targets), TARGETS_ROLE),
            role_key(raw_public(director), DIRECTOR_ROLE),
        ],
        now_ms=int(time.time() * 1000),
    )
    chain = pb.TrustChain(schema_version=SCHEMA_VERSION, roots=[sign_root(metadata, root)])
    directory.mkdir(parents=True, exist_ok=True)
    trust_path = directory / "trust.chain"
    trust_path.write_bytes(chain.SerializeToString())
    return Keys(fleet, root, targets, director, chain, trust_path)


def model_bytes(
    tag: str, *, threshold: float = 0.5, broken: bool = False, delay_s: float = 0.0, pad: int = 0,
    fails_on_negative: bool = False,
) -> bytes:  # fmt: skip
    """A fake model's bytes; `fails_on_negative`: predict raises for a batch with a negative last feature
    (a model that loads and passes its self-test, then fails in service)."""
    spec = {"tag": tag, "threshold": threshold, "broken": broken, "delay_s": delay_s, "pad": "x" * pad}
    if fails_on_negative:
        spec["fails_on_negative"] = True
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
    fails_on_negative = bool(spec.get("fails_on_negative"))
    neg, pos = labels_of(tag)

    def predict(x: np.ndarray) -> Prediction:
        if delay_s:
            time.sleep(delay_s)
        if fails_on_negative and (x[:, -1] < 0).any():
            raise RuntimeError(f"model {tag} failed")
        return Prediction([pos if row[0] > threshold else neg for row in x], None, None)

    return FunctionModel(io.n_features, predict, runtime=artifact.runtime)


@dataclass
class Release:
    signed: pb.SignedManifest
    manifest: pb.Manifest
    artifacts: dict[str, bytes]
    keys: Keys | None = None  # the fleet that signed it (assignments are signed with its director key)

    @property
    def sha256(self) -> str:
        return self.manifest.artifacts[0].sha256

    @property
    def tag(self) -> str:
        return self.manifest.version

    @classmethod
    def of(cls, signed: pb.SignedManifest, artifacts: list[bytes], keys: Keys | None = None) -> Release:
        """A release of a manifest signed elsewhere (e.g. a real ONNX model's) and the bytes it names."""
        blobs = {hashlib.sha256(blob).hexdigest(): blob for blob in artifacts}
        return cls(signed, pb.Manifest.FromString(signed.manifest), blobs, keys)


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
    return Release(signer.sign(manifest), manifest, artifacts, getattr(signer, "keys", None))


def location_of(data: bytes, chunk_size: int) -> pb.ArtifactLocation:
    return ChunkLayout.for_bytes(data, chunk_size).location()


def desired_state(
    device_id: str,
    release: Release,
    generation: int,
    deployment_id: str = "dep-1",
    chunk_size: int = 16,
    *,
    keys: Keys | None = None,
    expires_at_ms: int | None = None,
) -> pb.DesiredState:
    """The DesiredState assigning a release to device_id as assignment `generation` (the signed counter),
    signed by the release's fleet (or `keys`), with the fleet's trust chain, as the cloud sends it."""
    keys = keys or release.keys
    assert keys is not None, "a release made with make_keys(...).signer, or keys=..."
    return pb.DesiredState(
        schema_version=SCHEMA_VERSION,
        device_id=device_id,
        deployment_id=deployment_id,
        generation=generation,
        manifest=release.signed,
        artifacts=[location_of(data, chunk_size) for data in release.artifacts.values()],
        issued_at_ms=int(time.time() * 1000),
        assignment=keys.assign(
            device_id, generation, release.signed, deployment_id=deployment_id, expires_at_ms=expires_at_ms
        ),
        trust=keys.chain,
    )


def chunk_of(data: bytes, index: int, chunk_size: int = 16) -> pb.ArtifactChunk:
    return ChunkLayout.for_bytes(data, chunk_size).chunk(data, index)


def rotate_director(keys: Keys, *, revoke: bool = False) -> Keys:
    """The same fleet after `keys rotate --role director` (or, with revoke, `keys revoke` of the director
    key and a new one): a new director key named in the next root version."""
    new = Ed25519PrivateKey.generate()
    current = pb.RootMetadata.FromString(keys.chain.roots[-1].root)
    old_id = {key_id(raw_public(keys.director))}
    metadata = next_root(
        current,
        now_ms=int(time.time() * 1000),
        add=[role_key(raw_public(new), DIRECTOR_ROLE)],
        remove_key_ids=set() if revoke else old_id,
        revoke_key_ids=old_id if revoke else set(),
    )
    chain = pb.TrustChain(schema_version=SCHEMA_VERSION, roots=[*keys.chain.roots, sign_root(metadata, keys.root)])
    return replace(keys, director=new, chain=chain)


def onnx_release(signer: Signer, version: str, sequence: int, *, feature: int = 0, model_id: str = "lr",
                 inverted: bool = False) -> Release:  # fmt: skip
    """A real ONNX release: a LogisticRegression (skl2onnx, test-only imports) of N_FEATURES inputs that
    learned `x[feature] > 0.5` (`inverted`: `<=`), with labels "0"/"1" (so that two versions can agree on a
    label)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(sequence)
    x = rng.uniform(size=(400, N_FEATURES)).astype(np.float32)
    y = ((x[:, feature] > 0.5) != inverted).astype(np.int64)
    model = LogisticRegression(C=100.0).fit(x, y)
    data = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17).SerializeToString()
    manifest = pb.Manifest(
        model_id=model_id,
        version=version,
        sequence=sequence,
        created_at_ms=int(time.time() * 1000),
        io=pb.IoSchema(
            inputs=[pb.TensorSpec(name="X", dtype="float32", shape=[-1, N_FEATURES])],
            task=pb.TASK_CLASSIFICATION,
            class_labels=["0", "1"],
            n_features=N_FEATURES,
        ),
    )
    manifest.artifacts.add(
        name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data), runtime="onnxruntime", predicted_output="label", scores_output="probabilities",
    )  # fmt: skip
    for row, label in zip(x[:10], model.predict(x[:10]), strict=True):
        manifest.self_test.vectors.add(input=row.tolist(), expected_label=str(label))
    manifest.self_test.min_label_agreement = 1.0
    for index in range(N_FEATURES):
        manifest.reference.features.add(index=index, name=f"f{index}", bin_edges=EDGES, counts=[1, 1, 1, 1])
    return Release(signer.sign(manifest), manifest, {manifest.artifacts[0].sha256: data}, getattr(signer, "keys", None))
