"""Broker credentials: random secrets, kept only as hashes in Mosquitto's own password-file format.

Format `$7$<iterations>$<salt b64>$<PBKDF2-HMAC-SHA512 b64>` (what `mosquitto_passwd` writes in 2.x), so
one hash serves a production Mosquitto's `password_file` and the embedded broker's check alike.
Secrets are 32 random bytes (`new_secret`), not something a person chose, so brute force is hopeless at any
iteration count; the count stays modest because a broker pays it on every connect, and after an outage
every device reconnects at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping

ITERATIONS = 1_000
_SALT_BYTES = 12
_HASH_BYTES = 64


def new_secret() -> str:
    """A fresh broker password: 32 random bytes, URL-safe text."""
    return secrets.token_urlsafe(32)


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when password matches a `$7$` (PBKDF2-SHA512) or `$6$` (salted SHA-512) Mosquitto hash."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, expected = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
            actual = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(expected))
        elif len(parts) == 4 and parts[1] == "6":
            salt, expected = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            actual = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def password_file(hashes: Mapping[str, str]) -> str:
    """The text of a Mosquitto password file: `user:hash` per line, sorted for stable diffs."""
    for user in hashes:
        if not user or ":" in user or "\n" in user:
            raise ValueError(f"user name {user!r} cannot appear in a password file")
    return "".join(f"{user}:{hashes[user]}\n" for user in sorted(hashes))


def read_password_file(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            user, _, hashed = line.partition(":")
            entries[user] = hashed
    return entries
