"""The token commands on the database, the development token file `up` writes, and the remote commands
finding their token (flag, environment, file) against a real console API on uvicorn."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from cloud.api.auth_budget import AuthBudget
from cloud.cli import main
from cloud.cli.operator_token import TOKEN_ENV, ensure_dev_token, token_path
from cloud.cli.up import _operator_token
from cloud.identity.records import ApiToken, AuditEntry
from cloud.identity.tokens import authenticate
from cloud.settings import CloudSettings
from cloud.token_buckets import ClientRate


def test_tokens_create_list_revoke_on_the_database(data_dir: Path, db_engine: Engine, capsys) -> None:
    assert main(["tokens", "create", "--name", "alice", "--role", "deployer", "--ttl-days", "7",
                 "--data-dir", str(data_dir)]) == 0
    text = capsys.readouterr().out.splitlines()[0]
    with Session(db_engine) as session:
        operator = authenticate(session, text)
        assert operator is not None and operator.role == "deployer" and operator.name == "alice"
    assert main(["tokens", "list", "--data-dir", str(data_dir)]) == 0
    listing = capsys.readouterr().out
    secret = text.split("_", 2)[2]  # all of it: a url-safe secret may hold "_", and a 1-letter piece is anywhere
    assert operator.token_id in listing and "active" in listing and secret not in listing
    assert main(["tokens", "revoke", operator.token_id, "--data-dir", str(data_dir)]) == 0
    assert main(["tokens", "revoke", "ghost", "--data-dir", str(data_dir)]) == 1
    with Session(db_engine) as session:
        assert authenticate(session, text) is None
        log = session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()  # type: ignore[arg-type]
        assert [(e.actor, e.action, e.target) for e in log] == [
            ("cli", "token.create", operator.token_id), ("cli", "token.revoke", operator.token_id)
        ]
    with pytest.raises(SystemExit):  # argparse refuses an unknown role
        main(["tokens", "create", "--name", "x", "--role", "root", "--data-dir", str(data_dir)])


def test_rotating_the_tag_key_keeps_old_tokens_until_it_is_retired(data_dir: Path, db_engine: Engine, capsys) -> None:
    assert main(["tokens", "create", "--name", "old", "--role", "viewer", "--data-dir", str(data_dir)]) == 0
    old = capsys.readouterr().out.splitlines()[0]
    assert main(["tokens", "rotate-key", "--data-dir", str(data_dir)]) == 0
    assert "generation 2" in capsys.readouterr().out
    assert main(["tokens", "create", "--name", "new", "--role", "viewer", "--data-dir", str(data_dir)]) == 0
    new = capsys.readouterr().out.splitlines()[0]
    budget = AuthBudget(ClientRate(1.0, 1))
    budget.tags.reload(db_engine)
    assert budget.admissible(old) is not None and budget.admissible(new) is not None
    assert main(["tokens", "retire-key", "2", "--data-dir", str(data_dir)]) == 1  # the newest: refused
    capsys.readouterr()
    # the old token is still in use: retiring its key would lock it out (it may be up's admin token)
    assert main(["tokens", "retire-key", "1", "--data-dir", str(data_dir)]) == 1
    assert "1 token(s) in use still carry ids tagged by generation 1" in capsys.readouterr().err
    budget = AuthBudget(ClientRate(1.0, 1))
    budget.tags.reload(db_engine)
    assert budget.admissible(old) is not None  # nothing retired
    assert main(["tokens", "retire-key", "1", "--force", "--data-dir", str(data_dir)]) == 0
    budget = AuthBudget(ClientRate(1.0, 1))
    budget.tags.reload(db_engine)
    assert budget.admissible(old) is None and budget.forged == 1 and budget.admissible(new) is not None
    with Session(db_engine) as session:
        actions = [e.action for e in session.exec(select(AuditEntry))]
    assert actions.count("tag_key.rotate") == 1 and actions.count("tag_key.retire") == 1


def test_development_up_writes_one_admin_token_file(data_dir: Path, db_engine: Engine) -> None:
    settings = CloudSettings(data_dir=data_dir)
    line = _operator_token(SimpleNamespace(engine=db_engine), settings)  # type: ignore[arg-type]
    path = token_path(data_dir)
    assert str(path) in line and "created" in line
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with Session(db_engine) as session:
        operator = authenticate(session, path.read_text().strip())
        assert operator is not None and operator.role == "admin"
    assert ensure_dev_token(db_engine, data_dir) == (path, False)  # a second start reuses it
    path.unlink()  # admin tokens exist, the file is gone: it does not mint another one behind their back
    assert ensure_dev_token(db_engine, data_dir) is None
    with Session(db_engine) as session:
        assert len(session.exec(select(ApiToken)).all()) == 1


def test_production_up_never_creates_a_token(data_dir: Path, db_engine: Engine) -> None:
    settings = CloudSettings(
        environment="production", data_dir=data_dir, database_url="postgresql://u@db.example/edgefleet",
        mqtt_url="mqtts://broker.example:8883", mqtt_username="cloud", mqtt_password="secret",
    )
    line = _operator_token(SimpleNamespace(engine=db_engine), settings)  # type: ignore[arg-type]
    assert "none created" in line and not token_path(data_dir).exists()
    with Session(db_engine) as session:
        assert session.exec(select(ApiToken)).all() == []


def test_remote_commands_find_the_token(api_url: str, data_dir: Path, db_engine: Engine, monkeypatch,
                                        capsys) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    common = ["--api", api_url, "--data-dir", str(data_dir)]
    with pytest.raises(SystemExit) as refused:  # no flag, no variable, no file
        main(["devices", *common])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "EDGEFLEET_TOKEN" in err and "tokens create" in err and len(err.strip().splitlines()) == 1
    ensure_dev_token(db_engine, data_dir)  # what `edgefleet up` does in development
    assert main(["devices", *common]) == 0 and main(["models", *common]) == 0
    token_path(data_dir).unlink()
    with pytest.raises(SystemExit, match="^error: the API token is unknown, revoked or expired$"):
        main(["devices", "--token", "ef_bad_token", *common])
    capsys.readouterr()
    main(["tokens", "create", "--name", "v", "--role", "viewer", "--data-dir", str(data_dir)])
    viewer = capsys.readouterr().out.splitlines()[0]
    monkeypatch.setenv(TOKEN_ENV, viewer)
    assert main(["devices", *common]) == 0
    with pytest.raises(SystemExit, match="^error: .*needs the deployer role"):  # a viewer may look, not deploy
        main(["deploy", "m", "--devices", "pi-01", *common])
    assert os.environ[TOKEN_ENV] == viewer
