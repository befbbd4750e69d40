"""One contract test run over every ArtifactStore adapter."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cloud.errors import ArtifactCorruptError, ArtifactNotFoundError, InvalidRequestError
from cloud.registry.artifacts import ArtifactStore, LocalArtifactStore, MemoryArtifactStore


@pytest.fixture(params=["local", "memory"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts") if request.param == "local" else MemoryArtifactStore()


def test_put_returns_the_sha256_and_get_returns_the_bytes(any_store: ArtifactStore) -> None:
    data = bytes(range(256)) * 300
    digest = any_store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert any_store.put(data) == digest  # idempotent
    assert any_store.exists(digest)
    assert any_store.get(digest) == data
    assert any_store.size(digest) == len(data)


def test_read_chunk_covers_the_artifact_exactly(any_store: ArtifactStore) -> None:
    data = bytes(range(256)) * 10  # 2560 bytes: three 1000-byte chunks, the last one short
    digest = any_store.put(data)
    chunks = [any_store.read_chunk(digest, offset, 1000) for offset in (0, 1000, 2000)]
    assert [len(c) for c in chunks] == [1000, 1000, 560]
    assert b"".join(chunks) == data
    assert any_store.read_chunk(digest, 5000, 1000) == b""


def test_unknown_and_invalid_digests_are_clear_errors(any_store: ArtifactStore) -> None:
    missing = "0" * 64
    assert not any_store.exists(missing)
    with pytest.raises(ArtifactNotFoundError):
        any_store.get(missing)
    with pytest.raises(ArtifactNotFoundError):
        any_store.read_chunk(missing, 0, 10)
    with pytest.raises(InvalidRequestError):
        any_store.get("../../etc/passwd")
    digest = any_store.put(b"x")
    with pytest.raises(InvalidRequestError):
        any_store.read_chunk(digest, -1, 10)


def test_local_store_writes_atomically_and_detects_corruption(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put(b"payload")
    path = store.path_of(digest)
    assert path.parent.name == digest[:2]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".incoming-")]  # no temp file left
    path.write_bytes(b"tampered")
    with pytest.raises(ArtifactCorruptError):
        store.get(digest)
    assert store.put(b"payload") == digest  # rewritten: size differed
    assert store.get(digest) == b"payload"
