"""A model whose load kills the agent while it is restored at start (not only a pending update's): each
restore load is journalled first, so after MAX_LOAD_ATTEMPTS deaths the model is given up, its runtime
marked crashed, and the agent comes back on the previous model or on none; and crash marks do not last
forever (`edge_agent.update.crash_marks`)."""

from __future__ import annotations

from typing import Any

import pytest
from support.releases import Keys, fake_load_model, make_release

from edge_agent.serving.selftest import run_self_test
from edge_agent.store import MemoryModelStore
from edge_agent.update import crash_marks, recovery
from edge_agent.update.context import ProbationPolicy
from edge_agent.update.crash import MAX_LOAD_ATTEMPTS
from edge_agent.update.journal import InstalledModel, Journal, Outcome, Restoring, decode_journal, encode_journal
from protocols.codes import ErrorCode

STAMPS = {"onnxruntime": crash_marks.stamp("0.1.0", "1.27.0"), "tflite": crash_marks.stamp("0.1.0", "1.4.0")}


class Died(BaseException):
    """The process died inside the runtime (SIGSEGV): nothing after the load runs, only the disk remains."""


def _installed(keys: Keys, store: MemoryModelStore, tag: str, sequence: int, runtime: str) -> InstalledModel:
    release = make_release(keys.signer, tag, sequence, runtime=runtime)
    store.models[release.sha256] = release.artifacts[release.sha256]
    return InstalledModel(release.signed.SerializeToString(), release.sha256)


def _crashing(runtime: str) -> Any:
    def load(artifact: Any, data: bytes, io: Any) -> Any:
        if artifact.runtime == runtime:
            raise Died
        return fake_load_model(artifact, data, io)

    return load


def _start(store: MemoryModelStore, load: Any, stamps: dict[str, str] = STAMPS) -> recovery.Restored:
    """What Agent.start does with the journal: count the boot, restore, save."""
    journal = store.load_journal() or Journal()
    restored = recovery.restore(
        journal.with_(boot_count=journal.boot_count + 1), store, load, run_self_test, ProbationPolicy(), stamps
    )
    store.save_journal(restored.journal)
    return restored


def _dies(store: MemoryModelStore, load: Any) -> None:
    with pytest.raises(Died):
        _start(store, load)


def test_an_active_model_that_kills_every_start_gives_way_to_the_previous_one(keys: Keys) -> None:
    store = MemoryModelStore()
    v1 = _installed(keys, store, "v1", 1, "tflite")
    v2 = _installed(keys, store, "v2", 2, "onnxruntime")
    store.save_journal(Journal(active=v2, previous=v1, desired_generation=2, outcome=Outcome.ACTIVE))
    load = _crashing("onnxruntime")
    for _ in range(MAX_LOAD_ATTEMPTS):  # one death may be a power cut; the second is the runtime
        _dies(store, load)
    restored = _start(store, load)
    assert restored.serving is not None and restored.serving.installed == v1
    ((model, error),) = restored.failures
    assert model == v2 and error.code == ErrorCode.RUNTIME_CRASHED and "onnxruntime" in error.message
    journal = decode_journal(store.journal_bytes or b"")
    assert journal.active == v1 and journal.previous is None and journal.restoring is None
    assert journal.crashed_runtimes == {"onnxruntime"} and journal.crash_stamps == {
        "onnxruntime": STAMPS["onnxruntime"]
    }
    assert journal.desired_generation == 1  # the retained assignment is taken again (now with another runtime)
    assert _start(store, load).serving is not None  # and it stays up


def test_with_no_other_model_the_agent_comes_back_with_none_and_says_why(keys: Keys) -> None:
    store = MemoryModelStore()
    v1 = _installed(keys, store, "v1", 1, "onnxruntime")
    store.save_journal(Journal(active=v1, desired_generation=1, outcome=Outcome.ACTIVE))
    load = _crashing("onnxruntime")
    for _ in range(MAX_LOAD_ATTEMPTS):
        _dies(store, load)
    restored = _start(store, load)
    assert restored.serving is None and restored.journal.active is None
    assert restored.journal.last_error is not None and restored.journal.last_error.code == ErrorCode.RUNTIME_CRASHED


def test_one_death_in_a_restore_is_retried_and_a_clean_start_forgets_it(keys: Keys) -> None:
    store = MemoryModelStore()
    v1 = _installed(keys, store, "v1", 1, "onnxruntime")
    store.save_journal(Journal(active=v1, desired_generation=1, outcome=Outcome.ACTIVE))
    _dies(store, _crashing("onnxruntime"))  # a power cut mid-load
    assert decode_journal(store.journal_bytes or b"").restoring == Restoring(v1.artifact_sha256, 1)
    restored = _start(store, fake_load_model)
    assert restored.serving is not None and not restored.failures and restored.journal.restoring is None


def test_a_crash_mark_is_cleared_when_the_agent_or_runtime_version_changes(keys: Keys) -> None:
    marked = crash_marks.mark(Journal(), "onnxruntime", STAMPS)
    assert crash_marks.clear_stale(marked, STAMPS) == marked  # same versions: still banned
    upgraded = {**STAMPS, "onnxruntime": crash_marks.stamp("0.1.0", "1.28.0")}
    assert crash_marks.clear_stale(marked, upgraded).crashed_runtimes == frozenset()
    agent_upgraded = {**STAMPS, "onnxruntime": crash_marks.stamp("0.2.0", "1.27.0")}
    assert crash_marks.clear_stale(marked, agent_upgraded).crashed_runtimes == frozenset()
    # a mark from a journal written before stamps existed takes today's stamp: banned until the next upgrade
    old = Journal(crashed_runtimes=frozenset({"onnxruntime"}))
    adopted = crash_marks.clear_stale(old, STAMPS)
    assert adopted.crashed_runtimes == {"onnxruntime"} and adopted.crash_stamps == {
        "onnxruntime": STAMPS["onnxruntime"]
    }


def test_a_runtime_that_loads_a_model_at_start_loses_its_crash_mark(keys: Keys) -> None:
    store = MemoryModelStore()
    v1 = _installed(keys, store, "v1", 1, "onnxruntime")
    journal = crash_marks.mark(Journal(active=v1, desired_generation=1, outcome=Outcome.ACTIVE), "onnxruntime", STAMPS)
    store.save_journal(journal)
    restored = _start(store, fake_load_model)
    assert restored.serving is not None and restored.journal.crashed_runtimes == frozenset()
    assert restored.journal.crash_stamps == {}


def test_the_new_journal_fields_survive_the_codec() -> None:
    journal = crash_marks.mark(Journal(restoring=Restoring("ab" * 32, 2)), "tflite", STAMPS)
    assert decode_journal(encode_journal(journal)) == journal
