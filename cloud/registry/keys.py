"""The cloud's key store: key files on disk, loaded into the pure signers of `protocols.signing`, and the
rule for when the cloud may create them (`load_or_create_signer`).

`init_keys(dir)` writes:
    root.key / root.pub             the root key pair. Keep root.key offline after provisioning; devices
                                    pin root.pub.
    targets.key                     the online signing key
    targets.delegation              SignedDelegation: the root key's statement that the targets key may
                                    sign manifests until its expiry
Private keys are PKCS#8 PEM files with mode 0600.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.errors import ConfigurationError, KeyStoreError
from protocols.signing import Signer, delegate, raw_public
from protocols.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from cloud.settings import CloudSettings

log = logging.getLogger(__name__)

DEFAULT_DELEGATION_DAYS = 365


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def _read_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise KeyStoreError(f"missing key file {path}; run `edgefleet keys init`") from None
    except ValueError as exc:
        raise KeyStoreError(f"cannot read key file {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyStoreError(f"{path} is not an Ed25519 private key")
    return key


def init_keys(
    directory: Path, *, valid_days: float = DEFAULT_DELEGATION_DAYS, overwrite: bool = False
) -> Path:
    """Create a root key, a targets key and the root's delegation to it. Returns the root.pub path."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "root.key").exists() and not overwrite:
        raise KeyStoreError(f"{directory} already holds keys; refusing to overwrite them")
    root = Ed25519PrivateKey.generate()
    targets = Ed25519PrivateKey.generate()
    _write_private(directory / "root.key", root)
    _write_private(directory / "targets.key", targets)
    (directory / "root.pub").write_bytes(raw_public(root))
    signed = delegate(root, raw_public(targets), now_ms=int(time.time() * 1000), valid_days=valid_days)
    (directory / "targets.delegation").write_bytes(signed.SerializeToString())
    return directory / "root.pub"


def load_signer(directory: Path) -> Signer:
    targets = _read_private(directory / "targets.key")
    try:
        delegation = pb.SignedDelegation.FromString((directory / "targets.delegation").read_bytes())
    except FileNotFoundError:
        raise KeyStoreError(f"missing {directory / 'targets.delegation'}; run `edgefleet keys init`") from None
    return Signer(targets, delegation)


def load_root_public(directory: Path) -> bytes:
    try:
        data = (directory / "root.pub").read_bytes()
    except FileNotFoundError:
        raise KeyStoreError(f"missing {directory / 'root.pub'}; run `edgefleet keys init`") from None
    if len(data) != 32:
        raise KeyStoreError(f"{directory / 'root.pub'} is not a raw 32-byte Ed25519 public key")
    return data


def load_or_create_signer(settings: CloudSettings) -> Signer:
    """The signer in settings.keys_dir; development creates the keys on first use, production never does."""
    keys_dir = settings.keys_dir
    assert keys_dir is not None
    if not (keys_dir / "targets.key").exists() and settings.creates_keys_on_start:
        init_keys(keys_dir)
        log.warning("created signing keys in %s; devices must pin %s", keys_dir, keys_dir / "root.pub")
    try:
        return load_signer(keys_dir)
    except KeyStoreError as exc:
        raise ConfigurationError(str(exc)) from None
