"""Pure helpers of the MQTT layer: broker URLs, topic filters, shared-subscription filters."""

from __future__ import annotations

import pytest

from cloud.broker import split_shared_filter
from edge_agent.paho_transport import BrokerAddress, check_topic_filter, check_topic_name, parse_broker_url
from edge_agent.transport import TransportError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883, tls=False)),
        ("mqtt://broker.example", BrokerAddress("broker.example", 1883, tls=False)),
        ("mqtts://broker.example", BrokerAddress("broker.example", 8883, tls=True)),
        ("MQTTS://broker.example:9999/", BrokerAddress("broker.example", 9999, tls=True)),
        ("mqtt://[::1]:1884", BrokerAddress("::1", 1884, tls=False)),
        ("  mqtt://localhost:1  ", BrokerAddress("localhost", 1, tls=False)),
    ],
)
def test_valid_broker_urls(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("", "non-empty"),
        ("127.0.0.1:1883", "scheme must be mqtt:// or mqtts://"),
        ("tcp://host:1883", "scheme must be mqtt:// or mqtts://"),
        ("http://host", "scheme must be mqtt:// or mqtts://"),
        ("mqtt://:1883", "has no host"),
        ("mqtt://host:notaport", "port must be a number"),
        ("mqtt://host:70000", "port must be a number"),
        ("mqtt://host:0", "port must be a number"),
        ("mqtt://host:1883/path", "no path, query or fragment"),
        ("mqtt://host:1883?x=1", "no path, query or fragment"),
        ("mqtt://user:pw@host:1883", "pass credentials as username=/password="),
    ],
)
def test_bad_broker_urls_say_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(TransportError, match=complaint):
        parse_broker_url(url)


def test_non_string_url_is_a_transport_error() -> None:
    with pytest.raises(TransportError):
        parse_broker_url(None)  # type: ignore[arg-type]


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
    with pytest.raises(TransportError, match=complaint):
        check_topic_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("ef/v1/dev/+/telemetry", None),
        ("$share/ingest/ef/v1/dev/+/telemetry", ("ingest", "ef/v1/dev/+/telemetry")),
        ("$share/g/#", ("g", "#")),
        ("$SYS/broker/uptime", None),
    ],
)
def test_shared_filters_split_into_group_and_filter(topic_filter: str, expected: tuple[str, str] | None) -> None:
    assert split_shared_filter(topic_filter) == expected


@pytest.mark.parametrize("topic_filter", ["$share/", "$share/g", "$share//a", "$share/g/", "$share/g+/a", "$share/#/a"])
def test_malformed_shared_filters_are_refused(topic_filter: str) -> None:
    with pytest.raises(ValueError, match="malformed shared subscription"):
        split_shared_filter(topic_filter)


@pytest.mark.parametrize("topic", ["a", "ef/v1/dev/d1/telemetry", "a//b", "/a"])
def test_valid_topic_names_pass(topic: str) -> None:
    assert check_topic_name(topic) == topic


@pytest.mark.parametrize(
    ("topic", "complaint"), [("", "non-empty"), ("a/+", "wildcards"), ("#", "wildcards"), ("a\x00b", "NUL")]
)
def test_invalid_topic_names_are_refused(topic: str, complaint: str) -> None:
    with pytest.raises(TransportError, match=complaint):
        check_topic_name(topic)
