"""A client-only install (`pip install boxctl`, no `[server]` extra): server commands say what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Runs box-server with the server extra's packages made unimportable, as in a client-only install.
WITHOUT_EXTRA = """
import sys
from importlib.abc import MetaPathFinder

class NoServerExtra(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fastapi", "starlette", "uvicorn", "argon2", "httptools"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoServerExtra())
from server_min.cli import main
main(sys.argv[1:])
"""


def run_without_extra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRA, *args], capture_output=True, text=True, timeout=60)


def test_serve_without_the_server_extra_names_the_install(tmp_path: Path) -> None:
    done = run_without_extra("serve", "--data", str(tmp_path / "data"), "--port", "1")
    assert done.returncode == 1, done
    assert done.stderr.strip().splitlines() == [
        done.stderr.strip()] and "pip install 'boxctl[server]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_passwd_without_the_server_extra_names_the_install(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "server_min.cli", "admin", "add-user", "alice", "--data",
                    str(tmp_path / "data")], check=True, capture_output=True, timeout=60)
    done = subprocess.run([sys.executable, "-c", WITHOUT_EXTRA, "admin", "passwd", "alice", "--data",
                           str(tmp_path / "data")], input="pw-for-alice-1\npw-for-alice-1\n", capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "pip install 'boxctl[server]'" in done.stderr, done
    assert "Traceback" not in done.stderr


def test_client_commands_need_no_server_extra() -> None:
    done = run_without_extra("--help")
    assert done.returncode == 0, done
    client = subprocess.run([sys.executable, "-c", WITHOUT_EXTRA.replace(
        "from server_min.cli import main\nmain(sys.argv[1:])", "from boxctl.cli import main\nmain()"), "--help"],
        capture_output=True, text=True, timeout=60)
    assert client.returncode == 0 and "push" in client.stdout, client
