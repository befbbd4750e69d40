"""The cloud's key store (cloud.registry.keys): key files on disk, and signers loaded from them that the
device's trust chain accepts. (Moved here from tests/unit/protocols, which import no cloud code.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloud.errors import ConfigurationError, KeyStoreError
from cloud.registry.keys import init_keys, load_root_public, load_signer
from protocols import trust
from protocols.v1 import messages_pb2 as pb

NOW_MS = int(time.time() * 1000)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


def test_a_signer_loaded_from_key_files_verifies_against_the_pinned_root_file(keys: Path) -> None:
    signed = load_signer(keys).sign(pb.Manifest(model_id="digits", version="5", sequence=5))
    manifest = trust.verify_manifest(signed, trust.TrustedRoot.of(load_root_public(keys)), now_ms=NOW_MS)
    assert (manifest.model_id, manifest.sequence) == ("digits", 5)


def test_rotating_the_root_key_keeps_both_pins_valid(keys: Path, tmp_path: Path) -> None:
    new = init_keys(tmp_path / "new").parent
    both = trust.TrustedRoot.of(load_root_public(keys), load_root_public(new))
    for directory in (keys, new):
        signed = load_signer(directory).sign(pb.Manifest(model_id="digits", version="1", sequence=1))
        assert trust.verify_manifest(signed, both, now_ms=NOW_MS)


def test_init_keys_refuses_to_overwrite_and_private_keys_are_private(keys: Path) -> None:
    with pytest.raises(KeyStoreError, match="refusing to overwrite"):
        init_keys(keys)
    assert (keys / "root.key").stat().st_mode & 0o077 == 0
    assert (keys / "targets.key").stat().st_mode & 0o077 == 0


def test_missing_keys_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="edgefleet keys init"):
        load_signer(tmp_path)
    with pytest.raises(KeyStoreError, match="edgefleet keys init"):
        load_root_public(tmp_path)


def test_key_store_errors_are_configuration_errors_of_the_cloud_tree() -> None:
    assert issubclass(KeyStoreError, ConfigurationError)
    assert KeyStoreError.code == "key_store"
