"""The console in a real browser: Debian's chromium, headless, driven by selenium against a running cloud
with trained models, simulated devices sending telemetry, and a staged rollout started from the console's
form, then paused and rolled back with its buttons. What is drawn is checked (charts with points, the
rollout's state) and a screenshot of every whole page is kept: in $EDGEFLEET_TEST_ARTIFACTS/console when set,
else in the test's tmp_path.

Skips when chromium or chromedriver is absent, except under CI (CI=true), where `.ci/run` installs both
and a skip would hide a console nobody looked at.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session
from support.enrollment import enroll
from support.fleet_traffic import Traffic, cloud_with_token

from cloud.console import views
from cloud.db.tables import DeploymentCreate, Device
from cloud.service import CloudService
from cloud.training.pipeline import TrainingConfig, run_training_pipeline
from protocols.v1 import messages_pb2 as pb
from simulator.devices import SimulatedFleet

pytestmark = [pytest.mark.integration, pytest.mark.browser]

MODEL_ID = "digits-classifier"
DEVICES = [f"web-{i:02d}" for i in range(4)]
CHROMIUM = os.environ.get("EDGEFLEET_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EDGEFLEET_CHROMEDRIVER", "/usr/bin/chromedriver")


def _browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(p))]
    if not missing:
        return
    message = f"browser tests need {' and '.join(missing)} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(message + "; .ci/run installs them")
    pytest.skip(message)


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    root = os.environ.get("EDGEFLEET_TEST_ARTIFACTS")
    folder = Path(root) / "console" if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[Any]:
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1100", "--no-first-run", "--disable-extensions",
                     # no internet: any name but loopback fails to resolve, so a page that needs a CDN breaks here
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def cloud(mqtt_broker: Any, database_url: str, tmp_path: Path) -> Iterator[tuple[CloudService, str]]:
    with cloud_with_token(mqtt_broker, database_url, tmp_path / "cloud") as found:
        yield found


def wait_for(condition: Callable[[], Any], timeout: float, what: str, page: Any = None) -> Any:
    """page: the browser, whose address and visible text a timeout reports."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except WebDriverException:  # the page was being replaced (a stale or not-yet-there element)
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            seen = (
                "" if page is None else f" at {page.current_url}: {page.find_element('tag name', 'body').text[:800]!r}"
            )
            raise AssertionError(f"timed out waiting for {what}{seen}")
        time.sleep(0.25)


