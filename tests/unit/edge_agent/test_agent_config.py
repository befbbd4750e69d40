"""Agent settings: file, environment, defaults, and one clear error per bad field."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.releases import Keys

from edge_agent.config import AgentSettings, load_settings
from edge_agent.errors import ConfigError
from protocols.v1 import messages_pb2 as pb


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_defaults_use_the_device_paths() -> None:
    settings = AgentSettings(device_id="pi-1")
    assert settings.state_dir == Path("/var/lib/edgefleet")
    assert settings.trust_path == Path("/etc/edgefleet/trust.chain")
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


def test_the_trust_chain_must_verify_from_its_first_version(tmp_path: Path, keys: Keys) -> None:
    settings = load_settings(device_id="pi-1", trust_path=keys.trust_path)
    assert settings.read_trust().fleet == keys.fleet and settings.read_trust().version == 1
    bad = tmp_path / "trust.chain"
    bad.write_bytes(b"\xff" * 31)
    with pytest.raises(ConfigError, match="trust_path: .* not a valid trust chain"):
        load_settings(device_id="pi-1", trust_path=bad).read_trust()
    forged = pb.TrustChain.FromString(keys.chain.SerializeToString())
    forged.roots[0].signatures[0].signature = bytes(64)
    bad.write_bytes(forged.SerializeToString())
    with pytest.raises(ConfigError, match="not signed"):
        load_settings(device_id="pi-1", trust_path=bad).read_trust()
    with pytest.raises(ConfigError, match="trust_path: cannot read"):
        load_settings(device_id="pi-1", trust_path=tmp_path / "nope").read_trust()


@pytest.mark.parametrize(
    ("values", "refused"),
    [
        ({"mqtt_url": "mqtts://broker.example:8883"}, "anonymous broker"),
        ({"mqtt_url": "mqtt://broker.example:1883", "mqtt_username": "pi-01", "mqtt_password": "pw"}, "plain mqtt://"),
    ],
)
def test_production_refuses_an_anonymous_or_plain_text_broker(values: dict[str, str], refused: str) -> None:
    with pytest.raises(ConfigError, match=refused):
        load_settings(device_id="pi-01", environment="production", **values)
    load_settings(device_id="pi-01", **values)  # development lets a lab do it


def test_production_takes_credentials_over_tls() -> None:
    settings = load_settings(
        device_id="pi-01", environment="production", mqtt_url="mqtts://broker.example:8883",
        mqtt_username="pi-01", mqtt_password="pw",
    )  # fmt: skip
    assert settings.environment == "production"


def test_environment_strings_become_the_fields_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_AGENT_ISOLATE_LOADS", "false")
    monkeypatch.setenv("EDGEFLEET_AGENT_SAMPLE_RATE", "0.5")
    monkeypatch.setenv("edgefleet_agent_state_dir", "/tmp/pi")  # any case, like the variables' usual reading
    monkeypatch.setenv("EDGEFLEET_AGENT_RUNTIME_PREFERENCE", '["tflite"]')
    monkeypatch.setenv("EDGEFLEET_AGENT_MQTT_PASSWORD", "s3cret")
    settings = load_settings(device_id="pi-1")
    assert settings.isolate_loads is False and settings.sample_rate == 0.5
    assert settings.state_dir == Path("/tmp/pi") and settings.runtime_preference == ["tflite"]
    assert settings.mqtt_password is not None and settings.mqtt_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_every_bad_field_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_AGENT_LABELS", "site=lab")
    with pytest.raises(ConfigError) as info:
        load_settings(device_id="pi-1", chunk_window="many", isolate_loads="maybe", colour="red")
    message = str(info.value)
    for field in ("labels", "chunk_window", "isolate_loads", "colour"):
        assert f"\n  {field}:" in message, message
    assert "must be JSON" in message and "unknown setting" in message


def test_constructing_settings_directly_checks_them_too() -> None:
    with pytest.raises(ConfigError, match="\n  sample_rate: must be at most 1"):
        AgentSettings(device_id="pi-1", sample_rate=2)
    settings = AgentSettings(device_id="pi-1", state_dir="/srv/pi", mqtt_password="pw")  # type: ignore[arg-type]
    assert settings.state_dir == Path("/srv/pi") and settings.mqtt_password is not None


def test_loading_settings_does_not_import_pydantic_or_cryptography() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from edge_agent.config import load_settings; load_settings(device_id='pi-1');"
        "print(sorted(m for m in ('pydantic', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
