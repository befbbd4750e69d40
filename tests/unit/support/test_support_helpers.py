"""The shared test helpers in tests/support behave as their docstrings promise."""

from __future__ import annotations

import socket
import threading

import pytest
from support import Inbox, MosquittoBroker, free_port, mosquitto_binary, port_accepts, wait_until
from support.database import (
    libpq_url,
    new_schema_name,
    postgres_url_from_env,
    schema_age_s,
    with_search_path,
)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536


def test_port_accepts_tells_listening_from_closed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert port_accepts("127.0.0.1", port)
    assert not port_accepts("127.0.0.1", port)


def test_wait_until_returns_the_truthy_value_or_none() -> None:
    calls = []
    assert wait_until(lambda: calls.append(1) or len(calls) >= 3 and "done", 5, 0.001) == "done"
    assert len(calls) == 3
    assert wait_until(lambda: 0, 0.01, 0.001) is None
    assert wait_until(lambda: "at once", 0) == "at once"  # the predicate runs at least once


def test_inbox_collects_across_threads_and_waits() -> None:
    inbox = Inbox()
    workers = [threading.Thread(target=inbox, args=(f"t/{i}", bytes([i]))) for i in range(5)]
    for worker in workers:
        worker.start()
    assert inbox.wait_for(5, 5)
    for worker in workers:
        worker.join()
    assert sorted(inbox.topics()) == [f"t/{i}" for i in range(5)]
    assert inbox.payloads("t/3") == [b"\x03"]
    assert not inbox.wait_for(6, 0.01)
    inbox.clear()
    assert len(inbox) == 0


def test_schema_names_carry_their_age() -> None:
    name = new_schema_name(now=1_000_000)
    assert name.startswith("eftest_1000000_")
    assert schema_age_s(name, now=1_000_060) == 60
    assert schema_age_s("public") is None
    assert schema_age_s("eftest_notanumber_x") is None
    assert new_schema_name() != new_schema_name()


def test_search_path_goes_into_the_url() -> None:
    base = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    assert with_search_path(base, "s1") == base + "?options=-csearch_path%3Ds1"
    assert with_search_path(base + "?sslmode=disable", "s1").endswith("&options=-csearch_path%3Ds1")
    assert libpq_url(base) == "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_postgres_url_from_env(monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None) -> None:
    monkeypatch.setenv("EDGEFLEET_TEST_DATABASE_URL", value)
    assert postgres_url_from_env() == expected


def test_non_postgres_env_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_TEST_DATABASE_URL", "mysql://u@h/db")
    with pytest.raises(ValueError, match="must be a postgresql:// URL"):
        postgres_url_from_env()


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed")
def test_mosquitto_config_follows_the_options(tmp_path) -> None:
    broker = MosquittoBroker(tmp_path, users={"dev-1": "pw"}, persistence=True)
    broker._write_config()
    config = broker.config_path.read_text()
    assert f"listener {broker.port} 127.0.0.1" in config
    assert "allow_anonymous false" in config and "password_file" in config
    assert "persistence true" in config and f"persistence_location {tmp_path}/" in config
    assert (tmp_path / "passwords").read_text().startswith("dev-1:")
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
