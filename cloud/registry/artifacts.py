"""Content-addressed artifact storage: bytes in, sha256 out; the digest is the only name.

`ArtifactStore` is the interface; `LocalArtifactStore` keeps files on disk (`<dir>/ab/abcdef...`, written
to a temp file, fsynced and renamed, so a crash never leaves a half-written artifact under its name);
`MemoryArtifactStore` is for tests. Shared storage (S3 and friends) would be one more adapter.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Protocol

from cloud.errors import ArtifactCorruptError, ArtifactNotFoundError, InvalidRequestError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checked_digest(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise InvalidRequestError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def _checked_range(offset: int, size: int) -> None:
    if offset < 0 or size < 0:
        raise InvalidRequestError(f"invalid byte range: offset {offset}, size {size}")


class ArtifactStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store data (idempotent) and return its sha256 hex digest."""

    def get(self, sha256: str) -> bytes:
        """The whole artifact; ArtifactNotFoundError if absent."""

    def read_chunk(self, sha256: str, offset: int, size: int) -> bytes:
        """Up to size bytes from offset (fewer at the end, empty past it); ArtifactNotFoundError if absent."""

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int: ...


class LocalArtifactStore:
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        sha256 = _checked_digest(sha256)
        return self.directory / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        target = self.path_of(digest)
        if target.exists() and target.stat().st_size == len(data):
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)  # atomic: readers see the old state or the whole file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            data = self.path_of(sha256).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact {sha256}") from None
        if sha256_hex(data) != sha256:
            raise ArtifactCorruptError(f"artifact {sha256} on disk no longer matches its digest")
        return data

    def read_chunk(self, sha256: str, offset: int, size: int) -> bytes:
        _checked_range(offset, size)
        try:
            with self.path_of(sha256).open("rb") as fh:
                fh.seek(offset)
                return fh.read(size)
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact {sha256}") from None

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path_of(sha256).stat().st_size
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact {sha256}") from None


class MemoryArtifactStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        with self._lock:
            self._blobs[digest] = bytes(data)
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            return self._blobs[_checked_digest(sha256)]
        except KeyError:
            raise ArtifactNotFoundError(f"no artifact {sha256}") from None

    def read_chunk(self, sha256: str, offset: int, size: int) -> bytes:
        _checked_range(offset, size)
        return self.get(sha256)[offset : offset + size]

    def exists(self, sha256: str) -> bool:
        return _checked_digest(sha256) in self._blobs

    def size(self, sha256: str) -> int:
        return len(self.get(sha256))
