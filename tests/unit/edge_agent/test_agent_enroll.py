"""The device's half of enrollment (edge_agent.enroll) against answers a real cloud never gives: each
becomes one EnrollmentError line, never a traceback or a half-written config. (A real cloud's answers are
tested in tests/integration/test_agent_provision_token.py.)"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge_agent.enroll import enroll
from edge_agent.errors import EnrollmentError

GOOD = {
    "device_id": "pi-01", "fleet": "lab", "mqtt_url": "mqtt://b:1883", "username": "pi-01", "password": "pw",
    "labels": {"site": "lab"}, "trust_chain": base64.b64encode(b"chain").decode(), "tls_ca": None,
}  # fmt: skip


@pytest.fixture
def server() -> Iterator[tuple[str, list[tuple[int, bytes]]]]:
    """(url, answers): each POST pops the next (status, body) from answers."""
    answers: list[tuple[int, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            status, body = answers.pop(0)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", answers
    httpd.shutdown()
    httpd.server_close()


def test_a_good_answer_is_parsed(server: tuple[str, list[tuple[int, bytes]]]) -> None:
    url, answers = server
    answers.append((200, json.dumps(GOOD).encode()))
    got = enroll(url, "efe_a_b", "pi-01")
    assert (got.password, got.trust_chain, got.labels, got.tls_ca) == ("pw", b"chain", {"site": "lab"}, None)


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (403, b'{"error": "enrollment_refused", "detail": "x"}', "refused the enrollment token"),
        (409, b'{"error": "conflict", "detail": "x"}', "already enrolled"),
        (422, b'{"error": "invalid_request", "detail": "bad id"}', "bad id"),
        (500, b"<html>oops</html>", "HTTP 500"),
        (200, b"<html>not json</html>", "not JSON"),
        (200, b"[1, 2]", "not a JSON object"),
        (200, json.dumps({**GOOD, "password": ""}).encode(), "missing password"),
        (200, json.dumps({**GOOD, "device_id": "pi-02"}).encode(), "for device 'pi-02'"),
        (200, json.dumps({**GOOD, "trust_chain": "%%%"}).encode(), "not base64"),
        (200, json.dumps({**GOOD, "labels": {"a": 1}}).encode(), "labels"),
    ],
)
def test_every_failure_is_one_clear_line(
    server: tuple[str, list[tuple[int, bytes]]], status: int, body: bytes, says: str
) -> None:
    url, answers = server
    answers.append((status, body))
    with pytest.raises(EnrollmentError, match=says) as failed:
        enroll(url, "efe_a_b", "pi-01")
    assert "\n" not in str(failed.value)


def test_a_url_that_is_not_http_is_refused_before_sending() -> None:
    with pytest.raises(EnrollmentError, match="--cloud-url"):
        enroll("mqtt://cloud:1883", "efe_a_b", "pi-01")
