"""Agent settings: file, environment, defaults, and one clear error per bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentSettings, load_settings
from edge_agent.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_defaults_use_the_device_paths() -> None:
    settings = AgentSettings(device_id="pi-1")
    assert settings.state_dir == Path("/var/lib/edgefleet")
    assert settings.root_key_path == Path("/etc/edgefleet/root.pub")
    assert settings.grpc_address == "127.0.0.1:50051"
    assert settings.runtime_preference == ["onnxruntime", "tflite"]


def test_the_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, 'device_id = "pi-1"\nchunk_window = 4\n[labels]\nsite = "lab"\n')
    assert load_settings(path).chunk_window == 4
    monkeypatch.setenv("EDGEFLEET_AGENT_CHUNK_WINDOW", "16")
    monkeypatch.setenv("EDGEFLEET_AGENT_LABELS", '{"site": "field"}')
    settings = load_settings(path)
    assert settings.chunk_window == 16 and settings.labels == {"site": "field"}
    assert settings.device_id == "pi-1"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('device_id = "no/slashes"', "device_id"),
        ('device_id = "pi-1"\nmqtt_url = "http://broker"', "mqtt_url"),
        ('device_id = "pi-1"\nmqtt_url = "mqtt://broker:notaport"', "mqtt_url"),
        ('device_id = "pi-1"\ngrpc_address = "nowhere"', "grpc_address"),
        ('device_id = "pi-1"\nsample_rate = 1.5', "sample_rate"),
        ('device_id = "pi-1"\nchunk_window = 0', "chunk_window"),
        ('device_id = "pi-1"\ntelemetry_interval_s = 0', "telemetry_interval_s"),
        ('device_id = "pi-1"\nmqtt_protocol = "4"', "mqtt_protocol"),
        ('device_id = "pi-1"\nchunk_windw = 3', "chunk_windw"),
        ("mqtt_url = 'mqtt://b:1883'", "device_id"),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    assert f"\n  {field}:" in str(info.value)
    assert info.value.code == "bad_config"


def test_a_missing_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_write(tmp_path, "device_id = "))


def test_the_root_key_must_be_a_raw_ed25519_key(tmp_path: Path) -> None:
    key = tmp_path / "root.pub"
    key.write_bytes(b"x" * 31)
    settings = load_settings(device_id="pi-1", root_key_path=key)
    with pytest.raises(ConfigError, match="root_key_path: .* 31 bytes"):
        settings.read_root_key()
    key.write_bytes(b"k" * 32)
    assert settings.read_root_key() == b"k" * 32
    with pytest.raises(ConfigError, match="root_key_path: cannot read"):
        load_settings(device_id="pi-1", root_key_path=tmp_path / "nope").read_root_key()
