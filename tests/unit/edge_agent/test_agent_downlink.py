"""What the agent makes of each incoming message (pure)."""

from __future__ import annotations

import pytest
from support.releases import Keys, chunk_of, desired_state, make_release

from edge_agent.downlink import CommandReceived, parse_inbound
from edge_agent.errors import MalformedPayloadError
from edge_agent.update.events import ChunkReceived, DesiredReceived, TrustReceived

DESIRED = "ef/v1/test/dev/dev-1/desired"
DATA = "ef/v1/test/dev/dev-1/artifact/data"
TRUST = "ef/v1/test/trust"


def parse(topic: str, payload: bytes):  # type: ignore[no-untyped-def]
    return parse_inbound("dev-1", topic, payload, fleet="test")


def test_desired_states_chunks_and_commands(keys: Keys) -> None:
    desired = desired_state("dev-1", make_release(keys.signer, "v1", 1), 3)
    event = parse(DESIRED, desired.SerializeToString())
    assert isinstance(event, DesiredReceived) and event.desired.generation == 3
    # clearing a retained desired state is not signed: it changes nothing
    assert parse(DESIRED, b"") is None
    chunk = parse(DATA, chunk_of(b"abc", 0).SerializeToString())
    assert isinstance(chunk, ChunkReceived) and chunk.chunk.data == b"abc"
    assert parse("ef/v1/test/dev/dev-1/cmd", b"whatever") == CommandReceived(b"whatever")  # verified by the agent
    trust = parse(TRUST, keys.chain.SerializeToString())
    assert isinstance(trust, TrustReceived) and trust.chain == keys.chain
    assert parse(TRUST, b"") is None


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("elsewhere/x", b"", "not a device topic"),
        ("ef/v1/test/dev/dev-1/bogus", b"", "unknown channel"),
        ("ef/v1/test/dev/dev-2/desired", b"", "for device 'dev-2'"),
        ("ef/v1/other/dev/dev-1/desired", b"", "for fleet 'other'"),
        ("ef/v1/test/dev/dev-1/reported", b"", "device-to-cloud"),
        (DESIRED, b"\xff\xff\xff", "not a DesiredState"),
        (TRUST, b"\xff\xff\xff", "not a TrustChain"),
        (DATA, b"\x0a\x02ab", "without a sha256"),
        (DATA, b"\x80", "not a ArtifactChunk"),
    ],
)
def test_malformed_messages_say_why(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayloadError, match=reason) as info:
        parse(topic, payload)
    assert info.value.code == "malformed_payload"


def test_fleet_wide_chunks_must_be_the_chunk_their_topic_names() -> None:
    chunk = chunk_of(b"abcdef", 0, chunk_size=4)
    topic = f"ef/v1/test/art/{chunk.sha256}/4/0"
    event = parse(topic, chunk.SerializeToString())
    assert isinstance(event, ChunkReceived) and event.chunk.data == b"abcd"
    assert parse(topic, b"") is None  # the cloud cleared it: nothing to do
    with pytest.raises(MalformedPayloadError, match="carries chunk 0"):
        parse(f"ef/v1/test/art/{chunk.sha256}/4/1", chunk.SerializeToString())
    with pytest.raises(MalformedPayloadError, match="carries chunk"):
        parse(f"ef/v1/test/art/{'0' * 64}/4/0", chunk.SerializeToString())
