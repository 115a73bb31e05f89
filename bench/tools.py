"""The tools under test, behind one small interface: Box, rsync (daemon), restic, borg, and cp + sha256sum.

A tool makes *targets*: one fresh destination (a Box server, a restic or borg repository, an rsync
module folder, a plain folder for cp) bound to one source folder. A target can push the source,
restore into a new folder, report a no-op status, and say how much space it uses. Every push and
restore is one measured command; set-up is not measured.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import requests

from bench.measure import (
    CommandFailed,
    CountingRelay,
    Sample,
    Sampler,
    du,
    free_port,
    remove,
    run_quiet,
    run_timed,
    stop_process,
    wait_for_port,
)

BOX_NAME = "bench"

BOX_USER = "bench"


def boxctl() -> list[str]:
    """The boxctl command of the environment running the benchmark."""
    script = Path(sys.executable).parent / "boxctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "boxctl"]


class Target(ABC):
    """One destination of one tool, bound to a source folder."""

    tool: Tool

    @abstractmethod
    def push(self) -> Sample:
        """Send the source to this destination, measured."""

    @abstractmethod
    def restore(self, dest: Path) -> Sample:
        """Bring the latest version back into `dest`, measured."""

    def status(self) -> Sample | None:
        """A no-op change check (what `git status` does); None when the tool has no such command."""
        return None

    @abstractmethod
    def space(self) -> int:
        """Bytes the destination uses on disk."""

    def close(self) -> None:
        return None


class Tool(ABC):
    """A tool: its name, version, the exact commands it runs, and how to make a target."""

    name = ""
    label = ""

    def __init__(self, work: Path) -> None:
        self.work = work

    @abstractmethod
    def version(self) -> str:
        """The version line the tool prints of itself."""

    @abstractmethod
    def commands(self) -> dict[str, str]:
        """The exact commands, with SRC / DEST / REPO placeholders, for the docs."""

    @abstractmethod
    def target(self, label: str, src: Path, *, relay: bool = True) -> Target:
        """A fresh destination of this tool for the folder `src`.

        `relay`: put the byte-counting relay in front of a server (only Box has one here). The relay is
        a second loopback hop that no other tool pays for, so workloads that time Box rather than count
        its bytes go without it and take the bytes Box counts itself.
        """

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


def _first_line(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    return out.splitlines()[0] if out else "unknown"


# --- Box ------------------------------------------------------------------------------------


class BoxServer:
    """A real `boxctl serve` on a loopback port with a fresh data folder, a user and a memory sampler."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        data.mkdir(parents=True, exist_ok=True)
        self.log = open(data.parent / f"{data.name}.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen([*boxctl(), "serve", "--data", str(data), "--port", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, self.proc)
        except Exception:
            self.stop()
            raise
        self.sampler = Sampler(self.proc.pid, children=False)  # one process: the kernel's exact peak
        self.token = run_quiet([*boxctl(), "admin", "add-user", BOX_USER, "--data", str(data)], tool="box").strip()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if getattr(self, "sampler", None) is not None:
            self.sampler.stop()
        stop_process(self.proc)
        self.log.close()


class BoxTarget(Target):
    def __init__(self, tool: BoxTool, label: str, src: Path, relay: bool = True) -> None:
        self.tool = tool
        self.src = src
        self.home = tool.work / label
        self.home.mkdir(parents=True, exist_ok=True)
        self.server = BoxServer(self.home / "server-data")
        self.relay = CountingRelay(self.server.port) if relay else None
        self.url = f"http://127.0.0.1:{self.relay.port}" if self.relay else self.server.url
        self.env = dict(os.environ, BOX_CONFIG_DIR=str(self.home / "config"))
        self.env.pop("BOX_TOKEN", None)
        self.env.pop("BOX_SERVER", None)
        self.restores = 0
        try:
            run_quiet([*boxctl(), "login", self.url, "--user", BOX_USER, "--token", self.server.token],
                      env=self.env, tool="box")
            src.mkdir(parents=True, exist_ok=True)
            run_quiet([*boxctl(), "init", str(src), "--server", self.url, "--box", BOX_NAME, "--device", "source"],
                      env=self.env, tool="box")
            info = requests.get(f"{self.server.url}/v1/boxes", params={"name": BOX_NAME}, timeout=30,
                                headers={"Authorization": f"Bearer {self.server.token}"})
            info.raise_for_status()
            self.chunking: dict[str, int] = info.json()["chunking"]
        except Exception:
            self.close()
            raise

    def _measured(self, argv: list[str], cwd: Path) -> tuple[Any, Sample]:
        before_space = self.space()
        before = self.relay.counts() if self.relay else None
        run = run_timed("box", argv, cwd=cwd, env=self.env, server=self.server.sampler)
        after = self.relay.counts() if self.relay else None
        space = self.space()
        try:
            answer = json.loads(run.stdout) if run.stdout.strip() else {}
        except ValueError as exc:
            raise CommandFailed("box", argv, 0, run.stdout, f"--json output is not JSON: {exc}") from None
        if before is not None and after is not None:
            sent, received = after[0] - before[0], after[1] - before[1]
        else:  # no relay: what the client counted itself (request and answer bodies, without HTTP headers)
            sent, received = answer.get("wire_bytes_sent"), answer.get("wire_bytes_received")
        sample = Sample(run.seconds, client_rss=run.client_rss, server_rss=run.server_rss,
                        client_cpu=run.client_cpu, server_cpu=run.server_cpu, wire_sent=sent, wire_received=received,
                        repo_growth=space - before_space, space=space)
        return answer, sample

    def push(self) -> Sample:
        answer, sample = self._measured([*boxctl(), "push", "--json"], self.src)
        sample.payload_sent = int(answer.get("bytes_sent", 0))
        sample.extra = {"blocks_sent": answer.get("blocks_sent"), "bytes_plain": answer.get("bytes_plain"),
                        "box_seconds": answer.get("seconds"), "box_wire_bytes_sent": answer.get("wire_bytes_sent"),
                        "changes": sum(len(answer.get(k) or []) for k in ("added", "modified", "deleted"))}
        return sample

    def restore(self, dest: Path) -> Sample:
        self.restores += 1
        answer, sample = self._measured(
            [*boxctl(), "clone", self.url, BOX_NAME, str(dest), "--device", f"restore{self.restores}", "--json"],
            dest.parent)
        sample.extra = {"files_written": len((answer.get("pull") or {}).get("written") or [])}
        return sample

    def status(self) -> Sample:
        answer, sample = self._measured([*boxctl(), "status", "--json"], self.src)
        dirty = sum(len(answer.get(k) or []) for k in ("added", "modified", "deleted"))
        sample.extra = {"status_changes": dirty}
        return sample

    def space(self) -> int:
        return du(self.server.data)

    def close(self) -> None:
        if self.relay:
            self.relay.close()
        self.server.stop()


class BoxTool(Tool):
    name = "box"
    label = "Box"

    def version(self) -> str:
        text = _first_line([*boxctl(), "--version"])
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent.parent).stdout.strip()
        return f"{text} (git {commit})" if commit else text

    def commands(self) -> dict[str, str]:
        return {
            "server": "boxctl serve --data DATA --port PORT   # + boxctl admin add-user bench --data DATA",
            "setup": "boxctl login URL --user bench --token TOKEN; boxctl init SRC --server URL --box bench",
            "push": "cd SRC && boxctl push --json",
            "restore": "boxctl clone URL bench DEST --json",
            "status": "cd SRC && boxctl status --json",
        }

    def target(self, label: str, src: Path, *, relay: bool = True) -> Target:
        return BoxTarget(self, label, src, relay=relay)


