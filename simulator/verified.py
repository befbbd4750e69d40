"""One Ed25519 verification per distinct (public key, signature, signed bytes) in a simulator process.

Every device of a fleet receives the same signed manifest and the same trust chain, and each checks them
itself (the agent's code, unchanged); in one process those checks are of the same bytes with the same
key, so their answer is the same: it is computed once and remembered (`functools.lru_cache`, keyed by the
exact bytes: a changed byte, signature or key is a different key and verified for real, a tampered message
is refused as before). Per-device bytes (each device's signed assignment) miss and are verified as usual.
Installed by `simulator.host.AgentHost`, for its process; a device's agent never runs this.
"""

from __future__ import annotations

import functools

from protocols import trust

__all__ = ["install"]

KEPT = 4096  # distinct triples remembered (a manifest, a chain, each device's assignment: a few hundred bytes each)


def install() -> None:
    """Route `protocols.trust.verify_signature` (which `protocols.roots` calls) through the cache; idempotent."""
    if getattr(trust.verify_signature, "cache_info", None) is not None:
        return
    verify = trust.verify_signature
    cached = functools.lru_cache(maxsize=KEPT)(verify)

    def verify_signature(public_key_raw: bytes, signature: bytes, data: bytes) -> bool:
        try:
            return cached(public_key_raw, signature, data)
        except TypeError:  # unhashable (a bytearray, a memoryview): checked without the cache
            return verify(public_key_raw, signature, data)

    verify_signature.cache_info = cached.cache_info  # type: ignore[attr-defined]
    trust.verify_signature = verify_signature
