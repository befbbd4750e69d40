"""Build the MQTT transport an agent's settings describe (shared by `agent run` and the simulator):
credentials, TLS, protocol, a last will that marks the device offline, and a disk spool that keeps what
the agent says until the broker has it (artifact requests excepted: the chunk fetcher retries those
itself, and an old one is worthless after a restart)."""

from __future__ import annotations

from typing import Any

from edge_agent.config import AgentSettings
from edge_agent.messages import offline_will
from edge_agent.paho_spool import SpooledPahoTransport
from protocols.topics import Channel


def transport_for(settings: AgentSettings, **overrides: Any) -> SpooledPahoTransport:
    """A SpooledPahoTransport to settings.mqtt_url (client id = device id) whose retained will says offline.

    overrides go to PahoTransport (e.g. reconnect_min_s in tests). Raises TransportError for a bad URL."""
    kwargs: dict[str, Any] = {
        "username": settings.mqtt_username,
        "password": settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
        "will": offline_will(settings.device_id, fleet=settings.read_trust().fleet),
        "tls_ca": str(settings.tls_ca) if settings.tls_ca else None,
        "protocol": settings.mqtt_protocol,
        "spool_path": settings.state_dir / "outbox.sqlite",
        "spool_max_messages": settings.outbox_max_messages,
        "spool_filter": _spooled,
    }
    kwargs.update(overrides)
    return SpooledPahoTransport(settings.mqtt_url, settings.device_id, **kwargs)


def _spooled(topic: str) -> bool:
    return not topic.endswith("/" + Channel.ARTIFACT_REQUEST.value)
