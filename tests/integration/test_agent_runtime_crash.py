"""A runtime that segfaults cannot brick the device (the Raspberry Pi report): the real agent runs as a
subprocess (`python -m edge_agent.cli run`) over a real broker, with a fake `onnxruntime` package first on
its path whose InferenceSession kills the process with SIGSEGV. The FakeCloud deploys real compiled
models (TFLite works, ONNX "crashes").

- with the journal's load counter only (`isolate_loads = false`), the agent dies, is restarted as systemd
  would, comes back on its old model, tells the cloud `runtime_crashed`, and installs the release's TFLite
  artifact instead;
- with the child-process check (the default) only the child dies: the agent never exits;
- a runtime whose import segfaults is not advertised at all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.fake_cloud import FakeCloud
from support.releases import Keys, Release, make_keys

from protocols.codes import ErrorCode
from protocols.signing import Signer
from protocols.topics import Channel
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "pi-crash-1"
# A real fault (reading address 0), as a broken wheel makes: it kills the process in the thread that loads,
# before the load returns. os.kill(os.getpid(), SIGSEGV) did not: a kill goes to the process (the kernel
# hands it to the main thread), so the loading thread ran on, saw a session without get_inputs, and the
# agent could journal a plain load_failed for the release before the signal landed; restarted, it then
# (rightly) did nothing for that generation (one CI run in three: FAILED, never v2 on TFLite).
SEGFAULT = "import ctypes\nctypes.string_at(0)\n"
SEGFAULT_ON_LOAD = """
import ctypes
__version__ = "9.9.9-segfaults-on-load"
class ExecutionMode:  # the options the agent sets are all there: only loading a model crashes
    ORT_SEQUENTIAL = 0
class SessionOptions:
    def add_session_config_entry(self, key, value):
        pass
class InferenceSession:
    def __init__(self, *args, **kwargs):
        ctypes.string_at(0)  # what a broken aarch64 wheel did: SIGSEGV in this thread
