"""Turns the update machine's actions into I/O: one small function per action type, found in a dict.

The machine (`edge_agent.update`) is pure; this is where its actions touch the store, the transport,
the serving slot and the background job thread. An action whose I/O fails ends its attempt: the rest of
its batch is dropped and the machine hears `Aborted` (the serving model is never touched by a failure).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from edge_agent.outbox import Outbox
from edge_agent.serving.shadow import KeptModel
from edge_agent.serving.slot import ModelSlot, ServingModel
from edge_agent.store import ModelStore
from edge_agent.transport import Transport
from edge_agent.types import LoadModelFn, PrecheckFn, SelfTestFn
from edge_agent.update import jobs, recovery
from edge_agent.update.actions import (
    Action,
    Activate,
    BeginDownload,
    CommitDownload,
    DiscardDownload,
    Emit,
    EndProbation,
    FollowFanout,
    LeaveFanout,
    LoadModel,
    PruneModels,
    Report,
    RequestChunks,
    RollBack,
    RunSelfTest,
    SaveJournal,
    VerifyArtifact,
    WriteChunk,
)
from edge_agent.update.events import Aborted, Event
from edge_agent.update.journal import LastError
from protocols import SCHEMA_VERSION
from protocols.codes import ErrorCode
from protocols.topics import Channel
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)


class JobSubmitter(Protocol):  # the agent's runner (edge_agent.runner), or a bare jobs.JobRunner
    def submit(self, job: Callable[[], None]) -> None: ...


class Executor:
    def __init__(
        self,
        device_id: str,
        *,
        store: ModelStore,
        outbox: Outbox,
        transport: Transport,
        slot: ModelSlot,
        kept: KeptModel,
        counts: Callable[[], tuple[int, int]],
        job_runner: JobSubmitter,
        load_model: LoadModelFn,
        run_self_test: SelfTestFn,
        post: Callable[[Event], None],
        dispatch: Callable[[Event], None],
        report: Callable[[], None],
        precheck: PrecheckFn | None = None,
    ) -> None:
        self.device_id = device_id
        self._store = store
        self._outbox = outbox
        self._transport = transport  # subscriptions only; everything published goes through the outbox
        self._slot = slot
        self._kept = kept  # the previous model during a probation
        self._counts = counts  # (inferences, errors) since start
        self._jobs = job_runner
        self._load_model = load_model
        self._run_self_test = run_self_test
        self._precheck = precheck
        self._post = post  # queue an event for the agent's thread (from the job thread)
        self._dispatch = dispatch  # hand an event to the machine now (on the agent's thread)
        self._report = report
        self._run: dict[type[Any], Callable[[Any], None]] = {
            RequestChunks: self._request_chunks,
            FollowFanout: lambda a: self._transport.subscribe(a.topic_filter, 1),
            LeaveFanout: lambda a: self._transport.unsubscribe(a.topic_filter),
            WriteChunk: lambda a: self._store.write_chunk(a.sha256, a.index, a.offset, a.data),
            Emit: self._outbox.emit,
            Report: lambda _a: self._report(),
            SaveJournal: lambda a: self._store.save_journal(a.journal),
            BeginDownload: lambda a: self._store.begin_download(a.sha256, a.size_bytes),
            DiscardDownload: lambda a: self._store.discard_download(a.sha256),
            CommitDownload: lambda a: self._store.commit_download(a.sha256),
            PruneModels: lambda a: self._store.prune_models(a.keep),
            VerifyArtifact: self._verify_artifact,
            LoadModel: self._load,
            RunSelfTest: self._self_test,
            Activate: self._activate,
            RollBack: self._roll_back,
            EndProbation: lambda _a: self._end_probation(),
        }

    def execute(self, actions: list[Action]) -> None:
        for action in actions:
            try:
                self._run[type(action)](action)
            except Exception as exc:  # noqa: BLE001 - I/O failed: fail the update, keep serving
                log.error("agent %s: %s failed: %s", self.device_id, type(action).__name__, exc)
                code = getattr(exc, "code", ErrorCode.AGENT_ERROR)
                attempt = getattr(action, "attempt", None)
                if attempt is not None:
                    self._dispatch(Aborted(attempt, code, str(exc)))
                    return  # the rest of this batch belonged to the aborted attempt
                self._outbox.emit(Emit(pb.EVENT_KIND_ERROR, error=LastError(code, str(exc))))

    def _request_chunks(self, action: RequestChunks) -> None:
        request = pb.ArtifactChunkRequest(
            schema_version=SCHEMA_VERSION,
            device_id=self.device_id,
            request_id=action.request_id,
            sha256=action.sha256,
            indexes=action.indexes,
        )
        self._outbox.publish(Channel.ARTIFACT_REQUEST, request)

    # the slow steps run on the job thread and come back as events through the agent's queue
    def _verify_artifact(self, action: VerifyArtifact) -> None:
        self._jobs.submit(lambda: self._post(jobs.verify_artifact(self._store, action)))

    def _load(self, action: LoadModel) -> None:
        self._jobs.submit(lambda: self._post(jobs.load_model(self._load_model, action, self._precheck)))

    def _self_test(self, action: RunSelfTest) -> None:
        self._jobs.submit(lambda: self._post(jobs.run_self_test(self._run_self_test, action)))

    def _activate(self, action: Activate) -> None:
        new = ServingModel.of(action.model, action.installed)
        self._outbox.flush_telemetry(new)  # the window so far belongs to the old model
        old = self._slot.swap(new)
        # on probation the replaced model stays loaded (shadowed, to roll back to); else it is let go
        self._kept.keep(old if action.keep_previous else None, new, self._counts())

    def _end_probation(self) -> None:
        self._kept.release()  # the previous model is let go (it stays on disk)

    def _roll_back(self, action: RollBack) -> None:
        """Swap the previous model back in: the one kept loaded, else loaded again (the failed model keeps
        serving meanwhile, so no call is dropped)."""
        previous = self._kept.release()
        if previous is None or previous.installed != action.installed:
            previous = recovery.load_installed(action.installed, self._store, self._load_model, self._run_self_test)
        self._outbox.flush_telemetry(previous)  # the window so far belongs to the failed model
        self._slot.swap(previous)
        self._kept.keep(None, previous, self._counts())