def test_an_operator_follows_the_fleet_and_steers_a_rollout_in_the_browser(
    cloud: tuple[CloudService, str], mqtt_broker: Any, tmp_path: Path, browser: Any, artifacts: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    service, token = cloud
    assert service.engine is not None and service.store is not None and service.deployer is not None
    v1 = run_training_pipeline(service.engine, service.store, service.signer, TrainingConfig(model_id=MODEL_ID))
    v2 = run_training_pipeline(service.engine, service.store, service.signer,
                               TrainingConfig(model_id=MODEL_ID, params={"C": 0.5}))  # fmt: skip
    fleet = SimulatedFleet(DEVICES, mqtt_url=mqtt_broker.url, mqtt_protocol=mqtt_broker.mqtt_protocol,
                           trust_path=service.trust_chain_path, state_root=tmp_path / "devices",
                           passwords=enroll(service, *DEVICES, labels={"site": "lab"}))  # fmt: skip
    base = service.api_url
    shots: list[str] = []

    def shot(name: str, whole: bool = True) -> None:
        path = artifacts / f"{len(shots) + 1:02d}-{name}.png"
        # the whole page, not the window: the charts below the fold are what a reviewer wants to see
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": whole})
        path.write_bytes(base64.b64decode(shot["data"]))
        shots.append(path.name)

    def find(css: str) -> Any:
        return browser.find_element(By.CSS_SELECTOR, css)

    def count(css: str) -> int:
        return len(browser.find_elements(By.CSS_SELECTOR, css))

    def still() -> None:
        # no reload under our clicks and lookups; the mark tells this document from a reloaded one
        browser.execute_script("document.body.removeAttribute('data-refresh'); document.body.dataset.held = '1'")

    def steady(condition: Callable[[], Any], load: Callable[[], Any] | None = None) -> Callable[[], Any]:
        """condition, on a page that no longer reloads itself (the console's data-refresh, every 5 s): a reload
        landing between a wait and the lookups after it replaced the page under them (a stale or missing
        element, once in CI). load() (re)loads the page first; a reload that landed meanwhile (the mark
        gone) makes it false, and the wait tries again."""

        def check() -> Any:
            if load is not None:
                load()
            still()
            value = condition()
            return value if value and count("body[data-held]") == 1 else None

        return check

    with fleet, Traffic(fleet, v1.split.X_test, rounds=1000):
        first = service.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=v1.version, device_ids=DEVICES))
        assert fleet.wait_all(lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE and s.active_model.version
                              == v1.version, 60) == []  # fmt: skip

        # signed out: any page leads to the sign-in form
        browser.get(f"{base}/")
        assert "/console/signin" in browser.current_url
        find("#token").send_keys("ef_not_a_token")
        find("#signin").click()
        assert "unknown, revoked or expired" in wait_for(
            lambda: count("#signin-error") and find("#signin-error").text, 10, "the refusal"
        )
        shot("signin-refused")
        find("#token").send_keys(token)
        find("#signin").click()

        # the fleet: every device, online, running v1
        wait_for(steady(lambda: count("tr.device-row") == len(DEVICES)), 10, "the fleet table")
        assert find("#who").get_attribute("data-role") == "admin"
        wait_for(steady(lambda: find("#online-count").text == str(len(DEVICES)), browser.refresh), 20, "devices online")
        assert f"{MODEL_ID}@{v1.version}" in find("#devices").text
        assert count("svg.bar-chart rect.bar") >= 2
        shot("fleet")

        # one device: its charts have points, its events are listed
        points = "#device-charts svg.line-chart g.series circle.point"
        device_page = f"{base}/console/devices/{DEVICES[0]}"
        wait_for(steady(lambda: count(points) >= 5 * 3, lambda: browser.get(device_page)), 20, "device charts")
        drawn = browser.find_elements(By.CSS_SELECTOR, "#device-charts svg")
        titles = [svg.get_attribute("aria-label") for svg in drawn]
        assert titles == ["Throughput", "Latency", "Errors per window", "CPU", "Memory (resident)"]
        assert "activated" in find("#events").text
        shot("device")

        # models: both versions with lineage and compiled artifacts
        find("header nav a[href='/console/models']").click()
        wait_for(lambda: count(f"a[href='/console/models/{MODEL_ID}']"), 10, "the models page")
        find(f"a[href='/console/models/{MODEL_ID}']").click()
        wait_for(lambda: count("section.version") == 2, 10, "the model page")
        assert count("section.version") == 2 and count("table.artifacts tbody tr") >= 2
        assert "Lineage" in find("main").text
        # scores (accuracy, F1) on an axis of their own, not flattened by the row count's
        scores, others = browser.find_elements(By.CSS_SELECTOR, "#metrics-charts svg.line-chart")
        assert scores.get_attribute("aria-label").startswith("Scores") and "n_rows" in others.text
        assert len(scores.find_elements(By.CSS_SELECTOR, "g.series[data-name='accuracy'] circle.point")) == 2
        shot("model")
        find(f"section[id='version-{v1.version}'] a[href$='/drift']").click()
        wait_for(steady(lambda: count("svg.heat-map rect.cell") >= len(DEVICES)), 10, "the drift heat map")
        # the feature table names features as the heat map's columns do: f0, f1, ...
        cells = browser.find_elements(By.CSS_SELECTOR, "#drift-features tbody td:first-child")
        first_column = [td.text for td in cells]
        assert first_column[:3] == ["f0", "f1", "f2"], first_column[:3]
        shot("drift")

        # the plain deployment of v1: listed, and on its own page every device has it
        find("header nav a[href='/console/deployments']").click()
        wait_for(lambda: count("tr.deployment-row") == 1, 10, "the deployments page")
        wait_for(steady(lambda: find("tr.deployment-row").get_attribute("data-status") == "succeeded", browser.refresh),
                 20, "the deployment succeeded")  # fmt: skip
        shot("deployments")
        find("tr.deployment-row a").click()
        wait_for(steady(lambda: count("tr.target-row") == len(DEVICES)), 10, "the deployment page")
        assert find("#deployment-status").text == "succeeded"
        assert count("tr.target-row[data-status='succeeded']") == len(DEVICES)
        shot("deployment")

        # a rollout from the form: preview the waves, then start it
        find("header nav a[href='/console/rollouts']").click()
        wait_for(lambda: count("#start-form"), 10, "the rollout form")
        Select(find("#model_id")).select_by_value(MODEL_ID)
        find("#version").send_keys(v2.version)
        find("#devices").send_keys(", ".join(DEVICES))
        Select(find("#strategy")).select_by_value("canary")
        for field, value in (("#canary", "2"), ("#dwell_s", "600"), ("#min_inferences", "20"), ("#min_devices", "2"),
                             ("#max_p95_ratio", "100")):  # fmt: skip
            find(field).send_keys(value)
        find("#preview").click()
        wait_for(lambda: count("#plan, #form-errors"), 10, "the dry run")
        assert count("li.plan-wave") == 2, find("main").text
        assert "Dry run" in find("#plan").text
        shot("rollout-preview")
        find("#start-button").click()
        wait_for(steady(lambda: "done=start" in browser.current_url), 10, "the rollout page")
        assert find("#rollout-state").text == "running"

        # the canary wave is judged on live telemetry: gate charts fill with points
        wait_for(steady(lambda: count("#gate-charts svg.line-chart circle.point") >= 3, browser.refresh), 30,
                 "gate values charted")  # fmt: skip
        assert count("div.wave") == 2 and find("div.wave.open") is not None
        shot("rollout-running")

        find("#action-pause").click()
        wait_for(steady(lambda: "done=pause" in browser.current_url), 10, "the pause", browser)
        assert find("#rollout-state").text == "paused"
        assert count("#action-resume") == 1 and count("#action-pause") == 0
        assert "pause" in find("#decisions").text
        shot("rollout-paused")

        find("#action-rollback").click()
        browser.switch_to.alert.accept()  # "Rollback rollout ...?"
        wait_for(steady(lambda: "done=rollback" in browser.current_url), 10, "the rollback")
        assert find("#rollout-state").text == "rolled_back"
        assert count("#actions") == 0  # nothing left to steer
        assert count("div.wave.stopped") == 1 and count("div.wave.open") == 0
        assert f"restored {MODEL_ID}@{v1.version} on 2 device(s)" in find("#decisions").text
        shot("rollout-rolled-back")

        # a fleet larger than a page (pages of 3 here, 500 by default): the tiles count every device on every
        # page, the table pages forward and back; a deployment's page counts every target and pages its table
        monkeypatch.setattr(views, "MAX_DEVICES", 3)
        others = [f"zz-{i}" for i in range(5)]
        with Session(service.engine) as session:
            session.add_all(Device(id=device_id, labels={"site": "elsewhere"}) for device_id in others)  # offline
            session.commit()
        everyone = sorted(DEVICES + others)

        def shown() -> list[str]:
            return [e.get_attribute("data-device") for e in browser.find_elements(By.CSS_SELECTOR, "tr.device-row")]

        def tiles() -> tuple[str, int]:
            online = find("#online-count").find_element(By.XPATH, "..").text.split("\n")[0]
            health = sum(int(e.text) for e in browser.find_elements(By.CSS_SELECTOR, "div.tile[class*='health-'] .big"))
            return online, health

        browser.get(f"{base}/console")
        wait_for(steady(lambda: tiles() == (f"{len(DEVICES)} / {len(everyone)}", len(everyone)), browser.refresh),
                 20, "tiles over the whole fleet", browser)  # fmt: skip
        shot("fleet-page-1")
        rows: list[list[str]] = []
        for _ in range(5):  # bounded: 3 pages
            wait_for(steady(lambda: count("tr.device-row") >= 1), 10, "a page of devices", browser)
            assert tiles() == (f"{len(DEVICES)} / {len(everyone)}", len(everyone))  # on every page
            rows.append(shown())
            if not count("#next-page"):
                break
            find("#next-page").click()
        assert rows == [everyone[0:3], everyone[3:6], everyone[6:9]], rows
        find("#previous-page").click()
        wait_for(steady(lambda: shown() == everyone[3:6]), 10, "the previous page", browser)
        monkeypatch.setattr(views, "MAX_TARGETS", 3)
        browser.get(f"{base}/console/deployments/{first.id}")
        wait_for(steady(lambda: count("tr.target-row") == 3 and find("#installed").text.endswith(f"/ {len(DEVICES)}")),
                 10, "a deployment's first page of targets", browser)  # fmt: skip
        find("#next-page").click()
        wait_for(steady(lambda: count("tr.target-row") == 1), 10, "the deployment's second page", browser)
        assert find("#installed").text.endswith(f"/ {len(DEVICES)}")
        monkeypatch.undo()

        # the API's own docs render in the browser from the cloud's assets alone (the resolver knows no CDN)
        browser.get(f"{base}/docs")
        title = ".swagger-ui .info .title"
        assert "EdgeFleet" in wait_for(lambda: count(title) and find(title).text, 20, "Swagger UI drawn", browser)
        assert count(".swagger-ui .opblock") >= 10
        shot("docs", whole=False)  # the API reference runs to metres of page
        browser.get(f"{base}/redoc")
        assert "EdgeFleet" in wait_for(lambda: count("h1") and find("h1").text, 20, "ReDoc drawn", browser)
        shot("redoc", whole=False)
        browser.get(f"{base}/console/rollouts")

        find("header form[action='/console/signout'] button").click()
        wait_for(lambda: "/console/signin" in browser.current_url, 10, "signing out")
        browser.get(f"{base}/console")
        assert "/console/signin" in browser.current_url
    assert len(shots) == 14 and all((artifacts / name).stat().st_size > 5000 for name in shots)
