"""With the console API in a process of its own, the cloud core's bulk threads run at `background_nice`
(cloud.background_priority; `edgefleet up` runs 10) so that the API processes win the CPU; the threads that
answer the API or decide rollouts, and the API processes themselves, keep their priority; 0 turns it off."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cloud.service import CloudService
from cloud.settings import CloudSettings

pytestmark = pytest.mark.integration


def nice_of(pid: int, tid: int) -> int:
    """The thread's nice as the kernel has it (/proc/<pid>/task/<tid>/stat, field 19)."""
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[16])


def core_thread_nices() -> dict[str, int]:
    return {t.name: nice_of(os.getpid(), t.native_id) for t in threading.enumerate() if t.native_id is not None}


def start(tmp_path: Path, database_url: str, nice: int) -> CloudService:
    return CloudService(CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, api_port=0,
                                      api_processes=1, background_nice=nice)).start()  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread priorities are read from Linux's /proc")
def test_the_cores_bulk_threads_yield_the_cpu_to_the_api_processes(tmp_path: Path, database_url: str) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    cloud = start(tmp_path, database_url, nice=7)
    try:
        nices = core_thread_nices()
        expected = max(base, 7)
        assert nices["edgefleet-ingest"] == expected, nices
        assert nices["edgefleet-chunks"] == expected, nices
        [mqtt] = [name for name in nices if name.startswith("paho-mqtt-client-")]
        assert nices[mqtt] == expected, nices
        assert nices["edgefleet-refresher"] == expected, nices
        # unchanged: the thread answering the API processes, the rollout controller, this (the caller's) thread
        assert nices["edgefleet-api-link-0"] == base, nices
        assert nices["edgefleet-rollouts"] == base, nices
        assert nices[threading.current_thread().name] == base, nices
        assert cloud.background_priority["edgefleet-ingest"] == expected
        # the API process, every thread of it
        assert cloud.api_processes is not None
        [process] = cloud.api_processes.processes
        assert process.pid is not None
        api = {int(tid): nice_of(process.pid, int(tid)) for tid in os.listdir(f"/proc/{process.pid}/task")}
        assert set(api.values()) == {base}, api
    finally:
        cloud.stop()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread priorities are read from Linux's /proc")
def test_background_nice_0_leaves_every_thread_as_started(tmp_path: Path, database_url: str) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    cloud = start(tmp_path, database_url, nice=0)
    try:
        nices = core_thread_nices()
        for name in ("edgefleet-ingest", "edgefleet-chunks", "edgefleet-refresher"):
            assert nices[name] == base, nices
        assert cloud.background_priority == {}
    finally:
        cloud.stop()
