"""How the rollout page words a rollout's waves and decisions (cloud.console.views): verdicts name the
gates that breach or wait and why, a rollback what it restored; a finished rollout has no "open" wave."""

from __future__ import annotations

import pytest

from cloud.console.views import decision_text, wave_stage

VERDICT = {
    "at_ms": 1796278813981, "decision": "breach",
    "gates": [
        {"gate": "install_failures", "decision": "pass", "value": 0, "threshold": 0, "detail": "0 of 2 failed"},
        {"gate": "error_rate", "decision": "breach", "value": 0.2, "threshold": 0.005,
         "detail": "40 error(s) in 200; previous model 0.0000"},
        {"gate": "p95_latency", "decision": "wait", "value": None, "threshold": 1.5,
         "detail": "12 of 20 inferences"},
    ],
}  # fmt: skip


def test_a_verdict_names_the_gates_that_breach_or_wait_and_why() -> None:
    text = decision_text(VERDICT)
    assert text == ("breach: error_rate breach (40 error(s) in 200; previous model 0.0000); "
                    "p95_latency wait (12 of 20 inferences)")  # fmt: skip
    assert decision_text({"verdict": VERDICT}) == text  # as a rollback by policy records it
    passing = {**VERDICT, "decision": "pass", "gates": [{**g, "decision": "pass"} for g in VERDICT["gates"]]}
    assert decision_text(passing) == "pass: all 3 gates pass"


def test_a_rollback_says_what_it_restored() -> None:
    assert decision_text({"restored": {"m@1": 2}, "kept_new_model": 0}) == "restored m@1 on 2 device(s)"
    assert decision_text({"restored": {"m@1": 2, "m@0": 1}, "kept_new_model": 3}) == (
        "restored m@1 on 2 device(s), m@0 on 1 device(s); 3 device(s) had no earlier model and keep the new one")


def test_other_details_read_as_words_and_stay_short() -> None:
    assert decision_text({"devices": 4}) == "4 device(s)"
    assert decision_text({}) == "" and decision_text(None) == ""
    assert decision_text({"reason": "operator asked"}) == "reason: operator asked"
    long = decision_text({"note": "x" * 500})
    assert len(long) == 160 and long.endswith("…")


@pytest.mark.parametrize(
    ("state", "stages"),
    [
        ("running", ["done", "open", "pending"]),
        ("paused", ["done", "paused", "pending"]),
        ("rolled_back", ["done", "stopped", "pending"]),
        ("cancelled", ["done", "stopped", "pending"]),
        ("completed", ["done", "done", "pending"]),
    ],
)
def test_only_a_running_rollout_has_an_open_wave(state: str, stages: list[str]) -> None:
    assert [wave_stage(state, i, 1) for i in range(3)] == stages


def test_an_agents_sequence_number_reads_as_its_start_and_message() -> None:
    from cloud.console.pages import agent_seq

    assert agent_seq((1 << 32) + 14) == "1.14"
    assert agent_seq((3 << 32) + 1) == "3.1"
