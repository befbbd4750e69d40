"""`edgefleet devices enroll|revoke` against a real console API on uvicorn (the `api_url` fixture),
speaking HTTP with the standard library only."""

from __future__ import annotations

import argparse
import shlex
import sys

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.cli import main
from cloud.cli.enroll import parse_ttl
from cloud.cli.operator_token import TOKEN_ENV, ensure_dev_token
from cloud.identity.enrollment import is_enrolled, redeem
from cloud.identity.records import EnrollmentToken


def test_ttl_takes_seconds_or_a_unit() -> None:
    assert [parse_ttl(t) for t in ("3600", "90s", "30m", "1h", "7d", "1.5h")] == [3600, 90, 1800, 3600, 604800, 5400]
    for bad in ("", "h", "-1h", "0", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_ttl(bad)


def test_enroll_prints_the_token_and_the_provision_command(
    api_url: str, data_dir, db_engine: Engine, monkeypatch, capsys
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    ensure_dev_token(db_engine, data_dir)
    common = ["--api", api_url, "--data-dir", str(data_dir)]
    assert main(["devices", "enroll", "--device-id", "pi-01", "--label", "site=lab", "--ttl", "2h", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    token = lines[0]
    command = shlex.split(lines[-1])
    assert command[:2] == ["edgefleet-agent", "provision"]
    assert command[command.index("--token") + 1] == token
    assert command[command.index("--cloud-url") + 1] == api_url
    assert command[command.index("--device-id") + 1] == "pi-01"
    with Session(db_engine) as session:
        row = session.get(EnrollmentToken, token.split("_")[1])
        assert row is not None and row.labels == {"site": "lab"} and row.device_id == "pi-01"
        assert 2 * 3600 * 1000 - 60_000 < row.expires_at_ms - row.created_at_ms <= 2 * 3600 * 1000
        redeem(session, token, "pi-01")
        session.commit()
    assert main(["devices", "--api", api_url, "revoke", "pi-01", "--data-dir", str(data_dir)]) == 0
    assert "revoked" in capsys.readouterr().out
    with Session(db_engine) as session:
        assert not is_enrolled(session, "pi-01")
    with pytest.raises(SystemExit, match="^error: .*ghost"):
        main(["devices", "revoke", "ghost", *common])


def test_the_remote_commands_do_not_need_httpx(api_url: str, data_dir, db_engine: Engine, monkeypatch) -> None:
    """httpx is in the dev extra only: a user's `cloud` install must work without it."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    ensure_dev_token(db_engine, data_dir)
    monkeypatch.setitem(sys.modules, "httpx", None)  # importing it now raises ImportError
    common = ["--api", api_url, "--data-dir", str(data_dir)]
    assert main(["devices", *common]) == 0 and main(["models", *common]) == 0
    assert main(["devices", "enroll", *common]) == 0
