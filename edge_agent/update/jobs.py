"""The slow steps of an update (read + verify, load, self-test), run off the agent's message thread.

Each takes the updater's action and returns the event that reports its result; none raises.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from edge_agent.errors import RuntimeCrashedError, StoreError, error_code
from edge_agent.store import ModelStore
from edge_agent.types import LoadModelFn, PrecheckFn, SelfTestFn
from edge_agent.update.actions import LoadModel, RunSelfTest, VerifyArtifact
from edge_agent.update.events import (
    ArtifactRejected,
    ArtifactVerified,
    Event,
    LoadCrashed,
    LoadFailed,
    ModelLoaded,
    SelfTestFailed,
    SelfTestPassed,
)
from protocols import trust
from protocols.codes import ErrorCode

log = logging.getLogger(__name__)


def verify_artifact(store: ModelStore, action: VerifyArtifact) -> Event:
    try:
        sha256 = action.artifact.sha256
        data = store.read_download(sha256) if action.downloaded else store.read_model(sha256)
        trust.verify_artifact(action.artifact, data)
    except (trust.VerificationError, StoreError) as exc:
        return ArtifactRejected(action.attempt, exc.code, str(exc))
    return ArtifactVerified(action.attempt, data)


def load_model(load: LoadModelFn, action: LoadModel, precheck: PrecheckFn | None = None) -> Event:
    try:
        if precheck is not None:  # in a child process first: a segfault there leaves the agent running
            precheck(action.artifact, action.data, action.io, action.self_test)
        model = load(action.artifact, action.data, action.io)
    except RuntimeCrashedError as exc:
        return LoadCrashed(action.attempt, str(exc))
    except Exception as exc:  # noqa: BLE001 - whatever the runtime raises, the update fails cleanly
        return LoadFailed(action.attempt, error_code(exc, ErrorCode.LOAD_FAILED), f"{type(exc).__name__}: {exc}")
    return ModelLoaded(action.attempt, model)


def run_self_test(self_test: SelfTestFn, action: RunSelfTest) -> Event:
    try:
        result = self_test(action.model, action.self_test, action.io)
    except Exception as exc:  # noqa: BLE001
        return SelfTestFailed(action.attempt, f"the self-test raised {type(exc).__name__}: {exc}")
    if result.passed:
        return SelfTestPassed(action.attempt, action.model, result.detail)
    return SelfTestFailed(action.attempt, result.detail or "self-test failed")


class JobRunner:
    """One named daemon thread running jobs in order (a device loads one model at a time)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def stop(self, timeout_s: float) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # noqa: BLE001 - a job's bug must not stop later jobs
                log.exception("background job failed")
