"""Build the MQTT transport an agent's settings describe (shared by `agent run` and the simulator):
credentials, TLS, protocol, and a last will that marks the device offline."""

from __future__ import annotations

from typing import Any

from edge_agent.config import AgentSettings
from edge_agent.messages import offline_will
from edge_agent.paho_transport import PahoTransport


def transport_for(settings: AgentSettings, **overrides: Any) -> PahoTransport:
    """A PahoTransport to settings.mqtt_url (client id = device id) whose retained will says offline.

    overrides go to PahoTransport (e.g. reconnect_min_s in tests). Raises TransportError for a bad URL."""
    kwargs: dict[str, Any] = {
        "username": settings.mqtt_username,
        "password": settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
        "will": offline_will(settings.device_id, fleet=settings.read_trust().fleet),
        "tls_ca": str(settings.tls_ca) if settings.tls_ca else None,
        "protocol": settings.mqtt_protocol,
    }
    kwargs.update(overrides)
    return PahoTransport(settings.mqtt_url, settings.device_id, **kwargs)
