"""MQTT grammar: topic names, filters and `$share/` subscriptions (protocols.topics, used by every part)."""

import pytest

from protocols.topics import TopicError, check_topic_filter, check_topic_name, shared_filter, split_shared_filter


@pytest.mark.parametrize(
    "topic_filter", ["a", "a/b", "#", "a/#", "+", "+/b/+", "ef/v1/dev/+/telemetry", "$share/g/ef/v1/dev/+/x"]
)
def test_valid_topic_filters_pass(topic_filter: str) -> None:
    assert check_topic_filter(topic_filter) == topic_filter


@pytest.mark.parametrize(
    ("topic_filter", "complaint"),
    [("", "non-empty"), ("a/#/b", "'#'"), ("a#", "'#'"), ("a/b#", "'#'"), ("a+/b", "'\\+'"), ("a/+b", "'\\+'")],
)
def test_invalid_topic_filters_are_refused(topic_filter: str, complaint: str) -> None:
    with pytest.raises(TopicError, match=complaint):
        check_topic_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("ef/v1/dev/+/telemetry", (None, "ef/v1/dev/+/telemetry")),
        ("$share/ingest/ef/v1/dev/+/telemetry", ("ingest", "ef/v1/dev/+/telemetry")),
        ("$share/g/#", ("g", "#")),
        ("$SYS/broker/uptime", (None, "$SYS/broker/uptime")),
    ],
)
def test_shared_filters_split_into_group_and_filter(topic_filter: str, expected: tuple[str | None, str]) -> None:
    assert split_shared_filter(topic_filter) == expected


@pytest.mark.parametrize("topic_filter", ["$share/", "$share/g", "$share//a", "$share/g/", "$share/g+/a", "$share/#/a"])
def test_malformed_shared_filters_are_refused(topic_filter: str) -> None:
    with pytest.raises(TopicError, match="malformed shared subscription"):
        split_shared_filter(topic_filter)


@pytest.mark.parametrize("topic", ["a", "ef/v1/dev/d1/telemetry", "a//b", "/a"])
def test_valid_topic_names_pass(topic: str) -> None:
    assert check_topic_name(topic) == topic


@pytest.mark.parametrize(
    ("topic", "complaint"), [("", "non-empty"), ("a/+", "wildcards"), ("#", "wildcards"), ("a\x00b", "NUL")]
)
def test_invalid_topic_names_are_refused(topic: str, complaint: str) -> None:
    with pytest.raises(TopicError, match=complaint):
        check_topic_name(topic)


def test_shared_filter_builds_what_split_shared_filter_reads() -> None:
    built = shared_filter("workers", "ef/v1/dev/+/telemetry")
    assert built == "$share/workers/ef/v1/dev/+/telemetry"
    assert split_shared_filter(built) == ("workers", "ef/v1/dev/+/telemetry")
    assert check_topic_filter(built) == built


@pytest.mark.parametrize(("group", "inner"), [("g+", "a"), ("", "a"), ("a/b", "c"), ("g", "$share/h/a")])
def test_shared_filter_refuses_bad_groups_and_nesting(group: str, inner: str) -> None:
    with pytest.raises(TopicError):
        shared_filter(group, inner)


def test_shared_filter_with_a_bad_inner_filter_is_refused() -> None:
    with pytest.raises(TopicError, match="'#'"):
        check_topic_filter("$share/g/a/#/b")
