"""Capabilities: protocol additions one side says it understands, pure.

Agent -> cloud (`ReportedState.capabilities`): the cloud uses an addition that an older agent would refuse
only for devices whose last report named it, so a fleet can mix agent versions (`EVOLUTION.md`). A device
that has not reported yet, or whose agent names nothing, is sent everything as before.

Cloud -> agent (`DesiredState.cloud_capabilities`): an agent packs what it sends in a way an older cloud would
misread only while its last desired state named the addition; with none (an older cloud, or no desired state
yet) it sends everything as before.
"""

from __future__ import annotations

# The desired state may leave the manifest out: the agent reads it by the digest its assignment names, from
# the fleet-wide retained topic `protocols.topics.manifest_topic`.
MANIFEST_BY_DIGEST = "manifest_by_digest"

AGENT_CAPABILITIES: tuple[str, ...] = (MANIFEST_BY_DIGEST,)  # what this version of the agent reports

# Several lifecycle events may travel in one message (`LifecycleEvent.batch`); an older cloud would store
# only the first of them.
EVENT_BATCH = "event_batch"

CLOUD_CAPABILITIES: tuple[str, ...] = (EVENT_BATCH,)  # what this version of the cloud puts in desired states
