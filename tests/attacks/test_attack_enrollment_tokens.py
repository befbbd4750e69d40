"""Attacks on enrollment tokens, over HTTP against a real cloud stack and database: a spent token used
again, an expired one, one addressed to another device, two devices racing for one token (exactly one
wins), and brute force, which learns nothing: every refusal is the same 403 and enrolls nobody, and a
client refused too often is answered 429 without the database or the audit log being touched."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, col, select

from cloud.cli.operator_token import ensure_dev_token
from cloud.db.tables import Device
from cloud.errors import EnrollmentRefused
from cloud.identity.records import AuditEntry, DeviceCredential, EnrollmentToken
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.types import now_ms

pytestmark = pytest.mark.integration


@pytest.fixture
def cloud(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[CloudService]:
    extra = getattr(request, "param", {})  # settings a test asks for with indirect parametrisation
    settings = CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, api_port=0, **extra)
    with CloudService(settings) as service:
        yield service


def new_token(cloud: CloudService, **body: object) -> str:
    assert cloud.engine is not None
    found = ensure_dev_token(cloud.engine, cloud.settings.data_dir)
    assert found is not None
    headers = {"Authorization": f"Bearer {found[0].read_text().strip()}"}
    response = httpx.post(f"{cloud.api_url}/api/v1/enrollment-tokens", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def enroll(cloud: CloudService, token: str, device_id: str) -> httpx.Response:
    """What a device sends: no operator token, only the enrollment token."""
    return httpx.post(f"{cloud.api_url}/api/v1/enroll", json={"token": token, "device_id": device_id}, timeout=20)


def enrolled_ids(cloud: CloudService) -> list[str]:
    with Session(cloud.engine) as session:
        return sorted(session.exec(select(DeviceCredential.device_id)))


def device_ids(cloud: CloudService) -> list[str]:
    with Session(cloud.engine) as session:
        return sorted(session.exec(select(Device.id)))


def test_a_spent_token_is_refused_and_changes_nothing(cloud: CloudService) -> None:
    token = new_token(cloud, labels={"site": "lab"})
    first = enroll(cloud, token, "pi-01")
    assert first.status_code == 200
    for device_id in ("pi-01", "pi-02"):  # again for itself (to get a second password), or for another id
        assert enroll(cloud, token, device_id).status_code == 403
    assert enrolled_ids(cloud) == ["pi-01"] and device_ids(cloud) == ["pi-01"]


def test_an_expired_token_is_refused(cloud: CloudService) -> None:
    token = new_token(cloud, ttl_s=60)
    with Session(cloud.engine) as session:
        row = session.get(EnrollmentToken, token.split("_")[1])
        assert row is not None
        row.expires_at_ms -= 61_000  # a minute has passed
        session.add(row)
        session.commit()
    assert enroll(cloud, token, "pi-01").status_code == 403 and enrolled_ids(cloud) == []


def test_a_token_for_one_device_cannot_enroll_another(cloud: CloudService) -> None:
    token = new_token(cloud, device_id="pi-01", labels={"tier": "canary"})
    assert enroll(cloud, token, "pi-evil").status_code == 403
    assert enroll(cloud, token, "pi-01").status_code == 200  # the refusal did not spend it
    assert enrolled_ids(cloud) == ["pi-01"]


def test_an_enrolled_id_cannot_be_taken_over(cloud: CloudService) -> None:
    assert enroll(cloud, new_token(cloud), "pi-01").status_code == 200
    takeover = enroll(cloud, new_token(cloud), "pi-01")
    assert takeover.status_code == 409  # a valid token, but not one naming this device
    spent = new_token(cloud)
    assert enroll(cloud, spent, "pi-02").status_code == 200
    assert enroll(cloud, spent, "pi-01").status_code == 403  # a spent token learns nothing about ids


def test_racing_redemptions_of_one_token_have_exactly_one_winner(cloud: CloudService) -> None:
    token = new_token(cloud)
    racers = [f"racer-{i}" for i in range(8)]
    start = threading.Barrier(len(racers))
    answers: dict[str, int] = {}

    def race(device_id: str) -> None:
        start.wait()
        answers[device_id] = enroll(cloud, token, device_id).status_code

    threads = [threading.Thread(target=race, args=(d,)) for d in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(answers.values()) == [200] + [403] * (len(racers) - 1), answers
    [winner] = [d for d, status in answers.items() if status == 200]
    assert enrolled_ids(cloud) == [winner] and device_ids(cloud) == [winner]
    with Session(cloud.engine) as session:
        row = session.get(EnrollmentToken, token.split("_")[1])
        assert row is not None and row.used_by == winner


@pytest.mark.parametrize("cloud", [{"enroll_refusals_per_minute": 1000}], indirect=True)  # see the next test
def test_brute_force_gets_no_oracle(cloud: CloudService) -> None:
    real = new_token(cloud)
    real_id = real.split("_")[1]
    guesses = (
        [f"efe_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}" for _ in range(60)]  # well-formed, unknown id
        + [f"efe_{real_id}_{secrets.token_urlsafe(32)}" for _ in range(60)]  # the right id, a wrong secret
        + [real[:-1], real + "A", real.upper(), f"efe_{real_id}_", f"efe_{real_id}", "efe_", "ef_" + real[4:], ""]
    )
    answers = {(r.status_code, r.text) for r in (enroll(cloud, g, f"guess-{i}") for i, g in enumerate(guesses))}
    assert len(answers) == 1 and answers.pop()[0] == 403  # one answer, whatever was wrong
    assert enrolled_ids(cloud) == [] and device_ids(cloud) == []
    assert enroll(cloud, real, "pi-01").status_code == 200  # guessing did not burn the real token
    with Session(cloud.engine) as session:
        refused = session.exec(
            select(EnrollmentToken).where(col(EnrollmentToken.used_at_ms).is_not(None))
        ).all()
        assert [r.used_by for r in refused] == ["pi-01"]


def test_a_flood_of_guesses_is_cut_off_before_it_reaches_the_database(cloud: CloudService) -> None:
    limit = cloud.settings.enroll_refusals_per_minute
    answers = [enroll(cloud, f"efe_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}", "guess") for _ in range(50)]
    assert [a.status_code for a in answers] == [403] * limit + [429] * (50 - limit)
    assert answers[-1].json()["error"] == "too_many_requests"
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
    with Session(cloud.engine) as session:
        audited = session.exec(select(AuditEntry).where(AuditEntry.action == "device.enroll_refused")).all()
    assert len(audited) == limit  # the cut-off attempts wrote nothing
    assert enrolled_ids(cloud) == [] and device_ids(cloud) == []


def test_a_device_enrolls_while_guessers_at_its_address_are_cut_off(cloud: CloudService) -> None:
    """Enrollment token ids carry the cloud's keyed tag: a made-up id of that shape is refused with no lookup
    and no audit row, and a token we issued is throttled by its own refusals, not its address's, so a device
    behind the same NAT as a guesser still enrolls. Tokens issued before tags are throttled per address as
    before."""
    limit = cloud.settings.enroll_refusals_per_minute
    legacy_id, legacy_secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with Session(cloud.engine) as session:
        session.add(EnrollmentToken(id=legacy_id, secret_sha256=sha256(legacy_secret.encode()).hexdigest(),
                                    expires_at_ms=now_ms() + 3_600_000))  # fmt: skip
        session.commit()
    assert enroll(cloud, f"efe_{legacy_id}_{legacy_secret}", "pi-old").status_code == 200  # still works
    old_shape = [enroll(cloud, f"efe_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}", "g").status_code
                 for _ in range(limit + 2)]  # fmt: skip
    assert old_shape == [403] * limit + [429] * 2  # the address is cut off, as before
    forged = [enroll(cloud, f"efe_{secrets.token_hex(11)}_{secrets.token_urlsafe(32)}", "g") for _ in range(30)]
    assert {(r.status_code, r.json()["detail"]) for r in forged} == {(403, EnrollmentRefused.MESSAGE)}
    assert enroll(cloud, new_token(cloud, labels={"site": "lab"}), "pi-01").status_code == 200  # same address
    targeted = new_token(cloud)
    wrong = targeted.rsplit("_", 1)[0] + "_" + secrets.token_urlsafe(32)
    assert [enroll(cloud, wrong, "g").status_code for _ in range(limit + 1)] == [403] * limit + [429]
    assert enroll(cloud, targeted, "pi-02").status_code == 429  # that id is held for the minute, no other
    assert enroll(cloud, new_token(cloud), "pi-03").status_code == 200
    with Session(cloud.engine) as session:
        audited = session.exec(select(AuditEntry).where(AuditEntry.action == "device.enroll_refused")).all()
    assert len(audited) == 2 * limit  # the old-shape guesses and the wrong secrets; forged ids wrote nothing
    assert enrolled_ids(cloud) == ["pi-01", "pi-03", "pi-old"]
