"""Scale-out benchmark (issue 20): commits per second on each deployment shape, and big-file throughput
with blocks on the local folder and on an S3 store.

    python -m bench.scale            # 8 clients for 20 s per shape, a 1 GiB file; writes
                                     # bench/results/scale-<date>.json and the "Scale-out" section of docs/benchmarks.md
    python -m bench.scale --quick    # 5 s per shape, a 128 MiB file; writes scale-<date>-quick.json only

1. Commits: 8 client processes, each a user with its own box, commit one small change after another
   through the HTTP API for a fixed time, while a ninth process holds 4 long polls on every box (each
   woken by the commits, then waiting again). Shapes: SQLite with one server process; PostgreSQL with
   one; PostgreSQL with two behind nginx (deploy/nginx.conf). The servers' and PostgreSQL's CPU
   seconds are read from /proc over the run, to say where the time goes.
2. Throughput: `boxctl push` of one file of random bytes, then `boxctl clone` of it on a second device,
   with blocks on the local folder (file:///) and on SeaweedFS (s3://), metadata on SQLite in both.

Everything runs on loopback; every process started here is stopped here, by its pid.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from bench.watch_latency import ROOT, free_port, run, wait_until
from tests.nginx import Nginx
from tests.pg import PG_ADMIN_URL, create_database, drop_database
from tests.s3 import S3Server

BOX_SERVER = [sys.executable, "-m", "server_min.cli"]
BOXCTL = [sys.executable, "-m", "boxctl"]
START, END = "<!-- scale:start -->", "<!-- scale:end -->"
CLIENTS = 8
POLLS_PER_BOX = 4


def log(message: str) -> None:
    print(f"[bench-scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Server:
    """One `box-server serve` process."""

    port: int
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([*BOX_SERVER, "serve", "--port", str(self.port), *self.args], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"server exited with {self.proc.returncode}: {err.strip()}")
            try:
                return requests.get(f"{self.url}/v1/health", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(up, 60, "the server to start", 0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # a SIGTERMed server would wait for its long polls
            self.proc.wait(timeout=30)


@dataclass
class Shape:
    """A deployment: its servers, the URL clients use, and how to run admin commands on it."""

    name: str
    servers: list[Server]
    url: str
    admin_args: list[str]
    env: dict[str, str]
    extra_pids: list[int] = field(default_factory=list)

    def add_user(self, name: str) -> str:
        return run([*BOX_SERVER, "admin", "add-user", name, *self.admin_args], env=self.env).strip()


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds of these processes so far (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def postgres_pids() -> list[int]:
    """PostgreSQL's processes on this machine (the backends serving the servers do the metadata work)."""
    return [p.pid for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]


# --- 1. commits per second -------------------------------------------------------------------


def _client(url: str, token: str, seconds: float, start: Any, out: Any) -> None:
    """One client process: a device and a box, then commits of one new empty file each, until time is up."""
    from boxctl.api import Api
    from boxctl.transport import Transport

    api = Api(Transport(url, token))
    device = api.register_device(f"bench-{os.getpid()}")
    api = Api(Transport(url, device["token"]))
    box = api.create_box("scale")
    out.put(("box", box["id"], device["token"]))
    start.wait()
    deadline, done, latencies = time.monotonic() + seconds, 0, []
    while time.monotonic() < deadline:
        began = time.perf_counter()
        api.commit(box["id"], {"message": "bench", "device": device["id"], "key": uuid.uuid4().hex, "changes": [
            {"path": f"f{done}", "op": "put", "kind": "file", "parent_rev": 0, "size": 0,
             "mtime_ns": time.time_ns(), "mode": 0o644, "blocks": []}]})
        latencies.append(time.perf_counter() - began)
        done += 1
    out.put(("done", done, latencies))


def _poller(url: str, boxes: list[tuple[int, str]], stop: Any, out: Any) -> None:
    """POLLS_PER_BOX long polls on each box, each waiting again as soon as it wakes; counts the wakes."""
    from boxctl.api import Api
    from boxctl.transport import Transport

    wakes = [0]
    lock = threading.Lock()

    def hold(box_id: int, token: str) -> None:
        api, cursor = Api(Transport(url, token)), 0
        while not stop.is_set():
            answer = api.wait(box_id, cursor, timeout=5)
            if answer["changes"]:
                cursor = answer["head"]
                with lock:
                    wakes[0] += 1

    threads = [threading.Thread(target=hold, args=pair, daemon=True) for pair in boxes for _ in range(POLLS_PER_BOX)]
    for thread in threads:
        thread.start()
    stop.wait()
    out.put(("wakes", wakes[0]))


