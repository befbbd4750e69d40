"""What drives an agent: a runner runs the agent's steps (messages, timers, job results) one at a time and
in order, and its slow jobs (read + verify, load, self-test) apart from them, also one at a time.

* `ThreadRunner`: a device's own. One thread for the steps, woken by a queue or by the tick timeout, and
  one thread for the jobs: the agent as it has always run.
* `LoopRunner`: many agents in one process (the simulator). Steps are callbacks on one shared asyncio
  event loop, the tick is a loop timer, and the jobs go to a small thread pool every agent on the loop
  shares, or run as loop callbacks of their own (`OnLoop`); still one job at a time per agent. Nothing
  here is per agent but a few objects, so thousands of agents cost no threads. Its timer fires when the
  step said its timers are next due, not every tick: an idle agent (nothing downloading, no probation, no
  telemetry window to close yet) costs the loop nothing until then.

Both take items posted before `start` (the agent queues its announcement first) and run them first.
`stop` runs `on_stop` as the last step (the agent's goodbye); `halt` ends without it, as a crash would.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from edge_agent.update.jobs import JobRunner

if TYPE_CHECKING:  # asyncio (and the ssl it pulls in) only where a LoopRunner runs: a device never does
    import asyncio

__all__ = ["AgentRunner", "Cork", "Item", "JobPool", "LoopRunner", "OnLoop", "Step", "ThreadRunner"]

log = logging.getLogger(__name__)

Item = Callable[[], None]
# step(None) is a tick: housekeeping only. A step returns in how many seconds its timers are next due
# (None: not known, at the next tick); LoopRunner ticks then, ThreadRunner every tick regardless.
Step = Callable[["Item | None"], "float | None"]

JOIN_TIMEOUT_S = 10.0
LONGEST_TICK_S = 30.0  # LoopRunner: a tick at least this often, whatever the step said (a clock not the loop's)
_STOP = object()


class Cork(Protocol):
    """Holds back what one step writes, to send it at once when the step ends (`LoopRunner`'s `cork`)."""

    def cork(self) -> None: ...

    def uncork(self) -> None: ...


class AgentRunner(Protocol):
    def start(self, step: Step, tick_s: float, on_stop: Item) -> None:
        """Begin running step(item) for every posted item, and step(None) every tick_s, or (LoopRunner) when
        the last step said its timers are next due."""

    def post(self, item: Item) -> None:
        """Queue a step (from any thread)."""

    def submit(self, job: Item) -> None:
        """Queue a slow job (from any thread); jobs run in order, one at a time, off the steps."""

    def stop(self) -> None:
        """Run on_stop as the last step, then end; waits for it (unless called from a step)."""

    def halt(self) -> None:
        """End at once without on_stop (a simulated crash); queued steps and jobs are dropped."""


class ThreadRunner:
    """The steps on one named daemon thread, the jobs on another."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._jobs = JobRunner(f"{name}-jobs")
        self._halted = False

    def start(self, step: Step, tick_s: float, on_stop: Item) -> None:
        self._thread = threading.Thread(target=self._run, args=(step, tick_s, on_stop), name=self._name, daemon=True)
        self._thread.start()
        self._jobs.start()

    def post(self, item: Item) -> None:
        self._queue.put(item)

    def submit(self, job: Item) -> None:
        self._jobs.submit(job)

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            if threading.current_thread() is not self._thread:
                self._thread.join(JOIN_TIMEOUT_S)
        self._jobs.stop(JOIN_TIMEOUT_S)

    def halt(self) -> None:
        self._halted = True
        self.stop()

    def _run(self, step: Step, tick_s: float, on_stop: Item) -> None:
        while True:
            try:
                item = self._queue.get(timeout=tick_s)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            step(item)  # type: ignore[arg-type]
        if not self._halted:
            on_stop()


class JobPool(Protocol):
    """Where a LoopRunner's jobs run: a concurrent.futures.Executor, or `OnLoop`."""

    def submit(self, fn: Item, /) -> object: ...


class OnLoop:
    """A JobPool that runs each job as a callback of the loop itself, after the step that queued it: no
    thread, no hand-off. For agents whose jobs are short (a simulator's: its loads and self-tests are
    shared cache hits, its verify a sha256 of ~100 KB); a job blocks every agent on the loop while it runs.
    A 1,000-device rollout spent ~15% of its workers' samples handing jobs to a pool and back."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def submit(self, fn: Item, /) -> None:
        import asyncio  # already loaded: this pool's loop is an asyncio loop

        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._loop.call_soon(fn)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to end (as Executor.shutdown): jobs not run yet are dropped with the loop."""


class LoopRunner:
    """Steps as callbacks on `loop` (running in some thread), jobs on the shared `jobs` pool (or `OnLoop`).

    cork: corked around every step (the simulator's MQTT client, so that what a step publishes leaves in one
    socket write when it ends, not one per packet: nothing waits for a later loop turn)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, jobs: JobPool, cork: Cork | None = None) -> None:
        self._loop = loop
        self._pool = jobs
        self._cork = cork
        self._lock = threading.Lock()
        self._early: list[Item] = []  # posted before start
        self._step: Step | None = None
        self._on_stop: Item = lambda: None
        self._tick_s = 1.0
        self._timer: asyncio.TimerHandle | None = None
        self._ended = False  # no more steps or jobs accepted
        self._finished = False  # the last step ran: later callbacks do nothing
        self._jobs: collections.deque[Item] = collections.deque()
        self._job_running = False

    def start(self, step: Step, tick_s: float, on_stop: Item) -> None:
        with self._lock:
            self._step, self._tick_s, self._on_stop = step, tick_s, on_stop
            early, self._early = self._early, []
        for item in early:
            self._schedule(self._run, item)
        self._schedule(self._run, None)  # the first tick, which arms the next

    def post(self, item: Item) -> None:
        with self._lock:
            if self._ended:
                return  # as on a stopped ThreadRunner: nobody runs it
            if self._step is None:
                self._early.append(item)
                return
        self._schedule(self._run, item)

    def submit(self, job: Item) -> None:
        with self._lock:
            if self._ended:
                return
            self._jobs.append(job)
            if self._job_running:
                return
            self._job_running = True
        self._pool.submit(self._drain_jobs)

    def stop(self) -> None:
        self._end(say_goodbye=True)

    def halt(self) -> None:
        self._end(say_goodbye=False)

    # -- on the loop ---------------------------------------------------------------------------------

    def _run(self, item: Item | None) -> None:
        if self._finished or self._step is None:
            return
        if self._cork is None:
            due_in_s = self._step(item)
        else:
            self._cork.cork()
            try:
                due_in_s = self._step(item)
            finally:
                self._cork.uncork()
        self._arm(self._tick_s if due_in_s is None else min(due_in_s, LONGEST_TICK_S))

    def _arm(self, delay_s: float) -> None:
        """The tick at delay_s from now, unless one is armed for then or earlier: that one steps first, and
        its step says when the next is due. A timer per step would cost the loop as much as the steps."""
        if self._ended:
            return
        when = self._loop.time() + delay_s
        timer = self._timer
        if timer is not None:
            if timer.when() <= when + 0.001:
                return
            timer.cancel()
        self._timer = self._loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None  # the armed timer is this one: _arm cancels any it replaces
        if self._ended:
            return
        self._run(None)

    def _finish(self, say_goodbye: bool) -> None:
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if say_goodbye and self._step is not None:
            try:
                self._on_stop()
            except Exception:  # noqa: BLE001 - stopping must finish whatever the goodbye does
                log.exception("runner: the last step failed")

    # -- off the loop ---------------------------------------------------------------------------------

    def _end(self, say_goodbye: bool) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self._jobs.clear()
            if not say_goodbye:
                self._finished = True  # a crash: what is still queued never runs
        if self._on_loop():
            self._finish(say_goodbye)
            return
        import concurrent.futures

        done = concurrent.futures.Future[None]()

        def finish() -> None:
            try:
                self._finish(say_goodbye)
            finally:
                done.set_result(None)

        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(finish)
        try:
            done.result(JOIN_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            log.warning("runner: the loop did not run the last step within %ss", JOIN_TIMEOUT_S)

    def _on_loop(self) -> bool:
        import asyncio  # already loaded: this runner's loop is an asyncio loop

        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _schedule(self, fn: Callable[..., None], *args: object) -> None:
        if self._on_loop():
            self._loop.call_soon(fn, *args)  # no wake-up write needed: the loop is running this very code
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _drain_jobs(self) -> None:
        while True:
            with self._lock:
                if not self._jobs or self._ended:
                    self._job_running = False
                    return
                job = self._jobs.popleft()
            try:
                job()
            except Exception:  # noqa: BLE001 - a job's bug must not stop later jobs
                log.exception("background job failed")
