"""One redemption of an enrollment token as the console API performs it, with its audit trail.

Success: the spent token, the device's credentials, its row and the audit row commit together. Refusal:
nothing of the attempt is kept but an audit row (in its own transaction) naming the token's public id
and the reason, which only admins read; the caller answers every refusal alike. Two concurrent
enrollments of one new device id (with two tokens) collide on the credential's key: the loser is a
ConflictError, not a 500.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cloud.errors import ConflictError, EnrollmentRefused
from cloud.identity import audit
from cloud.identity.enrollment import Enrolled, redeem, token_id_of


def _actor(device_id: str) -> str:
    return f"device {device_id}"


def enroll_with_token(engine: Engine, token: str, device_id: str) -> Enrolled:
    """Redeem token for device_id and commit; EnrollmentRefused / ConflictError (audited) if not."""
    token_id = (token_id_of(token) or "")[:32]  # the public part only: never the secret
    with Session(engine) as session:
        try:
            enrolled = redeem(session, token, device_id)
            audit.record(session, actor=_actor(device_id), action="device.enroll", target=device_id,
                         detail={"token_id": token_id, "labels": enrolled.labels})
            session.commit()
            return enrolled
        except IntegrityError:
            session.rollback()
            refusal: Exception = ConflictError(f"device {device_id} is being enrolled by another request")
            reason = "concurrent enrollment of the same id"
        except EnrollmentRefused as exc:
            session.rollback()
            refusal, reason = exc, exc.reason
        except ConflictError as exc:
            session.rollback()
            refusal, reason = exc, "id already enrolled; the token does not name it"
        audit.record(session, actor=_actor(device_id), action="device.enroll_refused", target=device_id,
                     detail={"token_id": token_id, "reason": reason})
        session.commit()
    raise refusal
