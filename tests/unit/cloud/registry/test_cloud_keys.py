"""The cloud's key store (cloud.registry.keys) and `edgefleet keys`: key files on disk, root versions
that a device following the chain accepts after every step, and the refusals."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.cli import main
from cloud.errors import ConfigurationError, InvalidRequestError, KeyStoreError
from cloud.registry.keys import CHAIN_FILE, KeyStore
from protocols import trust
from protocols.assignment import verify_assignment
from protocols.roots import DIRECTOR_ROLE, ROOT_ROLE, TARGETS_ROLE, RootOfTrust
from protocols.signing import raw_public, sign_assignment
from protocols.v1 import messages_pb2 as pb

NOW_MS = int(time.time() * 1000)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    store = KeyStore(tmp_path / "keys")
    store.init("lab")
    return store


def key_of(store: KeyStore, role: str) -> str:
    [key] = [k.key_id for k in store.latest().keys if k.role == role]
    return key


def assert_signs_for_a_device_pinned_at_v1(store: KeyStore) -> None:
    """What a device provisioned with root v1 does: follow the chain, then check a manifest and an
    assignment signed with the store's current keys."""
    pinned = RootOfTrust.pin(store.chain().roots[0], fleet=store.fleet)
    root = pinned.advance(store.chain().roots)
    assert root.version == store.latest().version
    signed = store.manifest_signer().sign(pb.Manifest(model_id="m", version="1", sequence=1))
    root.verify(TARGETS_ROLE, signed.key_id, signed.signature, signed.manifest, NOW_MS)
    assignment = pb.Assignment(fleet=store.fleet, device_id="d", counter=1, expires_at_ms=NOW_MS + 60_000)
    verify_assignment(
        sign_assignment(store.director_key(), assignment), root, device_id="d", last_counter=0, now_ms=NOW_MS
    )


def test_init_makes_three_roles_in_root_v1_with_private_files(store: KeyStore) -> None:
    latest = store.latest()
    assert (latest.fleet, latest.version) == ("lab", 1)
    assert sorted(k.role for k in latest.keys) == sorted((ROOT_ROLE, TARGETS_ROLE, DIRECTOR_ROLE))
    for role in (ROOT_ROLE, TARGETS_ROLE, DIRECTOR_ROLE):
        assert (store.directory / f"{role}.key").stat().st_mode & 0o077 == 0
    assert store.root_of_trust().version == 1
    assert_signs_for_a_device_pinned_at_v1(store)


def test_init_refuses_to_overwrite_and_bad_fleet_names(store: KeyStore, tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="refusing to overwrite"):
        store.init("lab")
    with pytest.raises(InvalidRequestError, match="fleet"):
        KeyStore(tmp_path / "other").init("Not A Fleet")
    assert KeyStore(tmp_path / "random").init().fleet.startswith("fleet-")


@pytest.mark.parametrize("role", [TARGETS_ROLE, DIRECTOR_ROLE, ROOT_ROLE])
def test_rotating_each_role_makes_a_version_a_pinned_device_follows(store: KeyStore, role: str) -> None:
    old = key_of(store, role)
    new = store.rotate(role)
    assert new != old and key_of(store, role) == new and store.latest().version == 2
    assert_signs_for_a_device_pinned_at_v1(store)
    store.rotate(role)  # and again: each version is signed by the one before
    assert store.latest().version == 3
    assert_signs_for_a_device_pinned_at_v1(store)


def test_a_statement_by_a_rotated_out_key_is_refused(store: KeyStore) -> None:
    old_director = store.director_key()
    store.rotate(DIRECTOR_ROLE)
    signed = sign_assignment(old_director, pb.Assignment(fleet="lab", device_id="d", counter=1))
    with pytest.raises(trust.UnknownKeyError):
        verify_assignment(signed, store.root_of_trust(), device_id="d", last_counter=0, now_ms=NOW_MS)


def test_revoking_a_current_key_replaces_it_at_once(store: KeyStore) -> None:
    targets = key_of(store, TARGETS_ROLE)
    store.revoke(targets)
    latest = store.latest()
    assert targets in latest.revoked_key_ids and key_of(store, TARGETS_ROLE) != targets
    assert store.manifest_signer().key_id == key_of(store, TARGETS_ROLE)
    with pytest.raises(trust.RevokedKeyError):
        store.root_of_trust().key(targets, TARGETS_ROLE, NOW_MS)
    assert_signs_for_a_device_pinned_at_v1(store)


