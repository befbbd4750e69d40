"""Chunk layout (protocols.chunking): the arithmetic the cloud cuts by and the agent checks against."""

import hashlib

import pytest

from protocols.chunking import ChunkLayout, ChunkLayoutError, chunk_count
from protocols.v1 import messages_pb2 as pb


@pytest.mark.parametrize(("size", "chunk", "count"), [(0, 4, 0), (1, 4, 1), (4, 4, 1), (5, 4, 2), (12, 4, 3)])
def test_chunk_count_rounds_up(size: int, chunk: int, count: int) -> None:
    assert chunk_count(size, chunk) == count


@pytest.mark.parametrize(("size", "chunk"), [(10, 0), (10, -1), (-1, 4)])
def test_impossible_sizes_are_refused(size: int, chunk: int) -> None:
    with pytest.raises(ChunkLayoutError):
        chunk_count(size, chunk)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 10, 11, 64])
def test_cutting_every_chunk_gives_back_the_bytes(chunk_size: int) -> None:
    data = bytes(range(10))
    layout = ChunkLayout.for_bytes(data, chunk_size)
    pieces = [layout.cut(data, i) for i in range(layout.total_chunks)]
    assert b"".join(pieces) == data
    assert all(len(p) == chunk_size for p in pieces[:-1])
    assert [layout.offset(i) for i in range(layout.total_chunks)] == [i * chunk_size for i in range(len(pieces))]
    assert layout.length(layout.total_chunks) == 0


def test_chunk_messages_pass_their_own_check_and_carry_the_layout() -> None:
    data = b"0123456789"
    layout = ChunkLayout.for_bytes(data, 4)
    assert layout.sha256 == hashlib.sha256(data).hexdigest()
    for i in range(layout.total_chunks):
        chunk = layout.chunk(data, i, request_id="r")
        layout.check(chunk)
        assert (chunk.index, chunk.offset, chunk.total_chunks, chunk.request_id) == (i, 4 * i, 3, "r")
    with pytest.raises(ChunkLayoutError):
        layout.cut(data, 3)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: setattr(c, "offset", c.offset + 1),
        lambda c: setattr(c, "data", c.data + b"x"),
        lambda c: setattr(c, "total_chunks", 4),
        lambda c: setattr(c, "sha256", "0" * 64),
        lambda c: setattr(c, "index", 3),
    ],
)
def test_chunks_that_do_not_fit_are_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    data = b"0123456789"
    layout = ChunkLayout.for_bytes(data, 4)
    chunk = layout.chunk(data, 1)
    tamper(chunk)
    with pytest.raises(ChunkLayoutError):
        layout.check(chunk)


def test_location_round_trips_and_inconsistent_locations_are_refused() -> None:
    layout = ChunkLayout.of("ab" * 32, 10, 4)
    assert ChunkLayout.from_location(layout.location()) == layout
    with pytest.raises(ChunkLayoutError, match="cannot hold"):
        ChunkLayout.from_location(pb.ArtifactLocation(sha256="ab" * 32, size_bytes=10, chunk_size=4, total_chunks=2))
    with pytest.raises(ChunkLayoutError, match="chunk size 0"):
        ChunkLayout.from_location(pb.ArtifactLocation(sha256="ab" * 32, size_bytes=10, chunk_size=0, total_chunks=0))
