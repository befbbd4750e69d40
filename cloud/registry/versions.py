"""Model versions (a signed manifest plus its artifacts, sequences allocated per model id) and lineage.

`register_model_version` allocates the next sequence for the model id, writes it into the manifest, signs
it with an expiry (`manifest_valid_days` ahead; the refresher re-signs it with `resign_manifest` before it
lapses) and stores everything, so sequences stay monotonic even with several writers. A sequence is
informational for devices (they order desired states by the assignment counter). The caller commits
(except where a savepoint is needed to retry a sequence allocation).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import DecodeError
from sqlalchemy import func, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.db import fetch_or_raise
from cloud.db.tables import ArtifactRecord, Dataset, ModelVersion, PipelineRun, RunInput
from cloud.errors import ArtifactMismatchError, ConflictError, InvalidRequestError
from cloud.registry.artifacts import ArtifactStore
from cloud.registry.runs import get_run
from cloud.types import ClockMs, now_ms
from protocols.signing import Signer
from protocols.trust import VerificationError, verify_artifact
from protocols.v1 import messages_pb2 as pb

_SEQUENCE_ATTEMPTS = 5
_MS_PER_DAY = 86_400_000
DEFAULT_MANIFEST_VALID_DAYS = 90.0  # see CloudSettings.manifest_valid_days
_FORMATS = {pb.ARTIFACT_FORMAT_ONNX: "onnx", pb.ARTIFACT_FORMAT_TFLITE: "tflite"}


def lock_model_id(session: Session, model_id: str) -> None:
    """Serialise sequence allocation for model_id until the transaction ends. PostgreSQL: an advisory
    transaction lock; SQLite: nothing to do, every write transaction there already holds the database lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"ef-seq:{model_id}"})


def next_sequence(session: Session, model_id: str) -> int:
    current = session.exec(select(func.max(ModelVersion.sequence)).where(ModelVersion.model_id == model_id)).one()
    return int(current or 0) + 1


def _check_artifacts(manifest: pb.Manifest, artifacts: Mapping[str, bytes], *, fill_in: bool) -> None:
    names = [a.name for a in manifest.artifacts]
    if not names:
        raise InvalidRequestError(f"manifest of {manifest.model_id} lists no artifacts")
    if missing := set(names) - set(artifacts):
        raise InvalidRequestError(f"no bytes given for artifact(s) {sorted(missing)}")
    if extra := set(artifacts) - set(names):
        raise InvalidRequestError(f"artifact(s) {sorted(extra)} are not in the manifest")
    for entry in manifest.artifacts:
        data = artifacts[entry.name]
        if fill_in and not entry.sha256:
            entry.sha256 = hashlib.sha256(data).hexdigest()
            entry.size_bytes = len(data)
        try:
            verify_artifact(entry, data)
        except VerificationError as exc:
            raise ArtifactMismatchError(str(exc)) from None


def _store(
    session: Session,
    manifest: pb.Manifest,
    signed: pb.SignedManifest,
    artifacts: Mapping[str, bytes],
    store: ArtifactStore,
    run_id: str | None,
) -> ModelVersion:
    lineage = dict(manifest.lineage)
    if run_id:
        lineage.setdefault("run_id", run_id)
    record = ModelVersion(
        model_id=manifest.model_id,
        version=manifest.version or str(manifest.sequence),
        sequence=manifest.sequence,
        run_id=run_id,
        metrics=dict(manifest.metrics),
        lineage=lineage,
        signed_manifest=signed.SerializeToString(),
        signing_key_id=signed.key_id,
    )
    with session.begin_nested():  # a taken (model_id, sequence|version) rolls back only this savepoint
        session.add(record)
        session.flush()
        assert record.id is not None  # assigned by the flush
        for entry in manifest.artifacts:
            digest = store.put(artifacts[entry.name])
            session.add(
                ArtifactRecord(
                    sha256=digest,
                    model_version_id=record.id,
                    name=entry.name,
                    format=_FORMATS.get(entry.format, "unknown"),
                    runtime=entry.runtime,
                    quantization=entry.quantization or "none",
                    size_bytes=entry.size_bytes,
                    storage_path=str(getattr(store, "path_of", lambda d: "")(digest)),
                )
            )
        session.flush()
    return record


def register_model_version(
    session: Session,
    manifest: pb.Manifest,
    artifacts: Mapping[str, bytes],
    *,
    store: ArtifactStore,
    signer: Signer,
    run_id: str | None = None,
    clock: ClockMs = now_ms,
    valid_days: float = DEFAULT_MANIFEST_VALID_DAYS,
) -> ModelVersion:
    """Allocate the next sequence for manifest.model_id, sign the manifest with it and store it all.

    artifacts maps each manifest artifact's name to its bytes; entries without sha256/size are filled in,
    entries with them must match. version defaults to str(sequence). The caller commits.
    """
    if not manifest.model_id:
        raise InvalidRequestError("manifest has no model_id")
    if run_id is not None:
        get_run(session, run_id)
    manifest = _copy(manifest)
    _check_artifacts(manifest, artifacts, fill_in=True)
    if not manifest.created_at_ms:
        manifest.created_at_ms = clock()
    manifest.expires_at_ms = clock() + int(valid_days * _MS_PER_DAY)
    auto_version = not manifest.version
    lock_model_id(session, manifest.model_id)
    for _ in range(_SEQUENCE_ATTEMPTS):
        manifest.sequence = next_sequence(session, manifest.model_id)
        if auto_version:
            manifest.version = str(manifest.sequence)
        try:
            return _store(session, manifest, signer.sign(manifest), artifacts, store, run_id)
        except IntegrityError:
            if not auto_version and _version_taken(session, manifest.model_id, manifest.version):
                raise ConflictError(f"{manifest.model_id} version {manifest.version} already exists") from None
            continue  # another writer took this sequence first: take the next one
    raise ConflictError(f"could not allocate a sequence for {manifest.model_id} (too many concurrent writers)")


