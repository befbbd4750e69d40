"""Capabilities: protocol additions an agent says it understands (`ReportedState.capabilities`), pure.

The cloud uses an addition that an older agent would refuse only for devices whose last report named it,
so a fleet can mix agent versions (`EVOLUTION.md`). A device that has not reported yet, or whose agent
names nothing, is sent everything as before.
"""

from __future__ import annotations

# The desired state may leave the manifest out: the agent reads it by the digest its assignment names, from
# the fleet-wide retained topic `protocols.topics.manifest_topic`.
MANIFEST_BY_DIGEST = "manifest_by_digest"

AGENT_CAPABILITIES: tuple[str, ...] = (MANIFEST_BY_DIGEST,)  # what this version of the agent reports

