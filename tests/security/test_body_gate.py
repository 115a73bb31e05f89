"""No account, no body: the token, and the right to the box, are checked before a body is read; JSON
bodies are small unless an authenticated caller commits to a box it may write."""

from __future__ import annotations

import contextlib
import json
import socket
import threading

from tests.security.conftest import World
from tests.security.test_bombs import peak_rss

MIB = 1 << 20


def head_only(w: World, method: str, path: str, length: int, token: str | None = None,
              body: bytes = b"") -> tuple[int, dict[str, object]]:
    """Send a request head declaring `length` body bytes (and `body`, if any, from a thread) and return
    the answer's status and JSON: an answer that waits for the whole body times out here."""
    host, port = w.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
                 f"Content-Length: {length}\r\n\r\n".encode())

    def send_body() -> None:
        with contextlib.suppress(OSError):  # the server answered and closed without reading it: what we want
            sock.sendall(body)

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        size = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(
            b"content-length")))
        while len(rest) < size:
            part = sock.recv(65536)
            if not part:
                break
            rest += part
        return status, json.loads(rest[:size])
    finally:
        sock.close()
        sender.join(10)


def test_no_token_is_refused_before_the_body_is_read(unchanged: World) -> None:
    w = unchanged
    for path in (f"/v1/boxes/{w.box}/commits", "/v1/blocks/missing", "/v1/devices", f"/v1/boxes/{w.box}/stages/1"):
        for token in (None, "box_not-a-real-token"):
            status, body = head_only(w, "POST", path, 200 * MIB, token)
            assert status == 401 and body["error"] == "unauthorized", (path, body)


def test_a_body_with_no_token_costs_no_memory(unchanged: World) -> None:
    w = unchanged
    body = b'{"changes": [' + b"{}," * (16 * MIB // 3) + b"{}]}"
    before = peak_rss(w)
    status, answer = head_only(w, "POST", f"/v1/boxes/{w.box}/commits", len(body), None, body)
    assert status == 401, answer
    assert peak_rss(w) - before < 64 * MIB


def test_no_right_to_the_box_is_refused_before_the_body_is_read(unchanged: World) -> None:
    w = unchanged
    status, body = head_only(w, "POST", f"/v1/boxes/{w.box}/commits", 100 * MIB, w.tokens["mallory"])
    assert status == 404, body
    status, body = head_only(w, "POST", f"/v1/boxes/{w.box}/stages/1", 100 * MIB, w.tokens["carol"])
    assert status == 403 and "viewer" in str(body["message"]), body  # carol reads shared/, writes nothing


def test_ordinary_json_bodies_are_small(unchanged: World) -> None:
    w = unchanged
    for path in ("/v1/devices", "/v1/boxes", f"/v1/boxes/{w.box}/ack"):
        status, body = head_only(w, "POST", path, 2 * MIB, w.tokens["alice"])
        assert status == 413 and body["error"] == "too_large", (path, body)
    status, body = head_only(w, "POST", f"/v1/boxes/{w.mallory_box}/commits", 300 * MIB, w.tokens["mallory"])
    assert status == 413, body  # the large limit has a limit too
    # a writer's commit of a few MiB is still read and judged on its content
    big = {"message": "m", "changes": [{"path": f"dir-{i:06d}", "op": "put", "kind": "dir"} for i in range(60_000)]}
    resp = w.call("POST", f"/v1/boxes/{w.mallory_box}/commits", "mallory", json=big)
    assert len(json.dumps(big)) > 2 * MIB and resp.status_code == 200, resp.text
    missing = w.call("POST", "/v1/blocks/missing", "mallory", json={"hashes": ["ab" * 32] * 50_000})
    assert missing.status_code == 200  # 3.4 MB of hashes: block lookups keep a limit of their own


def test_deeply_nested_json_bodies_answer_4xx_not_500(unchanged: World) -> None:
    w = unchanged
    for depth in (1_000, 100_000):
        for body in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
            for method, path in (("POST", "/v1/boxes"), ("POST", f"/v1/boxes/{w.box}/commits"),
                                 ("POST", "/v1/blocks/missing"), ("POST", "/v1/devices"),
                                 ("POST", f"/v1/boxes/{w.mallory_box}/links")):
                answer = w.call(method, path, "mallory", data=body, headers={"Content-Type": "application/json"})
                assert answer.status_code in (400, 404, 413, 422), (depth, path, answer.status_code, answer.text[:200])
                assert answer.headers["content-type"] == "application/json"
