"""TLS on the client: a certificate is always verified, a private CA is trusted with --ca-cert (and
remembered by login), and a redirect is never followed, so the token never goes to plain HTTP."""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from tests.conftest import BOXCTL, Device, ServerProc, free_port, wait_until
from tests.e2e.helpers import one_line_error
from tests.security.tlscert import self_signed


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path, ServerProc]]:
    cert, key = self_signed(tmp_path / "tls")
    port = free_port()
    data = tmp_path / "tls-data"
    proc = subprocess.Popen([*BOXCTL, "serve", "--data", str(data), "--port", str(port), "--tls-cert", str(cert),
                             "--tls-key", str(key)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"https://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/v1/health", timeout=1, verify=str(cert)).ok
        except requests.RequestException:
            return False

    try:
        wait_until(up, what="TLS server")
        yield url, cert, ServerProc(data, port)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_self_signed_server_is_refused_until_its_ca_is_given(
        tls_server: tuple[str, Path, ServerProc], tmp_path: Path) -> None:
    url, cert, srv = tls_server
    token = srv.add_user("erin")
    device = Device("erin", tmp_path / "erin", tmp_path / "cfg-erin", srv, "erin")
    device.config.mkdir()
    refused = device.run("login", url, "--user", "erin", "--token", token, check=False, cwd=device.config)
    assert refused.code == 6 and "--ca-cert" in one_line_error(refused)
    device.run("login", url, "--user", "erin", "--token", token, "--ca-cert", str(cert), cwd=device.config)
    # Later commands trust the CA stored at login, with nothing in the environment.
    device.root.mkdir()
    device.run("init", str(device.root), "--server", url, "--box", "secure", "--device", "a")
    device.write("over-tls.txt", "encrypted on the wire")
    device.run("push")
    assert "over-tls.txt" in device.run("ls").out
    bad = device.run("--ca-cert", str(tmp_path / "nosuch.pem"), "status", check=False)
    assert bad.code == 2 and "nosuch.pem" in one_line_error(bad)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with a redirect to `target`, or (as the target) records its headers."""

    target = ""
    seen: ClassVar[list[dict[str, str]]] = []

    def _answer(self) -> None:
        type(self).seen.append(dict(self.headers))
        if self.target:
            self.send_response(307)
            self.send_header("Location", self.target + self.path)
            self.send_header("Content-Length", "0")
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
        self.end_headers()
        if not self.target:
            self.wfile.write(b"{}")

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        return None


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> tuple[http.server.HTTPServer, str]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_a_redirect_is_never_followed_with_the_token(tmp_path: Path) -> None:
    class Target(_Recorder):
        target = ""
        seen: ClassVar[list[dict[str, str]]] = []

    target, target_url = _serve(Target)

    class Redirector(_Recorder):
        target = target_url
        seen: ClassVar[list[dict[str, str]]] = []

    redirector, url = _serve(Redirector)
    try:
        env = {"BOX_CONFIG_DIR": str(tmp_path / "cfg"), "PATH": "/usr/bin:/bin"}
        result = subprocess.run([*BOXCTL, "login", url, "--user", "erin", "--token", "box_secret_token"],
                                capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 8, result
        assert "redirects" in result.stderr and "Traceback" not in result.stderr
        assert Redirector.seen and not Target.seen  # the token never left for the other address
        assert "box_secret_token" not in result.stderr
    finally:
        target.shutdown()
        redirector.shutdown()
