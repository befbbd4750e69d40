"""PahoTransport without a broker: argument checks, and what publish() does while offline."""

from __future__ import annotations

import pytest

from edge_agent.paho_transport import PahoTransport
from edge_agent.transport import TransportError, Will

URL = "mqtt://127.0.0.1:1"  # never connected to in these tests


def test_bad_arguments_are_transport_errors() -> None:
    with pytest.raises(TransportError, match="scheme"):
        PahoTransport("tcp://x:1", "c")
    with pytest.raises(TransportError, match="protocol must be"):
        PahoTransport(URL, "c", protocol="4")  # type: ignore[arg-type]
    with pytest.raises(TransportError, match="client_id"):
        PahoTransport(URL, "")
    with pytest.raises(TransportError, match="not an mqtts:// URL"):
        PahoTransport(URL, "c", tls_ca="/etc/ssl/certs/ca-certificates.crt")


def test_missing_ca_bundle_is_a_transport_error(tmp_path) -> None:
    with pytest.raises(TransportError, match="cannot set up TLS"):
        PahoTransport("mqtts://127.0.0.1:8883", "c", tls_ca=str(tmp_path / "absent.pem"))


def test_a_new_transport_is_not_connected_and_stop_is_harmless() -> None:
    transport = PahoTransport(URL, "c", will=Will("ef/p", b"offline"))
    assert not transport.connected
    assert not transport.wait_connected(0)
    assert transport.last_error is None
    transport.stop()
    assert transport.protocol == "5"


def test_offline_publishes_queue_qos1_and_drop_qos0_without_raising() -> None:
    transport = PahoTransport(URL, "c", protocol="3.1.1")
    transport.publish("ef/t", b"kept", qos=1)
    transport.publish("ef/t", b"dropped", qos=0)
    queued = [m.payload for m in transport._client._out_messages.values()]
    assert queued == [b"kept"]


def test_a_full_offline_queue_refuses_with_transport_error() -> None:
    transport = PahoTransport(URL, "c", max_queued=2)
    transport.publish("ef/t", b"1")
    transport.publish("ef/t", b"2")
    with pytest.raises(TransportError, match="queue full"):
        transport.publish("ef/t", b"3")


@pytest.mark.parametrize(
    ("topic", "qos", "complaint"),
    [("ef/+/t", 1, "wildcards"), ("ef/#", 1, "wildcards"), ("", 1, "non-empty"), ("ef/t", 3, "qos")],
)
def test_bad_publishes_are_transport_errors(topic: str, qos: int, complaint: str) -> None:
    transport = PahoTransport(URL, "c")
    with pytest.raises(TransportError, match=complaint):
        transport.publish(topic, b"x", qos=qos)


def test_subscribing_offline_records_the_filter_and_checks_it() -> None:
    transport = PahoTransport(URL, "c")
    transport.subscribe("ef/v1/dev/d1/desired", 1)
    with pytest.raises(TransportError, match="qos"):
        transport.subscribe("ef/x", 5)
    with pytest.raises(TransportError, match="'#'"):
        transport.subscribe("ef/#/x")
    assert transport._filters == {"ef/v1/dev/d1/desired": 1}
