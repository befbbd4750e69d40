"""The web console over HTTP: sign-in with a token kept in a strict cookie, every page behind it, roles
deciding what is shown and allowed, cross-site posts refused, unknown ids a 404 page, and steering a
rollout writing the same audit rows as the API."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, select
from support.enrollment import enroll

from cloud.console import views
from cloud.db.tables import DeploymentCreate, DeploymentTarget, Device, EventRecord, TelemetryRecord
from cloud.identity.records import AuditEntry
from cloud.rollout.records import Rollout
from cloud.types import now_ms

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

from conftest import TestClient as Client  # noqa: E402  (imported under the conftest's warning filter)

BASE = "http://testserver"
ORIGIN = {"Origin": BASE}
DEVICES = [f"pi-{i:02d}" for i in range(6)]


def signed_in(app: FastAPI, token: str) -> TestClient:
    client = Client(app, base_url=BASE, follow_redirects=False)
    response = client.post("/console/signin", data={"token": token, "next": "/console"}, headers=ORIGIN)
    assert response.status_code == 303 and response.headers["location"] == "/console", response.text
    return client


@pytest.fixture
def fleet(engine: Engine, register) -> None:
    with Session(engine) as session:
        version = register(session, "m").version
    enroll(engine, *DEVICES, labels={"site": "lab"})
    start = now_ms() - 60_000
    with Session(engine) as session:
        for i in range(12):
            session.add(TelemetryRecord(
                device_id="pi-00", seq=i, window_start_ms=start + i * 5000, window_end_ms=start + (i + 1) * 5000,
                model_id="m", model_version=version, inference_count=100 + i, error_count=i % 3,
                latency_p50_us=800, latency_p95_us=1500 + i, cpu_percent=10 + i, rss_bytes=50_000_000 + i,
                feature_counts={"0": [1, 2, 3, 4]},
            ))  # fmt: skip
        session.add(EventRecord(device_id="pi-00", seq=1, ts_ms=start, kind="activated", model_id="m",
                                model_version=version))  # fmt: skip
        session.commit()


def test_without_a_cookie_every_page_sends_the_browser_to_sign_in(anonymous: TestClient) -> None:
    assert anonymous.get("/", follow_redirects=False).headers["location"] == "/console"
    for path in ("/console", "/console/devices/pi-00", "/console/models", "/console/rollouts", "/console/x/y"):
        response = anonymous.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/signin?next=%2Fconsole"), path
    page = anonymous.get("/console/signin")
    assert page.status_code == 200 and 'name="token"' in page.text
    assert "<script src=\"/console/static/console.js\"" in page.text and "http" not in page.text.split("<main>")[0]
    assert anonymous.get("/console/static/console.css").status_code == 200
    assert anonymous.get("/console/static/app.py").status_code == 404


def test_a_bad_token_is_refused_and_a_good_one_kept_in_a_strict_cookie(app: FastAPI, token_for) -> None:
    client = Client(app, base_url=BASE, follow_redirects=False)
    refused = client.post("/console/signin", data={"token": "ef_nope_nope"}, headers=ORIGIN)
    assert refused.status_code == 401 and "unknown, revoked or expired" in refused.text
    token = token_for("viewer")
    response = client.post("/console/signin", data={"token": token, "next": "https://evil.example/"}, headers=ORIGIN)
    assert response.status_code == 303 and response.headers["location"] == "/console"  # never another site
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain http here; https would add Secure
    assert client.get("/console").status_code == 200
    out = client.post("/console/signout", headers=ORIGIN)
    assert out.status_code == 303 and 'edgefleet_console=""' in out.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/console").status_code == 303


def test_over_https_the_cookie_is_secure(app: FastAPI, token_for) -> None:
    client = Client(app, base_url="https://testserver", follow_redirects=False)
    response = client.post("/console/signin", data={"token": token_for("viewer")},
                           headers={"Origin": "https://testserver"})  # fmt: skip
    assert response.status_code == 303 and "secure" in response.headers["set-cookie"].lower()
    wrong_scheme = client.post("/console/signin", data={"token": token_for("viewer")}, headers=ORIGIN)
    assert wrong_scheme.status_code == 403  # http://testserver is another origin than https://testserver


def test_cross_site_posts_are_refused(app: FastAPI, token_for, engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, *DEVICES)
    client = signed_in(app, token_for("admin"))
    body = {"model_id": "m", "devices": ", ".join(DEVICES), "strategy": "waves", "first_wave": "2"}
    for headers in ({}, {"Origin": "https://evil.example"}, {"Referer": "https://evil.example/console"}):
        response = client.post("/console/rollouts", data=body, headers=headers)
        assert response.status_code == 403 and "Origin/Referer" in response.text, headers
    same_site = {"Referer": f"{BASE}/console/rollouts"}
    assert client.post("/console/rollouts", data=body, headers=same_site).status_code == 303
    with Session(engine) as session:
        assert len(session.exec(select(Rollout)).all()) == 1


def test_pages_show_the_fleet_a_device_and_the_models(app: FastAPI, token_for, fleet: None) -> None:
    client = signed_in(app, token_for("viewer"))
    page = client.get("/console")
    assert page.status_code == 200 and page.text.count('class="device-row"') == len(DEVICES)
    assert "Devices per running version" in page.text
    device = client.get("/console/devices/pi-00")
    assert device.status_code == 200
    for title in ("Throughput", "Latency", "Errors per window", "CPU", "Memory (resident)"):
        assert f'aria-label="{title}"' in device.text, title
    assert device.text.count('data-points="12"') >= 5 and "activated" in device.text
    assert 'class="chart bar-chart"' in device.text  # drift per feature
    # 120 rows of 1:2:3:4 against a flat 100-row reference: p = 0.014 is not proof enough, so no alert
    assert "Drift alert" not in device.text and "Input drift of m@" in device.text
    models = client.get("/console/models")
    assert models.status_code == 200 and 'href="/console/models/m"' in models.text
    model = client.get("/console/models/m")
    assert model.status_code == 200 and "Compiled artifacts" in model.text and "Lineage" in model.text
    drift = client.get("/console/models/m/versions/latest/drift?hours=2")
    assert drift.status_code == 200 and 'class="chart heat-map"' in drift.text and 'data-row="pi-00"' in drift.text
    assert "drift alert" in drift.text.lower() and "tests in one family" in drift.text
    assert "No sampled prediction of this version has a label yet" in drift.text


def test_the_model_page_charts_scores_apart_from_counts(app: FastAPI, token_for, engine: Engine, register) -> None:
    """A row count of 540 on the accuracy's axis would flatten 0.91 -> 0.97 into one line at 0."""
    with Session(engine) as session:
        for accuracy in (0.91, 0.97):
            mv = register(session, "m")
            mv.metrics = {"accuracy": accuracy, "f1_macro": accuracy - 0.01, "n_rows": 540}
            session.add(mv)
        session.commit()
    page = signed_in(app, token_for("viewer")).get("/console/models/m")
    assert page.status_code == 200
    charts = page.text.split('<div class="charts" id="metrics-charts">')[1].split("</div>")[0]
    scores, others = charts.split("</svg>")[:2]
    assert 'aria-label="Scores by version (sequence)"' in scores and 'aria-label="Other figures' in others
    assert 'data-name="accuracy" data-points="2"' in scores and 'data-name="f1_macro"' in scores
    assert "n_rows" not in scores and 'data-name="n_rows" data-points="2"' in others
    # on the scores' own axis the two accuracies are drawn well apart (the plot is ~150 px high)
    ys = [float(y) for y in re.findall(r'data-name="accuracy".*?cy="([\d.]+)".*?cy="([\d.]+)"', scores)[0]]
    assert abs(ys[0] - ys[1]) > 50, ys


