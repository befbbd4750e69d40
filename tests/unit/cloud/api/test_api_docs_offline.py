"""/docs and /redoc work on a network with no internet: every script, stylesheet and icon the pages load,
and the OpenAPI document they read, is served by the cloud itself, and served (200, not empty)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient


class References(HTMLParser):
    """Every URL an HTML page makes the browser fetch: src and href attributes, and the spec's URL."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]

    def handle_data(self, data: str) -> None:  # Swagger UI names its spec inside a script
        self.urls += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", data)


@pytest.mark.parametrize(("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_doc_pages_load_only_same_origin_assets(anonymous: TestClient, page: str, script: str) -> None:
    response = anonymous.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    parser = References()
    parser.feed(response.text)
    assert any(url.endswith(script) for url in parser.urls), parser.urls
    assert "/openapi.json" in parser.urls
    assert not re.search(r"https?://|//[a-z]", response.text), "the page names another origin"
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is not on this origin"
        asset = anonymous.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, (url, asset.status_code)


def test_swagger_ui_asks_no_online_validator(anonymous: TestClient) -> None:
    # Swagger UI's validator badge would fetch an image from validator.swagger.io on every page view
    assert '"validatorUrl": null' in anonymous.get("/docs").text


def test_the_asset_mount_serves_nothing_outside_its_folder(anonymous: TestClient) -> None:
    assert anonymous.get("/docs-assets/../../../../etc/passwd").status_code == 404
    assert anonymous.get("/docs-assets/%2e%2e/%2e%2e/cloud/settings.py").status_code == 404
