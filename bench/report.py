"""Turn the measured numbers into the targets of issue 3, a markdown page and a bar chart."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

MB = 1_000_000
RSS_LIMIT = 300 * MB
LOOKUPS_TARGET = 100_000


@dataclass
class TargetResult:
    """One target of issue 3: the measured ratio, the limit, and whether it is met."""

    id: str
    workload: str
    text: str
    measured: float | None
    limit: float
    op: str  # "<=", "<" or ">="
    detail: str
    met: bool | None = None

    def __post_init__(self) -> None:
        if self.measured is None or math.isnan(self.measured):
            self.met = None
        elif self.op == "<=":
            self.met = self.measured <= self.limit
        elif self.op == "<":
            self.met = self.measured < self.limit
        else:
            self.met = self.measured >= self.limit

    @property
    def score(self) -> float | None:
        """measured / allowed, turned so that <= 1 always means met."""
        if self.measured is None or self.measured <= 0:
            return None
        return self.limit / self.measured if self.op == ">=" else self.measured / self.limit


def _get(results: dict[str, Any], workload: str, op: str, tool: str, name: str) -> float | None:
    try:
        value = results[workload]["ops"][op][tool][name]
    except (KeyError, TypeError):
        return None
    return float(value) if value is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def evaluate(results: dict[str, Any]) -> list[TargetResult]:
    """The targets of issue 3, from the summaries of one run."""
    t: list[TargetResult] = []
    box_push = _get(results, "W1", "push", "box", "seconds")
    borg_push = _get(results, "W1", "push", "borg", "seconds")
    restic_push = _get(results, "W1", "push", "restic", "seconds")
    box_restore = _get(results, "W1", "restore", "box", "seconds")
    restic_restore = _get(results, "W1", "restore", "restic", "seconds")
    t.append(TargetResult("W1-push-borg", "W1", "first push no longer than borg's (Box / borg)",
                          _ratio(box_push, borg_push), 1.0, "<=", f"Box {_s(box_push)}, borg {_s(borg_push)}"))
    t.append(TargetResult("W1-push-restic", "W1", "first push at most half of restic's (Box / restic)",
                          _ratio(box_push, restic_push), 0.5, "<=", f"Box {_s(box_push)}, restic {_s(restic_push)}"))
    t.append(TargetResult("W1-restore-restic", "W1", "restore faster than restic's (Box / restic)",
                          _ratio(box_restore, restic_restore), 1.0, "<",
                          f"Box {_s(box_restore)}, restic {_s(restic_restore)}"))

    box_w2 = _get(results, "W2", "push after edit", "box", "wire_total")
    rsync_w2 = _get(results, "W2", "push after edit", "rsync", "wire_total")
    t.append(TargetResult("W2-bytes-rsync", "W2",
                          "bytes on the wire at most half of rsync's sent+received (Box / rsync)",
                          _ratio(box_w2, rsync_w2), 0.5, "<=",
                          f"Box {_b(box_w2)} (both ways), rsync {_b(rsync_w2)} (both ways)"))

    box_w3 = _get(results, "W3", "push", "box", "payload_sent")
    box_w3_wire = _get(results, "W3", "push", "box", "wire_sent")
    avg = (results.get("_meta") or {}).get("box_chunking", {}).get("avg")
    t.append(TargetResult("W3-blocks", "W3",
                          "block bytes sent at most two average blocks (+ metadata), in average blocks",
                          _ratio(box_w3, float(avg) if avg else None), 2.0, "<=",
                          f"blocks {_b(box_w3)}; all bytes sent incl. metadata (bodies) {_b(box_w3_wire)}; "
                          f"average block {_b(avg)}"))

    w4 = results.get("W4") or {}
    series = w4.get("series") or {}
    box_series, restic_series, borg_series = series.get("box"), series.get("restic"), series.get("borg")
    if box_series and restic_series and borg_series:
        box_space, restic_space, borg_space = box_series[-1]["space"], restic_series[-1]["space"], \
            borg_series[-1]["space"]
        t.append(TargetResult("W4-space-restic", "W4", "space after all versions no more than restic's (Box / restic)",
                              _ratio(box_space, restic_space), 1.0, "<=",
                              f"Box {_b(box_space)}, restic {_b(restic_space)}"))
        t.append(TargetResult("W4-space-borg", "W4", "space after all versions no more than borg's (Box / borg)",
                              _ratio(box_space, borg_space), 1.0, "<=", f"Box {_b(box_space)}, borg {_b(borg_space)}"))
        pairs = [(b["seconds"] / r["seconds"], v) for b, r, v in zip(box_series, restic_series, w4["versions"],
                                                                     strict=False) if r["seconds"]]
        worst = max(pairs) if pairs else (None, "")
        t.append(TargetResult("W4-time-restic", "W4", "push time of every version no more than restic's "
                              "(worst Box / restic)", worst[0], 1.0, "<=",
                              f"worst at {worst[1]}: Box {_s(box_series[w4['versions'].index(worst[1])]['seconds'])}, "
                              f"restic {_s(restic_series[w4['versions'].index(worst[1])]['seconds'])}"
                              if worst[0] is not None else "n/a"))
    else:
        for tid, text in (("W4-space-restic", "space vs restic"), ("W4-space-borg", "space vs borg"),
                          ("W4-time-restic", "time vs restic")):
            t.append(TargetResult(tid, "W4", text, None, 1.0, "<=", "no result"))

    status = _get(results, "W5", "no-op status", "box", "seconds")
    files = (results.get("_meta") or {}).get("small_files")
    t.append(TargetResult("W5-status", "W5", f"no-op status of {files:,} files under 1 second (seconds)" if files
                          else "no-op status under 1 second (seconds)", status, 1.0, "<", f"Box {_s(status)}"))
    box_w5 = _get(results, "W5", "first push", "box", "seconds")
    restic_w5 = _get(results, "W5", "first push", "restic", "seconds")
    t.append(TargetResult("W5-push-restic", "W5", "first push no slower than restic (Box / restic)",
                          _ratio(box_w5, restic_w5), 1.0, "<=", f"Box {_s(box_w5)}, restic {_s(restic_w5)}"))
    box_clone = _get(results, "W5", "restore", "box", "seconds")
    restic_restore = _get(results, "W5", "restore", "restic", "seconds")
    t.append(TargetResult("W5-restore-restic", "W5", "clone of the tree no slower than restic's restore (Box / "
                          "restic; issue 23)", _ratio(box_clone, restic_restore), 1.0, "<=",
                          f"Box {_s(box_clone)}, restic {_s(restic_restore)}"))

    for op, label in (("push", "push"), ("restore", "restore (pull into a fresh folder)")):
        rss = _get(results, "W6", op, "box", "client_rss")
        t.append(TargetResult(f"W6-rss-{op}", "W6", f"client peak memory under 300 MB, {label} (in 300 MB)",
                              _ratio(rss, RSS_LIMIT), 1.0, "<", f"Box client {_b(rss)}"))

    w7 = (results.get("W7") or {}).get("server") or {}
    lookups = w7.get("lookups_per_s")
    t.append(TargetResult("W7-lookups", "W7", "at least 100,000 hash lookups per second (in 100,000/s)",
                          lookups / LOOKUPS_TARGET if lookups else None, 1.0, ">=",
                          f"{lookups:,} lookups/s" if lookups else "no result"))
    return t


# --- formatting -------------------------------------------------------------------------------


def _b(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{value}"


def _cell(summary: dict[str, Any] | None, name: str, spread: bool = False) -> str:
    if not summary or summary.get(name) is None:
        return "—"
    value = summary[name]
    if name == "seconds":
        runs = summary.get("seconds_all") or []
        if spread and len(runs) > 1:
            return f"{value:.2f} ({min(runs):.2f}–{max(runs):.2f})"
        return f"{value:.2f}"
    return _b(value)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    distro = "unknown"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    fs = subprocess.run(["df", "-T", str(Path(__file__).resolve().parent)], capture_output=True, text=True).stdout
    fs_type = fs.splitlines()[1].split()[1] if len(fs.splitlines()) > 1 else "unknown"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory": psutil.virtual_memory().total,
        "os": distro, "kernel": platform.release(), "python": platform.python_version(), "filesystem": fs_type,
    }


def markdown(doc: dict[str, Any], targets: list[TargetResult], chart: str | None) -> str:
    res = doc["results"]
    meta = doc["machine"]
    lines: list[str] = []
    add = lines.append
    runs = doc["runs"]
    add("# Benchmarks: Box against rsync, restic, borg and cp")
    add("")
    add(f"Measured by `make bench` ({'quick mode, a tenth of the sizes' if doc['mode'] == 'quick' else 'full run'}) "
        f"on {doc['date']}, in {doc['elapsed_seconds'] / 60:.1f} minutes. This page is written by `bench/run.py`; "
        f"the raw numbers are in `bench/results/{doc['results_file']}`. Every tool ran on the same data in the "
        f"same run. Times are the median over the runs ({_runs(runs, doc.get('noop_repeats', 1))}); memory is the "
        "highest peak over the runs.")
    add("")
    add("## Targets of issue 3")
    add("")
    met = sum(1 for t in targets if t.met)
    add(f"{met} of {len(targets)} targets met.")
    add("")
    add("| Workload | Target | Measured | Limit | Met | Numbers |")
    add("|---|---|---:|---:|:---:|---|")
    for t in targets:
        measured = "n/a" if t.measured is None else f"{t.measured:.3g}"
        verdict = "n/a" if t.met is None else ("yes" if t.met else "**no**")
        add(f"| {t.workload} | {t.text} | {measured} | {t.op} {t.limit:g} | {verdict} | {t.detail} |")
    add("")
    if chart:
        add(f"![Box against the targets of issue 3]({chart})")
        add("")
        add("The chart shows each target as *measured / allowed* (for W7, *required / measured*), so a bar left of "
            "the line at 1 meets its target. The axis is logarithmic; bars below 0.02 are drawn at 0.02.")
        add("")
    deviations = _deviations(doc)
    if deviations:
        add("## Where this run departs from issue 3")
        add("")
        for line in deviations:
            add(f"- {line}")
        add("")
    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| CPU | {meta['cpu']}, {meta['cores']} cores |")
    add(f"| Memory | {_b(meta['memory'])} |")
    add(f"| OS | {meta['os']}, Linux {meta['kernel']} |")
    add(f"| File system | {meta['filesystem']} (everything on one disk, loopback network) |")
    add(f"| Python | {meta['python']} |")
    add("")
    add("## Tool versions")
    add("")
    add("| Tool | Version |")
    add("|---|---|")
    for name, version in doc["versions"].items():
        add(f"| {name} | {version} |")
    add("")
    add("## Data")
    add("")
    d = doc["data"]
    add(f"- `big.bin`: {_b(d['big_size'])} of incompressible bytes (SHAKE-128 of a fixed seed); `big_front.bin` is the "
        "same with one byte inserted at the front.")
    add(f"- `text.txt`: {d['text_size'] / 1e6:.0f} MB of generated words (fixed seed); `text_para.txt` has one "
        f"{d['text_para_inserted']}-byte paragraph inserted at the paragraph break nearest the middle.")
    add(f"- `small/`: {d['small_files']:,} files of 1-16 KiB ({_b(d['small_bytes'])}), slices of the text at random "
        "places, 1,000 per folder.")
    add(f"- `huge.bin`: {_b(d['huge_size'])} of incompressible bytes.")
    versions = d["django_versions"]
    subdir = f", only their `{d['django_subdir']}/` folder" if d.get("django_subdir") else ""
    add(f"- Django {versions[0]} to {versions[-1]}: {len(versions)} consecutive released sdists, fetched with "
        "`pip download --no-deps --no-binary :all: django==X` and unpacked without their top folder"
        f"{subdir} ({d['django_files'][0]:,} files, {_b(d['django_bytes'][0])} for the first, "
        f"{d['django_files'][-1]:,} files for the last).")
    add("")
    add("## Results")
    add("")
    add("Columns: *wall s* is the median wall time of the whole command (process start included); *wire up / down* "
        "is what crossed the socket (Box in W2 and W4: counted by a relay in front of the server, HTTP headers "
        "included; Box elsewhere: the request and answer bodies it counted itself, as `boxctl push --json` reports "
        "them, since the relay's extra loopback hop would slow the timed runs; rsync: its `--stats` totals); "
        "*sent / added* is what the tool itself sent or stored (Box: block frames from "
        "`boxctl push --json`; rsync: its total; restic, borg: growth of the repository; cp: bytes copied); "
        "*space* is `du` of the repository, server data folder or copy afterwards; memory is peak RSS of the client "
        "(GNU time) and of the server (Box: the kernel's high-water mark of its one process, VmHWM, reset before "
        "each command; the rsync daemon forks, so its process tree is sampled every 20 ms).")
    add("")
    for workload in ("W1", "W2", "W3", "W4", "W5", "W6"):
        block = res.get(workload)
        if not block:
            continue
        if workload == "W4":
            _w4(res, doc, add)
            continue
        add(f"### {workload}: {block['title']}")
        add("")
        for op, tools in block["ops"].items():
            add(f"**{op}**")
            add("")
            add("| Tool | wall s (min–max) | wire up | wire down | sent / added | space | client RSS | server RSS |")
            add("|---|---:|---:|---:|---:|---:|---:|---:|")
            for tool, label in doc["tool_labels"].items():
                s = tools.get(tool)
                if s is None:
                    continue
                add(f"| {label} | {_cell(s, 'seconds', True)} | {_cell(s, 'wire_sent')} | "
                    f"{_cell(s, 'wire_received')} | {_cell(s, 'payload_sent')} | {_cell(s, 'space')} | "
                    f"{_cell(s, 'client_rss')} | "
                    f"{_cell(s, 'server_rss')} |")
            add("")
    w7 = (res.get("W7") or {}).get("server")
    if w7:
        add(f"### W7: {res['W7']['title']}")
        add("")
        add("| Measure | Value |")
        add("|---|---:|")
        add(f"| blocks stored before the lookups (512 B each) | {w7['preloaded_blocks']:,} |")
        add(f"| POST /v1/blocks/missing, 10,000 hashes (half stored), median of {w7['lookup_repeats']} | "
            f"{w7['lookup_seconds_median'] * 1000:.1f} ms |")
        add(f"| **hash lookups per second** | **{w7['lookups_per_s']:,}** |")
        add(f"| small-block uploads (512 B blocks, 10,000 per body) | {w7['preload_blocks_per_s']:,} blocks/s |")
        add(f"| POST /v1/blocks/pack, 1 MiB blocks in 8 MiB bodies, one stream | {w7['upload_one_stream_mb_s']} MB/s |")
        add(f"| same, four concurrent streams | {w7['upload_four_streams_mb_s']} MB/s |")
        add(f"| server peak RSS | {_b(w7['server_rss'])} |")
        add("")
    add("## Exact commands")
    add("")
    add("SRC is the folder pushed, DEST a fresh folder, REPO a fresh repository, PORT a free loopback port. "
        "Each run of each workload starts from a fresh server, repository or module folder.")
    add("")
    for tool, commands in doc["commands"].items():
        add(f"**{doc['tool_labels'].get(tool, tool)}**")
        add("")
        add("```")
        for name, command in commands.items():
            add(f"{name + ':':9} {command}")
        add("```")
        add("")
    add("## Method and caveats")
    add("")
    for note in doc["notes"]:
        add(f"- {note}")
    add("")
    problems = doc["errors"] + [c for c in doc["checks"] if not c["ok"]]
    add("## Errors and failed checks")
    add("")
    if not problems:
        add("None: every command succeeded and every restore equalled its source.")
    for e in doc["errors"]:
        add(f"- {e['workload']} {e['tool']}: `{e['error'][:500]}`")
    for c in doc["checks"]:
        if not c["ok"]:
            add(f"- {c['workload']} {c['tool']}: check failed: {c['what']}")
    add("")
    return "\n".join(lines)


def _deviations(doc: dict[str, Any]) -> list[str]:
    """What differs from the sizes and repetitions issue 3 asks for, and why."""
    d, runs, out = doc["data"], doc["runs"], []
    if doc["mode"] == "quick":
        return ["This is the quick smoke test: every input is a tenth of the full size, each workload runs once, "
                "and workload 4 pushes only the `docs/` folder of three Django releases. Its numbers show that "
                "the harness works; they are not the full benchmark."]
    if d["big_size"] != 1 << 30:
        out.append(f"Workloads 1 and 3 use a {_b(d['big_size'])} file instead of 1 GiB (`--big-mib`); "
                   "`make bench` runs them at the issue's size.")
    if d["small_files"] != 100_000:
        out.append(f"Workload 5 uses {d['small_files']:,} files instead of 100,000.")
    if d["huge_size"] != 4 << 30:
        out.append(f"Workload 6 uses a {_b(d['huge_size'])} file instead of 4 GiB.")
    if runs.get("W5", 3) < 3:
        out.append(f"Workload 5's first push ran {_times(runs['W5'])} per tool (100,000 files; one round of five "
                   f"tools takes about three minutes); its no-op status and no-op push repeat "
                   f"{doc.get('noop_repeats', 1)} times on the same state and report the median.")
    if runs.get("W6", 3) < 3:
        out.append(f"Workload 6 ran {_times(runs['W6'])} per tool: it measures peak memory, which varies little "
                   "from run to run, and each run moves 4 GiB twice for five tools.")
    out.append("restic cannot skip encryption (no version has an unencrypted mode); borg and Box run without it.")
    return out


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _runs(runs: dict[str, int], noop: int) -> str:
    parts = [f"{w}: {n}" for w, n in runs.items() if w not in ("W3", "W7")]
    return ", ".join(parts).replace("W1: ", "W1 and W3: ") + f"; W5's no-op status and push: {noop} each"


def _w4(res: dict[str, Any], doc: dict[str, Any], add: Any) -> None:
    block = res.get("W4")
    if not block:
        return
    versions = block["versions"]
    add(f"### W4: {block['title']}")
    add("")
    head = "| Tool | " + " | ".join(versions) + " |"
    rule = "|---|" + "---:|" * len(versions)
    for title, name in (("push wall s, per version", "seconds"),
                        ("sent / added per version (Box: block frames; rsync: wire total; restic, borg: repository "
                         "growth; cp: bytes copied)", "payload_sent"),
                        ("Box and rsync: bytes on the wire per version, both ways", "wire_total"),
                        ("space after each version", "space")):
        add(f"**{title}**")
        add("")
        add(head)
        add(rule)
        for tool, label in doc["tool_labels"].items():
            series = block["series"].get(tool)
            if not series:
                continue
            if name == "wire_total" and all(s.get(name) is None for s in series):
                continue
            add(f"| {label} | " + " | ".join(_cell(s, name) for s in series) + " |")
        add("")
    add("rsync and cp keep only the latest version, so their space is not comparable with the stores that keep "
        f"all {len(versions)}; they are shown for scale.")
    add("")


def chart(targets: list[TargetResult], path: Path, title: str) -> bool:
    """A horizontal bar per target: measured / allowed (<= 1 meets), log scale. False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [t for t in targets if t.score is not None]
    if not rows:
        return False
    labels = [f"{t.workload}: {t.text}" for t in rows]
    floor = 0.02  # a far-below-limit result (W3 sends bytes, not blocks) would squash every other bar
    scores = [max(float(t.score or 0), floor) for t in rows]
    colors = ["#2e7d32" if t.met else "#c62828" for t in rows]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.6))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, scores, color=colors)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    low = min(min(scores), 0.5) / 1.5
    high = max(max(scores), 2.0) * 8
    ax.set_xlim(low, high)
    for yi, t, score in zip(y, rows, scores, strict=True):
        ax.text(score * 1.08, yi, f"{t.measured:.3g} (limit {t.op} {t.limit:g})", va="center", fontsize=7,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0, "alpha": 0.85})
    ax.set_xlabel("measured / allowed  (left of 1 = target met; log scale)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def targets_json(targets: list[TargetResult]) -> list[dict[str, Any]]:
    return [asdict(t) | {"score": t.score} for t in targets]


def console_table(targets: list[TargetResult]) -> str:
    width = max(len(f"{t.workload} {t.text}") for t in targets)
    out = []
    for t in targets:
        verdict = "n/a " if t.met is None else ("met " if t.met else "MISS")
        measured = "n/a" if t.measured is None else f"{t.measured:.3g}"
        out.append(f"{verdict} {t.workload} {t.text:<{width - len(t.workload) - 1}}  {measured:>8} {t.op} "
                   f"{t.limit:<4g} {t.detail}")
    return "\n".join(out)
