"""What the agent makes of each incoming message (pure)."""

from __future__ import annotations

import pytest
from support.releases import Keys, chunk_of, desired_state, make_release

from edge_agent.downlink import parse_inbound
from edge_agent.errors import MalformedPayloadError
from edge_agent.update.events import ChunkReceived, DesiredCleared, DesiredReceived
from protocols.v1 import messages_pb2 as pb

DESIRED = "ef/v1/dev/dev-1/desired"
DATA = "ef/v1/dev/dev-1/artifact/data"


def test_desired_states_chunks_and_commands(keys: Keys) -> None:
    desired = desired_state("dev-1", make_release(keys.signer, "v1", 1), 3)
    event = parse_inbound("dev-1", DESIRED, desired.SerializeToString())
    assert isinstance(event, DesiredReceived) and event.desired.generation == 3
    assert isinstance(parse_inbound("dev-1", DESIRED, b""), DesiredCleared)
    chunk = parse_inbound("dev-1", DATA, chunk_of(b"abc", 0).SerializeToString())
    assert isinstance(chunk, ChunkReceived) and chunk.chunk.data == b"abc"
    assert parse_inbound("dev-1", "ef/v1/dev/dev-1/cmd", b"whatever") is None


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("elsewhere/x", b"", "not a device topic"),
        ("ef/v1/dev/dev-1/bogus", b"", "unknown channel"),
        ("ef/v1/dev/dev-2/desired", b"", "for device 'dev-2'"),
        ("ef/v1/dev/dev-1/reported", b"", "device-to-cloud"),
        (DESIRED, b"\xff\xff\xff", "not a DesiredState"),
        (DESIRED, pb.DesiredState(device_id="dev-2", generation=1).SerializeToString(), "names device 'dev-2'"),
        (DESIRED, pb.DesiredState(device_id="dev-1", generation=1).SerializeToString(), "no manifest"),
        (DATA, b"\x0a\x02ab", "without a sha256"),
        (DATA, b"\x80", "not a ArtifactChunk"),
    ],
)
def test_malformed_messages_say_why(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayloadError, match=reason) as info:
        parse_inbound("dev-1", topic, payload)
    assert info.value.code == "malformed_payload"
