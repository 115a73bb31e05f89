"""Transport against plain HTTP servers on loopback: what it sends as JSON and how it reads answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from boxctl.errors import BoxError
from boxctl.transport import Transport


class _Echo(BaseHTTPRequestHandler):
    """Answers POST with the JSON body it got (and its content type), DELETE with the path it was
    given, GET with an HTML page."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = json.dumps({"got": json.loads(body), "type": self.headers["Content-Type"]}).encode()
        self._send(200, "application/json", answer)

    def do_DELETE(self) -> None:
        self._send(200, "application/json", json.dumps({"deleted": self.path}).encode())

    def do_GET(self) -> None:
        self._send(200, "text/html", b"<html><body>a web page, not a Box server</body></html>")

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_json_body_arrives_as_json_and_the_answer_is_parsed(server: str) -> None:
    transport = Transport(server, "token", retries=0)
    body = {"changes": [{"path": "ü/a b.txt", "size": 1 << 40, "target": None, "blocks": ["ab" * 32]}]}
    answer = transport.post_json("/anything", body)
    assert answer == {"got": body, "type": "application/json"}
    assert transport.sent_bytes == len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def test_an_answer_that_is_not_json_is_a_clear_error(server: str) -> None:
    transport = Transport(server, "token", retries=0)
    with pytest.raises(BoxError, match=r"answer \(200\) is not JSON; is http://127\.0\.0\.1:\d+/v1/me a Box server"):
        transport.get_json("/me")


def test_a_delete_sends_only_the_params_given_and_parses_the_answer(server: str) -> None:
    transport = Transport(server, "token", retries=0)
    assert transport.delete_json("/links/abc") == {"deleted": "/v1/links/abc"}
    assert transport.delete_json("/boxes/1/members/bob", path="docs", other=None) == {
        "deleted": "/v1/boxes/1/members/bob?path=docs"}