def test_a_device_page_and_the_fleet_table_show_its_facts_and_spool_drops(
    app: FastAPI, engine: Engine, token_for, fleet: None
) -> None:
    with Session(engine) as session:
        device = session.get(Device, "pi-00")
        assert device is not None
        device.facts = {
            "architecture": "aarch64", "os": "Debian GNU/Linux 12 (bookworm)", "python_version": "3.11.2",
            "runtimes": {"tflite": "1.4.0"}, "cpu_count": 4, "cpu_model": "Cortex-A72",
            "memory_total_bytes": 4 * 2**30, "memory_available_bytes": 3 * 2**30, "temperature_c": 71.5,
            "throttled": "0x50005", "disk_free_bytes": 12 * 2**30,
        }  # fmt: skip
        device.spool_dropped = {"events": 0, "telemetry": 2, "samples": 40, "as_of_ms": now_ms()}
        session.add(device)
        session.commit()
    client = signed_in(app, token_for("viewer"))
    page = client.get("/console/devices/pi-00").text
    shown = page.split('id="device-facts"')[1].split("</dl>")[0]
    for text in ("aarch64", "Debian GNU/Linux 12 (bookworm)", "3.11.2", "tflite 1.4.0", "4 × Cortex-A72",
                 "3.0 GiB free of 4.0 GiB", "71.5 °C", "0x50005: under-voltage now, throttled now",
                 "12.0 GiB", "2 telemetry, 40 samples"):  # fmt: skip
        assert text in shown, (text, shown)
    row = client.get("/console").text.split('data-device="pi-00"')[1].split("</tr>")[0]
    assert "aarch64 · 4.0 GiB · 72 °C · throttled" in row and "dropped 2 telemetry, 40 samples" in row
    other = client.get("/console/devices/pi-01").text.split('id="device-facts"')[1].split("</dl>")[0]
    assert "<dd>–</dd>" in other and "<dd>none</dd>" in other  # an agent that reports no facts yet


