from __future__ import annotations

import pytest

from protocols.topics import (
    Channel,
    Direction,
    TopicError,
    acl_pattern,
    artifact_chunk_filter,
    artifact_chunk_topic,
    cloud_subscriptions,
    device_subscriptions,
    device_topic,
    manifest_topic,
    parse_device_topic,
    parse_manifest_topic,
    topic_matches,
    trust_topic,
    validate_device_id,
    validate_fleet,
)


@pytest.mark.parametrize("device_id", ["pi-01", "A", "dev_7.lab", "x" * 64, "0abc"])
def test_valid_device_ids_pass_unchanged(device_id: str) -> None:
    assert validate_device_id(device_id) == device_id


@pytest.mark.parametrize("device_id", ["", "-lead", ".x", "a/b", "a+b", "a#", "x" * 65, "dev id", "é"])
def test_invalid_device_ids_are_refused(device_id: str) -> None:
    with pytest.raises(TopicError, match="invalid device id"):
        validate_device_id(device_id)


@pytest.mark.parametrize("channel", list(Channel))
def test_device_topic_round_trips_for_every_channel(channel: Channel) -> None:
    topic = device_topic("pi-01", channel, fleet="lab")
    assert topic == f"ef/v1/lab/dev/pi-01/{channel.value}"
    parsed = parse_device_topic(topic)
    assert (parsed.fleet, parsed.device_id, parsed.channel) == ("lab", "pi-01", channel)


@pytest.mark.parametrize(
    "topic",
    [
        "ef/v2/lab/dev/pi/telemetry",
        "ef/v1/lab/dev/pi",
        "ef/v1/lab/dev/pi/nope",
        "ef/v1/lab/dev/a+b/telemetry",
        "ef/v1/dev/pi/telemetry",  # no fleet level
        "ef/v1/Lab/dev/pi/telemetry",  # not a fleet name
        "ef/v1/lab/art/pi/telemetry",
        "ef/v1/lab/trust",
        "x",
        "",
    ],
)
def test_parse_refuses_foreign_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_device_topic(topic)


def test_device_subscribes_only_to_its_own_downstream_channels() -> None:
    subs = dict(device_subscriptions("pi-01", fleet="lab"))
    assert set(subs) == {
        "ef/v1/lab/dev/pi-01/desired",
        "ef/v1/lab/dev/pi-01/artifact/data",
        "ef/v1/lab/dev/pi-01/cmd",
        "ef/v1/lab/trust",
    }
    assert all(qos == 1 for qos in subs.values())


def test_cloud_subscribes_to_every_upstream_channel_and_can_share() -> None:
    plain = [f for f, _ in cloud_subscriptions(fleet="lab")]
    ups = [c for c in Channel if c.spec.direction is Direction.UP]
    assert len(plain) == len(ups)
    for channel in ups:
        assert topic_matches(f"ef/v1/lab/dev/+/{channel.value}", device_topic("d1", channel, fleet="lab"))
        assert any(topic_matches(f, device_topic("d1", channel, fleet="lab")) for f in plain)
        # another fleet on the same broker is not ours
        assert not any(topic_matches(f, device_topic("d1", channel, fleet="other")) for f in plain)
    shared = [f for f, _ in cloud_subscriptions("workers", fleet="lab")]
    assert all(f.startswith("$share/workers/ef/v1/lab/dev/+/") for f in shared)
    with pytest.raises(TopicError):
        cloud_subscriptions("bad/group")


def test_retained_channels_are_state_not_streams() -> None:
    retained = {c for c in Channel if c.spec.retain}
    assert retained == {Channel.REPORTED, Channel.PRESENCE, Channel.DESIRED}


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
        ("$share/g/a/+", "a/z", True),
    ],
)
def test_topic_matches_follows_mqtt_rules(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_artifact_chunk_topic_is_content_addressed() -> None:
    digest = "ab" * 32
    assert artifact_chunk_topic(digest, 4096, 3, fleet="lab") == f"ef/v1/lab/art/{digest}/4096/3"
    assert artifact_chunk_filter(digest, 4096, fleet="lab") == f"ef/v1/lab/art/{digest}/4096/+"
    chunk0 = artifact_chunk_topic(digest, 4096, 0, fleet="lab")
    assert topic_matches(artifact_chunk_filter(digest, 4096, fleet="lab"), chunk0)
    assert not topic_matches(artifact_chunk_filter(digest, 8192, fleet="lab"), chunk0)
    with pytest.raises(TopicError):
        artifact_chunk_topic("not-a-digest", 4096, 0)
    with pytest.raises(TopicError):
        artifact_chunk_topic(digest, 4096, -1)
    with pytest.raises(TopicError):
        artifact_chunk_filter(digest, 0)
    with pytest.raises(TopicError):
        artifact_chunk_filter("AB" * 32, 4096)  # upper case is another topic: refused, not normalised


def test_manifest_topic_is_content_addressed_beside_the_chunks_and_never_one_of_them() -> None:
    digest = "cd" * 32
    topic = manifest_topic(digest, fleet="lab")
    assert topic == f"ef/v1/lab/art/manifest/{digest}"
    assert parse_manifest_topic(topic, fleet="lab") == digest
    assert parse_manifest_topic(topic, fleet="other") is None  # another fleet's is not this one's
    assert parse_manifest_topic(artifact_chunk_topic(digest, 4096, 0, fleet="lab"), fleet="lab") is None
    assert parse_manifest_topic(f"ef/v1/lab/art/manifest/{digest}/x", fleet="lab") is None
    assert not topic_matches(artifact_chunk_filter(digest, 4096, fleet="lab"), topic)
    for bad in ["", "not-a-digest", "CD" * 32, "cd" * 31]:
        with pytest.raises(TopicError):
            manifest_topic(bad, fleet="lab")


def test_fleet_names_are_checked_and_acl_patterns_name_the_user() -> None:
    assert trust_topic("lab") == "ef/v1/lab/trust"
    assert acl_pattern(Channel.TELEMETRY, fleet="lab") == "ef/v1/lab/dev/%u/telemetry"
    for bad in ["", "Lab", "a/b", "+", "#", "-x", "x" * 33]:
        with pytest.raises(TopicError, match="invalid fleet"):
            validate_fleet(bad)
