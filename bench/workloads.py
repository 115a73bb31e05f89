"""The seven workloads of issue 3, each run for every tool on the same data in the same run."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.measure import CommandFailed, Sample, process_cpu, remove, summarize
from bench.tools import BoxServer, BoxTarget, Target, Tool
from box_common.frames import CODEC_RAW, Frame, encode_frame

MIB = 1 << 20

TITLES = {
    "W1": "First push of a big incompressible file, then restore into a fresh folder",
    "W2": "One paragraph inserted in the middle of a text file, then push",
    "W3": "One byte inserted at the front of the big file, then push",
    "W4": "Successive released versions of a real source tree (Django sdists), pushed in turn",
    "W5": "A tree of many small files (1-16 KiB): first push, no-op status, no-op push, restore (clone)",
    "W6": "Peak client memory while pushing and restoring a huge file",
    "W7": "Server: batched missing-hash lookups and block uploads, one server process",
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Context:
    """Everything a workload needs, and where it leaves what it measured."""

    work: Path
    data: dict[str, Any]
    tools: list[Tool]
    runs: dict[str, int]
    quick: bool
    noop_repeats: int = 1
    samples: dict[str, dict[str, dict[str, list[Sample]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    series: dict[str, dict[str, list[list[Sample]]]] = field(default_factory=lambda: defaultdict(dict))
    errors: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, workload: str, op: str, tool: Tool, sample: Sample) -> None:
        self.samples[workload][op][tool.name].append(sample)

    def fail(self, workload: str, tool: Tool, exc: BaseException) -> None:
        entry: dict[str, Any] = {"workload": workload, "tool": tool.name, "error": str(exc)[-2000:]}
        if isinstance(exc, CommandFailed):
            entry.update(command=exc.argv, exit_code=exc.code, stderr=exc.stderr[-2000:])
        self.errors.append(entry)
        log(f"{workload} {tool.name}: FAILED: {str(exc)[-600:]}")

    def check(self, workload: str, tool: Tool, ok: bool, what: str) -> None:
        """A correctness check of the harness or of a tool (a restore that differs, a no-op that is not)."""
        self.checks.append({"workload": workload, "tool": tool.name, "ok": ok, "what": what})
        if not ok:
            log(f"{workload} {tool.name}: CHECK FAILED: {what}")

    def turns(self, run: int) -> list[Tool]:
        """The tools in the order they take their turn in run `run`: each goes first once in a while.

        A workload's first run meets a machine that the previous workload has just churned (memory
        freshly handed to this virtual machine, writeback of what was written): with a fixed order
        the same tool always paid for it. Rotated, each tool pays in at most one of its runs, and the
        median leaves that run out.
        """
        shift = run % len(self.tools) if self.tools else 0
        return self.tools[shift:] + self.tools[:shift]

    def fresh(self, label: str) -> Path:
        path = self.work / label
        remove(path)
        path.mkdir(parents=True)
        return path


def link_file(source: Path, dest: Path) -> None:
    """Put `source` at `dest` as a hard link (atomically replacing what is there): no copy, a new inode."""
    temp = dest.with_name(dest.name + ".linking")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:
        shutil.copy2(source, temp)
    os.replace(temp, dest)


def link_tree(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["cp", "-al", f"{source}/.", f"{dest}/"], capture_output=True).returncode != 0:
        subprocess.run(["cp", "-a", f"{source}/.", f"{dest}/"], check=True)


_INDEXES: dict[Path, dict[str, tuple[bytes, int, int]]] = {}


def tree_index(tree: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file of `tree` (relative path) with its SHA-256, mtime_ns and mode; computed once per run."""
    if tree not in _INDEXES:
        index: dict[str, tuple[bytes, int, int]] = {}
        for folder, _dirs, files in os.walk(tree):
            for name in files:
                path = Path(folder, name)
                st = path.lstat()
                body = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
                index[path.relative_to(tree).as_posix()] = (hashlib.sha256(body).digest(), st.st_mtime_ns, st.st_mode)
        _INDEXES[tree] = index
    return _INDEXES[tree]


