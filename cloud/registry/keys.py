"""The cloud's key store: the fleet's signing keys on disk and the chain of root versions naming them.

    <dir>/root.key        the root key (Ed25519, PKCS#8 PEM, mode 0600): signs root versions only. Keep it
                          offline in production; it is needed for `keys rotate` and `keys revoke` only.
    <dir>/targets.key     online: signs manifests (what a release is)
    <dir>/director.key    online: signs per-device assignments (who runs which release, in which order)
    <dir>/trust.chain     TrustChain: every root version, oldest first. Devices pin it at provisioning and
                          follow later versions from the retained trust topic and from each desired state.

`rotate(role)` makes a new key for a role and a new root version naming it (a new root key countersigns
its first version beside the old one); `revoke(key_id)` publishes a version that refuses the key and, when
it was a current online key, replaces it at once so that signing goes on. Every file is written to a
temporary name and renamed, the chain last, so a crash leaves the previous, consistent set.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError

from cloud.errors import ConfigurationError, InvalidRequestError, KeyStoreError
from protocols import SCHEMA_VERSION
from protocols.roots import DIRECTOR_ROLE, ROOT_ROLE, TARGETS_ROLE, RootOfTrust
from protocols.signing import Signer, first_root, next_root, raw_public, role_key, sign_root
from protocols.topics import TopicError, validate_fleet
from protocols.trust import key_id
from protocols.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from cloud.settings import CloudSettings

log = logging.getLogger(__name__)

ONLINE_ROLES = (TARGETS_ROLE, DIRECTOR_ROLE)
ROTATABLE_ROLES = (ROOT_ROLE, *ONLINE_ROLES)
CHAIN_FILE = "trust.chain"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def default_fleet_name() -> str:
    """A fleet name no other setup on the same broker will have by chance."""
    return f"fleet-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class KeyStore:
    directory: Path

    # ------------------------------------------------------------------ reading

    def exists(self) -> bool:
        return (self.directory / CHAIN_FILE).exists()

    def _key(self, role: str) -> Ed25519PrivateKey:
        path = self.directory / f"{role}.key"
        self._finish_interrupted_commit(role)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise KeyStoreError(f"missing key file {path}; run `edgefleet keys init`") from None
        except ValueError as exc:
            raise KeyStoreError(f"cannot read key file {path}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyStoreError(f"{path} is not an Ed25519 private key")
        return key

    def chain(self) -> pb.TrustChain:
        path = self.directory / CHAIN_FILE
        try:
            return pb.TrustChain.FromString(path.read_bytes())
        except FileNotFoundError:
            raise KeyStoreError(f"missing {path}; run `edgefleet keys init`") from None
        except DecodeError as exc:
            raise KeyStoreError(f"{path} is not a trust chain: {exc}") from None

    def latest(self) -> pb.RootMetadata:
        return pb.RootMetadata.FromString(self.chain().roots[-1].root)

    def root_of_trust(self) -> RootOfTrust:
        """The chain checked the way a device checks it: pinned at v1, followed to the end."""
        chain = self.chain()
        return RootOfTrust.pin(chain.roots[0]).advance(chain.roots)

    @property
    def fleet(self) -> str:
        return self.latest().fleet

    def manifest_signer(self) -> Signer:
        return Signer(self._key(TARGETS_ROLE))

    def director_key(self) -> Ed25519PrivateKey:
        return self._key(DIRECTOR_ROLE)

    # ------------------------------------------------------------------ writing

    def init(self, fleet: str | None = None, *, overwrite: bool = False) -> pb.RootMetadata:
        """A root, a targets and a director key, and root version 1 naming them."""
        fleet = fleet or default_fleet_name()
        try:
            validate_fleet(fleet)
        except TopicError as exc:
            raise InvalidRequestError(str(exc)) from None
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.exists() and not overwrite:
            raise KeyStoreError(f"{self.directory} already holds keys; refusing to overwrite them")
        keys = {role: Ed25519PrivateKey.generate() for role in ROTATABLE_ROLES}
        metadata = first_root(fleet, [role_key(raw_public(k), role) for role, k in keys.items()], now_ms=_now_ms())
        for role, key in keys.items():
            _atomic_write(self.directory / f"{role}.key", _pem(key), mode=0o600)
        self._write_chain([sign_root(metadata, keys[ROOT_ROLE])])
        return metadata

    def rotate(self, role: str) -> str:
        """Replace the key of `role` in a new root version; returns the new key's id."""
        if role not in ROTATABLE_ROLES:
            raise InvalidRequestError(f"unknown role {role!r}: rotate one of {', '.join(ROTATABLE_ROLES)}")
        root, chain = self._key(ROOT_ROLE), self.chain()
        current = pb.RootMetadata.FromString(chain.roots[-1].root)
        new = Ed25519PrivateKey.generate()
        retired = {k.key_id for k in current.keys if k.role == role}
        metadata = next_root(current, now_ms=_now_ms(), add=[role_key(raw_public(new), role)], remove_key_ids=retired)
        signers = (root, new) if role == ROOT_ROLE else (root,)
        self._commit(role, new, [*chain.roots, sign_root(metadata, *signers)])
        return key_id(raw_public(new))

    def revoke(self, kid: str) -> pb.RootMetadata:
        """A root version refusing key `kid`; a current targets or director key is replaced in the same
        version. The root key itself is not revoked but rotated (`rotate("root")`)."""
        root, chain = self._key(ROOT_ROLE), self.chain()
        current = pb.RootMetadata.FromString(chain.roots[-1].root)
        holder = next((k for k in current.keys if k.key_id == kid), None)
        known = holder is not None or any(
            k.key_id == kid for signed in chain.roots for k in pb.RootMetadata.FromString(signed.root).keys
        )
        if not known:
            raise InvalidRequestError(f"no key {kid!r} in any root version of this fleet")
        if holder is not None and holder.role == ROOT_ROLE:
            raise InvalidRequestError(
                "the root key cannot revoke itself: rotate it (`edgefleet keys rotate --role root`)"
            )
        replacement = Ed25519PrivateKey.generate() if holder is not None else None
        add = [] if holder is None or replacement is None else [role_key(raw_public(replacement), holder.role)]
        metadata = next_root(current, now_ms=_now_ms(), add=add, revoke_key_ids={kid})
        roots = [*chain.roots, sign_root(metadata, root)]
        if holder is not None and replacement is not None:
            self._commit(holder.role, replacement, roots)
        else:
            self._write_chain(roots)
        return metadata

    def _commit(self, role: str, key: Ed25519PrivateKey, roots: list[pb.SignedRootMetadata]) -> None:
        # the new key first (under a temporary name), then the chain naming it, then the key in place:
        # a crash before the chain leaves the old, consistent pair
        staged = self.directory / f".{role}.key.new"
        _atomic_write(staged, _pem(key), mode=0o600)
        self._write_chain(roots)
        os.replace(staged, self.directory / f"{role}.key")

    def _finish_interrupted_commit(self, role: str) -> None:
        """A staged key the chain already names is the current one: a crash came between the two renames."""
        staged = self.directory / f".{role}.key.new"
        if not staged.exists():
            return
        key = serialization.load_pem_private_key(staged.read_bytes(), password=None)
        if isinstance(key, Ed25519PrivateKey) and any(k.key_id == key_id(raw_public(key)) for k in self.latest().keys):
            os.replace(staged, self.directory / f"{role}.key")
        else:
            staged.unlink()  # the crash came before the chain: the old key is still the right one

    def _write_chain(self, roots: list[pb.SignedRootMetadata]) -> None:
        chain = pb.TrustChain(schema_version=SCHEMA_VERSION, roots=roots)
        _atomic_write(self.directory / CHAIN_FILE, chain.SerializeToString(deterministic=True))


def load_or_create_keys(settings: CloudSettings) -> KeyStore:
    """The key store in settings.keys_dir; development creates the keys on first use, production never does."""
    keys_dir = settings.keys_dir
    assert keys_dir is not None
    store = KeyStore(keys_dir)
    if not store.exists() and settings.creates_keys_on_start:
        metadata = store.init()
        log.warning(
            "created signing keys for fleet %s in %s; devices pin %s", metadata.fleet, keys_dir, keys_dir / CHAIN_FILE
        )
    try:
        store.root_of_trust()
        store.manifest_signer()
        store.director_key()
    except (KeyStoreError, ValueError) as exc:
        raise ConfigurationError(str(exc)) from None
    return store
