"""The attack tests: one module per attack family, each named after the attack it tries (see README,
"Threat model"). Agents run against the fake cloud over an in-memory broker unless a module starts real
brokers or a real cloud of its own."""

from support.agent_fixtures import broker, cloud, keys, make_agent

__all__ = ["broker", "cloud", "keys", "make_agent"]
