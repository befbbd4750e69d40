"""CoreLink, the API process's end of its pipe to the core: one question answers every probe, and while the
core is slow to answer it again, other requests are served the last answer instead of queueing on the pipe."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest

from cloud.api import processes
from cloud.api.processes import CORE_PROBES, CoreLink


def test_while_the_core_is_asked_again_other_requests_get_the_last_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "PROBE_CACHE_S", 0.0)  # every answer is stale at once
    api_end, core_end = multiprocessing.Pipe()
    asked, release = threading.Event(), threading.Event()
    questions: list[Any] = []

    def core() -> None:  # answers the first question at once, holds the second until released
        for n in (1, 2):
            questions.append(core_end.recv())
            if n == 2:
                asked.set()
                assert release.wait(30)
            core_end.send({name: {"n": n} for name in CORE_PROBES})

    threading.Thread(target=core, daemon=True).start()
    link = CoreLink(api_end)
    assert link.probe("ingest") == {"n": 1}
    assert questions == [("probes", CORE_PROBES)]  # one question for all five probes

    slow: list[Any] = []
    asking = threading.Thread(target=lambda: slow.append(link.probe("ingest")), daemon=True)
    asking.start()
    assert asked.wait(30)  # the core holds that question
    meanwhile: list[Any] = []
    other = threading.Thread(target=lambda: meanwhile.append(link.probe("alerts")), daemon=True)
    other.start()
    other.join(10)
    answered_without_waiting = not other.is_alive()
    release.set()
    asking.join(10)
    assert answered_without_waiting and meanwhile == [{"n": 1}]  # the last answer, not a second wait
    assert slow == [{"n": 2}] and len(questions) == 2
