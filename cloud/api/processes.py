"""The console API in processes of its own (`api_processes` >= 1), beside the cloud's process.

Why: in one process the API's event loop shares the interpreter lock with ingestion, the rollout controller
and the other workers. While 200 devices reported, ingestion alone held it ~45 % of the time (py-spy), and
the loop waited up to the 5 ms switch interval for it on every turn: GET /api/v1/devices at 100 clients had a
p50 of 95 ms and a p99 of 3.4 s, against 12 / 514 ms for a bare uvicorn app beside it.

Each API process is a `CloudService` in its "api" role (see `ApiRole`): its own engine on the same database,
the same keys and artifact store, an MQTT connection that only publishes (deployments, rollout steps), a
rollout controller that does not tick (it steps when an operator acts; the core's ticks; both claim steps
through the database, so none is taken twice), and uvicorn on the listening socket the core made, shared by
every API process (the kernel hands each connection to one). What only the core has it asks the core for over
a pipe (`CoreLink`): the probes /healthz and /metrics show (ingestion, chunks, fanout, alerts) and the
embedded broker's disconnect of a device revoked just now. The probes come in one question for all of them,
kept PROBE_CACHE_S and shared by the requests meanwhile (and while it is asked again, the last answer serves
the others, so no request but the first waits on the core): asked one by one per request, 100 clients on /healthz
queued 500 questions on the one pipe, each waiting for the core's interpreter lock (p50 1.9 s, 23 requests/s
while the fleet reported).

Each process keeps its own read and token caches: with several, a change made through one shows in the
others' lists within `api_read_cache_s`, and a token revoked through one is refused by the others within
`api_token_cache_s` (as for changes made on the database; twice that while a reload is slow: read_cache).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cloud.errors import ConfigurationError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a spawned interpreter imports FastAPI, SQLAlchemy and the app: seconds on a busy machine
SUPERVISE_EVERY_S = 1.0
RESTART_EVERY_S = 5.0  # a process that dies at once is not started in a tight loop
CORE_PROBES = ("mqtt", "ingest", "chunks", "fanout", "alerts")  # /healthz: the core's connection, not ours
PROBE_CACHE_S = 0.5  # the core's counters in /healthz and /metrics may be this old (scrapes are seconds apart)


@dataclass
class ApiRole:
    """What makes a CloudService an API process: which one, the shared socket, the core's broker and link."""

    index: int
    sock: socket.socket
    mqtt_url: str
    mqtt_protocol: str
    mqtt_credentials: tuple[str | None, str | None]  # the core's (its embedded broker's cloud user, or the settings')
    core: CoreLink


class CoreLink:
    """The API process's end of its pipe to the core: one question at a time, answered by `serve_link`."""

    def __init__(self, pipe: multiprocessing.connection.Connection) -> None:
        self._pipe = pipe
        self._lock = threading.Lock()  # requests run on several worker threads
        self._probed: tuple[float, dict[str, Any]] | None = None  # (monotonic time answered, every probe)
        self.questions = 0  # asked of the core

    def ask(self, *question: Any) -> Any:
        with self._lock:
            return self._ask(question)

    def _ask(self, question: tuple[Any, ...]) -> Any:
        self.questions += 1
        self._pipe.send(question)
        if not self._pipe.poll(10):
            raise TimeoutError("the cloud's core process did not answer")
        return self._pipe.recv()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            yield

    def probe(self, name: str) -> Any:
        """The core's probe `name`, from its answer to all of them at most PROBE_CACHE_S old. While one request
        asks (the core may take a second under load), the others are answered from the last answer rather
        than wait on the pipe; only the very first ones wait."""
        probed = self._probed
        if probed is not None and time.monotonic() - probed[0] <= PROBE_CACHE_S:
            return probed[1].get(name)
        if probed is not None and not self._lock.acquire(blocking=False):
            return probed[1].get(name)  # being asked right now (or a revocation is told)
        if probed is None:
            self._lock.acquire()
        try:
            probed = self._probed
            if probed is None or time.monotonic() - probed[0] > PROBE_CACHE_S:
                answer = self._ask(("probes", CORE_PROBES))
                if not isinstance(answer, dict) or "error" in answer:
                    raise RuntimeError(f"the cloud's core process could not answer: {answer}")
                probed = self._probed = (time.monotonic(), answer)
            return probed[1].get(name)
        finally:
            self._lock.release()

    def revoked(self, device_id: str) -> None:
        self.ask("revoked", device_id)


