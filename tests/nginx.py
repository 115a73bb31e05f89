"""Debian's nginx as the load balancer of the scale-out tests, running deploy/nginx.conf itself.

The file operators are told to use is the one tested: only the lines marked `# port` are changed, to
the loopback ports of this run. nginx missing or failing to start fails the test (never a skip):
`.ci/run` installs it.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import requests

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def render(listen: int, upstreams: list[int]) -> str:
    """deploy/nginx.conf with its `# port` lines set to `listen` and one server line per upstream port."""
    out: list[str] = []
    servers_done = False
    for line in CONFIG.read_text().splitlines():
        if not line.rstrip().endswith("# port"):
            out.append(line)
        elif "listen" in line:
            out.append(re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{listen}", line))
        elif not servers_done:
            servers_done = True
            out.extend(re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", line) for port in upstreams)
    # As root, workers would run as `nobody` and could not read this run's folder: keep them as root.
    out.insert(0, "user root;")
    return "\n".join(out) + "\n"


class Nginx:
    """One nginx master in the foreground, in its own prefix folder; stopped by its pid."""

    def __init__(self, prefix: Path, listen: int, upstreams: list[int]) -> None:
        self.prefix = prefix
        self.listen = listen
        self.upstreams = upstreams
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen}"

    def start(self, timeout: float = 20.0) -> None:
        if not Path(NGINX).exists():
            raise AssertionError("nginx is not installed: apt-get install nginx-light (.ci/run does)")
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(render(self.listen, self.upstreams))
        self.proc = subprocess.Popen([NGINX, "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"nginx exited at start: {err.strip()}")
            try:
                requests.get(f"{self.url}/v1/health", timeout=1)
                return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nginx did not answer on {self.url} within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish what they hold
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


__all__ = ["CONFIG", "Nginx", "render"]
