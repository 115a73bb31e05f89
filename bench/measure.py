"""How the benchmark measures: timed commands under /usr/bin/time -v, a memory sampler for server
processes, a byte-counting TCP relay for the wire, and disk usage."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

GNU_TIME = "/usr/bin/time"


class CommandFailed(RuntimeError):
    """A measured command exited non-zero."""

    def __init__(self, tool: str, argv: Sequence[str], code: int, stdout: str, stderr: str) -> None:
        self.tool = tool
        self.argv = list(argv)
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        tail = (stderr.strip() or stdout.strip())[-800:]
        super().__init__(f"{tool}: `{shlex.join(self.argv)}` exited {code}: {tail}")


@dataclass
class Run:
    """One measured command."""

    argv: list[str]
    seconds: float
    client_rss: int | None  # bytes, peak of the client process (GNU time's maximum resident set size)
    server_rss: int | None = None  # bytes, peak of the server process tree while the command ran
    stdout: str = ""
    stderr: str = ""
    client_cpu: float | None = None  # user + system seconds of the command and the children it waited for
    server_cpu: float | None = None  # user + system seconds of the server process while the command ran


@dataclass
class Sample:
    """What one operation of one tool measured in one run."""

    seconds: float
    client_rss: int | None = None
    server_rss: int | None = None
    client_cpu: float | None = None  # user + system seconds of the client (see Run)
    server_cpu: float | None = None  # user + system seconds of the server over the operation
    wire_sent: int | None = None  # client -> server, bytes on the socket
    wire_received: int | None = None  # server -> client
    payload_sent: int | None = None  # what the tool itself says it sent (Box: block frames, --json)
    repo_growth: int | None = None  # how much the repository / server data grew (du)
    space: int | None = None  # du of the repository / server data afterwards
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wire_total(self) -> int | None:
        if self.wire_sent is None and self.wire_received is None:
            return None
        return (self.wire_sent or 0) + (self.wire_received or 0)


NUMERIC = ("seconds", "client_cpu", "server_cpu", "wire_sent", "wire_received", "payload_sent", "repo_growth", "space")
PEAKS = ("client_rss", "server_rss")


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    """Median of each number over the runs (peak memory: the highest run), plus every run's seconds."""
    out: dict[str, Any] = {"runs": len(samples), "seconds_all": [round(s.seconds, 4) for s in samples]}
    for name in ("client_cpu", "server_cpu"):  # CPU time: far less moved than wall time by other load
        values = [getattr(s, name) for s in samples]
        if any(v is not None for v in values):
            out[f"{name}_all"] = [None if v is None else round(v, 4) for v in values]
    for name in NUMERIC:
        values = [getattr(s, name) for s in samples if getattr(s, name) is not None]
        out[name] = statistics.median(values) if values else None
    for name in PEAKS:
        values = [getattr(s, name) for s in samples if getattr(s, name) is not None]
        out[name] = max(values) if values else None
    totals = [s.wire_total for s in samples if s.wire_total is not None]
    out["wire_total"] = statistics.median(totals) if totals else None
    extras: dict[str, Any] = {}
    for s in samples:
        extras.update(s.extra)
    if extras:
        out["extra"] = extras
    return out


# --- memory of a running server --------------------------------------------------------------