def test_plain_deployments_have_a_list_and_a_page_with_each_target(
    app: FastAPI, token_for, engine: Engine, fleet: None
) -> None:
    deployment = app.state.services.deployer.deploy(DeploymentCreate(model_id="m", device_ids=DEVICES[:3]))
    with Session(engine) as session:  # one device said its install failed
        target = session.get(DeploymentTarget, (deployment.id, DEVICES[2]))
        assert target is not None
        target.status, target.error_code, target.error_message = "failed", "bad_signature", "signature mismatch"
        session.add(target)
        session.commit()
    client = signed_in(app, token_for("viewer"))
    fleet_page = client.get("/console")
    assert 'href="/console/deployments"' in fleet_page.text  # reachable from the nav
    listing = client.get("/console/deployments")
    assert listing.status_code == 200 and listing.text.count('class="deployment-row"') == 1
    assert f'href="/console/deployments/{deployment.id}"' in listing.text and "1 failed" in listing.text
    page = client.get(f"/console/deployments/{deployment.id}")
    assert page.status_code == 200 and 'id="deployment-status">in_progress' in page.text
    assert page.text.count('class="target-row"') == 3 and 'data-status="failed"' in page.text
    assert "bad_signature" in page.text and 'id="waiting"' in page.text and "rollout-link" not in page.text
    for device_id in DEVICES[:3]:
        assert f'href="/console/devices/{device_id}"' in page.text
    missing = client.get("/console/deployments/nope")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")


def test_drift_alerts_show_on_the_device_and_the_drift_pages(app: FastAPI, token_for, fleet: None,
                                                             engine: Engine) -> None:  # fmt: skip
    start = now_ms() - 30_000
    with Session(engine) as session:
        for i in range(3):  # pi-01's feature 1 all in its top bin: drift no reference of 100 rows can hide
            session.add(TelemetryRecord(
                device_id="pi-01", seq=i, window_start_ms=start + i * 5000, window_end_ms=start + (i + 1) * 5000,
                model_id="m", model_version="1", inference_count=200, feature_counts={"1": [0, 0, 0, 200]},
            ))  # fmt: skip
        session.commit()
    client = signed_in(app, token_for("viewer"))
    device = client.get("/console/devices/pi-01")
    assert device.status_code == 200 and "<strong>Drift alert</strong> on f1, in 3 window(s)" in device.text
    drift = client.get("/console/models/m/versions/latest/drift?hours=2")
    assert drift.status_code == 200 and "<strong>Drift alert</strong>" in drift.text
    assert 'Driven by: <a href="/console/devices/pi-01">pi-01</a> (f1;' in drift.text


