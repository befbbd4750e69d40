"""The atomic swap: predictions keep flowing during an update, each answered whole by one model."""

from __future__ import annotations

import threading

import numpy as np
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, make_release, model_bytes

from edge_agent.serving.runtime import FunctionModel, Prediction
from edge_agent.serving.slot import ModelSlot, ServingModel
from edge_agent.update.journal import InstalledModel
from protocols.v1 import messages_pb2 as pb

THREADS = 4


def test_threads_predicting_through_a_swap_see_no_error_and_no_mix(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()
    cloud.deploy("dev-1", make_release(keys.signer, "v1", 1, data=model_bytes("v1", delay_s=0.0005)), generation=1)
    assert agent.wait_for(lambda s: is_state(s, pb.UPDATE_STATE_ACTIVE, 1), 5)

    stop = threading.Event()
    answers: list[list[str]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []

    def hammer(mine: list[str]) -> None:
        x = np.array([[0.9, 0.1, 0.1], [0.1, 0.1, 0.1]], dtype=np.float32)
        while not stop.is_set() and len(mine) < 20_000:
            try:
                labels = agent.predict(x).labels
                mine.append("|".join(labels))
            except BaseException as exc:  # noqa: BLE001 - the test counts every failure
                errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(a,), name=f"hammer-{i}") for i, a in enumerate(answers)]
    for thread in threads:
        thread.start()
    try:
        assert _wait(lambda: all(len(a) > 20 for a in answers))
        cloud.deploy("dev-1", make_release(keys.signer, "v2", 2, data=model_bytes("v2", delay_s=0.0005)), generation=2)
        assert agent.wait_for(lambda s: is_state(s, pb.UPDATE_STATE_ACTIVE, 2), 10)
        counts = [len(a) for a in answers]
        assert _wait(lambda: all(len(a) > c + 20 for a, c in zip(answers, counts, strict=True)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

    assert errors == []
    whole = {"v1:pos|v1:neg", "v2:pos|v2:neg"}
    for mine in answers:
        assert set(mine) <= whole  # never a batch answered half by each model
        first_new = mine.index("v2:pos|v2:neg")
        assert first_new > 0 and set(mine[first_new:]) == {"v2:pos|v2:neg"}  # once new, never old again
    inferences, failures = agent.counts
    assert inferences == 2 * sum(len(a) for a in answers) and failures == 0


def test_a_call_in_flight_during_the_swap_is_answered_by_the_old_model(keys: Keys) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_old(x: np.ndarray) -> Prediction:
        entered.set()
        assert release.wait(5)
        return Prediction(["old"] * len(x), None, None)

    def serving(fn, tag: str) -> ServingModel:  # type: ignore[no-untyped-def]
        made = make_release(keys.signer, tag, 1)
        return ServingModel.of(FunctionModel(3, fn), InstalledModel(made.signed.SerializeToString(), made.sha256))

    slot = ModelSlot()
    old = serving(slow_old, "old")
    slot.swap(old)
    got: list[str] = []
    caller = threading.Thread(target=lambda: got.extend(slot.predict(np.zeros((1, 3), np.float32))[1].labels))
    caller.start()
    assert entered.wait(5)
    assert slot.swap(serving(lambda x: Prediction(["new"] * len(x), None, None), "new")) is old
    assert slot.predict(np.zeros((1, 3), np.float32))[1].labels == ["new"]
    release.set()
    caller.join(5)
    assert got == ["old"]


def _wait(predicate, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    from support import wait_until

    return bool(wait_until(predicate, timeout_s))