def apply_version(dest: Path, old: Path | None, new: Path) -> None:
    """Turn `dest` (holding tree `old`) into tree `new`, as `rsync -a --delete --checksum` would: changed and
    new files are written to a temp name and renamed in, unchanged ones only get the new mtime and mode,
    files gone are deleted. A Box's .box/ is left alone."""
    new_index = tree_index(new)
    old_index = tree_index(old) if old is not None else {}
    for rel, (digest, mtime_ns, mode) in new_index.items():
        target = dest / rel
        before = old_index.get(rel)
        if before is not None and before[0] == digest and target.exists():
            os.chmod(target, mode & 0o7777)
            os.utime(target, ns=(mtime_ns, mtime_ns))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(target.name + ".bench-tmp")
        shutil.copy2(new / rel, temp, follow_symlinks=False)
        os.replace(temp, target)
    for rel in old_index.keys() - new_index.keys():
        (dest / rel).unlink(missing_ok=True)


def same_file(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def find_file(root: Path, name: str) -> Path | None:
    return next((p for p in root.rglob(name) if p.is_file() and ".box" not in p.parts), None)


# Workloads whose target is Box's bytes on the wire: a relay in front of the server counts them, HTTP
# headers included. Elsewhere Box connects straight to its server (the relay's extra loopback hop made
# a 1 GiB push 8% slower) and reports the bytes it counted itself.
RELAYED = frozenset({"W2", "W4"})


@contextlib.contextmanager
def target_of(ctx: Context, workload: str, tool: Tool, label: str, src: Path) -> Iterator[Target | None]:
    """A fresh target; a failure inside is recorded (Box's are reported, not worked around) and the rest goes on."""
    target: Target | None = None
    try:
        target = tool.target(label, src, relay=workload in RELAYED)
        yield target
    except Exception as exc:  # recorded and reported; the other tools and workloads still run
        ctx.fail(workload, tool, exc)
    finally:
        if target is not None:
            with contextlib.suppress(Exception):
                target.close()
        remove(ctx.work / label)


# --- W1 + W3: the big file ------------------------------------------------------------------


def push_and_restore(ctx: Context, workload: str, tool: Tool, target: Target, original: Path, dest: Path,
                     compare: bool) -> None:
    """Push the one file of a target's source, restore it into `dest`, and check what came back: its
    size always, its bytes when `compare` (reading a big file again costs time)."""
    ctx.record(workload, "push", tool, target.push())
    ctx.record(workload, "restore", tool, target.restore(dest))
    got = find_file(dest, original.name)
    ok = got is not None and got.stat().st_size == original.stat().st_size
    if ok and compare:
        ok = same_file(got, original)  # type: ignore[arg-type]
    ctx.check(workload, tool, ok, f"restored {original.name} equals the original")


def w1_w3(ctx: Context) -> None:
    """Per run and tool: first push of big.bin (W1), restore into a fresh folder (W1), then the same
    file with one byte inserted at the front, pushed again (W3)."""
    big, front = Path(ctx.data["big"]), Path(ctx.data["big_front"])
    runs = ctx.runs["W1"]
    for run in range(runs):
        for tool in ctx.turns(run):
            label = f"w1-{tool.name}-{run}"
            src = ctx.fresh(label) / "src"
            src.mkdir()
            link_file(big, src / "big.bin")
            with target_of(ctx, "W1", tool, label, src) as target:
                log(f"W1 run {run + 1}/{runs} {tool.name}: push {big.stat().st_size >> 20} MiB")
                dest = ctx.work / label / "restore"
                push_and_restore(ctx, "W1", tool, target, big, dest, tool.name == "box" or ctx.quick or run == 0)
                remove(dest)
                if isinstance(target, BoxTarget):
                    ctx.extra["box_chunking"] = target.chunking
                log(f"W3 run {run + 1}/{runs} {tool.name}: one byte inserted at the front, push")
                link_file(front, src / "big.bin")
                ctx.record("W3", "push", tool, target.push())


# --- W2: a paragraph in a text file ---------------------------------------------------------


def w2(ctx: Context) -> None:
    text, para = Path(ctx.data["text"]), Path(ctx.data["text_para"])
    runs = ctx.runs["W2"]
    for run in range(runs):
        for tool in ctx.turns(run):
            label = f"w2-{tool.name}-{run}"
            src = ctx.fresh(label) / "src"
            src.mkdir()
            link_file(text, src / "text.txt")
            with target_of(ctx, "W2", tool, label, src) as target:
                log(f"W2 run {run + 1}/{runs} {tool.name}: first push, insert a paragraph, push")
                ctx.record("W2", "first push", tool, target.push())
                link_file(para, src / "text.txt")
                ctx.record("W2", "push after edit", tool, target.push())


# --- W4: Django versions --------------------------------------------------------------------


def w4(ctx: Context) -> None:
    trees = [Path(t) for t in ctx.data["django_trees"]]
    versions = ctx.data["django_versions"]
    runs = ctx.runs["W4"]
    for run in range(runs):
        for tool in ctx.turns(run):
            label = f"w4-{tool.name}-{run}"
            src = ctx.fresh(label) / "src"
            src.mkdir()
            with target_of(ctx, "W4", tool, label, src) as target:
                log(f"W4 run {run + 1}/{runs} {tool.name}: {len(trees)} versions")
                series: list[Sample] = []
                previous: Path | None = None
                for version, tree in zip(versions, trees, strict=True):
                    apply_version(src, previous, tree)
                    previous = tree
                    sample = target.push()
                    sample.extra["version"] = version
                    series.append(sample)
                ctx.series["W4"].setdefault(tool.name, []).append(series)
                if isinstance(target, BoxTarget) and run == 0:
                    dest = ctx.work / label / "restore"
                    target.restore(dest)
                    same = subprocess.run(["diff", "-rq", "--no-dereference", "--exclude=.box", str(trees[-1]),
                                           str(dest)], capture_output=True, text=True)
                    ctx.check("W4", tool, same.returncode == 0,
                              f"a clone after {versions[-1]} equals its tree {same.stdout[:300]}")


# --- W5: many small files ---------------------------------------------------------------------


def w5(ctx: Context) -> None:
    small = Path(ctx.data["small"])
    runs = ctx.runs["W5"]
    for run in range(runs):
        for tool in ctx.turns(run):
            label = f"w5-{tool.name}-{run}"
            src = ctx.fresh(label) / "src"
            link_tree(small, src)
            with target_of(ctx, "W5", tool, label, src) as target:
                log(f"W5 run {run + 1}/{runs} {tool.name}: first push of {ctx.data['small_files']:,} files")
                ctx.record("W5", "first push", tool, target.push())
                # No-ops leave the state as it was, so they repeat on the same target (median of the repeats).
                for _ in range(ctx.noop_repeats):
                    status = target.status()
                    if status is not None:
                        ctx.record("W5", "no-op status", tool, status)
                        if "status_changes" in status.extra:
                            ctx.check("W5", tool, status.extra["status_changes"] == 0,
                                      f"status after push reports {status.extra['status_changes']} change(s), not 0")
                    if tool.name == "cp":
                        continue  # a copy has no no-op: it copies everything again
                    noop = target.push()
                    ctx.record("W5", "no-op push", tool, noop)
                    if "changes" in noop.extra:
                        ctx.check("W5", tool, noop.extra["changes"] == 0 and not noop.payload_sent,
                                  f"no-op push changed {noop.extra['changes']} path(s), sent {noop.payload_sent} bytes")
                # The whole tree into a fresh folder: Box's clone, restic's restore, borg's extract, rsync back.
                dest = ctx.work / label / "restore"
                ctx.record("W5", "restore", tool, target.restore(dest))
                restored = sum(1 for p in dest.rglob("*") if p.is_file() and ".box" not in p.parts)
                ctx.check("W5", tool, restored >= ctx.data["small_files"],
                          f"restore brought back {restored:,} of {ctx.data['small_files']:,} files")


# --- W6: memory with a huge file -----------------------------------------------------------


def w6(ctx: Context) -> None:
    huge = Path(ctx.data["huge"])
    runs = ctx.runs["W6"]
    for run in range(runs):
        for tool in ctx.turns(run):
            label = f"w6-{tool.name}-{run}"
            src = ctx.fresh(label) / "src"
            src.mkdir()
            link_file(huge, src / "huge.bin")
            with target_of(ctx, "W6", tool, label, src) as target:
                log(f"W6 run {run + 1}/{runs} {tool.name}: push and restore {huge.stat().st_size >> 20} MiB")
                push_and_restore(ctx, "W6", tool, target, huge, ctx.work / label / "restore", tool.name == "box")


# --- W7: the server alone ---------------------------------------------------------------------


def _block(seed: str, size: int) -> tuple[str, bytes]:
    data = hashlib.shake_128(seed.encode()).digest(size)
    return hashlib.sha256(data).hexdigest(), data


def _pack(blocks: list[tuple[str, bytes]]) -> bytes:
    return b"".join(encode_frame(Frame(sha, CODEC_RAW, data)) for sha, data in blocks)


def w7(ctx: Context) -> None:
    """POST /v1/blocks/missing with 10,000 hashes (half stored, half not) on a server that holds many
    blocks; then POST /v1/blocks/pack uploads of 1 MiB blocks in 8 MiB bodies, one stream and four."""
    box_tool = next((t for t in ctx.tools if t.name == "box"), None)
    if box_tool is None:
        return
    scale = 10 if ctx.quick else 1
    preload = 100_000 // scale
    repeats = 5 if ctx.quick else 20
    upload_one = (128 // scale) * MIB
    upload_four = (256 // scale) * MIB
    home = ctx.fresh("w7")
    server: BoxServer | None = None
    result: dict[str, Any] = {}
    try:
        server = BoxServer(home / "server-data")
        headers = {"Authorization": f"Bearer {server.token}"}
        session = requests.Session()
        session.headers.update(headers)

        def post(path: str, **kw: Any) -> requests.Response:
            answer = session.post(f"{server.url}/v1{path}", timeout=600, **kw)
            if answer.status_code >= 400:
                raise CommandFailed("box", ["POST", path], answer.status_code, "", answer.text[:2000])
            return answer

        log(f"W7: preloading {preload:,} small blocks")
        known: list[str] = []
        started = time.perf_counter()
        for start in range(0, preload, 10_000):
            blocks = [_block(f"known-{i}", 512) for i in range(start, min(preload, start + 10_000))]
            known.extend(sha for sha, _ in blocks)
            post("/blocks/pack", data=_pack(blocks), headers={"Content-Type": "application/x-box-frames"})
        preload_seconds = time.perf_counter() - started
        rng = random.Random(7)
        with server.sampler.window() as peak:
            timings = []
            cpu_started = process_cpu(server.proc.pid) or 0.0
            for r in range(repeats):
                asked = rng.sample(known, 5_000) + [rng.randbytes(32).hex() for _ in range(5_000)]
                rng.shuffle(asked)
                started = time.perf_counter()
                missing = post("/blocks/missing", json={"hashes": asked}).json()["missing"]
                timings.append(time.perf_counter() - started)
                if r == 0:
                    ctx.check("W7", box_tool, len(missing) == 5_000,
                              f"missing reports {len(missing)} of 10,000 hashes, expected 5,000")
            lookup_cpu = (process_cpu(server.proc.pid) or 0.0) - cpu_started
            log(f"W7: uploads, {upload_one >> 20} MiB on one stream, {upload_four >> 20} MiB on four")
            one = [_pack([_block(f"one-{p}-{i}", MIB) for i in range(8)]) for p in range(upload_one // (8 * MIB))]
            four = [_pack([_block(f"four-{p}-{i}", MIB) for i in range(8)]) for p in range(upload_four // (8 * MIB))]
            frames_headers = {"Content-Type": "application/x-box-frames"}
            cpu_started = process_cpu(server.proc.pid) or 0.0
            started = time.perf_counter()
            for body in one:
                post("/blocks/pack", data=body, headers=frames_headers)
            one_seconds = time.perf_counter() - started
            one_cpu = (process_cpu(server.proc.pid) or 0.0) - cpu_started
            sessions = [requests.Session() for _ in range(4)]
            for s in sessions:
                s.headers.update(headers)

            def send(item: tuple[int, bytes]) -> None:
                index, body = item
                answer = sessions[index % 4].post(f"{server.url}/v1/blocks/pack", data=body, headers=frames_headers,
                                                  timeout=600)
                if answer.status_code >= 400:
                    raise CommandFailed("box", ["POST", "/blocks/pack"], answer.status_code, "", answer.text[:2000])

            cpu_started = process_cpu(server.proc.pid) or 0.0
            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(send, enumerate(four)))
            four_seconds = time.perf_counter() - started
            four_cpu = (process_cpu(server.proc.pid) or 0.0) - cpu_started
        median = statistics.median(timings)
        result = {
            "preloaded_blocks": preload, "preload_seconds": round(preload_seconds, 3),
            "preload_blocks_per_s": round(preload / preload_seconds),
            "lookup_batch": 10_000, "lookup_repeats": repeats, "lookup_seconds_all": [round(t, 4) for t in timings],
            "lookup_seconds_median": round(median, 4), "lookups_per_s": round(10_000 / median),
            "lookup_server_cpu": round(lookup_cpu, 3),
            "upload_one_stream_bytes": upload_one, "upload_one_stream_seconds": round(one_seconds, 3),
            "upload_one_stream_mb_s": round(upload_one / one_seconds / 1e6, 1),
            "upload_one_stream_server_cpu": round(one_cpu, 3),
            "upload_four_streams_bytes": upload_four, "upload_four_streams_seconds": round(four_seconds, 3),
            "upload_four_streams_mb_s": round(upload_four / four_seconds / 1e6, 1),
            "upload_four_streams_server_cpu": round(four_cpu, 3),
            "server_rss": peak[0] if peak else None,
        }
        log(f"W7: {result['lookups_per_s']:,} lookups/s, uploads {result['upload_one_stream_mb_s']} MB/s (1 stream), "
            f"{result['upload_four_streams_mb_s']} MB/s (4 streams)")
    except Exception as exc:  # recorded and reported
        ctx.fail("W7", box_tool, exc)
    finally:
        if server is not None:
            server.stop()
        remove(home)
    ctx.extra["W7"] = result


WORKLOADS: dict[str, Callable[[Context], None]] = {"W1": w1_w3, "W2": w2, "W4": w4, "W5": w5, "W6": w6, "W7": w7}


def summaries(ctx: Context) -> dict[str, Any]:
    """Per workload, per operation, per tool: the summary over runs (W4: per version)."""
    out: dict[str, Any] = {}
    for workload, ops in ctx.samples.items():
        out[workload] = {"title": TITLES[workload],
                         "ops": {op: {tool: summarize(s) for tool, s in tools.items()} for op, tools in ops.items()}}
    if "W4" in ctx.series:
        versions = ctx.data["django_versions"]
        per_tool: dict[str, list[dict[str, Any]]] = {}
        for tool, runs in ctx.series["W4"].items():
            per_tool[tool] = [summarize([run[i] for run in runs if len(run) > i]) for i in range(len(versions))]
        out["W4"] = {"title": TITLES["W4"], "versions": versions, "series": per_tool,
                     "files": ctx.data.get("django_files"), "bytes": ctx.data.get("django_bytes")}
    if ctx.extra.get("W7"):
        out["W7"] = {"title": TITLES["W7"], "server": ctx.extra["W7"]}
    return out