# --- rsync daemon -----------------------------------------------------------------------------


RSYNC_STATS = re.compile(r"Total bytes (sent|received): ([\d,.]+)")


class RsyncTarget(Target):
    def __init__(self, tool: RsyncTool, label: str, src: Path) -> None:
        self.tool = tool
        self.src = src
        self.name = label.replace("/", "-")
        self.path = tool.module / self.name
        remove(self.path)
        self.url = f"rsync://127.0.0.1:{tool.port}/bench/{self.name}/"

    def _measured(self, argv: list[str]) -> Sample:
        before = self.space()
        assert self.tool.sampler is not None
        run = run_timed("rsync", argv, server=self.tool.sampler)
        stats = {kind: int(value.replace(",", "").replace(".", "")) for kind, value in RSYNC_STATS.findall(run.stdout)}
        space = self.space()
        # The daemon forks per connection: its own CPU is not the transfer's, so only the client's is kept.
        return Sample(run.seconds, client_rss=run.client_rss, server_rss=run.server_rss, client_cpu=run.client_cpu,
                      wire_sent=stats.get("sent"), wire_received=stats.get("received"),
                      repo_growth=space - before, space=space)

    def push(self) -> Sample:
        sample = self._measured(["rsync", *self.tool.flags, "--delete", f"{self.src}/", self.url])
        sample.payload_sent = sample.wire_total
        return sample

    def restore(self, dest: Path) -> Sample:
        dest.mkdir(parents=True, exist_ok=True)
        sample = self._measured(["rsync", *self.tool.flags, self.url, f"{dest}/"])
        return sample

    def status(self) -> Sample:
        return self._measured(["rsync", *self.tool.flags, "--dry-run", "--delete", f"{self.src}/", self.url])

    def space(self) -> int:
        return du(self.path)

    def close(self) -> None:
        remove(self.path)


