"""Tokens and passwords never appear in the server's log (even at debug level), in error messages,
or in any `--json` output of boxctl."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import requests

from tests.conftest import BOXCTL, Device, ServerProc, free_port, wait_until


def _secrets_in(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s and s in text]


def test_server_log_holds_no_token_password_or_link(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = tmp_path / "server.log"
    port = free_port()
    token = subprocess.run([*BOXCTL, "admin", "add-user", "alice", "--data", str(data)], capture_output=True,
                           text=True, check=True).stdout.strip()
    password = "a password for the log test"
    subprocess.run([*BOXCTL, "admin", "passwd", "alice", "--data", str(data)], input=password + "\n", text=True,
                   capture_output=True, check=True)
    with log.open("wb") as sink:
        proc = subprocess.Popen([*BOXCTL, "serve", "--data", str(data), "--port", str(port), "--log-level", "debug"],
                                stdout=sink, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _up(url), what="server")
            auth = {"Authorization": f"Bearer {token}"}
            box = requests.post(f"{url}/v1/boxes", json={"name": "b"}, headers=auth, timeout=10).json()["id"]
            data_bytes = b"log test file"
            import hashlib

            digest = hashlib.sha256(data_bytes).hexdigest()
            requests.put(f"{url}/v1/blocks/{digest}", data=data_bytes, headers=auth | {"X-Box-Codec": "raw"},
                         timeout=10)
            requests.post(f"{url}/v1/boxes/{box}/commits", headers=auth, timeout=10, json={"changes": [
                {"path": "f.txt", "op": "put", "kind": "file", "size": len(data_bytes), "blocks": [digest]}]})
            link = requests.post(f"{url}/v1/boxes/{box}/links", headers=auth, json={"path": "f.txt"},
                                 timeout=10).json()
            link_token = link["url_path"].rsplit("/", 1)[-1]
            assert requests.get(f"{url}{link['url_path']}?dl=1", timeout=10).content == data_bytes
            requests.get(f"{url}{link['url_path']}/../x", timeout=10)
            new = requests.post(f"{url}/v1/login", json={"user": "alice", "password": password}, timeout=30).json()
            wrong = requests.post(f"{url}/v1/login", json={"user": "alice", "password": password + "!"}, timeout=30)
            assert wrong.status_code == 401 and password not in wrong.text
            bad = requests.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {token}x"}, timeout=10)
            assert bad.status_code == 401 and token not in bad.text
            requests.delete(f"{url}/v1/links/{link['id']}", headers=auth, timeout=10)
            gone = requests.get(f"{url}{link['url_path']}", timeout=10)
            assert gone.status_code == 410 and link_token not in gone.text
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    text = log.read_text(errors="replace")
    assert "GET /l/<redacted>" in text  # the access log is on, and redacted
    leaked = _secrets_in(text, [token, new["token"], password, link_token])
    assert leaked == [], f"secrets in the server log: {len(leaked)}"


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/v1/health", timeout=1).ok
    except requests.RequestException:
        return False


def test_json_outputs_and_errors_hold_no_token(make_device: Any, server: ServerProc) -> None:
    a: Device = make_device("laptop", user="alice")
    b: Device = make_device("desk", user="bob")
    a.root.mkdir()
    outputs = [a.run("init", str(a.root), "--server", server.url, "--box", "docs", "--device", "laptop",
                     "--json").out]
    a.write("x/y.txt", "hello")
    outputs.append(a.run("push", "--json").out)
    outputs.append(a.run("share", "add", "bob", "x", "--role", "editor", "--json").out)
    b_root = b.root
    outputs.append(b.run("clone", server.url, "alice/docs/x", str(b_root), "--json", "--device", "desk",
                         cwd=b.config).out)
    link = a.run("link", "x").out.strip()
    for device, args in ((a, ["status"]), (a, ["push"]), (a, ["pull"]), (a, ["log"]), (a, ["ls"]),
                         (a, ["share", "ls"]), (a, ["link", "ls"]), (a, ["devices"]), (b, ["status"]),
                         (b, ["log"]), (b, ["share", "ls"])):
        outputs.append(device.run(*args, "--json").out)
    bad = a.run("link", "rm", link + "x", check=False)  # an error message about a link URL
    outputs.append(bad.out + bad.err)
    for out in outputs[:-1]:
        json.loads(out)
    secrets = [server.tokens["alice"], server.tokens["bob"], link.rsplit("/", 1)[-1]]
    for config in (a.config, b.config):
        stored = json.loads((config / "credentials.json").read_text())
        for entry in stored.values():
            secrets.append(entry["token"])
            secrets.extend(d["token"] for d in entry.get("devices", {}).values())
    leaked = [s for out in outputs for s in _secrets_in(out, secrets)]
    assert leaked == []
    assert not re.search(r"box_[A-Za-z0-9_-]{20,}", "\n".join(outputs))