def register_signed_model_version(
    session: Session,
    signed: pb.SignedManifest,
    artifacts: Mapping[str, bytes],
    *,
    store: ArtifactStore,
    run_id: str | None = None,
) -> ModelVersion:
    """Store a manifest signed elsewhere; its sequence must be above every registered one of its model."""
    try:
        manifest = pb.Manifest.FromString(signed.manifest)
    except DecodeError as exc:
        raise InvalidRequestError(f"signed manifest does not parse: {exc}") from None
    if not manifest.model_id:
        raise InvalidRequestError("manifest has no model_id")
    _check_artifacts(manifest, artifacts, fill_in=False)
    lock_model_id(session, manifest.model_id)
    floor = next_sequence(session, manifest.model_id)
    if manifest.sequence < floor:
        raise ConflictError(f"{manifest.model_id} sequence {manifest.sequence} is not above the registered {floor - 1}")
    try:
        return _store(session, manifest, signed, artifacts, store, run_id)
    except IntegrityError:
        raise ConflictError(f"{manifest.model_id} sequence {manifest.sequence} or its version is taken") from None


def resign_manifest(
    session: Session, model_version: ModelVersion, signer: Signer, *, expires_at_ms: int
) -> pb.SignedManifest:
    """Sign model_version's manifest again, unchanged but for its expiry, with signer (the current targets
    key) and store it in place of the old one. The caller commits and re-assigns the devices running it,
    since the manifest's digest (what assignments name) changed."""
    manifest = manifest_of(model_version)
    manifest.expires_at_ms = expires_at_ms
    signed = signer.sign(manifest)
    model_version.signed_manifest = signed.SerializeToString()
    model_version.signing_key_id = signed.key_id
    session.add(model_version)
    return signed


def _version_taken(session: Session, model_id: str, version: str) -> bool:
    query = select(ModelVersion.id).where(ModelVersion.model_id == model_id, ModelVersion.version == version)
    return session.exec(query).first() is not None


def _copy(manifest: pb.Manifest) -> pb.Manifest:
    clone = pb.Manifest()
    clone.CopyFrom(manifest)
    return clone


def get_model_version(session: Session, model_id: str, version: str | None = None) -> ModelVersion:
    """A version of model_id by its version string, or the latest (highest sequence) when version is None."""
    query = select(ModelVersion).where(ModelVersion.model_id == model_id)
    if version is None:
        query = query.order_by(col(ModelVersion.sequence).desc())
    else:
        query = query.where(ModelVersion.version == version)
    what = f"{model_id} version {version}" if version is not None else f"model {model_id}"
    return fetch_or_raise(session, query, missing=f"no {what}")


def get_model_version_by_id(session: Session, model_version_id: int) -> ModelVersion:
    return fetch_or_raise(session, ModelVersion, model_version_id, missing=f"no model version #{model_version_id}")


def list_model_versions(session: Session, model_id: str | None = None) -> list[ModelVersion]:
    query = select(ModelVersion).order_by(col(ModelVersion.model_id), col(ModelVersion.sequence).desc())
    if model_id is not None:
        query = query.where(ModelVersion.model_id == model_id)
    return list(session.exec(query))


def list_models(session: Session) -> list[dict[str, Any]]:
    """One entry per model id: its latest version and how many versions exist."""
    models: dict[str, dict[str, Any]] = {}
    for mv in list_model_versions(session):
        entry = models.setdefault(
            mv.model_id,
            {"model_id": mv.model_id, "latest_version": mv.version, "latest_sequence": mv.sequence, "versions": 0},
        )
        entry["versions"] += 1
    return list(models.values())


def artifacts_of(session: Session, model_version_id: int) -> list[ArtifactRecord]:
    query = select(ArtifactRecord).where(ArtifactRecord.model_version_id == model_version_id)
    return list(session.exec(query.order_by(col(ArtifactRecord.name))))


def signed_manifest_of(model_version: ModelVersion) -> pb.SignedManifest:
    return pb.SignedManifest.FromString(model_version.signed_manifest)


def manifest_of(model_version: ModelVersion) -> pb.Manifest:
    return pb.Manifest.FromString(signed_manifest_of(model_version).manifest)


def lineage(session: Session, model_id: str, version: str | None = None) -> dict[str, Any]:
    """Where a model version came from: its run (code version, parameters, timings), dataset and metrics."""
    mv = get_model_version(session, model_id, version)
    run = session.get(PipelineRun, mv.run_id) if mv.run_id else None
    dataset_hash = (run.dataset_hash if run else None) or mv.lineage.get("dataset_hash")
    dataset = session.get(Dataset, dataset_hash) if dataset_hash else None
    return {
        "model_id": mv.model_id,
        "version": mv.version,
        "sequence": mv.sequence,
        "metrics": mv.metrics,
        "lineage": mv.lineage,
        "run": run.model_dump() if run else None,
        "dataset": dataset.model_dump() if dataset else None,
        "parameters": run.parameters if run else {},
        "artifacts": [a.model_dump(exclude={"storage_path"}) for a in artifacts_of(session, mv.id or 0)],
        # every dataset version the run read, by role (a retrain: reference, field, field_train, field_eval)
        "inputs": [
            {"role": i.role, **session.get(Dataset, i.dataset_hash).model_dump()}  # type: ignore[union-attr]
            for i in session.exec(select(RunInput).where(RunInput.run_id == mv.run_id).order_by(col(RunInput.role)))
        ] if run else [],
    }