class RsyncTool(Tool):
    """rsync talking to an rsync daemon on a loopback port, so it delta-transfers as over a network."""

    name = "rsync"
    label = "rsync (daemon)"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.module = work / "rsync-module"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: Sampler | None = None
        help_text = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout
        zstd = "zstd" in help_text.split("Compress list:", 1)[-1].split("\n\n", 1)[0] if "Compress list" in help_text \
            else False
        # Box compresses blocks with zstd level 3; match it when this rsync can.
        self.flags = ["-a", "--stats", "-z", "--compress-choice=zstd", "--compress-level=3"] if zstd else \
            ["-a", "--stats", "-z"]

    def version(self) -> str:
        return _first_line(["rsync", "--version"])

    def commands(self) -> dict[str, str]:
        flags = " ".join(self.flags)
        return {
            "server": "rsync --daemon --no-detach --address 127.0.0.1 --port PORT --config rsyncd.conf",
            "push": f"rsync {flags} --delete SRC/ rsync://127.0.0.1:PORT/bench/NAME/",
            "restore": f"rsync {flags} rsync://127.0.0.1:PORT/bench/NAME/ DEST/",
            "status": f"rsync {flags} --dry-run --delete SRC/ rsync://127.0.0.1:PORT/bench/NAME/",
        }

    def start(self) -> None:
        self.module.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.work / "rsyncd.conf"
        conf.write_text(
            f"pid file = {self.work / 'rsyncd.pid'}\n"
            "use chroot = no\n"
            f"log file = {self.work / 'rsyncd.log'}\n"
            "max connections = 16\n"
            "[bench]\n"
            f"    path = {self.module}\n"
            "    read only = no\n"
            f"    uid = {os.getuid()}\n"
            f"    gid = {os.getgid()}\n"
            "    munge symlinks = no\n"
        )
        (self.work / "rsyncd.pid").unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["rsync", "--daemon", "--no-detach", "--address", "127.0.0.1", "--port", str(self.port),
             "--config", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        self.sampler = Sampler(self.proc.pid)

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        stop_process(self.proc)

    def target(self, label: str, src: Path, *, relay: bool = True) -> Target:
        return RsyncTarget(self, label, src)


# --- restic -------------------------------------------------------------------------------------


class ResticTarget(Target):
    def __init__(self, tool: ResticTool, label: str, src: Path) -> None:
        self.tool = tool
        self.src = src
        self.home = tool.work / label
        self.repo = self.home / "restic-repo"
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, RESTIC_REPOSITORY=str(self.repo), RESTIC_CACHE_DIR=str(self.home / "restic-cache"))
        if not tool.no_password:
            password = self.home / "restic-password"
            password.write_text("bench\n")
            self.env["RESTIC_PASSWORD_FILE"] = str(password)
        run_quiet(["restic", "init", *tool.init_flags], env=self.env, tool="restic")

    def _measured(self, argv: list[str], cwd: Path) -> Sample:
        before = self.space()
        run = run_timed("restic", argv, cwd=cwd, env=self.env)
        space = self.space()
        return Sample(run.seconds, client_rss=run.client_rss, client_cpu=run.client_cpu, repo_growth=space - before,
                      space=space)

    def push(self) -> Sample:
        sample = self._measured(["restic", *self.tool.global_flags, "backup", "--host", "bench", "-q", "."], self.src)
        sample.payload_sent = sample.repo_growth
        return sample

    def restore(self, dest: Path) -> Sample:
        dest.mkdir(parents=True, exist_ok=True)
        return self._measured(["restic", *self.tool.global_flags, "restore", "latest", "--target", str(dest)], dest)

    def space(self) -> int:
        return du(self.repo)


class ResticTool(Tool):
    """restic with a local repository; no password where this restic allows it, compression auto (zstd)."""

    name = "restic"
    label = "restic"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        init_help = subprocess.run(["restic", "init", "--help"], capture_output=True, text=True).stdout
        self.no_password = "--insecure-no-password" in init_help
        self.init_flags = ["--repository-version", "2"] if "--repository-version" in init_help else []
        self.global_flags = ["--compression", "auto"]
        if self.no_password:
            self.init_flags.append("--insecure-no-password")
            self.global_flags.append("--insecure-no-password")

    def version(self) -> str:
        return _first_line(["restic", "version"])

    def commands(self) -> dict[str, str]:
        flags = " ".join(self.global_flags)
        auth = "" if self.no_password else "   # RESTIC_PASSWORD_FILE set: this restic cannot go without encryption"
        return {
            "setup": f"restic -r REPO init {' '.join(self.init_flags)}{auth}",
            "push": f"cd SRC && restic -r REPO {flags} backup --host bench -q .",
            "restore": f"restic -r REPO {flags} restore latest --target DEST",
        }

    def target(self, label: str, src: Path, *, relay: bool = True) -> Target:
        return ResticTarget(self, label, src)


