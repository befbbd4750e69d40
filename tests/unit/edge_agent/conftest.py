"""Fixtures for the agent's unit tests: keys, an in-memory broker, the fake cloud, and agents."""

from support.agent_fixtures import broker, cloud, keys, make_agent

__all__ = ["broker", "cloud", "keys", "make_agent"]