"""
SEGFAULT_ON_IMPORT = SEGFAULT


@pytest.fixture(scope="module")
def compiled() -> list[Any]:
    """Two different models (their artifacts differ: an artifact already on disk would need no load test)."""
    from sklearn.linear_model import LogisticRegression

    from model_compiler import compile_estimator

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    builds = []
    for column in (2, 3):
        y = (x[:, 0] - x[:, column] > 0).astype(np.int64)
        model = LogisticRegression().fit(x[:200], y[:200])
        builds.append(compile_estimator(model, x[200:], y[200:], target="all", quantize="none"))
    return builds


def _release(keys: Keys, builds: list[Any], sequence: int, runtimes: tuple[str, ...]) -> Release:
    compiled = builds[0] if sequence == 1 else builds[1]
    manifest = pb.Manifest()
    manifest.CopyFrom(compiled.fragment)
    del manifest.artifacts[:]
    manifest.model_id, manifest.version, manifest.sequence = "lr", f"v{sequence}", sequence
    manifest.created_at_ms = int(time.time() * 1000)
    built = [b for r in runtimes for b in compiled.artifacts if b.artifact.runtime == r]
    manifest.artifacts.extend(b.artifact for b in built)
    signer: Signer = keys.signer
    return Release(signer.sign(manifest), manifest, {b.artifact.sha256: b.data for b in built}, keys)


def _fake_runtime(tmp_path: Path, source: str) -> Path:
    package = tmp_path / "fake-site" / "onnxruntime"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(source)
    return package.parent


def _config(tmp_path: Path, broker: Any, keys: Keys, **extra: Any) -> Path:
    values = {
        "device_id": DEVICE,
        "mqtt_url": broker.url,
        "mqtt_protocol": broker.mqtt_protocol,
        "trust_path": str(keys.trust_path),
        "state_dir": str(tmp_path / "state"),
        "grpc_address": "",
        "chunk_timeout_s": 2.0,
        "probation_s": 0.0,
        **extra,
    }
    lines = [
        f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, str) else v}"
        for k, v in values.items()
    ]
    path = tmp_path / "agent.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


class AgentProcess:
    """The agent as systemd runs it: one process at a time, started again whenever it dies."""

    def __init__(self, config: Path, fake_site: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_site), str(ROOT)])}
        self.exits: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                # -X faulthandler: a crash, or the SIGABRT of stacks(), prints every thread's Python stack
                [sys.executable, "-X", "faulthandler", "-m", "edge_agent.cli", "--log-level", "INFO", "run",
                 "--config", str(self.config)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def supervise(self) -> bool:
        """Restart a dead agent (Restart=always); True while it runs."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is None:
            return True
        self.exits.append(code)
        self.start()
        return False

    def stacks(self) -> str:
        """The log, with the running agent's thread stacks at the end: what a stuck agent was waiting on."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _reported(cloud: FakeCloud) -> pb.ReportedState | None:
    payloads = cloud.payloads(DEVICE, Channel.REPORTED)
    return pb.ReportedState.FromString(payloads[-1]) if payloads else None


def _until(agent: AgentProcess, condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        agent.supervise()
        if condition():
            return True
        time.sleep(0.1)
    return False


def _serving(cloud: FakeCloud, version: str, runtime: str) -> bool:
    state = _reported(cloud)
    return (
        state is not None
        and state.update_state == pb.UPDATE_STATE_ACTIVE
        and state.active_model.version == version
        and state.active_model.runtime == runtime
    )


def _crash_errors(cloud: FakeCloud) -> list[pb.LifecycleEvent]:
    return [e for e in cloud.events(DEVICE) if e.error.code == ErrorCode.RUNTIME_CRASHED]


def test_the_fake_runtime_dies_in_the_loading_thread_before_the_load_returns(tmp_path: Path) -> None:
    """What the tests below rely on: nothing after the load runs. With SIGSEGV blocked, a kill would stay
    pending and the caller would go on (as it did, racing the main thread, with os.kill); a fault cannot wait."""
    site = _fake_runtime(tmp_path, SEGFAULT_ON_LOAD)
    script = (
        "import signal, onnxruntime\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGSEGV})\n"
        "onnxruntime.InferenceSession(b'')\n"
        "print('the load returned')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, timeout=60
    )
    assert done.returncode == -signal.SIGSEGV, (done.returncode, done.stdout, done.stderr)
    assert b"the load returned" not in done.stdout


@pytest.fixture
def setup(tmp_path: Path, mqtt_broker: Any, make_transport: Any) -> tuple[Keys, FakeCloud]:
    keys = make_keys(tmp_path / "keys")
    transport, _ = make_transport()
    return keys, FakeCloud(transport, chunk_size=4096, start=False)


def test_a_segfaulting_runtime_kills_the_agent_which_comes_back_on_its_old_model_and_falls_back(
    tmp_path: Path, mqtt_broker: Any, setup: tuple[Keys, FakeCloud], compiled: list[Any]
) -> None:
    keys, cloud = setup
    config = _config(tmp_path, mqtt_broker, keys, isolate_loads=False)  # the journal's counter alone
    agent = AgentProcess(config, _fake_runtime(tmp_path, SEGFAULT_ON_LOAD), tmp_path / "agent.log")
    cloud.deploy(DEVICE, _release(keys, compiled, 1, ("tflite",)), generation=1)
    agent.start()
    try:
        assert _until(agent, lambda: _serving(cloud, "v1", "tflite"), 60), agent.log.read_text()
        assert agent.exits == []
        assert list(_reported(cloud).runtimes) == ["onnxruntime", "tflite"]  # type: ignore[union-attr]  # it imports

        cloud.deploy(DEVICE, _release(keys, compiled, 2, ("onnxruntime", "tflite")), generation=2)
        # (one CI run in three saw the restarted agent connect and then do nothing for 120 s: stacks() says where)
        assert _until(agent, lambda: _serving(cloud, "v2", "tflite"), 120), agent.stacks()
    finally:
        agent.stop()
    assert -11 in agent.exits, agent.exits  # it did die of SIGSEGV, and was restarted
    started = [e for e in cloud.events(DEVICE) if e.kind == pb.EVENT_KIND_STARTED]
    assert any(e.model.version == "v1" for e in started[1:])  # back on its old model after the crash
    (error,) = _crash_errors(cloud)
    assert "onnxruntime" in error.error.message and "trying tflite" in error.error.message
    final = _reported(cloud)
    assert final is not None and list(final.runtimes) == ["tflite"]  # the crashed runtime is not offered
    assert final.facts.architecture and final.facts.python_version and final.facts.memory_total_bytes > 0


def test_with_the_child_check_only_the_child_dies_and_a_release_without_fallback_fails_with_the_reason(
    tmp_path: Path, mqtt_broker: Any, setup: tuple[Keys, FakeCloud], compiled: list[Any]
) -> None:
    keys, cloud = setup
    agent = AgentProcess(
        _config(tmp_path, mqtt_broker, keys), _fake_runtime(tmp_path, SEGFAULT_ON_LOAD), tmp_path / "agent.log"
    )
    cloud.deploy(DEVICE, _release(keys, compiled, 1, ("tflite",)), generation=1)
    agent.start()
    try:
        assert _until(agent, lambda: _serving(cloud, "v1", "tflite"), 60), agent.log.read_text()
        cloud.deploy(DEVICE, _release(keys, compiled, 2, ("onnxruntime",)), generation=2)

        def failed() -> bool:
            state = _reported(cloud)
            return state is not None and state.update_state == pb.UPDATE_STATE_FAILED and state.desired_generation == 2

        assert _until(agent, failed, 60), agent.log.read_text()
        state = _reported(cloud)
        assert state is not None and state.last_error.code == ErrorCode.RUNTIME_CRASHED
        assert "SIGSEGV" in state.last_error.message
        assert state.active_model.version == "v1"  # still serving the old model
        assert _crash_errors(cloud)
        # a later release with both artifacts goes straight to the one that works
        cloud.deploy(DEVICE, _release(keys, compiled, 3, ("onnxruntime", "tflite")), generation=3)
        assert _until(agent, lambda: _serving(cloud, "v3", "tflite"), 60), agent.log.read_text()
    finally:
        agent.stop()
    assert agent.exits == []  # the agent itself never died


def test_a_runtime_whose_import_segfaults_is_not_advertised(
    tmp_path: Path, mqtt_broker: Any, setup: tuple[Keys, FakeCloud], compiled: list[Any]
) -> None:
    keys, cloud = setup
    agent = AgentProcess(
        _config(tmp_path, mqtt_broker, keys), _fake_runtime(tmp_path, SEGFAULT_ON_IMPORT), tmp_path / "agent.log"
    )
    cloud.deploy(DEVICE, _release(keys, compiled, 1, ("onnxruntime", "tflite")), generation=1)
    agent.start()
    try:
        assert _until(agent, lambda: _serving(cloud, "v1", "tflite"), 60), agent.log.read_text()
    finally:
        agent.stop()
    assert agent.exits == []
    state = _reported(cloud)
    assert state is not None and list(state.runtimes) == ["tflite"]
    assert [r.name for r in state.facts.runtimes] == ["tflite"] and state.facts.runtimes[0].version
    assert not _crash_errors(cloud)


def test_an_active_model_whose_runtime_crashes_at_restore_is_given_up_and_an_upgrade_lifts_the_ban(
    tmp_path: Path, mqtt_broker: Any, setup: tuple[Keys, FakeCloud], compiled: list[Any]
) -> None:
    """The ALREADY-active model crashes while it is restored at start (here: the runtime was swapped for a
    broken build under the agent); after two such deaths the agent comes back with no model and says why.
    Then the runtime changes version (the fix): the mark is cleared and the runtime is offered and used."""
    keys, cloud = setup
    config = _config(tmp_path, mqtt_broker, keys)
    healthy = tmp_path / "no-fake"  # nothing shadows the real onnxruntime
    healthy.mkdir()
    agent = AgentProcess(config, healthy, tmp_path / "agent.log")
    cloud.deploy(DEVICE, _release(keys, compiled, 1, ("onnxruntime",)), generation=1)
    agent.start()
    try:
        assert _until(agent, lambda: _serving(cloud, "v1", "onnxruntime"), 60), agent.log.read_text()
    finally:
        agent.stop()

    broken = AgentProcess(config, _fake_runtime(tmp_path, SEGFAULT_ON_LOAD), tmp_path / "agent.log")
    broken.start()
    try:
        assert _until(broken, lambda: bool(_crash_errors(cloud)), 120), broken.log.read_text()
        time.sleep(1.0)  # it stays up now: no crash loop
        assert broken.supervise(), broken.exits
    finally:
        broken.stop()
    assert broken.exits.count(-11) == 2, broken.exits  # MAX_LOAD_ATTEMPTS deaths, then it gave the model up
    (error,) = _crash_errors(cloud)
    assert "onnxruntime" in error.error.message and "at start" in error.error.message
    state = _reported(cloud)
    assert state is not None and not state.HasField("active_model") and list(state.runtimes) == ["tflite"]

    fixed = AgentProcess(config, healthy, tmp_path / "agent.log")  # onnxruntime's version changed back
    fixed.start()
    try:
        assert _until(fixed, lambda: "onnxruntime" in (_reported(cloud) or pb.ReportedState()).runtimes, 60)
        cloud.deploy(DEVICE, _release(keys, compiled, 2, ("onnxruntime",)), generation=2)
        assert _until(fixed, lambda: _serving(cloud, "v2", "onnxruntime"), 60), fixed.log.read_text()
    finally:
        fixed.stop()
    assert fixed.exits == []
