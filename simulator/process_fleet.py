"""`ProcessFleet`: more simulated devices than one process holds, as several worker processes each running
an `AgentHost` for a slice of the fleet (one interpreter lock per process: the agents' steps spread over
the machine's cores).

The parent talks to the workers over pipes with a few named queries (what the caller needs of a fleet
it cannot touch directly): how many devices are connected, how many run a given version, the state
counts, and each worker's memory and garbage collections. Worker processes start with "spawn", so nothing
of the parent (a cloud, a broker client) is copied into them. A worker freezes its heap once its agents are
started (`gc.freeze()`: they live as long as it does, and each full collection walked them all).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

from protocols.v1 import messages_pb2 as pb
from simulator.host import DeviceSpec

__all__ = ["ProcessFleet", "cpu_s", "rss_kb"]

START_TIMEOUT_S = 600.0


def rss_kb(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), in KiB, from /proc."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int | None = None) -> float:
    """CPU time (user + system) a process (this one by default) has used, in seconds, from /proc."""
    try:
        with open(f"/proc/{pid or os.getpid()}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


class ProcessFleet:
    def __init__(
        self, devices: Sequence[DeviceSpec], *, workers: int, freeze_heap: bool = True, **host_kwargs: Any
    ) -> None:
        """host_kwargs go to each worker's AgentHost (they must pickle: str, Path, numbers). freeze_heap: each
        worker freezes its heap once its agents are started (`_freeze_heap`); False to measure without."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        workers = min(workers, max(1, len(devices)))
        self.size = len(devices)
        self._slices = [list(devices[n::workers]) for n in range(workers)]
        self._host_kwargs = host_kwargs
        self._freeze = freeze_heap
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self.baseline_rss_kb: list[int] = []  # each worker's memory once imports are done, before its agents

    def __enter__(self) -> ProcessFleet:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for n, devices in enumerate(self._slices):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, devices, self._host_kwargs, self._freeze),
                                      name=f"edgefleet-sim-worker-{n}", daemon=True)  # fmt: skip
            with _main_left_behind((devices, self._host_kwargs, self._freeze)):
                process.start()
            child.close()
            self._pipes.append(parent)
            self._processes.append(process)
        self.baseline_rss_kb = [self._receive(pipe, START_TIMEOUT_S) for pipe in self._pipes]
        self._ask("start", timeout_s=START_TIMEOUT_S)

    def connected(self) -> int:
        return sum(self._ask("connected"))

    def running(self, version: str) -> int:
        """Devices whose reported state is active with this model version."""
        return sum(self._ask("running", version))

    def state_counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for counts in self._ask("state_counts"):
            for key, n in counts.items():
                total[key] = total.get(key, 0) + n
        return total

    def traffic(self, rows: Any, period_s: float, rows_per_round: int = 10) -> None:
        """Each worker's devices answer `rows` and send a telemetry window every period_s (simulator.traffic),
        in the worker, until `quiet()`: the load of a reporting fleet without the parent's interpreter lock."""
        self._ask("traffic", rows, period_s, rows_per_round)

    def quiet(self) -> None:
        """Stop the traffic `traffic()` started (the agents stay connected)."""
        self._ask("quiet", timeout_s=120)

    def freeze_heap(self) -> list[int]:
        """Exempt what each worker holds now from later garbage collections (call it once the fleet is
        connected: the agents, their connections and stores live as long as the worker); how many objects
        each froze. The workers freeze their heap once their agents are started as well."""
        return self._ask("freeze", timeout_s=120)

    def gc_stats(self) -> list[dict[str, Any]]:
        """Each worker's garbage collections so far (simulator.gc_clock.GcClock.snapshot)."""
        return self._ask("gc")

    def rss_kb(self) -> list[int]:
        return [rss_kb(p.pid) for p in self._processes]

    def worker_pids(self) -> dict[str, int]:
        """{"worker-N": pid} of the running workers (to profile them)."""
        return {f"worker-{n}": p.pid for n, p in enumerate(self._processes) if p.pid is not None}

    def cpu_s(self) -> float:
        """CPU time the workers have used so far, in seconds."""
        return sum(cpu_s(p.pid) for p in self._processes)

    def stop(self) -> None:
        if not self._processes:
            return
        with contextlib.suppress(OSError, EOFError, TimeoutError):  # a worker that died has nothing to stop
            self._ask("stop", timeout_s=120)
        for process in self._processes:
            process.join(30)
            if process.is_alive():
                process.kill()
        self._processes, self._pipes = [], []

    def _ask(self, *command: Any, timeout_s: float = 60.0) -> list[Any]:
        for pipe in self._pipes:
            pipe.send(command)
        return [self._receive(pipe, timeout_s) for pipe in self._pipes]

    @staticmethod
    def _receive(pipe: multiprocessing.connection.Connection, timeout_s: float) -> Any:
        if not pipe.poll(timeout_s):
            raise TimeoutError(f"a simulator worker did not answer within {timeout_s:g} s")
        reply = pipe.recv()
        if isinstance(reply, BaseException):
            raise reply
        return reply


