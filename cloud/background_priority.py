"""The cloud core's background threads at a lower CPU priority, so that the console API's processes win the CPU.

Why: with the API in processes of its own (cloud.api.processes), its tail on a small machine is not the GIL nor
the database but the run queue: while 200 devices reported, the API's event loop was runnable but waiting for a
core ~70 % of the time (/proc/<pid>/task/<tid>/schedstat, benchmarks/api_tail.py), beside the core's ingestion
and the MQTT client that feeds it. Bulk work can wait some milliseconds; an operator's request should not.

Linux gives each thread its own nice value (os.setpriority on a thread id), so only the named bulk threads are
lowered: ingestion, the chunk server, the core's MQTT client thread, and the periodic housekeeping. Kept at normal
priority: the API link (it answers the API processes' questions; while a lowered thread holds the interpreter
lock it may wait, but the API asks the core only for the probes of /healthz, shared, and for revocations), the
rollout controller (its decisions are a rollout's latency) and the embedded broker. Raising nice needs no
privilege; lowering it again does, so this is one way. A thread started after `lower_background_priority`
keeps its creator's priority.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

# name prefixes of the core's bulk threads (cloud.mqtt.worker, cloud.periodic subclasses, paho's network thread)
BACKGROUND_THREADS = ("edgefleet-ingest", "edgefleet-chunks", "paho-mqtt-client-", "edgefleet-ownership",
                      "edgefleet-fanout-sweeper", "edgefleet-refresher", "edgefleet-alerts", "edgefleet-autoretrain",
                      "edgefleet-webhook")  # fmt: skip


def background_threads() -> list[threading.Thread]:
    """This process's running threads that `lower_background_priority` lowers."""
    return [t for t in threading.enumerate() if t.name.startswith(BACKGROUND_THREADS) and t.native_id is not None]


def lower_background_priority(nice: int) -> dict[str, int]:
    """Set each background thread's nice to at least `nice`; returns {thread name: its nice now}. A platform
    without per-thread priorities (not Linux) or a refusal leaves the thread as it was, logged."""
    applied: dict[str, int] = {}
    for thread in background_threads():
        tid = thread.native_id
        assert tid is not None
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            if current < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            applied[thread.name] = max(current, nice)
        except (OSError, AttributeError) as exc:  # ended meanwhile, or no per-thread priorities here
            log.warning("could not lower the priority of %s: %s", thread.name, exc)
    return applied
