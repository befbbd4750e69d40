"""Who the embedded broker lets in and what it lets them do: the same identities and grants as Mosquitto.

A device connects with user name = client id = its device id and the password it received at enrollment;
its credential must be in the database and not revoked. The cloud connects as `CLOUD_USER` with the
password kept in `<data_dir>/broker-cloud.password` (made on first start, mode 0600). Topic checks are
`cloud.identity.acl`'s grants, exactly what `edgefleet broker-config` renders for Mosquitto.

The methods that read the database block; the broker calls them off its event loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from cloud.identity.acl import CLOUD_USER, Access, grants_for, is_allowed
from cloud.identity.passwords import hash_password, new_secret, verify_password
from cloud.identity.records import DeviceCredential

log = logging.getLogger(__name__)

CLOUD_PASSWORD_FILE = "broker-cloud.password"
_MAX_PASSWORD_CHARS = 1024  # ours are 43; anything far longer is not worth hashing


def cloud_password(data_dir: Path) -> str:
    """The cloud's broker password, created (mode 0600) on first use and read back afterwards."""
    path = data_dir / CLOUD_PASSWORD_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    password = new_secret()
    try:  # O_EXCL: two clouds starting at once on one data_dir must not each write their own
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


class BrokerAuthority:
    """Decides CONNECTs, topic access and which connected devices lost their credentials."""

    def __init__(self, engine: Engine, fleet: str, cloud_password: str, *, cloud_user: str = CLOUD_USER) -> None:
        self.engine = engine
        self.fleet = fleet
        self.cloud_user = cloud_user
        self._cloud_hash = hash_password(cloud_password)  # compared like a device's, in constant time

    def check_connect(
        self, username: str | None, password: str | None, client_id: str | None, will_topic: str | None = None
    ) -> bool:
        """True when the credentials are live, (for a device) the client id is its device id, so one device
        cannot take over or wipe another's session, and any will goes to a topic the user may write (else
        a device's will would publish, unchecked, wherever it named when it drops)."""
        if not username or not password or len(password) > _MAX_PASSWORD_CHARS:
            return False
        if will_topic is not None and not self.may(username, Access.WRITE, will_topic):
            return False
        if username == self.cloud_user:
            return verify_password(password, self._cloud_hash)
        if client_id != username:
            return False
        with Session(self.engine) as session:
            credential = session.get(DeviceCredential, username)
            if credential is None or credential.revoked_at_ms is not None:
                return False
            hashed = credential.password_hash
        return verify_password(password, hashed)

    def may(self, username: str | None, access: Access, topic: str) -> bool:
        return bool(username) and is_allowed(grants_for(username, self.fleet, self.cloud_user), username or "",
                                             access, topic)  # fmt: skip

    def revoked_among(self, device_ids: Collection[str]) -> set[str]:
        """Those of device_ids (the connected devices) that no longer hold live credentials."""
        ids = {d for d in device_ids if d != self.cloud_user}
        if not ids:
            return set()
        query = select(DeviceCredential.device_id).where(
            col(DeviceCredential.device_id).in_(sorted(ids)), col(DeviceCredential.revoked_at_ms).is_(None)
        )
        with Session(self.engine) as session:
            live = set(session.exec(query))
        return ids - live
