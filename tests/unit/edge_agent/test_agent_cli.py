"""`edgefleet agent provision`: a config file that loads, and the root key pinned beside it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from support.releases import Keys

from edge_agent.cli import main, register
from edge_agent.config import load_settings


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edgefleet")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_provision_writes_a_config_that_loads(tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "etc" / "agent.toml"
    code = _run(
        "agent",
        "provision",
        "--device-id",
        "pi-7",
        "--mqtt-url",
        "mqtts://broker.example:8883",
        "--trust",
        str(keys.trust_path),
        "--state-dir",
        str(tmp_path / "state"),
        "--out",
        str(out),
        "--mqtt-username",
        "pi-7",
        "--mqtt-password",
        'se"cret',
        "--label",
        "site=lab",
        "--label",
        "tier=canary",
        "--grpc-address",
        "",
    )
    assert code == 0, capsys.readouterr().err
    settings = load_settings(out)
    assert settings.device_id == "pi-7" and settings.mqtt_url == "mqtts://broker.example:8883"
    assert settings.mqtt_password is not None and settings.mqtt_password.get_secret_value() == 'se"cret'
    assert settings.labels == {"site": "lab", "tier": "canary"}
    assert settings.grpc_address == "" and settings.state_dir == tmp_path / "state"
    assert settings.trust_path == out.parent / "trust.chain"
    assert settings.read_trust().fleet == keys.fleet
    assert out.stat().st_mode & 0o777 == 0o600  # it holds a password

    assert (
        _run(
            "agent",
            "provision",
            "--device-id",
            "pi-7",
            "--mqtt-url",
            "mqtt://b",
            "--trust",
            str(keys.trust_path),
            "--state-dir",
            str(tmp_path),
            "--out",
            str(out),
        )
        == 1
    )
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device-id", "bad id"], "device_id"),
        (["--mqtt-url", "http://x"], "mqtt_url"),
        (["--label", "novalue"], "KEY=VALUE"),
    ],
)
def test_provision_refuses_bad_values(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    base = {"--device-id": "pi-7", "--mqtt-url": "mqtt://b:1883"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [v for pair in base.items() for v in pair if pair[0] != "--label"]
    if "--label" in base:
        flat += ["--label", base["--label"]]
    out = tmp_path / "agent.toml"
    code = _run(
        "agent", "provision", *flat, "--trust", str(keys.trust_path), "--state-dir", str(tmp_path), "--out", str(out)
    )
    assert code == 1 and message in capsys.readouterr().err
    assert not out.exists()


def test_provision_refuses_a_file_that_is_not_a_trust_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "root.pub"
    key.write_bytes(b"x" * 32)  # what devices pinned before root metadata: refused with a clear message
    code = _run(
        "agent",
        "provision",
        "--device-id",
        "pi-7",
        "--mqtt-url",
        "mqtt://b",
        "--trust",
        str(key),
        "--state-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "a.toml"),
    )
    assert code == 1 and "not a valid trust chain" in capsys.readouterr().err


def test_the_agent_command_provisions_on_its_own(tmp_path: Path, keys: Keys) -> None:
    """`edgefleet-agent provision ...` (edge_agent.cli.main) does what `edgefleet agent provision` does."""
    out = tmp_path / "agent.toml"
    argv = ["--log-level", "INFO", "provision", "--device-id", "pi-8", "--mqtt-url", "mqtt://localhost:1883",
            "--trust", str(keys.trust_path), "--state-dir", str(tmp_path / "state"), "--out", str(out)]
    assert main(argv) == 0
    assert load_settings(out).device_id == "pi-8"
    assert main([]) == 2  # no command: help, and a usage error code
