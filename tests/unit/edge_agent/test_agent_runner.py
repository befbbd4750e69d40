"""The runners that drive an agent: the device's two threads and the simulator's shared event loop keep
the same promises (steps in order, early posts first, ticks, jobs in order and apart from the steps, a
goodbye on stop and none on halt), and the real agent updates itself on either."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, make_release, model_bytes

from edge_agent.runner import AgentRunner, LoopRunner, OnLoop, ThreadRunner
from protocols.topics import Channel
from protocols.v1 import messages_pb2 as pb
from simulator.loop_thread import LoopThread


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    with LoopThread() as loop:
        yield loop


@pytest.fixture
def job_pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.fixture(params=["thread", "loop", "loop-jobs-on-loop"])
def new_runner(request: pytest.FixtureRequest) -> Callable[[], AgentRunner]:
    if request.param == "thread":
        return lambda: ThreadRunner("test-runner")
    loop = request.getfixturevalue("loop_thread")
    if request.param == "loop-jobs-on-loop":  # the simulator's: jobs are loop callbacks of their own
        return lambda: LoopRunner(loop.loop, OnLoop(loop.loop))
    pool = request.getfixturevalue("job_pool")
    return lambda: LoopRunner(loop.loop, pool)


def _wait(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_steps_run_in_order_with_early_posts_first_and_ticks_between(new_runner) -> None:  # type: ignore[no-untyped-def]
    runner = new_runner()
    seen: list[object] = []
    step_threads: set[str] = set()

    def step(item) -> None:  # type: ignore[no-untyped-def]
        step_threads.add(threading.current_thread().name)
        seen.append("tick" if item is None else item())

    runner.post(lambda: "early")
    runner.start(step, 0.01, lambda: seen.append("goodbye"))
    for n in range(5):
        runner.post(lambda n=n: n)
    assert _wait(lambda: seen.count("tick") >= 3)  # idle: ticks keep coming
    runner.stop()
    items = [s for s in seen if s != "tick"]
    assert items == ["early", 0, 1, 2, 3, 4, "goodbye"]
    assert len(step_threads) == 1
    runner.post(lambda: "late")  # after stop: nobody runs it, nothing raises
    time.sleep(0.05)
    assert "late" not in seen


def test_jobs_run_in_order_one_at_a_time_off_the_steps(new_runner) -> None:  # type: ignore[no-untyped-def]
    runner = new_runner()
    step_thread: list[str] = []
    in_step, in_a_step = [False], []

    def step(_item: object) -> None:
        in_step[0] = True
        step_thread.append(threading.current_thread().name)
        in_step[0] = False

    runner.start(step, 0.05, lambda: None)
    running, done, overlaps = [0], [], []
    lock = threading.Lock()

    def job(n: int) -> None:
        in_a_step.append(in_step[0])
        with lock:
            running[0] += 1
            overlaps.append(running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
            done.append((n, threading.current_thread().name))

    for n in range(6):
        runner.submit(lambda n=n: job(n))
    runner.submit(lambda: 1 / 0)  # a failing job is logged, later ones still run
    runner.submit(lambda: job(6))
    assert _wait(lambda: len(done) == 7)
    assert [n for n, _ in done] == list(range(7))
    assert max(overlaps) == 1
    if isinstance(runner, LoopRunner) and isinstance(runner._pool, OnLoop):
        assert {name for _, name in done} == set(step_thread)  # the loop's thread, each job a callback of its own
    else:
        assert not {name for _, name in done} & set(step_thread)
    assert not any(in_a_step)
    runner.stop()


def test_halt_ends_without_the_goodbye_and_drops_what_is_queued(new_runner) -> None:  # type: ignore[no-untyped-def]
    runner = new_runner()
    seen: list[object] = []
    gate = threading.Event()
    runner.start(lambda item: seen.append(item() if item else None), 0.01, lambda: seen.append("goodbye"))
    runner.post(lambda: gate.wait(5))  # holds the step context while more queue up
    runner.post(lambda: "queued")
    halting = threading.Thread(target=runner.halt)
    halting.start()
    time.sleep(0.05)
    gate.set()
    halting.join(5)
    time.sleep(0.05)
    assert "goodbye" not in seen
    if isinstance(runner, LoopRunner):  # the loop drops what is queued; the thread's queue runs up to the halt
        assert "queued" not in seen


@pytest.mark.parametrize("jobs_on_loop", [False, True])
def test_the_real_agent_updates_itself_on_a_shared_loop(
    make_agent: MakeAgent,
    cloud: FakeCloud,
    keys: Keys,
    loop_thread: LoopThread,
    job_pool: ThreadPoolExecutor,
    jobs_on_loop: bool,
) -> None:
    jobs = OnLoop(loop_thread.loop) if jobs_on_loop else job_pool
    agents = [make_agent(f"dev-{n}", runner=LoopRunner(loop_thread.loop, jobs)) for n in range(3)]
    release = make_release(keys.signer, "v1", 1, data=model_bytes("v1", pad=100))
    for agent in agents:
        cloud.deploy(agent.device_id, release, generation=1)
    for agent in agents:
        assert agent.wait_for(lambda s: is_state(s, pb.UPDATE_STATE_ACTIVE, 1), 5), agent.status()
        assert str(agent.predict([0.9, 0.1, 0.1]).labels[0]) == "v1:pos"
    assert cloud.event_kinds("dev-0")[-1] == "ACTIVATED"
    agents[0].stop()  # the goodbye runs on the loop: an offline presence
    assert not pb.Presence.FromString(cloud.retained("dev-0", Channel.PRESENCE) or b"").online


def test_a_device_agent_does_not_import_asyncio() -> None:
    """asyncio (about 30 modules, and ssl with it) belongs to LoopRunner, the simulator's: a device's idle
    agent leaves it out. A regression shows here rather than as a megabyte or two in benchmarks/agent.py."""
    import subprocess
    import sys

    code = (
        "import sys; from edge_agent.agent import Agent; from edge_agent.connect import transport_for;"
        "print(sorted(m for m in ('asyncio', 'concurrent.futures') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_loop_runner_ticks_when_the_step_says_its_timers_are_due(loop_thread: LoopThread) -> None:
    """A step returns in how many seconds its timers are next due: the loop ticks then, not every tick_s (an
    idle simulated agent costs its loop nothing between), and sooner when a later step says so."""
    runner = LoopRunner(loop_thread.loop, OnLoop(loop_thread.loop))
    ticks: list[float] = []
    due_in = [30.0]

    def step(item) -> float:  # type: ignore[no-untyped-def]
        if item is None:
            ticks.append(time.monotonic())
        else:
            item()
        return due_in[0]

    runner.start(step, 0.01, lambda: None)
    time.sleep(0.3)
    assert len(ticks) == 1  # the first tick only: every 10 ms would be ~30 by now
    due_in[0] = 0.05
    posted = time.monotonic()
    runner.post(lambda: None)  # its step says 50 ms: the armed 30 s tick is brought forward
    assert _wait(lambda: len(ticks) >= 4, timeout_s=2)
    assert ticks[1] - posted >= 0.04
    runner.stop()


def test_a_loop_runner_ticks_every_tick_when_the_step_does_not_say(loop_thread: LoopThread) -> None:
    runner = LoopRunner(loop_thread.loop, OnLoop(loop_thread.loop))
    ticks: list[None] = []
    runner.start(lambda item: ticks.append(None) if item is None else None, 0.01, lambda: None)
    assert _wait(lambda: len(ticks) >= 5, timeout_s=2)
    runner.stop()


class _CountingLoopRunner(LoopRunner):
    """A LoopRunner counting the agent's steps on ticks (what an idle agent costs its loop)."""

    ticks = 0

    def start(self, step, tick_s, on_stop) -> None:  # type: ignore[no-untyped-def]
        def counted(item):  # type: ignore[no-untyped-def]
            if item is None:
                self.ticks += 1
            return step(item)

        super().start(counted, tick_s, on_stop)