def measure_commits(shape: Shape, seconds: float) -> dict[str, Any]:
    """Commits per second of CLIENTS clients on `shape`, with long polls held on every box."""
    ctx = multiprocessing.get_context("spawn")
    start, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    tokens = [shape.add_user(f"u{i}") for i in range(CLIENTS)]
    clients = [ctx.Process(target=_client, args=(shape.url, token, seconds, start, out)) for token in tokens]
    for proc in clients:
        proc.start()
    boxes = [out.get(timeout=120)[1:] for _ in clients]
    poller = ctx.Process(target=_poller, args=(shape.url, boxes, stop, out))
    poller.start()
    time.sleep(1.0)  # the polls connect (they are not what is measured)
    server_pids = [s.proc.pid for s in shape.servers if s.proc] + shape.extra_pids
    pg_pids = postgres_pids()
    server_cpu, pg_cpu, began = cpu_seconds(server_pids), cpu_seconds(pg_pids), time.monotonic()
    start.set()
    results = [out.get(timeout=seconds + 120) for _ in clients]
    elapsed = time.monotonic() - began
    server_cpu, pg_cpu = cpu_seconds(server_pids) - server_cpu, cpu_seconds(pg_pids) - pg_cpu
    stop.set()
    wakes = out.get(timeout=30)[1]
    for proc in [*clients, poller]:
        proc.join(timeout=30)
    commits = sum(r[1] for r in results)
    latencies = sorted(x for r in results for x in r[2])
    return {
        "commits": commits, "seconds": round(elapsed, 2), "commits_per_s": round(commits / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None,
        "polls_held": CLIENTS * POLLS_PER_BOX, "poll_wakes": wakes,
        "server_cpu_s": round(server_cpu, 1), "postgres_cpu_s": round(max(0.0, pg_cpu), 1),
        "server_cpu_ms_per_commit": round(server_cpu / commits * 1000, 2) if commits else None,
    }


# --- 2. a big file, pushed and cloned --------------------------------------------------------


def measure_big_file(url: str, add_user: Any, work: Path, source: Path) -> dict[str, Any]:
    """`boxctl push` of `source` from one device and `boxctl clone` of it on another: MB/s of each."""
    token = add_user("big")
    mib = source.stat().st_size / (1 << 20)
    times = {}
    for device in ("a", "b"):
        (work / device).mkdir(parents=True)
    env = dict(os.environ, BOX_CONFIG_DIR=str(work / "a-config"))
    run([*BOXCTL, "login", url, "--user", "big", "--token", token], env=env, cwd=work)
    run([*BOXCTL, "init", str(work / "a"), "--server", url, "--box", "big"], env=env, cwd=work)
    shutil.copyfile(source, work / "a" / source.name)
    began = time.perf_counter()
    run([*BOXCTL, "push", "-q"], env=env, cwd=work / "a")
    times["push"] = time.perf_counter() - began
    env_b = dict(os.environ, BOX_CONFIG_DIR=str(work / "b-config"))
    run([*BOXCTL, "login", url, "--user", "big", "--token", token], env=env_b, cwd=work)
    began = time.perf_counter()
    run([*BOXCTL, "clone", url, "big", str(work / "b" / "big"), "-q"], env=env_b, cwd=work)
    times["pull"] = time.perf_counter() - began
    if (work / "b" / "big" / source.name).stat().st_size != source.stat().st_size:
        raise RuntimeError("the cloned file differs in size from the pushed one")
    return {op: {"seconds": round(t, 2), "mb_per_s": round(mib / t, 1)} for op, t in times.items()}


# --- the shapes ------------------------------------------------------------------------------


@contextmanager
def sqlite_shape(work: Path, blocks: list[str] | None = None, env: dict[str, str] | None = None
                 ) -> Iterator[Shape]:
    """One process on a data folder; `blocks` (e.g. --blocks s3://... --s3-endpoint URL) moves its blocks."""
    env = env or dict(os.environ)
    data = work / "data"
    server = Server(free_port(), ["--data", str(data), *(blocks or [])], env)
    server.start()
    try:
        yield Shape("SQLite, 1 process", [server], server.url, ["--data", str(data)], env)
    finally:
        server.stop()


@contextmanager
def postgres_shape(work: Path, s3: S3Server, processes: int) -> Iterator[Shape]:
    meta = create_database()
    env = dict(os.environ, **s3.env())
    bucket = f"scale{uuid.uuid4().hex[:8]}"
    s3.make_bucket(bucket)
    args = ["--meta", meta, "--blocks", f"s3://{bucket}/blocks", "--s3-endpoint", s3.endpoint,
            "--notify", "postgresql", "--trust-proxy", "127.0.0.1"]
    run([*BOX_SERVER, "migrate", "--meta", meta], env=env)
    servers = [Server(free_port(), args, env) for _ in range(processes)]
    with ExitStack() as stack:
        stack.callback(drop_database, meta)
        for server in servers:
            server.start()
            stack.callback(server.stop)
        url, extra = servers[0].url, []
        if processes > 1:
            nginx = Nginx(work / "nginx", free_port(), [s.port for s in servers])
            nginx.start()
            stack.callback(nginx.stop)
            url = nginx.url
            extra = [p.pid for p in psutil.Process(nginx.proc.pid).children()] if nginx.proc else []
        name = "PostgreSQL, 1 process" if processes == 1 else f"PostgreSQL, {processes} processes behind nginx"
        yield Shape(name, servers, url, ["--meta", meta], env, extra)


def make_source(path: Path, mib: int) -> Path:
    """A file of `mib` MiB of random bytes (incompressible, no duplicate blocks)."""
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    return path


# --- report ----------------------------------------------------------------------------------


def markdown(doc: dict[str, Any], json_name: str) -> str:
    rows = ["| Shape | commits/s | p50 ms | p99 ms | long polls held (wakes) | server CPU ms/commit "
            "| PostgreSQL CPU s |",
            "|---|---|---|---|---|---|---|"]
    for name, r in doc["commits"].items():
        rows.append(f"| {name} | {r['commits_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['polls_held']} "
                    f"({r['poll_wakes']}) | {r['server_cpu_ms_per_commit']} | {r['postgres_cpu_s']} |")
    big = ["| Blocks on | push MB/s (s) | clone MB/s (s) |", "|---|---|---|"]
    for name, r in doc["big_file"].items():
        big.append(f"| {name} | {r['push']['mb_per_s']} ({r['push']['seconds']}) | "
                   f"{r['pull']['mb_per_s']} ({r['pull']['seconds']}) |")
    return "\n".join([
        START, "## Scale-out (issue 20)", "",
        f"`make bench-scale`, {doc['date'][:10]}, {doc['machine']}; raw figures in `bench/results/{json_name}`.", "",
        f"Commits per second: {CLIENTS} client processes, each a user committing one small change after another "
        f"to its own box for {doc['seconds']:.0f} s, while {CLIENTS * POLLS_PER_BOX} long polls wait on the boxes "
        "(each woken by the commits, then waiting again). Clients, servers, nginx and PostgreSQL share the "
        "machine's cores.", "", *rows, "",
        f"A file of {doc['mib']} MiB of random bytes pushed from one device and cloned on another (metadata on "
        "SQLite in both):", "", *big, "", END])


def update_docs(section: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _: section, text, count=1) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s per shape and a 128 MiB file; no docs")
    parser.add_argument("--seconds", type=float, help="how long the clients commit on each shape")
    parser.add_argument("--mib", type=int, help="size of the big file")
    args = parser.parse_args(argv)
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    mib = args.mib or (128 if args.quick else 1024)
    doc: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": seconds, "mib": mib,
                           "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} "
                                      f"{platform.python_version()}", "commits": {}, "big_file": {}}
    with tempfile.TemporaryDirectory(prefix="box-bench-scale-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        s3 = S3Server(work / "s3")
        s3.start()
        stack.callback(s3.stop)
        log(f"PostgreSQL at {PG_ADMIN_URL}, SeaweedFS at {s3.endpoint}")
        shapes = [lambda w: sqlite_shape(w), lambda w: postgres_shape(w, s3, 1), lambda w: postgres_shape(w, s3, 2)]
        for i, make in enumerate(shapes):
            with make(work / f"commits-{i}") as shape:
                log(f"commits: {shape.name}")
                doc["commits"][shape.name] = result = measure_commits(shape, seconds)
                log(f"  {result['commits_per_s']} commits/s, p99 {result['p99_ms']} ms, {result['poll_wakes']} wakes")
        source = make_source(work / "big.bin", mib)
        bucket = f"big{uuid.uuid4().hex[:8]}"
        s3.make_bucket(bucket)
        stores = {"local folder (file:///)": [],
                  "SeaweedFS (s3://)": ["--blocks", f"s3://{bucket}/blocks", "--s3-endpoint", s3.endpoint]}
        for i, (name, blocks) in enumerate(stores.items()):
            with sqlite_shape(work / f"big-{i}", blocks, dict(os.environ, **s3.env())) as shape:
                log(f"big file: {name}")
                doc["big_file"][name] = result = measure_big_file(shape.url, shape.add_user, work / f"dev-{i}", source)
                log(f"  push {result['push']['mb_per_s']} MB/s, clone {result['pull']['mb_per_s']} MB/s")
    name = f"scale-{doc['date'][:10]}{'-quick' if args.quick else ''}.json"
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / name).write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(doc, name))
    if not args.quick:
        update_docs(markdown(doc, name))
        log("wrote the Scale-out section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
