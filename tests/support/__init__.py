"""Helpers shared by EdgeFleet's tests: import as `from support import ...` (pyproject puts tests/ on
pytest's pythonpath). Fixtures built on these live in tests/conftest.py."""

from support.database import postgres_url_from_env
from support.mosquitto import (
    ConfiguredMosquitto,
    MosquittoBroker,
    MosquittoError,
    mosquitto_binary,
    mosquitto_passwd_binary,
)
from support.mqtt import Inbox
from support.net import free_port, free_port_for_restarts, port_accepts, wait_until

__all__ = [
    "ConfiguredMosquitto",
    "Inbox",
    "MosquittoBroker",
    "MosquittoError",
    "free_port",
    "free_port_for_restarts",
    "mosquitto_binary",
    "mosquitto_passwd_binary",
    "port_accepts",
    "postgres_url_from_env",
    "wait_until",
]
