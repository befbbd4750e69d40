"""Broker URLs (edge_agent.broker_url): mqtt:// and mqtts:// parsed, everything else refused saying why."""

from __future__ import annotations

import pytest

from edge_agent.paho_transport import BrokerAddress, parse_broker_url
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
