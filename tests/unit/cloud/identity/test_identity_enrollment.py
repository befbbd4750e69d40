"""Enrollment tokens (cloud.identity.enrollment): single use, expiring, device-scoped; credentials once."""

import threading
import time

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.errors import ConflictError, EnrollmentRefused, InvalidRequestError
from cloud.identity.enrollment import (
    create_enrollment_token,
    is_enrolled,
    live_password_hashes,
    redeem,
    revoke_device,
)
from cloud.identity.passwords import verify_password
from cloud.identity.records import EnrollmentToken


def _token(engine: Engine, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        _row, text = create_enrollment_token(session, **kwargs)
        session.commit()
    return text


def test_a_token_enrolls_one_device_once_with_its_labels(any_engine: Engine) -> None:
    text = _token(any_engine, labels={"site": "lab"})
    with Session(any_engine) as session:
        enrolled = redeem(session, text, "pi-01")
        session.commit()
        assert enrolled.labels == {"site": "lab"} and len(enrolled.password) >= 40
        assert verify_password(enrolled.password, live_password_hashes(session)["pi-01"])
        assert is_enrolled(session, "pi-01")
    with Session(any_engine) as session, pytest.raises(EnrollmentRefused):
        redeem(session, text, "pi-02")  # spent


def test_expired_wrong_and_forged_tokens_are_refused_alike(any_engine: Engine) -> None:
    scoped = _token(any_engine, device_id="pi-07")
    expired = _token(any_engine, ttl_s=60)
    with Session(any_engine) as session:
        row = session.get(EnrollmentToken, expired.split("_")[1])
        assert row is not None
        row.expires_at_ms = int(time.time() * 1000) - 1
        session.add(row)
        session.commit()
    for text, device in [
        (scoped, "pi-08"),
        (expired, "pi-01"),
        (scoped + "x", "pi-07"),
        ("efe_zz_yy", "pi-07"),
        ("", "d"),
    ]:
        with Session(any_engine) as session, pytest.raises(EnrollmentRefused):
            redeem(session, text, device)
    with Session(any_engine) as session:
        assert redeem(session, scoped, "pi-07").device_id == "pi-07"


def test_an_enrolled_id_cannot_be_taken_over_by_another_token(any_engine: Engine) -> None:
    first, other, naming = _token(any_engine), _token(any_engine), _token(any_engine, device_id="pi-01")
    with Session(any_engine) as session:
        redeem(session, first, "pi-01")
        session.commit()
    with Session(any_engine) as session, pytest.raises(ConflictError):
        redeem(session, other, "pi-01")
    # an operator re-provisioning that device names it in the token: new credentials, old ones gone
    with Session(any_engine) as session:
        old = live_password_hashes(session)["pi-01"]
        again = redeem(session, naming, "pi-01")
        session.commit()
        assert live_password_hashes(session)["pi-01"] != old
        assert verify_password(again.password, live_password_hashes(session)["pi-01"])


def test_revoked_devices_lose_their_broker_credentials(any_engine: Engine) -> None:
    text = _token(any_engine)
    with Session(any_engine) as session:
        redeem(session, text, "pi-01")
        session.commit()
        assert revoke_device(session, "pi-01") and not revoke_device(session, "pi-01")
        session.commit()
        assert "pi-01" not in live_password_hashes(session) and not is_enrolled(session, "pi-01")


def test_two_devices_racing_with_one_token_cannot_both_win(any_engine: Engine) -> None:
    text = _token(any_engine)
    outcomes: list[str] = []

    def attempt(device: str) -> None:
        with Session(any_engine) as session:
            try:
                redeem(session, text, device)
                session.commit()
                outcomes.append("won")
            except EnrollmentRefused:
                outcomes.append("refused")
            except Exception as exc:  # SQLite may report the loser as a lock conflict: still not a win
                outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt, args=(f"pi-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcomes.count("won") == 1, outcomes


@pytest.mark.parametrize(("kwargs"), [{"ttl_s": 10}, {"ttl_s": 10**9}, {"device_id": "bad id"}])
def test_bad_token_requests_are_refused(any_engine: Engine, kwargs: dict[str, object]) -> None:
    with Session(any_engine) as session, pytest.raises(InvalidRequestError):
        create_enrollment_token(session, **kwargs)  # type: ignore[arg-type]
