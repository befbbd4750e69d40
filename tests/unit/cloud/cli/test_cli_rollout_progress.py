"""What `edgefleet rollout status` and `deploy --wait` say about a wave still gathering evidence."""

from __future__ import annotations

from typing import Any

from cloud.cli.rollout import progress_line

WAITING = "1 device(s), 37 inference(s) so far; judging needs 1 and 200"


def _rollout(gates: list[dict[str, Any]]) -> dict[str, Any]:
    decision = "breach" if any(g["decision"] == "breach" for g in gates) else "wait"
    return {"state": "running", "wave_sizes": [1, 4], "current_wave": 0, "devices_done": 1, "devices_failed": 0,
            "last_verdict": {"decision": decision, "gates": gates}}  # fmt: skip


def _gate(name: str, decision: str, detail: str) -> dict[str, Any]:
    return {"gate": name, "decision": decision, "value": None, "threshold": 0.5, "detail": detail}


def test_gates_waiting_for_the_same_evidence_say_what_they_wait_for_once() -> None:
    line = progress_line(_rollout([_gate("install_failures", "pass", "0 of 1 device(s) failed to install"),
                                   _gate("error_rate", "wait", WAITING), _gate("p95_latency", "wait", WAITING)]))
    assert line.endswith(f"wait ({WAITING})")
    assert line.count("inference(s)") == 1


def test_gates_in_different_states_are_listed_by_name() -> None:
    line = progress_line(_rollout([_gate("error_rate", "breach", "9 error(s) in 100"),
                                   _gate("p95_latency", "wait", WAITING)]))
    assert "error_rate breach" in line and "p95_latency wait" in line


def test_a_rollback_says_where_each_device_went() -> None:
    """A device that ran no model before keeps the new one on rollback: `rollout status` said only
    "rollback by ...", so the operator saw a rolled-back rollout and a device still on the new version."""
    from cloud.cli.rollout import _rollback_outcome

    rollback = {"action": "rollback", "wave": 0, "actor": "controller",
                "detail": {"restored": {"digits-classifier@1": 3}, "kept_new_model": 1}}  # fmt: skip
    assert _rollback_outcome(rollback) == ": 3 back on digits-classifier@1, 1 kept the new model (none to go back to)"
    assert _rollback_outcome({**rollback, "detail": {"restored": {}, "kept_new_model": 0}}) == ""
    assert _rollback_outcome({"action": "pause", "wave": 0, "actor": "x", "detail": {}}) == ""