def test_per_label_drift_of_a_multilabel_model_shows_where_prediction_drift_does(
    app: FastAPI, token_for, engine: Engine, make_manifest, signer, store
) -> None:
    """A multilabel model's labels, each its rate on against the reference's: label b, on in 40 % of the
    reference rows and in every row on pi-02, is named in the alert and flagged in the per-label table."""
    from cloud import registry
    from protocols.v1 import messages_pb2 as pb

    manifest = make_manifest("tags", {"model.onnx": b"tags"})
    manifest.reference.ClearField("predictions")
    manifest.reference.label_rates.CopyFrom(pb.LabelRates(labels=["a", "b"], positives=[50, 40], rows=100))
    with Session(engine) as session:
        registry.register_model_version(session, manifest, {"model.onnx": b"tags"}, store=store, signer=signer)
        session.commit()
    enroll(engine, "pi-02")
    start = now_ms() - 30_000
    with Session(engine) as session:
        for i in range(3):
            session.add(TelemetryRecord(
                device_id="pi-02", seq=i, window_start_ms=start + i * 5000, window_end_ms=start + (i + 1) * 5000,
                model_id="tags", model_version="1", inference_count=200,
                prediction_counts={"labels": [], "bin_edges": [], "counts": [], "label_counts": [200, 101, 200]},
            ))  # fmt: skip
        session.commit()
    client = signed_in(app, token_for("viewer"))
    device = client.get("/console/devices/pi-02")
    assert device.status_code == 200 and "<strong>Drift alert</strong> on label(s) b, in 3 window(s)" in device.text
    assert "Labels on (observed against reference): a 50.50% / 50.00%, b 100.00% / 40.00% · drifted." in device.text
    drift = client.get("/console/models/tags/versions/latest/drift?hours=2")
    assert drift.status_code == 200 and "labels b shifted fleet-wide" in drift.text
    assert 'Driven by: <a href="/console/devices/pi-02">pi-02</a> (label b;' in drift.text
    rows = re.findall(r"<tr class=\"(\w*)\"><td>(\w)</td>", drift.text.split('id="drift-labels"')[1])
    assert rows == [("", "a"), ("drifted", "b")]


def test_the_alert_list_shows_drift_and_accuracy_alerts(app: FastAPI, token_for, engine: Engine) -> None:
    from cloud.monitoring import alerts

    with Session(engine) as session:
        found = [
            alerts.Alert("drift", "m", "1", "m@1: input/output drift on 1 device(s); driven by pi-01", ["pi-01"]),
            alerts.Alert("accuracy", "m", "2", "m@2: field accuracy 0.610 (95 % 0.52-0.70, 90 labels) below the "
                         "stated 0.950 less 0.05", ["pi-03"]),
        ]  # fmt: skip
        alerts.apply(session, found, clock=lambda: now_ms() - 60_000)
        alerts.apply(session, found[1:], clock=now_ms)  # the drift has gone: cleared, still listed
        session.commit()
    client = signed_in(app, token_for("viewer"))
    page = client.get("/console/alerts")
    assert page.status_code == 200 and 'href="/console/alerts" class="here"' in page.text
    rows = page.text.split('<tbody>')[1].split("</tr>")
    assert "active" in rows[0] and "accuracy" in rows[0] and "field accuracy 0.610" in rows[0]
    assert '<a href="/console/devices/pi-03">pi-03</a>' in rows[0]
    assert "cleared" in rows[1] and "drift" in rows[1] and "driven by pi-01" in rows[1]
    fleet = client.get("/console")
    assert '<a href="/console/alerts">1 active alert(s)</a>' in fleet.text and "field accuracy 0.610" in fleet.text


def test_unknown_ids_and_bad_input_are_pages_not_errors(app: FastAPI, token_for, fleet: None) -> None:
    client = signed_in(app, token_for("viewer"))
    for path in ("/console/devices/nope", "/console/models/nope", "/console/rollouts/nope",
                 "/console/models/m/versions/9.9/drift", "/console/models/m/versions/latest/drift?hours=abc",
                 "/console/nowhere", "/console/devices/%00"):  # fmt: skip
        response = client.get(path)
        assert response.status_code in (404, 422), (path, response.status_code)
        assert response.headers["content-type"].startswith("text/html"), path
    assert client.get("/console/models/m/versions/latest/drift?hours=nan").status_code == 200
    assert client.get("/console/models/m/versions/latest/drift?hours=-5").status_code == 200


