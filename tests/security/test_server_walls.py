"""Walls of the server process itself: password limits behind (or without) a proxy, long polls of revoked
devices, a private data folder, and connections that cannot starve other users.

Each test starts its own server (the `server` fixture) where it changes what the server remembers
(rate limits) or how it was started.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from server_min.api.slots import LONG_POLLS_PER_USER
from tests.conftest import BOXCTL, ServerProc, free_port


def login(srv: ServerProc, user: str, password: str, forwarded: str | None = None) -> requests.Response:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return requests.post(f"{srv.url}/v1/login", json={"user": user, "password": password}, headers=headers,
                         timeout=30)


def set_password(srv: ServerProc, user: str, password: str) -> None:
    subprocess.run([*BOXCTL, "admin", "passwd", user, "--data", str(srv.data)], input=password + "\n", text=True,
                   capture_output=True, check=True)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[ServerProc]:
    """A server that believes X-Forwarded-For from 127.0.0.1 (as behind a reverse proxy there)."""
    srv = ServerProc(tmp_path / "proxied-data", free_port(), extra=["--trust-proxy", "127.0.0.1"])
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


# --- passwords ---------------------------------------------------------------------------------------


def test_forwarded_for_is_not_believed_by_default(server: ServerProc) -> None:
    """Without --trust-proxy, a new X-Forwarded-For per request is not a new address: 20 wrong passwords
    from this address (for users that do not exist, 4 each) lock it whatever the header says."""
    for i in range(20):
        assert login(server, f"ghost{i // 4}", "wrong password", forwarded=f"203.0.113.{i}").status_code == 401
    last = login(server, "ghost9", "wrong password", forwarded="203.0.113.200")
    assert last.status_code == 429 and int(last.headers["Retry-After"]) >= 1


def test_no_one_can_lock_a_user_out(proxied: ServerProc) -> None:
    srv = proxied
    token = srv.add_user("carol")
    set_password(srv, "carol", "carol's long password")
    for i in range(5):  # five addresses, one wrong password each
        assert login(srv, "carol", f"guess {i}", forwarded=f"198.51.100.{i}").status_code == 401
    ok = login(srv, "carol", "carol's long password", forwarded="192.0.2.7")  # her own, clean address
    assert ok.status_code == 200 and ok.json()["token"].startswith("box_")
    slowed = login(srv, "carol", "guess again", forwarded="198.51.100.1")  # an address that failed waits
    assert slowed.status_code == 429
    me = requests.get(f"{srv.url}/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert me.status_code == 200  # tokens are never rate-limited
    for i in range(5):  # and one address that keeps failing locks itself, not carol
        login(srv, "carol", f"more {i}", forwarded="198.51.100.99")
    assert login(srv, "carol", "carol's long password", forwarded="198.51.100.99").status_code == 429
    assert login(srv, "carol", "carol's long password", forwarded="192.0.2.8").status_code == 200


# --- long polls ----------------------------------------------------------------------------------------


def test_long_poll_of_a_revoked_device_ends_with_401(server: ServerProc) -> None:
    token = server.add_user("alice")
    auth = {"Authorization": f"Bearer {token}"}
    box = requests.post(f"{server.url}/v1/boxes", json={"name": "b"}, headers=auth, timeout=10).json()["id"]
    device = requests.post(f"{server.url}/v1/devices", json={"name": "lost-phone", "kind": "phone"}, headers=auth,
                           timeout=10).json()
    answers: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        answers["r"] = requests.get(f"{server.url}/v1/boxes/{box}/wait", params={"cursor": 0, "timeout": 20},
                                    headers={"Authorization": f"Bearer {device['token']}"}, timeout=30)
        answers["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)  # the poll is waiting (no event to await from outside the server)
    revoked = requests.post(f"{server.url}/v1/devices/{device['id']}/revoke", json={}, headers=auth, timeout=10)
    assert revoked.status_code == 200
    waiter.join(30)
    assert answers["r"].status_code == 401 and answers["seconds"] < 10, answers


# --- the data folder ------------------------------------------------------------------------------------


@pytest.mark.embedded_only  # the modes of the embedded data folder and its files
def test_data_folder_is_private(server: ServerProc) -> None:
    token = server.add_user("alice")
    data = b"private bytes"
    import hashlib

    resp = requests.put(f"{server.url}/v1/blocks/{hashlib.sha256(data).hexdigest()}", data=data,
                        headers={"Authorization": f"Bearer {token}", "X-Box-Codec": "raw"}, timeout=10)
    assert resp.status_code == 200
    assert stat.S_IMODE(server.data.stat().st_mode) == 0o700
    for path in server.data.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))


def test_server_refuses_a_folder_others_may_write(tmp_path: Path) -> None:
    data = tmp_path / "open-data"
    data.mkdir()
    data.chmod(0o777)
    proc = subprocess.run([*BOXCTL, "serve", "--data", str(data), "--port", str(free_port())], capture_output=True,
                          text=True, timeout=20)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "others may write" in lines[0] and "Traceback" not in proc.stderr


# --- connections ----------------------------------------------------------------------------------------


def raw(srv: ServerProc) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=20)


def status_of(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        part = sock.recv(4096)
        if not part:
            return 0  # closed without an answer
        data += part
    return int(data.split()[1])


def answered(socks: list[socket.socket], seconds: float) -> dict[int, int]:
    """How many of `socks` got an answer within `seconds`, by status."""
    counts: dict[int, int] = {}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                selector.unregister(key.fileobj)
                status = status_of(key.fileobj)  # type: ignore[arg-type]
                counts[status] = counts.get(status, 0) + 1
    return counts


def test_oversized_request_head_is_refused(server: ServerProc) -> None:
    with raw(server) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (512 << 10) + b"\r\n\r\n")
        assert status_of(sock) in (0, 431)
    with raw(server) as sock:
        sock.sendall(b"GET /v1/health?" + b"q" * (512 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(sock) in (0, 431)
    assert requests.get(f"{server.url}/v1/health", timeout=5).ok


def test_idle_and_half_sent_heads_are_closed(server: ServerProc) -> None:
    idle, half = raw(server), raw(server)
    half.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # and never the end of its head
    started = time.monotonic()
    for sock in (idle, half):
        with sock:
            assert sock.recv(100) == b""  # closed by the server
    assert time.monotonic() - started < 15


@contextlib.contextmanager
def open_files_limit(soft: int) -> Iterator[None]:
    """Lower this process's soft limit on open files (a child started inside inherits it)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, before[1]), before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_many_idle_connections_do_not_starve_others(tmp_path: Path) -> None:
    """The server starts with a soft limit of 1,024 open files, as on many systems; 1,100 idle sockets
    must not keep another user's request out."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4096:
        pytest.skip("the hard limit on open files is too low here to open 1,100 sockets")
    srv = ServerProc(tmp_path / "data", free_port())
    with open_files_limit(1024):
        srv.start()
    socks: list[socket.socket] = []
    try:
        token = srv.add_user("alice")
        for _ in range(1100):
            socks.append(raw(srv))
        me = requests.get(f"{srv.url}/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=8)
        assert me.status_code == 200
    finally:
        for sock in socks:
            sock.close()
        srv.kill()


def test_long_polls_and_uploads_per_user_are_bounded(server: ServerProc) -> None:
    mallory, alice = server.add_user("mallory"), server.add_user("alice")
    box = requests.post(f"{server.url}/v1/boxes", json={"name": "m"}, headers={"Authorization": f"Bearer {mallory}"},
                        timeout=10).json()["id"]
    socks: list[socket.socket] = []
    try:
        polls = []
        for _ in range(LONG_POLLS_PER_USER + 8):
            sock = raw(server)
            sock.sendall(f"GET /v1/boxes/{box}/wait?cursor=0&timeout=20 HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {mallory}\r\n\r\n".encode())
            socks.append(sock)
            polls.append(sock)
        uploads = []
        for i in range(10):
            sock = raw(server)
            sock.sendall(f"PUT /v1/blocks/{i:064x} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mallory}\r\n"
                         f"Content-Length: 1048576\r\n\r\n".encode() + b"x" * 100)  # and the rest never
            socks.append(sock)
            uploads.append(sock)
        assert answered(polls, 3.0) == {429: 8}  # the first ones wait on; the others are refused at once
        assert answered(uploads, 2.0) == {429: 2}
        # another user is not affected
        me = requests.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {alice}"}, timeout=5)
        assert me.status_code == 200
    finally:
        for sock in socks:
            sock.close()
