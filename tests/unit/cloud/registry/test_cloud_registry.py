from __future__ import annotations

import hashlib
import time

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cloud import registry
from cloud.db import RunStatus
from cloud.db.tables import DatasetCreate, PipelineRunCreate
from cloud.errors import ArtifactMismatchError, ConflictError, InvalidRequestError, NotFoundError
from cloud.registry.artifacts import MemoryArtifactStore
from cloud.registry.keys import KeyStore
from protocols.roots import TARGETS_ROLE
from protocols.signing import Signer
from protocols.v1 import messages_pb2 as pb


def test_register_dataset_is_idempotent_by_content_hash(any_engine: Engine) -> None:
    digest = registry.content_hash(b"X", b"y")
    with Session(any_engine) as session:
        first = registry.register_dataset(
            session, DatasetCreate(content_hash=digest, name="a", n_rows=10, n_features=3)
        )
        again = registry.register_dataset(
            session, DatasetCreate(content_hash=digest, name="b", n_rows=99, n_features=9)
        )
        session.commit()
        assert (again.name, again.n_rows) == ("a", 10)
        assert first.content_hash == digest
        assert len(registry.list_datasets(session)) == 1
    assert registry.content_hash(b"ab", b"c") != registry.content_hash(b"a", b"bc")


def test_pipeline_run_start_resume_and_finish(any_engine: Engine) -> None:
    with Session(any_engine) as session:
        registry.register_dataset(session, DatasetCreate(content_hash="h1", name="d", n_rows=1, n_features=1))
        run = registry.start_run(
            session, PipelineRunCreate(pipeline="train", code_version="abc", parameters={"C": 1.0}, dataset_hash="h1")
        )
        resumed = registry.start_run(session, PipelineRunCreate(pipeline="other"), run_id=run.id)
        assert resumed.pipeline == "train"
        registry.record_step(session, run.id, "fit", 1.5)
        registry.finish_run(session, run.id, metrics={"accuracy": 0.9}, step_timings_s={"compile": 0.5})
        session.commit()
        stored = registry.get_run(session, run.id)
        assert stored.status == RunStatus.SUCCEEDED
        assert stored.metrics == {"accuracy": 0.9}
        assert stored.step_timings_s == {"fit": 1.5, "compile": 0.5}
        assert stored.finished_at_ms is not None
        with pytest.raises(NotFoundError):
            registry.start_run(session, PipelineRunCreate(pipeline="x", dataset_hash="missing"))
        with pytest.raises(InvalidRequestError):
            registry.finish_run(session, run.id, status="exploded")


def test_model_versions_get_monotonic_sequences_and_verifiable_signatures(
    any_engine: Engine, signer: Signer, store: MemoryArtifactStore, make_manifest, keys: KeyStore
) -> None:
    data = {"model.onnx": b"weights"}
    with Session(any_engine) as session:
        versions = [
            registry.register_model_version(session, make_manifest("digits", data), data, store=store, signer=signer)
            for _ in range(3)
        ]
        other = registry.register_model_version(session, make_manifest("iris", data), data, store=store, signer=signer)
        session.commit()
        assert [v.sequence for v in versions] == [1, 2, 3]
        assert [v.version for v in versions] == ["1", "2", "3"]
        assert other.sequence == 1
        latest = registry.get_model_version(session, "digits")
        assert latest.sequence == 3
        signed, now = registry.signed_manifest_of(latest), int(time.time() * 1000)
        keys.root_of_trust().verify(TARGETS_ROLE, signed.key_id, signed.signature, signed.manifest, now)
        manifest = registry.manifest_of(latest)
        assert manifest.sequence == 3 and manifest.model_id == "digits"
        # registered with an expiry: 90 days by default (the refresher re-signs before it lapses)
        assert abs(manifest.expires_at_ms - (now + 90 * 86_400_000)) < 60_000
        assert store.get(manifest.artifacts[0].sha256) == b"weights"
        [artifact] = registry.artifacts_of(session, latest.id)
        assert (artifact.format, artifact.runtime, artifact.size_bytes) == ("onnx", "onnxruntime", 7)
        assert [m["model_id"] for m in registry.list_models(session)] == ["digits", "iris"]
        assert registry.list_models(session)[0]["versions"] == 3