# --- borg ---------------------------------------------------------------------------------------


class BorgTarget(Target):
    def __init__(self, tool: BorgTool, label: str, src: Path) -> None:
        self.tool = tool
        self.src = src
        self.home = tool.work / label
        self.repo = self.home / "borg-repo"
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, BORG_BASE_DIR=str(self.home / "borg-base"), BORG_PASSPHRASE="",
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        self.archives = 0
        run_quiet(["borg", "init", "-e", "none", str(self.repo)], env=self.env, tool="borg")

    def _measured(self, argv: list[str], cwd: Path) -> Sample:
        before = self.space()
        run = run_timed("borg", argv, cwd=cwd, env=self.env)
        space = self.space()
        return Sample(run.seconds, client_rss=run.client_rss, client_cpu=run.client_cpu, repo_growth=space - before,
                      space=space)

    def push(self) -> Sample:
        self.archives += 1
        sample = self._measured(["borg", "create", "--compression", "zstd,3", f"{self.repo}::v{self.archives}", "."],
                                self.src)
        sample.payload_sent = sample.repo_growth
        return sample

    def restore(self, dest: Path) -> Sample:
        dest.mkdir(parents=True, exist_ok=True)
        return self._measured(["borg", "extract", f"{self.repo}::v{self.archives}"], dest)

    def space(self) -> int:
        return du(self.repo)


class BorgTool(Tool):
    """borg with a local repository, no encryption, zstd level 3 (as Box)."""

    name = "borg"
    label = "borg"

    def version(self) -> str:
        return _first_line(["borg", "--version"])

    def commands(self) -> dict[str, str]:
        return {
            "setup": "borg init -e none REPO",
            "push": "cd SRC && borg create --compression zstd,3 REPO::vN .",
            "restore": "cd DEST && borg extract REPO::vN",
        }

    def target(self, label: str, src: Path, *, relay: bool = True) -> Target:
        return BorgTarget(self, label, src)


# --- cp + sha256sum: the floor ----------------------------------------------------------------


class CopyTarget(Target):
    def __init__(self, tool: CopyTool, label: str, src: Path) -> None:
        self.tool = tool
        self.src = src
        self.dst = tool.work / label / "copy"
        remove(self.dst)
        self.dst.mkdir(parents=True)

    def _measured(self, script: str, cwd: Path) -> Sample:
        before = self.space()
        run = run_timed("cp", ["sh", "-c", script], cwd=cwd)
        space = self.space()
        return Sample(run.seconds, client_rss=run.client_rss, client_cpu=run.client_cpu, repo_growth=space - before,
                      space=space)

    def push(self) -> Sample:
        size = int(run_quiet(["du", "-s", "-b", str(self.src)]).split()[0])
        sample = self._measured(self.tool.push_script(self.src, self.dst), self.src)
        sample.payload_sent = size
        return sample

    def restore(self, dest: Path) -> Sample:
        dest.mkdir(parents=True, exist_ok=True)
        return self._measured(self.tool.restore_script(self.dst, dest), dest)

    def status(self) -> Sample:
        return self._measured(f"find {shlex.quote(str(self.src))} -type f -printf '%s %T@\\n' >/dev/null", self.src)

    def space(self) -> int:
        return du(self.dst)


class CopyTool(Tool):
    """The floor: read and hash every byte (sha256sum), then copy it (cp -a). No deltas, no history."""

    name = "cp"
    label = "cp + sha256sum"

    def version(self) -> str:
        return f"{_first_line(['cp', '--version'])}; {_first_line(['sha256sum', '--version'])}"

    @staticmethod
    def push_script(src: Path, dst: Path) -> str:
        s, d = shlex.quote(str(src)), shlex.quote(str(dst))
        return f"find {s} -type f -print0 | xargs -0 -r sha256sum >/dev/null && cp -a {s}/. {d}/"

    @staticmethod
    def restore_script(dst: Path, dest: Path) -> str:
        d, r = shlex.quote(str(dst)), shlex.quote(str(dest))
        return f"cp -a {d}/. {r}/ && find {r} -type f -print0 | xargs -0 -r sha256sum >/dev/null"

    def commands(self) -> dict[str, str]:
        return {
            "push": self.push_script(Path("SRC"), Path("DEST")),
            "restore": self.restore_script(Path("DEST"), Path("RESTORE")),
            "status": "find SRC -type f -printf '%s %T@\\n' >/dev/null",
        }

    def target(self, label: str, src: Path, *, relay: bool = True) -> Target:
        return CopyTarget(self, label, src)


TOOLS: list[type[Tool]] = [BoxTool, RsyncTool, ResticTool, BorgTool, CopyTool]
