"""`box-server` on shared stores (issue 20): --meta, --blocks, --notify, --s3-endpoint, --block-cache and
their BOX_* variables on serve, migrate and admin; one line and a meaningful exit code for every mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, wait_until
from tests.pg import create_database, drop_database

BOX_SERVER = [sys.executable, "-m", "server_min.cli"]


def box_server(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BOX_SERVER, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or dict(os.environ))


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def empty_db() -> Iterator[str]:
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


def test_serve_needs_to_know_where_the_data_is() -> None:
    result = box_server("serve", env={k: v for k, v in os.environ.items() if not k.startswith("BOX_")})
    assert result.returncode == 2
    assert "--data DIR, or --meta URL and --blocks URL" in one_line(result)


@pytest.mark.parametrize(("args", "said"), [
    (["--meta", "mysql://x/y", "--blocks", "file:///tmp/b"], "unknown metadata store"),
    (["--meta", "sqlite:///tmp/m.db", "--blocks", "ftp://x"], "unknown block store"),
    (["--data", "/tmp/x", "--notify", "kafka://x"], "unknown notifier"),
    (["--data", "/tmp/x", "--blocks", "s3://bucket/p", "--block-cache", "lots"], "cannot read the size"),
])
def test_bad_store_options_are_usage_errors(args: list[str], said: str, tmp_path: Path) -> None:
    result = box_server("serve", *args, "--port", str(free_port()))
    assert result.returncode == 2
    assert said in one_line(result)


def test_a_server_refuses_an_outdated_schema_until_migrate_runs(empty_db: str, tmp_path: Path) -> None:
    blocks = f"file://{tmp_path / 'blocks'}"
    refused = box_server("serve", "--meta", empty_db, "--blocks", blocks, "--port", str(free_port()))
    assert refused.returncode == 1
    assert f"run 'box-server migrate --meta {empty_db}'" in one_line(refused)
    assert box_server("admin", "add-user", "alice", "--meta", empty_db).returncode == 1

    first = box_server("migrate", "--meta", empty_db, "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["from"] == 0 and doc["applied"][0] == "0001_initial.sql" and doc["version"] == len(doc["applied"])
    again = box_server("migrate", "--meta", empty_db)
    assert again.returncode == 0 and "up to date" in again.stdout

    # Everything from the environment now: BOX_META, BOX_BLOCKS.
    env = dict(os.environ, BOX_META=empty_db, BOX_BLOCKS=blocks)
    token = box_server("admin", "add-user", "alice", env=env)
    assert token.returncode == 0 and token.stdout.startswith("box_"), token.stderr
    port = free_port()
    proc = subprocess.Popen([*BOX_SERVER, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                return requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(up, what="the server on PostgreSQL")
        me = requests.get(f"http://127.0.0.1:{port}/v1/me", timeout=5,
                          headers={"Authorization": f"Bearer {token.stdout.strip()}"})
        assert me.status_code == 200 and me.json()["user"] == "alice"
    finally:
        proc.kill()
        proc.wait(timeout=20)


def test_unreachable_stores_are_one_line(tmp_path: Path) -> None:
    dead_pg = f"postgresql://postgres@127.0.0.1:{free_port()}/box"
    result = box_server("migrate", "--meta", dead_pg)
    assert result.returncode == 1
    assert "cannot reach PostgreSQL" in one_line(result)
    result = box_server("serve", "--data", str(tmp_path / "d"), "--notify", f"redis://127.0.0.1:{free_port()}",
                        "--port", str(free_port()))
    assert result.returncode == 1
    assert "redis" in one_line(result)


def test_the_embedded_default_still_upgrades_its_own_folder(tmp_path: Path) -> None:
    """--data DIR is as before: a new folder is made, its meta.db created at the first command."""
    token = box_server("admin", "add-user", "alice", "--data", str(tmp_path / "d"))
    assert token.returncode == 0, token.stderr
    migrated = box_server("migrate", "--data", str(tmp_path / "d"))
    assert migrated.returncode == 0 and "up to date" in migrated.stdout