def test_an_idle_agent_on_a_loop_is_not_stepped_but_still_closes_its_windows_and_downloads(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys, loop_thread: LoopThread
) -> None:
    """Issue 10: a simulated fleet's idle agents each stepped every tick (a loop timer and a step each, ~40 %
    of the workers' CPU at 10,000 devices) though nothing was due. On a LoopRunner an idle agent now steps
    when its timers are due: a telemetry window's end, what the outbox holds; a download still ticks (its
    chunk deadlines) and a window still closes on time."""
    runner = _CountingLoopRunner(loop_thread.loop, OnLoop(loop_thread.loop))
    agent = make_agent(runner=runner, telemetry_interval_s=0.6, chunk_timeout_s=0.3)  # ticks every 10 ms
    assert agent.wait_for(lambda s: s.update_state == pb.UPDATE_STATE_IDLE, 5)
    time.sleep(0.1)
    idle_from = runner.ticks
    time.sleep(0.5)
    assert runner.ticks - idle_from <= 2  # a window's end at most (none to send: no model); every 10 ms: ~50

    cloud.drop_once.add(1)  # a lost chunk: only a tick in DOWNLOADING asks for it again, after chunk_timeout_s
    cloud.deploy(agent.device_id, make_release(keys.signer, "v1", 1), generation=1)
    assert agent.wait_for(lambda s: is_state(s, pb.UPDATE_STATE_ACTIVE, 1), 5), agent.status()
    assert cloud.chunks_requested().count(1) == 2

    windows = len(cloud.payloads(agent.device_id, Channel.TELEMETRY))
    active_from = runner.ticks
    assert _wait(lambda: len(cloud.payloads(agent.device_id, Channel.TELEMETRY)) >= windows + 3, timeout_s=5)
    assert runner.ticks - active_from <= 6  # the windows' ends (and a held report's), not a tick every 10 ms
