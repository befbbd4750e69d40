"""A throwaway certificate authority and a server certificate for 127.0.0.1/localhost, for TLS tests
(made by the same code as `edgefleet broker-config`)."""

from __future__ import annotations

from pathlib import Path

from cloud.identity.ca import TlsFiles, write_server_pki

__all__ = ["TlsFiles", "make_tls_files"]


def make_tls_files(directory: Path, name: str = "edgefleet-test") -> TlsFiles:
    return write_server_pki(directory / name, ["localhost", "127.0.0.1"], name=name)
