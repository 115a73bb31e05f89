"""Interleaved A/B runs of one workload: the code as it is (A) against the same code with a patch (B).

    python -m bench.ab --workload W5 --small-files 30000 --pairs 3 --variant no-gc=/tmp/no-gc.patch

Each pair runs A and every B once, in turn (A first in even pairs, last in odd ones), so that a
shared machine's load falls on both alike; a patch is applied with `git apply` just before its
variant and taken back right after (the touched modules are compiled first, so that no measured
command pays for their bytecode). Box only; each variant gets a fresh server. The table gives the
median over the pairs of wall time and of the client's and the server's CPU time per operation, and
how much of B's figure A saves. Every sample goes to the JSON file named by --out.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import data as bench_data
from bench.measure import remove
from bench.tools import BoxTool
from bench.workloads import WORKLOADS, Context, log, summaries

ROOT = Path(__file__).resolve().parent.parent
MEASURES = ("seconds", "client_cpu", "server_cpu")


def git_apply(patch: Path, reverse: bool = False) -> list[str]:
    """Apply (or take back) `patch` in the work tree; the files it touches."""
    subprocess.run(["git", "apply", *(["-R"] if reverse else []), str(patch)], cwd=ROOT, check=True)
    names = subprocess.run(["git", "apply", "--numstat", str(patch)], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout
    return [line.split("\t")[2] for line in names.splitlines() if line.count("\t") == 2]


def run_variant(workload: str, info: dict[str, Any], work: Path, noop_repeats: int) -> dict[str, Any]:
    remove(work)
    work.mkdir(parents=True)
    tool = BoxTool(work)
    ctx = Context(work=work, data=info, tools=[tool], runs={workload: 1}, quick=False, noop_repeats=noop_repeats)
    try:
        WORKLOADS[workload](ctx)
    finally:
        remove(work)
    if ctx.errors or any(not c["ok"] for c in ctx.checks):
        raise RuntimeError(f"{workload} failed: {ctx.errors or ctx.checks}")
    return summaries(ctx)


def figures(result: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """operation -> measure -> value, from one run's summaries (W7: its server figures)."""
    out: dict[str, dict[str, float | None]] = {}
    for workload, body in result.items():
        for op, tools in body.get("ops", {}).items():
            box = tools.get("box", {})
            out[f"{workload} {op}"] = {m: box.get(m) for m in MEASURES}
        if "server" in body:
            server = body["server"]
            out["W7 lookups"] = {"seconds": server["lookup_seconds_median"], "server_cpu": server["lookup_server_cpu"]}
            for kind in ("one_stream", "four_streams"):
                out[f"W7 upload {kind}"] = {"seconds": server[f"upload_{kind}_seconds"],
                                            "server_cpu": server[f"upload_{kind}_server_cpu"]}
    return out


def table(samples: dict[str, list[dict[str, Any]]]) -> str:
    names = list(samples)
    ops = sorted({op for runs in samples.values() for run in runs for op in figures(run)})
    lines = [f"{'operation':28} {'measure':11} " + " ".join(f"{n:>14}" for n in names) + "   gain of A (B-A)/B"]
    for op in ops:
        for measure in MEASURES:
            medians: list[float | None] = []
            for name in names:
                values = [v for run in samples[name] if (v := figures(run).get(op, {}).get(measure)) is not None]
                medians.append(statistics.median(values) if values else None)
            if medians[0] is None:
                continue
            gains = [f"{(m - medians[0]) / m:+.0%}" if m else "-" for m in medians[1:]]
            lines.append(f"{op:28} {measure:11} " + " ".join(f"{m:14.3f}" if m is not None else f"{'-':>14}"
                                                               for m in medians) + "   " + " ".join(gains))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=PATCH",
                        help="a B: a patch file; NAME=- runs the code unpatched again (an A/A pair shows the noise)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--small-files", type=int, default=30_000)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--huge-mib", type=int, default=400)
    parser.add_argument("--noop-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "work" / "ab.json")
    args = parser.parse_args(argv)
    variants: list[tuple[str, Path | None]] = [("A", None)]
    for spec in args.variant:
        name, _, patch = spec.partition("=")
        variants.append((name, None if patch == "-" else Path(patch).resolve()))
    sizes = dataclasses.replace(bench_data.QUICK, small_files=args.small_files, big=args.big_mib << 20,
                                huge=args.huge_mib << 20)
    info = bench_data.prepare(sizes)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    for pair in range(args.pairs):
        for name, patch in variants if pair % 2 == 0 else variants[::-1]:
            log(f"pair {pair + 1}/{args.pairs}: {name}")
            touched = git_apply(patch) if patch else []
            try:
                for file in touched:
                    compileall.compile_file(str(ROOT / file), quiet=1)
                work = ROOT / "bench" / "work" / "ab"
                samples[name].append(run_variant(args.workload, info, work, args.noop_repeats))
            finally:
                if patch:
                    git_apply(patch, reverse=True)
                    for file in touched:
                        compileall.compile_file(str(ROOT / file), quiet=1)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"workload": args.workload, "variants": dict(variants), "samples": samples},
                                           indent=1, default=str) + "\n")
    print(table(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
