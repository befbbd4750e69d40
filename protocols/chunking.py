"""Chunk layout: how an artifact's bytes are cut into numbered chunks for download over MQTT.

The one place that does this arithmetic. The cloud announces a layout in each desired state
(`ArtifactLocation`: sha256, size, chunk size, chunk count), its chunk server cuts chunks by it, and the
agent checks every chunk it receives against it. Chunk i covers bytes [i * chunk_size, i * chunk_size +
length(i)); all chunks but the last are full; an empty artifact has no chunks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from protocols import SCHEMA_VERSION
from protocols.v1 import messages_pb2 as pb


class ChunkLayoutError(ValueError):
    """A layout whose numbers contradict each other, or a chunk that does not fit its layout."""


def chunk_count(size_bytes: int, chunk_size: int) -> int:
    """How many chunks of chunk_size hold size_bytes (the last may be short)."""
    if chunk_size <= 0:
        raise ChunkLayoutError(f"chunk size must be positive, got {chunk_size}")
    if size_bytes < 0:
        raise ChunkLayoutError(f"size must not be negative, got {size_bytes}")
    return -(-size_bytes // chunk_size)


@dataclass(frozen=True)
class ChunkLayout:
    sha256: str
    size_bytes: int
    chunk_size: int
    total_chunks: int

    @classmethod
    def of(cls, sha256: str, size_bytes: int, chunk_size: int) -> ChunkLayout:
        """The layout of size_bytes cut into chunks of chunk_size."""
        return cls(sha256, size_bytes, chunk_size, chunk_count(size_bytes, chunk_size))

    @classmethod
    def for_bytes(cls, data: bytes, chunk_size: int) -> ChunkLayout:
        return cls.of(hashlib.sha256(data).hexdigest(), len(data), chunk_size)

    @classmethod
    def from_location(cls, location: pb.ArtifactLocation) -> ChunkLayout:
        """The layout a desired state announces; ChunkLayoutError when its numbers do not add up."""
        if location.chunk_size == 0:
            raise ChunkLayoutError(f"artifact {location.sha256[:12]}: chunk size 0")
        expected = chunk_count(location.size_bytes, location.chunk_size)
        if location.total_chunks != expected:
            raise ChunkLayoutError(
                f"artifact {location.sha256[:12]}: {location.total_chunks} chunks of {location.chunk_size} bytes "
                f"cannot hold {location.size_bytes} bytes"
            )
        return cls(location.sha256, location.size_bytes, location.chunk_size, location.total_chunks)

    def location(self) -> pb.ArtifactLocation:
        return pb.ArtifactLocation(
            sha256=self.sha256, size_bytes=self.size_bytes, chunk_size=self.chunk_size, total_chunks=self.total_chunks
        )

    def has(self, index: int) -> bool:
        return 0 <= index < self.total_chunks

    def offset(self, index: int) -> int:
        return index * self.chunk_size

    def length(self, index: int) -> int:
        """Bytes in chunk index (0 past the end)."""
        return max(0, min(self.chunk_size, self.size_bytes - self.offset(index)))

    def cut(self, data: bytes, index: int) -> bytes:
        """Chunk index of data (data being the whole artifact)."""
        if not self.has(index):
            raise ChunkLayoutError(f"chunk {index} is not below {self.total_chunks}")
        start = self.offset(index)
        return data[start : start + self.length(index)]

    def chunk(self, data: bytes, index: int, request_id: str = "") -> pb.ArtifactChunk:
        """The ArtifactChunk message carrying chunk index of data."""
        return pb.ArtifactChunk(
            schema_version=SCHEMA_VERSION,
            sha256=self.sha256,
            index=index,
            total_chunks=self.total_chunks,
            offset=self.offset(index),
            data=self.cut(data, index),
            request_id=request_id,
        )

    def check(self, chunk: pb.ArtifactChunk) -> None:
        """Raise ChunkLayoutError unless chunk is one of this layout's chunks, with the right length."""
        if chunk.sha256 != self.sha256 or not self.has(chunk.index):
            raise ChunkLayoutError(f"chunk {chunk.index} of {chunk.sha256[:12]} is not part of {self.sha256[:12]}")
        index = chunk.index
        if (
            chunk.total_chunks != self.total_chunks
            or chunk.offset != self.offset(index)
            or len(chunk.data) != self.length(index)
        ):
            raise ChunkLayoutError(
                f"chunk {index}: offset {chunk.offset}, {len(chunk.data)} bytes, {chunk.total_chunks} chunks; "
                f"expected offset {self.offset(index)}, {self.length(index)} bytes, {self.total_chunks} chunks"
            )
