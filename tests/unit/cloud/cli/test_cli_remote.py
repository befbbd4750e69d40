"""`edgefleet deploy|devices|models` and `tokens list` as a new user reads them: tables that fit 80
columns, --json for scripts, and a refusal as one line, against a real console API (the `api_url` fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.cli import main
from cloud.cli.operator_token import TOKEN_ENV, ensure_dev_token
from cloud.cli.remote import split_ids
from cloud.db.tables import Device, ModelVersion

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def fleet(api_url: str, data_dir: Path, db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Devices with typical ~10-character ids, two models, a dev token; COLUMNS=80 like a small terminal."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    ensure_dev_token(db_engine, data_dir)
    with Session(db_engine) as session:
        for i in range(3):
            session.add(Device(id=f"rpi-lab-0{i}", online=i != 2, labels={"site": "lab", "rack": f"r{i}"},
                               active_model_id="iris-classifier", active_version="1.0.12", update_state="downloading"))
        for model_id, count in (("iris-classifier", 12), ("vibration", 2)):
            for n in range(1, count + 1):
                session.add(ModelVersion(model_id=model_id, version=f"1.0.{n}", sequence=n, signed_manifest=b""))
        session.commit()
    return ["--api", api_url, "--data-dir", str(data_dir)]


def _assert_fits(out: str) -> None:
    lines = out.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), out
    assert "…" not in out and "..." not in out, out


def test_devices_table_fits_80_columns_with_whole_ids_and_readable_labels(fleet: list[str], capsys) -> None:
    assert main(["devices", *fleet]) == 0
    out = capsys.readouterr().out
    _assert_fits(out)
    header = out.splitlines()[0].split()
    assert header == ["device", "online", "model", "version", "state", "labels"]  # no error yet: no column
    for i in range(3):
        assert f"rpi-lab-0{i}  " in out
    assert "iris-classifier" in out and "downloading" in out and "rack=r0,site=lab" in out and "{" not in out


def test_an_error_column_appears_when_a_device_has_one(fleet: list[str], db_engine: Engine, capsys) -> None:
    with Session(db_engine) as session:
        device = session.get(Device, "rpi-lab-01")
        assert device is not None
        device.update_state, device.last_error_code = "failed", "ARTIFACT_DIGEST_MISMATCH"
        session.add(device)
        session.commit()
    assert main(["devices", *fleet]) == 0
    out = capsys.readouterr().out
    _assert_fits(out)  # the error and the labels fold; ids, model, version and state stay whole
    assert out.splitlines()[0].split() == ["device", "online", "model", "version", "state", "error", "labels"]
    assert "rpi-lab-01" in out and "failed" in out and "1.0.12" in out and "ARTIFACT" in out


def test_models_table_reads_model_latest_sequence_versions(fleet: list[str], capsys) -> None:
    assert main(["models", *fleet]) == 0
    out = capsys.readouterr().out
    _assert_fits(out)
    lines = out.splitlines()
    assert lines[0].split() == ["model", "latest", "sequence", "versions"]
    assert ["iris-classifier", "1.0.12", "12", "12"] in [line.split() for line in lines]


def test_json_prints_the_apis_document(fleet: list[str], data_dir: Path, capsys) -> None:
    assert main(["devices", "--json", *fleet]) == 0
    devices = json.loads(capsys.readouterr().out)
    assert [d["id"] for d in devices] == ["rpi-lab-00", "rpi-lab-01", "rpi-lab-02"]
    assert devices[0]["labels"] == {"rack": "r0", "site": "lab"}
    assert main(["models", "--json", *fleet]) == 0
    models = json.loads(capsys.readouterr().out)
    assert {m["model_id"]: m["versions"] for m in models} == {"iris-classifier": 12, "vibration": 2}
    assert main(["tokens", "list", "--json", "--data-dir", str(data_dir)]) == 0
    tokens = json.loads(capsys.readouterr().out)
    assert tokens and {"id", "name", "role", "revoked_at_ms"} <= set(tokens[0]) and "secret_sha256" not in tokens[0]


def test_tokens_list_is_a_table_that_fits(fleet: list[str], data_dir: Path, capsys) -> None:
    assert main(["tokens", "list", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    _assert_fits(out)
    assert out.splitlines()[0].split() == ["id", "role", "state", "name"]


def test_device_ids_are_split_on_commas_and_stripped(fleet: list[str]) -> None:
    assert split_ids("pi-01, pi-02,, ") == ["pi-01", "pi-02"]
    # both ids reach the API as they are meant (" pi-02" would be refused as an invalid id instead)
    with pytest.raises(SystemExit) as refused:
        main(["deploy", "vibration", "--devices", "pi-01, pi-02", *fleet])
    assert refused.value.code == "error: not enrolled: pi-01, pi-02 (enroll first: edgefleet devices enroll " \
                                 "--device-id ...)"


def test_a_selector_that_matches_nothing_fails_with_one_line_and_status_1(fleet: list[str]) -> None:
    command = [sys.executable, "-m", "cloud.cli", "deploy", "vibration", "--label", "site=moon", *fleet]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["error: no device matches the labels site=moon (see: edgefleet devices; "
                                          "to wait for devices that join later: --wait-for-devices)"]


def test_a_validation_error_is_one_line(fleet: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["deploy", "vibration", "--devices", "x" * 300, *fleet])
    message = str(refused.value.code)
    assert message.startswith("error: ") and "\n" not in message and "device_ids" in message


def test_devices_follows_the_apis_pages(fleet: list[str], db_engine: Engine, capsys) -> None:
    # 1,203 devices: three pages of the API's 500 (cloud.api.paging); without following Link only 500 show
    with Session(db_engine) as session:
        for i in range(1200):
            session.add(Device(id=f"pi-{i:04d}"))
        session.commit()
    assert main(["devices", "--json", *fleet]) == 0
    ids = [row["id"] for row in json.loads(capsys.readouterr().out)]
    assert len(ids) == len(set(ids)) == 1203 and ids == sorted(ids)


def test_deploy_names_a_few_targets_and_follows_the_counts(fleet: list[str], db_engine: Engine, capsys) -> None:
    """A deployment's detail carries only its first targets and counts over all (cloud.api.routes.deployments):
    `deploy` names 20 and says how many more, `--wait` prints the counts of all 130."""
    with Session(db_engine) as session:
        for i in range(130):
            session.add(Device(id=f"big-{i:03d}", labels={"site": "big"}))
        session.commit()
    assert main(["deploy", "vibration", "--label", "site=big", "--wait", "--timeout", "0", *fleet]) == 1
    first, counts = capsys.readouterr().out.splitlines()
    named = ", ".join(f"big-{i:03d}" for i in range(20))
    assert first.endswith(f"-> {named} and 110 more"), first
    assert counts.startswith("in_progress pending 130  (waiting for 130 device(s): 130 offline (big-000,"), counts