class ApiProcesses:
    """The core's side: starts `count` API processes on `sock`, answers their questions, stops them."""

    def __init__(self, count: int, settings: Any, sock: socket.socket, mqtt: tuple[str, str, tuple[Any, Any]],
                 probes: dict[str, Callable[[], Any]], on_revoked: Callable[[str], None]) -> None:  # fmt: skip
        """mqtt: the broker's URL, its protocol and the (user, password) to connect with."""
        self._args = (settings, sock, *mqtt)
        self.count, self._probes, self._on_revoked = count, probes, on_revoked
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self._sock = sock  # kept open (never accepted on here) to start a replacement on
        self.restarts = 0
        self.answered = 0  # questions of the API processes answered (one serving thread per process)
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="edgefleet-api-supervisor", daemon=True)

    def start(self) -> ApiProcesses:
        started = [self._spawn(index) for index in range(self.count)]
        for index, (process, pipe) in enumerate(started):
            self.processes.append(process)
            self._await_ready(index, pipe)
        self._supervisor.start()
        return self

    def _spawn(self, index: int) -> tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]:
        context = multiprocessing.get_context("spawn")  # nothing of the core (threads, connections) is copied
        parent, child = context.Pipe()
        process = context.Process(target=_main, args=(index, *self._args, child), name=f"edgefleet-api-{index}",
                                  daemon=True)  # fmt: skip
        process.start()
        child.close()
        return process, parent

    def _await_ready(self, index: int, pipe: multiprocessing.connection.Connection) -> None:
        if not pipe.poll(START_TIMEOUT_S):
            raise ConfigurationError(f"console API process {index} did not start within {START_TIMEOUT_S:g} s")
        try:
            ready = pipe.recv()
        except EOFError:
            ready = "it exited"
        if ready != "ready":
            raise ConfigurationError(f"console API process {index} did not start: {ready}")
        threading.Thread(target=self._serve, args=(pipe,), name=f"edgefleet-api-link-{index}", daemon=True).start()

    def _supervise(self) -> None:
        """An API process that ends while the cloud runs (killed, out of memory, a crash in a library) is
        started again on the same socket, at most once per RESTART_EVERY_S each: the cloud's core (ingestion,
        the controller) never stopped, and without this `edgefleet up` would run on with no console API."""
        last_start = [0.0] * self.count
        while not self._stopping.wait(SUPERVISE_EVERY_S):
            for index, process in enumerate(list(self.processes)):
                if process.is_alive() or self._stopping.is_set():
                    continue
                wait = last_start[index] + RESTART_EVERY_S - time.monotonic()
                if wait > 0:
                    continue
                log.warning("console API process %d ended (exit code %s); starting it again", index,
                            process.exitcode)  # fmt: skip
                last_start[index] = time.monotonic()
                try:
                    replacement, pipe = self._spawn(index)
                    self.processes[index] = replacement
                    self._await_ready(index, pipe)
                    self.restarts += 1
                except Exception as exc:  # noqa: BLE001 - tried again after RESTART_EVERY_S
                    log.error("console API process %d did not start again: %s", index, exc)

    def _serve(self, pipe: multiprocessing.connection.Connection) -> None:
        while True:
            try:
                kind, argument = pipe.recv()
            except (EOFError, OSError):  # that API process ended
                return
            try:
                if kind == "probes":
                    answer: Any = {name: self._probe(name) for name in argument}
                elif kind == "revoked":
                    self._on_revoked(argument)
                    answer = None
                else:
                    answer = {"error": f"unknown question {kind!r}"}
            except Exception as exc:  # noqa: BLE001 - the API process shows it; the link keeps serving
                answer = {"error": str(exc)}
            try:
                pipe.send(answer)
            except (BrokenPipeError, OSError):
                return
            self.answered += 1

    def _probe(self, name: str) -> Any:
        """A probe's answer, or what it raised as {"error": ...} (as /healthz shows a failed probe)."""
        probe = self._probes.get(name)
        try:
            return probe() if probe is not None else None
        except Exception as exc:  # noqa: BLE001 - one failing probe does not hide the others
            return {"error": str(exc)}

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.processes)

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(START_TIMEOUT_S)
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for process in self.processes:
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join(5)
        self.processes = []
        self._sock.close()


def _main(index: int, settings: Any, sock: socket.socket, mqtt_url: str, mqtt_protocol: str,
          mqtt_credentials: tuple[str | None, str | None],
          pipe: multiprocessing.connection.Connection) -> None:  # fmt: skip
    """An API process: a CloudService in the api role, until SIGTERM or until the core is gone."""
    from cloud.heap import freeze_startup_heap
    from cloud.service import CloudService

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the core stops us in order
    core = os.getppid()
    role = ApiRole(index=index, sock=sock, mqtt_url=mqtt_url, mqtt_protocol=mqtt_protocol,
                   mqtt_credentials=mqtt_credentials, core=CoreLink(pipe))  # fmt: skip
    with role.core.held():  # a request's question to the core waits until the core has heard "ready"
        try:
            service = CloudService(settings, api_role=role).start()
            freeze_startup_heap()  # as the core does (cloud.heap)
        except BaseException as exc:
            pipe.send(f"{exc.__class__.__name__}: {exc}")
            raise
        pipe.send("ready")
    try:
        while not stopping.wait(1.0):
            if os.getppid() != core:  # the core died without stopping us: nobody is left to ask
                log.warning("console API process %d: the cloud's core process is gone; stopping", index)
                break
    finally:
        service.stop()
