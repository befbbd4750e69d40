"""The alert evaluation in a process of its own, started and supervised by the cloud's core.

Why: the evaluation (alerts.evaluate: every recent model version's fleet drift report, the detector over
hundreds of thousands of samples, the field accuracy) is pure Python and numpy on many small arrays; on the
core's interpreter it held the lock for seconds every alert tick (py-spy: 5.8 s of 20 s sampled), so
ingestion, the controller and the answers the core gives the API processes (/healthz, /metrics) waited
behind it. Here the core only sends (policy, now) down a pipe and waits on it (which holds no lock); the
child reads the database on its own engine and sends the alerts and sampler hints back. The child runs
niced (NICE): on a small machine the console API and ingestion get the CPU first, and the alerts, a
once-a-minute verdict, take what is left.

What changes state stays in the core's AlertMonitor: recording the transitions, the webhook, the sampler
hints (they need the core's MQTT connection and the director's key), and the counters /metrics shows.

A child that ends (killed, out of memory, a crash in a library) fails that tick, and the next tick starts a
new one (`restarts` counts them); one that does not answer within `timeout_s` is killed and its tick fails.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from typing import Any

from cloud.monitoring import alerts
from cloud.monitoring.evaluation import Evaluation, evaluate

log = logging.getLogger(__name__)

# added to the child's niceness: the API process and ingestion first. Not more: at nice 10 on a machine at
# load 25-30 the child got ~3 % of a core and a 10 s evaluation took minutes (benchmarks/alert_eval.py)
NICE = 5
TIMEOUT_S = 1_800.0  # a hung child, not a slow one: a starved evaluation must still be able to finish


class AlertProcess:
    """The core's side: `evaluate` asks the child (started on the first call, and again after one ended)."""

    def __init__(self, database_url: str, *, timeout_s: float = TIMEOUT_S, nice: int = NICE) -> None:
        self.database_url, self.timeout_s, self.nice = database_url, timeout_s, nice
        self.process: multiprocessing.process.BaseProcess | None = None
        self._pipe: multiprocessing.connection.Connection | None = None
        self._lock = threading.Lock()  # one question at a time; close() takes it too
        self.starts = 0
        self._closed = False

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    def start(self) -> AlertProcess:
        """Start the child now (its imports overlap the core's start) rather than on the first tick."""
        with self._lock:
            self._ensure_started()
        return self

    def _ensure_started(self) -> multiprocessing.connection.Connection:
        if self._closed:
            raise RuntimeError("the alert process was closed")
        if self.process is not None and self.process.is_alive() and self._pipe is not None:
            return self._pipe
        if self.process is not None:
            log.warning("alert process ended (exit code %s); starting it again", self.process.exitcode)
            self._discard()
        context = multiprocessing.get_context("spawn")  # nothing of the core (threads, connections) is copied
        parent, child = context.Pipe()
        process = context.Process(target=_main, args=(self.database_url, self.nice, child), name="edgefleet-alerts",
                                  daemon=True)  # fmt: skip
        process.start()
        child.close()
        self.process, self._pipe = process, parent
        self.starts += 1
        return parent

    def evaluate(self, policy: alerts.AlertPolicy, now_ms: int, with_hints: bool) -> Evaluation:
        with self._lock:
            pipe = self._ensure_started()
            try:
                pipe.send((policy, now_ms, with_hints))
                if not pipe.poll(self.timeout_s):
                    self._discard()
                    raise TimeoutError(f"the alert process did not answer within {self.timeout_s:g} s; killed it")
                answer = pipe.recv()
            except (EOFError, OSError) as exc:  # it ended mid-question: the next tick starts another
                self._discard()
                raise RuntimeError(f"the alert process ended during an evaluation ({exc.__class__.__name__})") from None
        if isinstance(answer, Evaluation):
            return answer
        raise RuntimeError(f"the alert evaluation failed in its process: {answer}")

    def _discard(self) -> None:
        process, pipe = self.process, self._pipe
        self.process = self._pipe = None
        if pipe is not None:
            pipe.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(10)

    def close(self) -> None:
        """Stop the child; an evaluation waiting on it fails at once (its pipe ends)."""
        self._closed = True
        process = self.process
        if process is not None and process.is_alive():
            process.kill()  # it only reads: nothing to finish
        with self._lock:
            self._discard()


def _main(database_url: str, nice: int, pipe: multiprocessing.connection.Connection) -> None:
    """The child: answer (policy, now_ms, with_hints) with an Evaluation until the pipe ends."""
    import signal

    from cloud.db.engine import make_engine

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the core stops us
    if nice:
        os.nice(nice)
    engine = make_engine(database_url)
    while True:
        try:
            policy, now_ms, with_hints = pipe.recv()
        except (EOFError, OSError):  # the core closed its end or is gone
            return
        answer: Any
        try:
            answer = evaluate(engine, policy, now_ms, with_hints)
        except Exception as exc:  # noqa: BLE001 - the core logs it as a failed tick; we serve the next one
            log.exception("alert evaluation failed")
            answer = f"{exc.__class__.__name__}: {exc}"
        try:
            pipe.send(answer)
        except (BrokenPipeError, OSError):
            return