def test_missing_digests_are_filled_in_and_wrong_ones_refused(
    any_engine: Engine, signer: Signer, store: MemoryArtifactStore, make_manifest
) -> None:
    data = {"model.onnx": b"abc"}
    with Session(any_engine) as session:
        mv = registry.register_model_version(
            session, make_manifest("m", data, fill_digests=False), data, store=store, signer=signer
        )
        assert registry.manifest_of(mv).artifacts[0].sha256 == hashlib.sha256(b"abc").hexdigest()
        tampered = make_manifest("m", data)
        tampered.artifacts[0].sha256 = "0" * 64
        with pytest.raises(ArtifactMismatchError):
            registry.register_model_version(session, tampered, data, store=store, signer=signer)
        with pytest.raises(InvalidRequestError, match="no bytes"):
            registry.register_model_version(session, make_manifest("m", data), {}, store=store, signer=signer)
        with pytest.raises(InvalidRequestError, match="not in the manifest"):
            registry.register_model_version(
                session, make_manifest("m", data), {**data, "x.bin": b"1"}, store=store, signer=signer
            )


def test_explicit_version_conflict_keeps_the_session_usable(
    any_engine: Engine, signer: Signer, store: MemoryArtifactStore, make_manifest
) -> None:
    data = {"model.onnx": b"abc"}
    with Session(any_engine) as session:
        manifest = make_manifest("m", data)
        manifest.version = "2024.1"
        registry.register_model_version(session, manifest, data, store=store, signer=signer)
        with pytest.raises(ConflictError, match="already exists"):
            registry.register_model_version(session, manifest, data, store=store, signer=signer)
        registry.register_model_version(session, make_manifest("m", data), data, store=store, signer=signer)
        session.commit()
        assert [v.version for v in registry.list_model_versions(session, "m")] == ["2", "2024.1"]


def test_pre_signed_manifest_must_carry_a_higher_sequence(
    any_engine: Engine, signer: Signer, store: MemoryArtifactStore, make_manifest
) -> None:
    data = {"model.onnx": b"abc"}
    with Session(any_engine) as session:
        registry.register_model_version(session, make_manifest("m", data), data, store=store, signer=signer)
        stale = make_manifest("m", data)
        stale.sequence, stale.version = 1, "old"
        with pytest.raises(ConflictError, match="not above"):
            registry.register_signed_model_version(session, signer.sign(stale), data, store=store)
        fresh = make_manifest("m", data)
        fresh.sequence, fresh.version = 7, "seven"
        mv = registry.register_signed_model_version(session, signer.sign(fresh), data, store=store)
        assert (mv.sequence, mv.version) == (7, "seven")
        with pytest.raises(InvalidRequestError):
            registry.register_signed_model_version(session, pb.SignedManifest(manifest=b"\xff\xff"), data, store=store)


def test_lineage_links_run_dataset_parameters_and_metrics(
    any_engine: Engine, signer: Signer, store: MemoryArtifactStore, make_manifest
) -> None:
    data = {"model.onnx": b"abc"}
    with Session(any_engine) as session:
        registry.register_dataset(session, DatasetCreate(content_hash="h", name="digits", n_rows=5, n_features=2))
        run = registry.start_run(
            session,
            PipelineRunCreate(pipeline="train", code_version="git:1234", parameters={"C": 0.5}, dataset_hash="h"),
        )
        registry.register_model_version(
            session, make_manifest("m", data), data, store=store, signer=signer, run_id=run.id
        )
        session.commit()
        info = registry.lineage(session, "m", "1")
        assert info["run"]["code_version"] == "git:1234"
        assert info["dataset"]["name"] == "digits"
        assert info["parameters"] == {"C": 0.5}
        assert info["metrics"] == {"accuracy": 0.95}
        assert info["lineage"]["run_id"] == run.id
        assert info["artifacts"][0]["name"] == "model.onnx"
        with pytest.raises(NotFoundError):
            registry.lineage(session, "m", "99")


def test_concurrent_writers_never_share_a_sequence(
    any_engine: Engine, signer: Signer, store: MemoryArtifactStore, make_manifest
) -> None:
    import threading

    data = {"model.onnx": b"abc"}
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(3):
                with Session(any_engine) as session:
                    registry.register_model_version(session, make_manifest("m", data), data, store=store, signer=signer)
                    session.commit()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    with Session(any_engine) as session:
        assert sorted(v.sequence for v in registry.list_model_versions(session, "m")) == list(range(1, 13))
