from __future__ import annotations

from pathlib import Path

import pytest

from cloud.errors import ConfigurationError
from cloud.settings import CloudSettings


def test_development_defaults_derive_from_data_dir(tmp_path: Path) -> None:
    settings = CloudSettings(data_dir=tmp_path)
    assert settings.database == f"sqlite:///{tmp_path / 'edgefleet.db'}"
    assert settings.keys_dir == tmp_path / "keys"
    assert settings.artifacts_dir == tmp_path / "artifacts"
    assert settings.uses_embedded_broker and settings.creates_keys_on_start
    assert (settings.api_host, settings.api_port, settings.chunk_size_bytes) == ("127.0.0.1", 8080, 65536)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEFLEET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EDGEFLEET_MQTT_URL", "mqtt://127.0.0.1:1883")
    monkeypatch.setenv("EDGEFLEET_API_PORT", "0")
    monkeypatch.setenv("EDGEFLEET_SHARE_GROUP", "workers")
    monkeypatch.setenv("EDGEFLEET_DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
    settings = CloudSettings()
    assert settings.data_dir == tmp_path and not settings.uses_embedded_broker
    assert (settings.api_port, settings.share_group) == (0, "workers")
    assert settings.database == "postgresql+psycopg://postgres@127.0.0.1/test"


def test_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unsupported database URL"):
        CloudSettings(data_dir=tmp_path, database_url="mysql://x")
    with pytest.raises(ValueError):
        CloudSettings(data_dir=tmp_path, chunk_size_bytes=10)


def test_production_refuses_unsafe_defaults_and_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        CloudSettings(data_dir=tmp_path, environment="production")
    message = str(refused.value)
    assert "EDGEFLEET_MQTT_URL" in message and "SQLite" in message
    with pytest.raises(ConfigurationError, match="mqtts://"):
        CloudSettings(
            environment="production", mqtt_url="mqtt://broker.example:1883", mqtt_username="cloud",
            database_url="postgresql://db/edgefleet",
        )  # fmt: skip
    ok = CloudSettings(
        environment="production", mqtt_url="mqtts://broker.example:8883", mqtt_username="cloud",
        mqtt_password="secret", database_url="postgresql://db/edgefleet",
    )  # fmt: skip
    assert not ok.creates_keys_on_start
    assert "secret" not in repr(ok)


def test_metrics_need_a_token_in_production_unless_left_open(tmp_path: Path) -> None:
    production = {
        "environment": "production", "mqtt_url": "mqtts://broker.example:8883", "mqtt_username": "cloud",
        "database_url": "postgresql://db/edgefleet",
    }  # fmt: skip
    assert CloudSettings(**production).metrics_needs_token  # type: ignore[arg-type]
    assert not CloudSettings(**production, metrics_require_token=False).metrics_needs_token  # type: ignore[arg-type]
    assert not CloudSettings(data_dir=tmp_path).metrics_needs_token  # development: open
    assert CloudSettings(data_dir=tmp_path, metrics_require_token=True).metrics_needs_token


def test_an_alert_webhook_needs_a_signing_key_and_https_in_production(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="EDGEFLEET_ALERT_WEBHOOK_SIGNING_KEY"):
        CloudSettings(data_dir=tmp_path, alert_webhook_url="https://hooks.example/edgefleet")
    with pytest.raises(ConfigurationError, match="http"):
        CloudSettings(data_dir=tmp_path, alert_webhook_url="ftp://x", alert_webhook_signing_key="k")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="alert_webhook_url is plain http://"):
        CloudSettings(
            environment="production", mqtt_url="mqtts://broker.example:8883", mqtt_username="cloud",
            mqtt_password="pw", database_url="postgresql://db/edgefleet",
            alert_webhook_url="http://hooks.example/", alert_webhook_signing_key="k",  # type: ignore[arg-type]
        )  # fmt: skip
    ok = CloudSettings(data_dir=tmp_path, alert_webhook_url="http://127.0.0.1:9000/", alert_webhook_signing_key="k-v")  # type: ignore[arg-type]
    assert "k-v" not in repr(ok)