def test_revoking_an_old_key_only_refuses_it(store: KeyStore) -> None:
    old = key_of(store, DIRECTOR_ROLE)
    current = store.rotate(DIRECTOR_ROLE)
    store.revoke(old)
    assert old in store.latest().revoked_key_ids and key_of(store, DIRECTOR_ROLE) == current
    assert_signs_for_a_device_pinned_at_v1(store)


def test_the_root_key_and_unknown_keys_cannot_be_revoked(store: KeyStore) -> None:
    with pytest.raises(InvalidRequestError, match="rotate it"):
        store.revoke(key_of(store, ROOT_ROLE))
    with pytest.raises(InvalidRequestError, match="no key"):
        store.revoke("0" * 16)
    assert store.latest().version == 1


def test_a_crash_between_staging_and_rename_recovers(store: KeyStore) -> None:
    # staged after the chain was written (the crash came before the final rename): the staged key is current
    new = Ed25519PrivateKey.generate()
    from cloud.registry import keys as keys_module

    roots = list(store.chain().roots)
    current = store.latest()
    metadata = keys_module.next_root(
        current, now_ms=NOW_MS, add=[keys_module.role_key(raw_public(new), DIRECTOR_ROLE)],
        remove_key_ids={key_of(store, DIRECTOR_ROLE)},
    )
    root = store._key(ROOT_ROLE)
    staged = store.directory / ".director.key.new"
    staged.write_bytes(keys_module._pem(new))
    store._write_chain([*roots, keys_module.sign_root(metadata, root)])
    assert raw_public(store.director_key()) == raw_public(new)
    assert not staged.exists()
    assert_signs_for_a_device_pinned_at_v1(store)
    # staged before the chain was written: the old key stays, the staged one is dropped
    before = raw_public(store.director_key())
    staged.write_bytes(keys_module._pem(Ed25519PrivateKey.generate()))
    assert raw_public(store.director_key()) == before and not staged.exists()


def test_missing_or_broken_files_give_a_clear_error(tmp_path: Path) -> None:
    empty = KeyStore(tmp_path)
    with pytest.raises(KeyStoreError, match="edgefleet keys init"):
        empty.chain()
    with pytest.raises(KeyStoreError, match="edgefleet keys init"):
        empty.director_key()
    (tmp_path / CHAIN_FILE).write_bytes(b"\xff\xff not a chain")
    with pytest.raises(KeyStoreError, match="not a trust chain"):
        empty.chain()


def test_key_store_errors_are_configuration_errors_of_the_cloud_tree() -> None:
    assert issubclass(KeyStoreError, ConfigurationError)
    assert KeyStoreError.code == "key_store"


def test_keys_cli_init_show_rotate_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys_dir = tmp_path / "k"
    assert main(["keys", "init", "--dir", str(keys_dir), "--fleet", "plant-7"]) == 0
    out = capsys.readouterr().out
    assert "fleet plant-7, root version 1" in out and str(keys_dir / CHAIN_FILE) in out
    assert main(["keys", "init", "--dir", str(keys_dir)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err  # errors: one line on stderr
    assert main(["keys", "rotate", "--role", "root", "--dir", str(keys_dir)]) == 0
    assert "root version 2" in capsys.readouterr().out
    director = key_of(KeyStore(keys_dir), DIRECTOR_ROLE)
    assert main(["keys", "revoke", director, "--dir", str(keys_dir)]) == 0
    out = capsys.readouterr().out
    assert f"revoked {director}" in out and "root version 3" in out
    assert main(["keys", "show", "--dir", str(keys_dir)]) == 0
    assert f"revoked   {director}" in capsys.readouterr().out
    assert main(["keys", "show", "--dir", str(keys_dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["fleet"], shown["root_version"]) == ("plant-7", 3)
    assert director in shown["revoked_key_ids"]
    assert {k["role"] for k in shown["keys"]} == {"root", "targets", "director"}
    assert main(["keys", "revoke", key_of(KeyStore(keys_dir), ROOT_ROLE), "--dir", str(keys_dir)]) == 1
    assert "rotate it" in capsys.readouterr().err
    assert_signs_for_a_device_pinned_at_v1(KeyStore(keys_dir))
    assert os.stat(keys_dir / "root.key").st_mode & 0o077 == 0