def test_viewers_see_no_buttons_and_cannot_act_deployers_can(
    app: FastAPI, token_for, engine: Engine, fleet: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = signed_in(app, token_for("admin"))
    body = {"model_id": "m", "devices": ", ".join(DEVICES), "strategy": "waves", "first_wave": "2", "growth": "2"}
    preview = admin.post("/console/rollouts/plan", data=body, headers=ORIGIN)
    assert preview.status_code == 200 and preview.text.count('class="plan-wave"') == 2
    with Session(engine) as session:
        assert session.exec(select(Rollout)).all() == []  # a dry run writes nothing
    bad = admin.post("/console/rollouts", data={**body, "growth": "0.5"}, headers=ORIGIN)
    assert bad.status_code == 422 and "growth" in bad.text
    started = admin.post("/console/rollouts", data=body, headers=ORIGIN)
    assert started.status_code == 303, started.text
    rollout_page = started.headers["location"].split("?")[0]
    rollout_id = rollout_page.rsplit("/", 1)[1]

    viewer = signed_in(app, token_for("viewer"))
    page = viewer.get(rollout_page)
    assert page.status_code == 200 and 'id="rollout-state">running' in page.text and "action-pause" not in page.text
    monkeypatch.setattr(views, "WAVE_SHOWN", 1)  # a wave names its first devices, counts them all
    named = viewer.get(rollout_page).text
    assert "2 device(s)" in named and "4 device(s)" in named and "and 1 more" in named and "and 3 more" in named
    assert len(re.findall(r'<li><a href="/console/devices/', named)) == 2
    monkeypatch.undo()
    assert "Start a rollout" not in viewer.get("/console/rollouts").text
    assert viewer.post(f"{rollout_page}/pause", headers=ORIGIN).status_code == 403
    assert viewer.post("/console/rollouts", data=body, headers=ORIGIN).status_code == 403
    assert viewer.get("/console/audit").status_code == 403

    deployer = signed_in(app, token_for("deployer"))
    assert "action-pause" in deployer.get(rollout_page).text
    paused = deployer.post(f"{rollout_page}/pause", headers=ORIGIN)
    assert paused.status_code == 303 and paused.headers["location"].endswith("?done=pause")
    page = deployer.get(paused.headers["location"])
    assert 'id="rollout-state">paused' in page.text and "action-resume" in page.text and "pause done" in page.text
    assert 'data-stage="paused"' in page.text and 'data-stage="open"' not in page.text  # its wave waits
    again = deployer.post(f"{rollout_page}/pause", headers=ORIGIN)
    assert again.status_code == 409 and "cannot pause" in again.text
    assert deployer.post(f"{rollout_page}/explode", headers=ORIGIN).status_code == 404
    assert deployer.post("/console/rollouts/nope/pause", headers=ORIGIN).status_code == 404
    assert deployer.post(f"{rollout_page}/rollback", headers=ORIGIN).status_code == 303
    page = deployer.get(rollout_page)
    assert 'id="rollout-state">rolled_back' in page.text
    # the rollout is over: its current wave is stopped, not still "open", and the rollback says what it did
    assert 'data-stage="stopped"' in page.text and 'data-stage="open"' not in page.text
    assert "restored " in page.text.split('id="decisions"')[1] and '{&#34;' not in page.text
    with Session(engine) as session:
        rows = session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()  # type: ignore[arg-type]
        assert [(r.action, r.target) for r in rows] == [("rollout.create", rollout_id), ("rollout.pause", rollout_id),
                                                        ("rollout.rollback", rollout_id)]  # fmt: skip
        assert rows[1].role == "deployer" and rows[0].role == "admin"
    audit = admin.get("/console/audit")
    assert audit.status_code == 200 and "rollout.rollback" in audit.text


def test_the_fleet_page_pages_by_device_id(app: FastAPI, token_for, engine: Engine,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(views, "MAX_DEVICES", 4)
    with Session(engine) as session:
        for i in range(10):
            session.add(Device(id=f"dev-{i:02d}"))
        session.commit()
    client = signed_in(app, token_for("viewer"))
    seen: list[str] = []
    url: str | None = "/console"
    for _ in range(10):  # bounded
        if url is None:
            break
        page = client.get(url)
        assert page.status_code == 200
        seen += re.findall(r'class="device-row" data-device="([^"]+)"', page.text)
        found = re.search(r'id="next-page" href="([^"]+)"', page.text)
        url = html.unescape(found.group(1)) if found else None
    assert seen == [f"dev-{i:02d}" for i in range(10)]


def tiles(page: str) -> tuple[str, dict[str, str]]:
    """The fleet page's "online / total" tile and its health counts, as shown."""
    online = re.search(r'id="online-count">(\d+)</span> / (\d+)', page)
    assert online is not None, page[:2000]
    health = dict(re.findall(r'class="tile health-(\w+)"><span class="big">(\d+)<', page))
    return f"{online.group(1)} / {online.group(2)}", health


def test_the_fleet_tiles_count_the_whole_fleet_on_every_page(
    app: FastAPI, token_for, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiles counted only the page's devices (500) once the fleet page was paged: here pages of 4 of 11
    devices, each page must show 3 online of 11, and every health word counted over all of them, the same
    words the rows show; the previous-page links walk back the same pages."""
    monkeypatch.setattr(views, "MAX_DEVICES", 4)
    now = now_ms()
    with Session(engine) as session:
        for i in range(11):
            state = {0: "failed", 5: "downloading"}.get(i, "active")
            session.add(Device(id=f"dev-{i:02d}", online=i in (1, 5, 9), update_state=state,
                               active_model_id="m" if i % 2 else None, active_version="1.0.0" if i % 2 else None))
        for i in (3, 10):  # 2% errors in the last quarter hour, across windows none of which alone shows it
            for seq, errors in enumerate((0, 4)):
                session.add(TelemetryRecord(device_id=f"dev-{i:02d}", seq=seq, window_start_ms=now - 60_000,
                                            window_end_ms=now - 50_000 + seq, inference_count=98, error_count=errors))
        session.commit()
    client = signed_in(app, token_for("viewer"))
    expected = {"ok": "2", "updating": "1", "offline": "5", "errors": "2", "failed": "1"}
    seen: list[tuple[str, str]] = []
    pages: list[str] = []
    url: str | None = "/console"
    for _ in range(10):  # bounded
        if url is None:
            break
        page = client.get(url)
        assert page.status_code == 200
        assert tiles(page.text) == ("3 / 11", expected), url
        seen += re.findall(r'class="device-row" data-device="([^"]+)">.*?class="badge health-(\w+)"', page.text, re.S)
        pages.append(url)
        found = re.search(r'id="next-page" href="([^"]+)"', page.text)
        url = html.unescape(found.group(1)) if found else None
    assert [d for d, _ in seen] == [f"dev-{i:02d}" for i in range(11)] and len(pages) == 3
    rows = {word: str(sum(1 for _, w in seen if w == word)) for word in expected}
    assert rows == expected  # the rows' badges and the tiles apply one rule
    last = client.get(pages[-1]).text
    back = html.unescape(re.search(r'id="previous-page" href="([^"]+)"', last).group(1))  # type: ignore[union-attr]
    middle = client.get(back).text
    assert re.findall(r'data-device="([^"]+)"', middle) == [f"dev-{i:02d}" for i in range(4, 8)]
    first = html.unescape(re.search(r'id="previous-page" href="([^"]+)"', middle).group(1))  # type: ignore[union-attr]
    top = client.get(first).text
    assert re.findall(r'data-device="([^"]+)"', top) == [f"dev-{i:02d}" for i in range(4)]
    assert 'id="previous-page"' not in top and 'id="next-page"' in top


def test_a_deployment_page_counts_every_target_and_pages_the_table(
    app: FastAPI, token_for, engine: Engine, fleet: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "MAX_TARGETS", 4)
    deployment = app.state.services.deployer.deploy(DeploymentCreate(model_id="m", device_ids=DEVICES))
    with Session(engine) as session:
        for device_id in DEVICES[1:5]:
            target = session.get(DeploymentTarget, (deployment.id, device_id))
            assert target is not None
            target.status = "succeeded"
            session.add(target)
        session.commit()
    client = signed_in(app, token_for("viewer"))
    page = client.get(f"/console/deployments/{deployment.id}").text
    assert 'id="installed">4 / 6<' in page and page.count('class="target-row"') == 4
    found = re.search(r'id="next-page" href="([^"]+)"', page)
    assert found is not None
    rest = client.get(html.unescape(found.group(1))).text
    assert 'id="installed">4 / 6<' in rest and re.findall(r'class="target-row".*?href="/console/devices/([^"]+)"',
                                                         rest, re.S) == DEVICES[4:]  # fmt: skip
    assert 'id="next-page"' not in rest
