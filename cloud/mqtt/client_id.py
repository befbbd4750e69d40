"""A stable MQTT client id per cloud worker, held by a lock file while the worker runs.

The cloud connects with a persistent session (clean_start=False and a session expiry), so the broker keeps
its subscriptions, and queues what devices send, while the cloud restarts or reconnects. That only works
if the worker comes back under the same client id: `edgefleet-cloud-<fleet>-<worker>`, where the worker
name is EDGEFLEET_WORKER_NAME or, by default, the host name plus a digest of the data_dir (stable across
restarts, different for two data_dirs on one host).

Two processes must never share a client id: the broker would disconnect one whenever the other connects
(a "session takeover"), and they would steal each other's queued messages. So a worker holds
`<data_dir>/mqtt-session-<worker>.lock` (flock, released when the process ends however it ends). A
second process on the same data_dir with the default name takes `<worker>-2`, `-3`, ...; with a name
given explicitly it is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
from pathlib import Path
from typing import IO

from cloud.errors import ConfigurationError

_MAX_DEFAULT_WORKERS = 32  # default-named workers one data_dir may run at once
_MAX_ID_LENGTH = 100  # brokers may refuse longer client ids; mosquitto takes 65535, others less
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def default_worker_name(data_dir: Path) -> str:
    """<host>-<8 hex of the data_dir's absolute path>: the same for every start of this data_dir."""
    host = _UNSAFE.sub("-", socket.gethostname())[:32] or "host"
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:8]
    return f"{host}-{digest}"


def cloud_client_id(fleet: str, worker: str) -> str:
    client_id = _UNSAFE.sub("-", f"edgefleet-cloud-{fleet}-{worker}")
    if len(client_id) > _MAX_ID_LENGTH:  # keep it short and still unique
        client_id = f"{client_id[:_MAX_ID_LENGTH - 17]}-{hashlib.sha256(client_id.encode()).hexdigest()[:16]}"
    return client_id


class ClientIdLease:
    """The client id a worker holds, and the lock file that says so; `release()` when disconnected."""

    def __init__(self, client_id: str, lock_path: Path, handle: IO[str]) -> None:
        self.client_id = client_id
        self.lock_path = lock_path
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # closing drops the flock; the file stays (removing it would race a new holder)

    @property
    def held(self) -> bool:
        return self._handle is not None


def lease_client_id(
    data_dir: Path, fleet: str, *, worker_name: str | None = None, client_id: str | None = None
) -> ClientIdLease:
    """Take this worker's client id: client_id as given, else the one of worker_name (or the default name).

    Raises ConfigurationError when the id asked for is held by another process, or when every default
    name is."""
    if client_id is not None or worker_name is not None:
        wanted = client_id or cloud_client_id(fleet, worker_name or "")
        lease = _try_lease(data_dir, wanted)
        if lease is None:
            raise ConfigurationError(
                f"MQTT client id {wanted!r} is in use by another process on {data_dir}: give each worker its "
                "own EDGEFLEET_WORKER_NAME"
            )
        return lease
    base = default_worker_name(data_dir)
    for n in range(1, _MAX_DEFAULT_WORKERS + 1):
        lease = _try_lease(data_dir, cloud_client_id(fleet, base if n == 1 else f"{base}-{n}"))
        if lease is not None:
            return lease
    raise ConfigurationError(f"{_MAX_DEFAULT_WORKERS} cloud workers already run on {data_dir}")


def _try_lease(data_dir: Path, client_id: str) -> ClientIdLease | None:
    path = Path(data_dir) / f"mqtt-session-{client_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lease's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")  # for an operator wondering who holds it
    handle.flush()
    return ClientIdLease(client_id, path, handle)
