"""Broker password hashes: Mosquitto's own format, checked both ways against `mosquitto_passwd`."""

import subprocess
from pathlib import Path

import pytest
from support import mosquitto_passwd_binary

from cloud.identity.passwords import (
    hash_password,
    new_secret,
    password_file,
    read_password_file,
    verify_password,
)


def test_a_hash_verifies_its_password_and_nothing_else() -> None:
    secret = new_secret()
    hashed = hash_password(secret)
    assert hashed.startswith("$7$1000$")
    assert verify_password(secret, hashed)
    assert not verify_password(secret + "x", hashed)
    assert hash_password(secret) != hashed  # a fresh salt each time


@pytest.mark.parametrize("garbage", ["", "$7$", "$7$x$y$z", "$7$10$!!$!!", "$5$a$b", "plain"])
def test_garbage_hashes_never_verify(garbage: str) -> None:
    assert not verify_password("pw", garbage)


def test_secrets_are_long_and_unique() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100 and all(len(s) >= 40 for s in secrets)


def test_password_files_round_trip_and_refuse_impossible_users() -> None:
    text = password_file({"pi-02": "$7$h2", "cloud": "$7$h1"})
    assert text == "cloud:$7$h1\npi-02:$7$h2\n"
    assert read_password_file("# comment\n" + text) == {"cloud": "$7$h1", "pi-02": "$7$h2"}
    with pytest.raises(ValueError):
        password_file({"a:b": "h"})


@pytest.mark.skipif(mosquitto_passwd_binary() is None, reason="needs mosquitto_passwd")
def test_mosquitto_passwd_hashes_verify_here(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    subprocess.run([str(mosquitto_passwd_binary()), "-b", "-c", str(path), "alice", "s3cret"], check=True)
    hashed = read_password_file(path.read_text())["alice"]
    assert verify_password("s3cret", hashed) and not verify_password("s3cre", hashed)
