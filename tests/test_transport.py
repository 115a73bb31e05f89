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


class _Scripted(_Echo):
    """Answers every request with the server's `answer` (status, content type, body) and counts them."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        server = self.server
        server.count += 1  # type: ignore[attr-defined]
        self._send(*server.answer)  # type: ignore[attr-defined]


@pytest.fixture
def scripted() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    httpd.count = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _error(status: int, error: str, message: str, **extra: object) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps({"error": error, "message": message, **extra}).encode()


@pytest.mark.parametrize(("answer", "exit_code", "said"), [
    (_error(500, "damaged", "block ab is damaged on the server", blocks=["ab" * 32]), 9, "data damaged on the server"),
    (_error(507, "out_of_space", "its disk is full"), 8, "the server is out of space"),
    (_error(503, "out_of_space", "its disk is full"), 8, "the server is out of space"),
], ids=["damaged-500", "out-of-space-507", "out-of-space-503"])
def test_a_damaged_or_full_server_is_asked_once_never_retried(scripted: ThreadingHTTPServer, answer: tuple,
                                                              exit_code: int, said: str) -> None:
    scripted.answer = answer  # type: ignore[attr-defined]
    transport = Transport(f"http://127.0.0.1:{scripted.server_address[1]}", "token", retries=4, backoff=0.001)
    for call in (lambda: transport.get_json("/blocks/x"), lambda: transport.post_json("/blocks/missing", {})):
        before = scripted.count  # type: ignore[attr-defined]
        with pytest.raises(BoxError) as caught:
            call()
        assert scripted.count - before == 1  # type: ignore[attr-defined]
        assert caught.value.exit_code == exit_code and said in caught.value.message, caught.value.message
    if answer[0] == 500:
        assert caught.value.details["blocks"] == ["ab" * 32]  # type: ignore[attr-defined]


def test_a_plain_500_is_transient_and_retried(scripted: ThreadingHTTPServer) -> None:
    """The control: the same status without a typed error is retried, every attempt reaching the server."""
    scripted.answer = (500, "text/plain", b"Internal Server Error")  # type: ignore[attr-defined]
    transport = Transport(f"http://127.0.0.1:{scripted.server_address[1]}", "token", retries=3, backoff=0.001)
    with pytest.raises(BoxError, match="server error 500"):
        transport.get_json("/anything")
    assert scripted.count == 4  # type: ignore[attr-defined]
