"""`edgefleet rollout plan`, `deploy --dry-run`, `rollout list` and `devices` as a new user reads them, against
a real console API: every skipped device with its reason in words, offline planned devices marked, nothing
written by a dry run, and tables that fit 80 columns even with 36-character device ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from cloud.cli import main
from cloud.cli.operator_token import TOKEN_ENV, ensure_dev_token
from cloud.cli.rollout import SKIP_REASONS
from cloud.db.tables import ArtifactRecord, Deployment, DeploymentCreate, Device, ModelVersion
from cloud.rollout.policy import RolloutPolicy
from cloud.rollout.staged import plan_staged

LONG = "raspberry-pi-kitchen-north-wing-0002"  # 36 characters
MODEL = "digits-classifier"


@pytest.fixture
def cli(api_url: str, data_dir: Path, db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An ONNX-only release; devices: two able (one offline, one with a long id), one with only LiteRT."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    ensure_dev_token(db_engine, data_dir)
    with Session(db_engine) as session:
        labels = {"site": "lab", "building": "north-wing-annex"}
        session.add(Device(id="pi-01", online=True, runtimes=["onnxruntime"], labels=labels))
        session.add(Device(id=LONG, online=False, runtimes=["onnxruntime"], labels=labels, active_model_id=MODEL,
                           active_version="1", update_state="active"))  # fmt: skip
        session.add(Device(id="pi-tflite", online=True, runtimes=["tflite"], labels=labels))
        version = ModelVersion(model_id=MODEL, version="1", sequence=1, signed_manifest=b"")
        session.add(version)
        session.flush()
        session.add(ArtifactRecord(name="model.onnx", format="onnx", runtime="onnxruntime", size_bytes=1,
                                   sha256="a" * 64, model_version_id=version.id or 0))  # fmt: skip
        session.commit()
    return ["--api", api_url, "--data-dir", str(data_dir)]


def _fits(out: str) -> list[str]:
    lines = out.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), out
    return lines


def test_a_dry_run_names_every_skipped_device_with_its_reason_and_writes_nothing(
    cli: list[str], db_engine: Engine, capsys
) -> None:
    dry_runs = (["rollout", "plan"], ["deploy", "--strategy", "canary", "--dry-run"], ["rollout", "start", "--dry-run"])
    for command in dry_runs:
        assert main([*command, MODEL, "--to", "site=lab", "--canary", "1", *cli]) == 0
        lines = _fits(capsys.readouterr().out)
        assert lines[0] == f"{MODEL} v1: 3 target(s), 2 in 2 wave(s), 1 skipped", lines
        assert "skipped: pi-tflite" in lines
        assert lines[lines.index("skipped: pi-tflite") + 1].strip() == SKIP_REASONS["no_runtime"]
        assert f"{LONG} (offline)" in "\n".join(lines) and "1 planned device(s) offline now" in "\n".join(lines)
    with Session(db_engine) as session:
        assert session.exec(select(Deployment)).all() == []  # a dry run starts nothing

    assert main(["rollout", "plan", MODEL, "--to", "site=lab", "--skip-offline", "--json", *cli]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["skipped"] == {"pi-tflite": "no_runtime", LONG: "offline"} and plan["offline"] == []
    assert main(["rollout", "plan", MODEL, "--to", "site=lab", "--skip-offline", *cli]) == 0
    assert SKIP_REASONS["offline"] in capsys.readouterr().out


def test_a_plain_deploy_dry_run_says_which_devices_cannot_run_it(cli: list[str], capsys) -> None:
    assert main(["deploy", MODEL, "--to", "site=lab", "--dry-run", *cli]) == 0
    lines = _fits(capsys.readouterr().out)
    assert lines[0] == f"{MODEL} v1: 3 target(s), 2 in 1 wave(s), 1 cannot run it", lines
    assert "cannot run it: pi-tflite" in lines


def test_a_selector_without_match_is_named_as_typed(cli: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["rollout", "plan", MODEL, "--to", "site=nowhere", *cli])
    assert refused.value.code == "error: no device matches the selector site=nowhere"


def test_rollout_list_fits_80_columns_with_json_for_scripts(cli: list[str], db_engine: Engine, capsys) -> None:
    with Session(db_engine) as session:
        request = DeploymentCreate(model_id=MODEL, version="1", labels={"site": "lab"})
        deployment, _ = plan_staged(session, request, RolloutPolicy(canary=1), chunk_size_bytes=1024)
        deployment_id = deployment.id
        session.commit()
    assert main(["rollout", "list", *cli]) == 0
    lines = _fits(capsys.readouterr().out)
    assert lines[0].split() == ["rollout", "model", "version", "state", "wave", "done", "failed"]
    assert lines[2].split()[:3] == [deployment_id, MODEL, "1"]
    assert main(["rollout", "list", "--json", *cli]) == 0
    assert [r["deployment_id"] for r in json.loads(capsys.readouterr().out)] == [deployment_id]


def test_devices_with_long_ids_keep_every_column_whole_and_labels_under_the_table(cli: list[str], capsys) -> None:
    assert main(["devices", *cli]) == 0
    lines = _fits(capsys.readouterr().out)
    assert lines[0].split() == ["device", "online", "model", "version", "state"]
    assert any(line.split()[:2] == [LONG, "no"] for line in lines)  # "no" whole, not folded to "n" / "o"
    assert f"{LONG}  labels: building=north-wing-annex,site=lab" in lines


def test_devices_with_too_old_an_agent_are_skipped_and_named(cli: list[str], db_engine: Engine, capsys) -> None:
    with Session(db_engine) as session:
        for device_id, version in (("pi-01", "0.10.0"), (LONG, "0.9.2")):
            device = session.get(Device, device_id)
            assert device is not None
            device.agent_version = version
            session.add(device)
        session.commit()
    assert main(["rollout", "plan", MODEL, "--to", "site=lab", "--min-agent-version", "0.10", "--json", *cli]) == 0
    plan = json.loads(capsys.readouterr().out)  # "0.9.2" < "0.10" in version order, though not as text
    assert plan["skipped"] == {LONG: "agent_too_old", "pi-tflite": "no_runtime"} and plan["waves"] == [["pi-01"]]
    assert main(["deploy", MODEL, "--to", "site=lab", "--min-agent-version", "0.10", "--dry-run", *cli]) == 0
    out = capsys.readouterr().out
    assert f"cannot run it: {LONG}\n  {SKIP_REASONS['agent_too_old']}" in out
    with pytest.raises(SystemExit) as refused:
        main(["rollout", "plan", MODEL, "--to", "site=lab", "--min-agent-version", "newest", *cli])
    assert str(refused.value.code).startswith("error: rollout: Value error, 'newest' is not a version")
    assert "\n" not in str(refused.value.code)


def test_a_plain_deploy_refuses_options_it_could_not_honour(cli: list[str], db_engine: Engine) -> None:
    for option in (["--min-agent-version", "0.10"], ["--skip-offline"]):
        with pytest.raises(SystemExit) as refused:
            main(["deploy", MODEL, "--to", "site=lab", *option, *cli])
        assert "add --strategy canary or waves" in str(refused.value.code)
    with Session(db_engine) as session:
        assert session.exec(select(Deployment)).all() == []


def test_an_empty_experiment_list_says_so(cli: list[str], capsys) -> None:
    assert main(["experiment", "list", *cli]) == 0
    assert capsys.readouterr().out.startswith("no experiment yet")
    assert main(["experiment", "list", "--json", *cli]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_rollout_status_fits_80_columns(cli: list[str], db_engine: Engine, capsys) -> None:
    with Session(db_engine) as session:
        request = DeploymentCreate(model_id=MODEL, version="1", labels={"site": "lab"})
        deployment, rollout = plan_staged(session, request, RolloutPolicy(canary=1), chunk_size_bytes=1024)
        deployment_id = deployment.id
        waiting = "2 device(s), 37 inference(s) so far; judging needs 2 and 200"
        rollout.state, rollout.current_wave = "running", 0
        rollout.last_verdict = {"decision": "wait", "gates": [
            {"gate": g, "decision": "wait", "value": None, "threshold": 0.5, "detail": waiting}
            for g in ("error_rate", "p95_latency")]}  # fmt: skip
        session.add(rollout)
        session.commit()
    assert main(["rollout", "status", deployment_id, *cli]) == 0
    out = capsys.readouterr().out
    _fits(out)
    assert "judging needs 2 and 200" in " ".join(out.split())