class Sampler:
    """The peak resident memory of a process (and its children) over a window of time.

    A single process is measured exactly and for free by the kernel: its peak RSS (VmHWM) is reset
    at the start of a window (clear_refs) and read at the end. A process with children (the rsync
    daemon forks per connection) is polled every `interval` seconds; polling costs the machine CPU
    the measured tools then lack, so it is used only where it must be.
    """

    def __init__(self, pid: int, interval: float = 0.02, children: bool = True) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.exact = not children and _can_reset_peak(pid)
        self._thread = threading.Thread(target=self._loop, name=f"rss-{pid}", daemon=True)
        if not self.exact:
            self._thread.start()

    def rss(self) -> int:
        try:
            proc = psutil.Process(self.pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total
        except psutil.Error:
            return 0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            value = self.rss()
            with self._lock:
                self.peak = max(self.peak, value)

    @contextlib.contextmanager
    def window(self) -> Iterator[list[int]]:
        """Track the peak over a block: yields a list that holds the peak (bytes) once the block ends."""
        if self.exact:
            box_exact: list[int] = []
            _reset_peak(self.pid)
            try:
                yield box_exact
            finally:
                box_exact.append(_peak_rss(self.pid))
            return
        with self._lock:
            self.peak = self.rss()
        box: list[int] = []
        try:
            yield box
        finally:
            value = self.rss()
            with self._lock:
                box.append(max(self.peak, value))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


def process_cpu(pid: int) -> float | None:
    """User + system seconds a process (all its threads) has used so far, from /proc/PID/stat; None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime and stime, fields 14 and 15 of proc(5)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS


def _peak_rss(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def _can_reset_peak(pid: int) -> bool:
    """True where this kernel lets us reset and read a process's peak RSS (Linux 4.0+, same user)."""
    try:
        _reset_peak(pid)
    except OSError:
        return False
    return _peak_rss(pid) > 0


# --- a byte-counting relay in front of a server ----------------------------------------------


class CountingRelay:
    """A loopback TCP relay that counts the bytes each way (zero-copy with splice where Linux has it).

    Clients talk to `port`; everything is passed on to `upstream_port`. `up` counts client -> server
    bytes, `down` server -> client: the application bytes on the wire, HTTP headers included.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self.listener.getsockname()[1])
        self.up = 0
        self.down = 0
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True)
        self._thread.start()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.up, self.down

    def _add(self, up: int, down: int) -> None:
        with self._lock:
            self.up += up
            self.down += down

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            done = threading.Semaphore(0)
            threading.Thread(target=self._pump, args=(client, server, True, done), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False, done), daemon=True).start()
            threading.Thread(target=self._reap, args=(client, server, done), daemon=True).start()

    @staticmethod
    def _reap(a: socket.socket, b: socket.socket, done: threading.Semaphore) -> None:
        done.acquire()
        done.acquire()
        a.close()
        b.close()

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool, done: threading.Semaphore) -> None:
        try:
            if hasattr(os, "splice"):
                self._pump_splice(src, dst, upward)
            else:
                self._pump_copy(src, dst, upward)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            done.release()

    def _pump_splice(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        read_end, write_end = os.pipe()
        try:
            with contextlib.suppress(OSError):
                import fcntl

                fcntl.fcntl(write_end, 1031, 1 << 20)  # F_SETPIPE_SZ
            while True:
                try:
                    n = os.splice(src.fileno(), write_end, 1 << 20)
                except OSError as exc:
                    if exc.errno == errno.EINVAL:
                        self._pump_copy(src, dst, upward)
                        return
                    raise
                if n == 0:
                    return
                self._add(n if upward else 0, 0 if upward else n)
                while n:
                    n -= os.splice(read_end, dst.fileno(), n)
        finally:
            os.close(read_end)
            os.close(write_end)

    def _pump_copy(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        while True:
            n = src.recv_into(buffer)
            if n == 0:
                return
            self._add(n if upward else 0, 0 if upward else n)
            dst.sendall(view[:n])

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.close()


# --- commands ---------------------------------------------------------------------------------


def run_timed(tool: str, argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
              server: Sampler | None = None, timeout: float = 3600) -> Run:
    """Run `argv` under GNU time: wall seconds, the client's peak RSS and CPU seconds, and the server's
    peak RSS and CPU seconds meanwhile.

    The client's CPU is this process's children's rusage before and after (GNU time, the command, and
    every process the command waited for, its forks included); the server's is its /proc stat."""
    argv = [str(a) for a in argv]
    with tempfile.NamedTemporaryFile("r", suffix=".time", delete=False) as stats:
        stats_path = stats.name
    wrapped = [GNU_TIME, "-v", "-o", stats_path, *argv]
    os.sync()  # the writeback of earlier steps is not this command's cost
    window = server.window() if server is not None else contextlib.nullcontext([])
    try:
        with window as peak:
            server_before = process_cpu(server.pid) if server is not None else None
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            proc = subprocess.run(wrapped, cwd=cwd, env=dict(env) if env is not None else None, capture_output=True,
                                  text=True, errors="replace", timeout=timeout)
            seconds = time.perf_counter() - started
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            server_after = process_cpu(server.pid) if server is not None else None
        report = Path(stats_path).read_text(errors="replace")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(stats_path)
    if proc.returncode != 0:
        raise CommandFailed(tool, argv, proc.returncode, proc.stdout, proc.stderr)
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    client_rss = int(match.group(1)) * 1024 if match else None
    client_cpu = (children_after.ru_utime - children_before.ru_utime) + (children_after.ru_stime
                                                                        - children_before.ru_stime)
    server_cpu = server_after - server_before if server_before is not None and server_after is not None else None
    return Run(argv, seconds, client_rss, peak[0] if peak else None, proc.stdout, proc.stderr, client_cpu, server_cpu)


def run_quiet(argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
              tool: str = "setup", timeout: float = 3600) -> str:
    """Run a set-up command (not measured); raise CommandFailed if it fails; return its stdout."""
    argv = [str(a) for a in argv]
    proc = subprocess.run(argv, cwd=cwd, env=dict(env) if env is not None else None, capture_output=True, text=True,
                          errors="replace", timeout=timeout)
    if proc.returncode != 0:
        raise CommandFailed(tool, argv, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def du(path: Path) -> int:
    """Disk space used by `path` in bytes (du -s -B1: allocated blocks, what a user sees go)."""
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[Any] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 20.0) -> None:
    """Stop a process this benchmark started: SIGTERM, then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


# --- clean-up ---------------------------------------------------------------------------------


TRASH = Path(__file__).resolve().parent / "work" / ".trash"


def _many_small_files(path: Path, limit: int = 300) -> bool:
    """True when `path` holds more than `limit` files of under 1 MiB on average (stops looking at 5,000)."""
    count = size = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            count += 1
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(folder, name)).st_size
        if count > 5000:
            break
    return count > limit and size / count < (1 << 20)


def remove(path: Path) -> None:
    """Get `path` out of the way: a tree of many small files is moved into the trash (a rename) for
    `empty_trash` to delete later; anything else, big files included, is deleted at once so that the
    disk does not fill up.

    Deleting many small files is slow on some disks (ext4 with online discard needs milliseconds per
    file), and it would steal I/O from the commands being measured.
    """
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and _many_small_files(path):
        TRASH.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, TRASH / f"{time.time_ns()}-{path.name}")
            return
        except OSError:
            pass
    subprocess.run(["chmod", "-R", "u+w", str(path)], check=False, capture_output=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def empty_trash(background: bool) -> int | None:
    """Delete what `remove` set aside: now, or in a detached low-priority process (its pid is returned)."""
    if not TRASH.exists():
        return None
    batch = TRASH.with_name(f".trash-{time.time_ns()}")
    os.rename(TRASH, batch)
    argv = ["sh", "-c", f"chmod -R u+w '{batch}' 2>/dev/null; rm -rf '{batch}'"]
    if background:
        if shutil.which("ionice"):
            argv = ["ionice", "-c", "3", *argv]
        proc = subprocess.Popen(["nice", "-n", "19", *argv], start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        return proc.pid
    subprocess.run(argv, check=False)
    return None