@contextlib.contextmanager
def _main_left_behind(args: object) -> Iterator[None]:
    """Start a spawned worker without running the parent's __main__ in it again.

    Spawn re-runs the parent's main script in every child, in case what it pickles refers to it. The
    worker's code is this module's and its arguments are the simulator's, so a script's imports would only
    cost each worker time and memory: fleet.py's (the whole cloud, scikit-learn) took 6 s of CPU per
    worker at start and counted in its baseline memory. Arguments that do refer to __main__ keep it."""
    main = sys.modules.get("__main__")
    if main is None or b"__main__" in pickle.dumps(args):
        yield
        return
    saved = {name: vars(main)[name] for name in ("__file__", "__spec__") if name in vars(main)}
    if "__file__" in saved:
        del main.__file__
    main.__spec__ = None
    try:
        yield  # multiprocessing.spawn.get_preparation_data reads both while the process starts
    finally:
        for name, value in saved.items():
            setattr(main, name, value)
        if "__spec__" not in saved:
            del main.__spec__


def _worker(
    pipe: multiprocessing.connection.Connection, devices: list[DeviceSpec], host_kwargs: dict[str, Any], freeze: bool
) -> None:
    with contextlib.suppress(ImportError):  # the runtime's own memory is not the devices'
        import onnxruntime  # noqa: F401
    from simulator.gc_clock import GcClock
    from simulator.host import AgentHost

    gc_clock = GcClock().install()
    _mmap_large_buffers()
    pipe.send(rss_kb())
    host = AgentHost(devices, **host_kwargs)
    traffic: Any = None
    while True:
        command, *args = pipe.recv()
        try:
            if command == "start":
                host.start()
                reply: Any = _freeze_heap() if freeze else None
            elif command == "freeze":
                reply = _freeze_heap()
            elif command == "connected":
                reply = sum(1 for t in host.transports.values() if t.connected)
            elif command == "running":
                reply = host.count(partial(_runs, str(args[0])))
            elif command == "state_counts":
                reply = {str(k): v for k, v in host.status_counts(_state_and_version).items()}
            elif command == "gc":
                reply = gc_clock.snapshot()
            elif command == "traffic":
                from simulator.traffic import Traffic

                if traffic is not None:
                    traffic.stop()
                rows, period_s, rows_per_round = args
                traffic = Traffic(host, rows, rounds=10**9, period_s=period_s, rows_per_round=rows_per_round).start()
                reply = None
            elif command == "quiet":
                if traffic is not None:
                    traffic.stop()
                traffic = reply = None
            elif command == "stop":
                if traffic is not None:
                    traffic.stop()
                host.stop()
                pipe.send(None)
                return
            else:
                reply = ValueError(f"unknown command {command!r}")
        except Exception as exc:  # noqa: BLE001 - the parent hears about it; the worker keeps serving
            reply = exc
        pipe.send(reply)


def _freeze_heap() -> int:
    """Collect once, then move every live object to the collector's permanent generation; how many there are.

    A worker's agents (their settings, state machines, stores, connections) live as long as it does, yet each
    full collection walked them all: at 1,500 agents a worker, 12 % of its CPU in a rollout went to the
    collector (2 full collections of 0.24 s each, and the younger ones). What is frozen stays out of every
    collection; garbage made later is collected as before (cloud.heap does the same for the cloud)."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _mmap_large_buffers(threshold: int = 64 << 10) -> None:
    """Have glibc mmap every allocation from 64 KiB up, so that freeing it returns the memory at once. The
    jobs run on the loop's thread (simulator.host), whose heap took each device's ~100 KB artifact buffer and
    kept the freed space: +25 KB of resident memory per device at 1,000 devices."""
    import ctypes

    m_mmap_threshold = -3  # glibc's malloc.h; setting it also stops glibc raising the threshold on its own
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL(None).mallopt(m_mmap_threshold, threshold)


def _runs(version: str, state: pb.ReportedState) -> bool:
    return state.update_state == pb.UPDATE_STATE_ACTIVE and state.active_model.version == version


def _state_and_version(state: pb.ReportedState) -> str:
    name = pb.UpdateState.Name(state.update_state).removeprefix("UPDATE_STATE_").lower()
    why = f" ({state.last_error.code})" if state.update_state == pb.UPDATE_STATE_FAILED else ""
    return f"{name} {state.active_model.version}{why}".strip()
