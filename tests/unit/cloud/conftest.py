"""Fixtures for the cloud's unit tests: engines (SQLite, and PostgreSQL when configured), keys, a model
version factory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cloud import registry
from cloud.db import create_tables, make_engine
from cloud.db.tables import ModelVersion
from cloud.registry.artifacts import MemoryArtifactStore
from cloud.registry.keys import KeyStore
from cloud.rollout.director import Director
from protocols.signing import Signer
from protocols.topics import DEFAULT_FLEET
from protocols.v1 import messages_pb2 as pb


def _engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database: SQLite, and again PostgreSQL (own schema) when EDGEFLEET_TEST_DATABASE_URL is set."""
    url = f"sqlite:///{tmp_path / 'cloud.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    yield from _engine(url)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """An empty SQLite database (for tests whose logic does not depend on the dialect)."""
    yield from _engine(f"sqlite:///{tmp_path / 'cloud.db'}")


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key store of the default fleet (the one `protocols.topics` functions default to), made once."""
    directory = tmp_path_factory.mktemp("keys")
    KeyStore(directory).init(DEFAULT_FLEET)
    return directory


@pytest.fixture
def keys(keys_dir: Path) -> KeyStore:
    return KeyStore(keys_dir)


@pytest.fixture
def signer(keys: KeyStore) -> Signer:
    return keys.manifest_signer()


@pytest.fixture
def director(keys: KeyStore) -> Director:
    return Director.from_keys(keys)


@pytest.fixture
def store() -> MemoryArtifactStore:
    return MemoryArtifactStore()


def build_manifest(model_id: str, artifacts: dict[str, bytes], *, fill_digests: bool = True) -> pb.Manifest:
    """A small classifier manifest with a two-feature reference profile (4 bins each)."""
    manifest = pb.Manifest(model_id=model_id)
    for name, data in artifacts.items():
        entry = manifest.artifacts.add(
            name=name, format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime", quantization="none"
        )
        if fill_digests:
            entry.sha256, entry.size_bytes = hashlib.sha256(data).hexdigest(), len(data)
    manifest.metrics["accuracy"] = 0.95
    manifest.lineage["dataset_hash"] = "d" * 64
    for index in range(2):
        manifest.reference.features.add(index=index, name=f"f{index}", bin_edges=[0, 1, 2, 3, 4], counts=[25] * 4)
    manifest.reference.predictions.labels.extend(["a", "b"])
    manifest.reference.predictions.counts.extend([50, 50])
    return manifest


RegisterFn = Callable[..., ModelVersion]


@pytest.fixture
def register(signer: Signer, store: MemoryArtifactStore) -> RegisterFn:
    """register(session, model_id="m", artifacts={"model.onnx": bytes}) -> ModelVersion (committed)."""

    def _register(session: Session, model_id: str = "m", artifacts: dict[str, bytes] | None = None) -> ModelVersion:
        artifacts = artifacts or {"model.onnx": b"onnx-bytes-" + model_id.encode()}
        mv = registry.register_model_version(
            session, build_manifest(model_id, artifacts), artifacts, store=store, signer=signer
        )
        session.commit()
        session.refresh(mv)
        return mv

    return _register


@pytest.fixture
def make_manifest() -> Callable[..., pb.Manifest]:
    """make_manifest(model_id, {name: bytes}, fill_digests=True) -> an unsigned Manifest."""
    return build_manifest
