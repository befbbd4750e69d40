"""The agent's spooling transport on a real Mosquitto: what it publishes while the broker is away waits on
disk and arrives after a restart of the agent process (a new transport on the same spool file); and with
MQTT 5 a message the broker had no subscriber for (PUBACK reason 16) is sent again until one listens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import MosquittoBroker, wait_until

from edge_agent.paho_spool import SpooledPahoTransport

pytestmark = pytest.mark.integration


def _spooled(broker: MosquittoBroker, path: Path, protocol: str = "3.1.1") -> SpooledPahoTransport:
    return SpooledPahoTransport(
        broker.url, "spool-dev", spool_path=path, protocol=protocol,  # type: ignore[arg-type]
        reconnect_min_s=0.1, reconnect_max_s=0.5,
    )  # fmt: skip


def test_unacknowledged_messages_survive_an_agent_restart(
    tmp_path: Path, make_mosquitto: Callable[..., MosquittoBroker], make_transport: Callable[..., Any]
) -> None:
    broker = make_mosquitto(persistence=True)  # the listener's session (and what waits for it) survives
    cloud, inbox = make_transport("s/#", broker=broker, clean_start=False, client_id="spool-cloud")
    broker.stop()
    first = _spooled(broker, tmp_path / "outbox.sqlite")
    first.start()
    for i in range(30):
        first.publish(f"s/{i}", str(i).encode(), qos=1)
    first.stop()  # the process ends before the broker is back: paho's memory is gone with it
    assert first.spool is None

    broker.start()
    second = _spooled(broker, tmp_path / "outbox.sqlite")
    assert second.spool is not None and len(second.spool) == 30
    second.start()
    try:
        assert wait_until(lambda: len(inbox.messages) >= 30, 15), len(inbox.messages)
        assert sorted(int(p) for _t, p in inbox.messages) == list(range(30))
        assert wait_until(lambda: second.spool is not None and len(second.spool) == 0, 10)
    finally:
        second.stop()
    cloud.stop()


def test_a_message_no_one_heard_is_sent_again_when_someone_listens(
    tmp_path: Path, make_mosquitto: Callable[..., MosquittoBroker], make_transport: Callable[..., Any]
) -> None:
    broker = make_mosquitto()
    device = _spooled(broker, tmp_path / "outbox.sqlite", protocol="5")
    device.start()
    try:
        assert device.wait_connected(10)
        device.publish("late/1", b"hello", qos=1)
        assert device.spool is not None
        # reason 16: kept, not acknowledged away
        assert wait_until(lambda: device.parked == 1, 5)
        assert len(device.spool) == 1
        _listener, inbox = make_transport("late/#", broker=broker)
        assert wait_until(lambda: inbox.messages, 10)
        assert inbox.messages[0] == ("late/1", b"hello")
        assert wait_until(lambda: device.spool is not None and len(device.spool) == 0, 5)
        assert device.unheard == 0
    finally:
        device.stop()
