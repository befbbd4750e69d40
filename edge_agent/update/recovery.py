"""Crash recovery at start: read the journal, bring the serving model back, square a download with the disk.

`load_journal` reads the journal (starting afresh, with an error to report, if it is unreadable).
`restore` brings the active model back: load it from the store, check its digest, re-run its self-test.
If it cannot serve any more (a corrupt file, a runtime that changed), fall back to the previous model.
A model that fails here is dropped from the journal, and its desired generation is handled again when
the retained desired state next arrives; the last accepted assignment counter is lowered by one so that
exactly the retained assignment may be accepted again (anything older is still refused as a replay).
A load that kills the process is journalled (`Journal.restoring`): after MAX_LOAD_ATTEMPTS such starts
that model is given up and its runtime marked crashed (`update.crash_marks`), so the agent comes back on
the previous model or on none, and reports `runtime_crashed`, rather than crash-looping.
A model on probation counts the start as a restart first, and a crash loop rolls it back before anything
serves (`edge_agent.update.probation.count_boot`); with no crash loop its previous model is loaded too.
`resume_download` finds the chunks a pending download already has, after a crash between two steps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from edge_agent.errors import StoreError, error_code
from edge_agent.serving.slot import ServingModel
from edge_agent.store import ModelStore
from edge_agent.types import LoadModelFn, SelfTestFn
from edge_agent.update import crash_marks
from edge_agent.update.actions import Emit
from edge_agent.update.context import ProbationPolicy
from edge_agent.update.crash import MAX_LOAD_ATTEMPTS
from edge_agent.update.journal import InstalledModel, Journal, LastError, Outcome, Restoring
from edge_agent.update.probation import count_boot
from protocols import trust
from protocols.codes import ErrorCode

log = logging.getLogger(__name__)


@dataclass
class Restored:
    journal: Journal
    serving: ServingModel | None
    failures: list[tuple[InstalledModel, LastError]] = field(default_factory=list)
    previous: ServingModel | None = None  # loaded too while the active model is on probation
    crash_loop: Emit | None = None  # the ROLLED_BACK event of a model on probation that kept restarting

    @property
    def rolled_back(self) -> bool:
        return bool(self.failures) and self.serving is not None


class _RestoreFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def load_installed(
    installed: InstalledModel, store: ModelStore, load: LoadModelFn, self_test: SelfTestFn
) -> ServingModel:
    """Load a journalled model ready to serve; raise an exception with a `.code` if it cannot."""
    manifest = installed.manifest()
    artifact = installed.artifact()
    data = store.read_model(installed.artifact_sha256)
    trust.verify_artifact(artifact, data)
    try:
        model = load(artifact, data, manifest.io)
    except Exception as exc:  # noqa: BLE001
        raise _RestoreFailed(error_code(exc, ErrorCode.LOAD_FAILED), f"{type(exc).__name__}: {exc}") from None
    result = self_test(model, manifest.self_test, manifest.io)
    if not result.passed:
        raise _RestoreFailed(ErrorCode.SELF_TEST_FAILED, result.detail or "self-test failed")
    return ServingModel.of(model, installed)


def restore(
    journal: Journal,
    store: ModelStore,
    load: LoadModelFn,
    self_test: SelfTestFn,
    policy: ProbationPolicy,
    crash_stamps: Mapping[str, str] | None = None,
) -> Restored:
    """Bring the active model back (else the previous one, else none). Each load is journalled first
    (`Journal.restoring`), so a model whose load kills the process is given up after MAX_LOAD_ATTEMPTS
    starts: its runtime is marked crashed and the next model is tried; never a crash loop."""
    stamps = crash_stamps or {}
    journal = crash_marks.clear_stale(journal, stamps)
    journal, crash_loop = count_boot(journal, policy)
    failures: list[tuple[InstalledModel, LastError]] = []
    journal = _give_up_a_crashing_model(journal, stamps, failures)
    serving = None
    for installed in (journal.active, journal.previous):
        if installed is None:
            continue
        journal = _before_load(journal, installed, store)
        try:
            serving = load_installed(installed, store, load, self_test)
        except Exception as exc:  # noqa: BLE001 - any failure means: this model cannot serve
            code = error_code(exc, ErrorCode.LOAD_FAILED)
            log.error("cannot restore model %s: %s", installed.artifact_sha256[:12], exc)
            failures.append((installed, LastError(code, f"restoring the model at start: {exc}")))
            continue
        journal = crash_marks.clear(journal, installed.artifact().runtime)
        break
    if not failures:
        previous = None
        if journal.probation is not None and journal.previous is not None:
            journal = _before_load(journal, journal.previous, store)
            previous = _previous_on_probation(journal, store, load, self_test)
        return Restored(journal.with_(restoring=None), serving, previous=previous, crash_loop=crash_loop)
    journal = journal.with_(
        active=serving.installed if serving else None,
        previous=None,
        # accept the retained assignment again (its counter, not an older one): it is installed anew
        desired_generation=max(0, journal.desired_generation - 1),
        outcome=Outcome.IDLE,
        last_error=failures[0][1],
        probation=None,
        restoring=None,
    )
    return Restored(journal, serving, failures, crash_loop=crash_loop)


def _before_load(journal: Journal, installed: InstalledModel, store: ModelStore) -> Journal:
    """Journal the load about to start (one more attempt if the last start died in the same load)."""
    last = journal.restoring
    attempts = last.attempts if last is not None and last.artifact_sha256 == installed.artifact_sha256 else 0
    journal = journal.with_(restoring=Restoring(installed.artifact_sha256, attempts + 1))
    try:
        store.save_journal(journal)
    except StoreError as exc:  # the load may still work; without the mark a crash here could repeat
        log.error("cannot journal the restore of %s: %s", installed.artifact_sha256[:12], exc)
    return journal


def _give_up_a_crashing_model(
    journal: Journal, stamps: Mapping[str, str], failures: list[tuple[InstalledModel, LastError]]
) -> Journal:
    """The model whose load killed the last MAX_LOAD_ATTEMPTS starts leaves the journal; its runtime is marked."""
    last = journal.restoring
    if last is None or last.attempts < MAX_LOAD_ATTEMPTS:
        return journal
    for slot in ("active", "previous"):
        installed: InstalledModel | None = getattr(journal, slot)
        if installed is None or installed.artifact_sha256 != last.artifact_sha256:
            continue
        runtime = installed.artifact().runtime
        message = (
            f"the agent died {last.attempts} times while loading the {runtime} model "
            f"{installed.artifact_sha256[:12]} at start; runtime {runtime} is disabled, not loading it again"
        )
        log.error(message)
        failures.append((installed, LastError(ErrorCode.RUNTIME_CRASHED, message)))
        journal = crash_marks.mark(journal.with_(**{slot: None}), runtime, stamps)
    return journal.with_(restoring=None)


def _previous_on_probation(
    journal: Journal, store: ModelStore, load: LoadModelFn, self_test: SelfTestFn
) -> ServingModel | None:
    """The previous model, loaded again when the active one is on probation (None if it cannot be: the
    probation then goes on without shadowing, and a rollback tries to load it again)."""
    if journal.probation is None or journal.previous is None:
        return None
    try:
        return load_installed(journal.previous, store, load, self_test)
    except Exception as exc:  # noqa: BLE001
        log.error("cannot load the previous model %s for the probation: %s", journal.previous.artifact_sha256[:12], exc)
        return None


def load_journal(store: ModelStore, device_id: str) -> tuple[Journal, list[LastError]]:
    """The saved journal (a fresh one on first start), and the errors to report if it could not be read."""
    try:
        return store.load_journal() or Journal(), []
    except StoreError as exc:
        log.error("agent %s: starting without a journal: %s", device_id, exc)
        return Journal(), [LastError(exc.code, f"journal unreadable, starting afresh: {exc}")]


def save_journal(store: ModelStore, journal: Journal, device_id: str) -> None:
    """Save the journal at start; a failure is logged (the agent still serves), not raised."""
    try:
        store.save_journal(journal)
    except StoreError as exc:
        log.error("agent %s: cannot save the journal: %s", device_id, exc)


def resume_download(store: ModelStore, journal: Journal, device_id: str) -> tuple[Journal, set[int]]:
    """The chunks already downloaded for the pending update, squaring the journal with the disk after a
    crash between two steps (a download committed but not yet journalled, or a partial file lost)."""
    pending = journal.pending
    if pending is None or pending.layout is None:
        return journal, set()
    sha256 = pending.layout.sha256
    try:
        if store.has_download(sha256):
            return journal, store.received_chunks(sha256)
        if store.has_model(sha256):  # committed: verify it from the models
            journal = journal.with_(pending=replace(pending, layout=None))
            save_journal(store, journal, device_id)
            return journal, set()
        store.begin_download(sha256, pending.layout.size_bytes)
    except StoreError as exc:
        log.error("agent %s: cannot resume the download of %s: %s", device_id, sha256[:12], exc)
    return journal, set()
