"""CI artifacts without a synced folder: `boxctl put`, `get` and `cat` against a real server, where paths
land, overwriting, dedup and deltas, a concurrent writer, shares, bad input, bounded memory, and the CI
examples (the script run for real, the GitHub and GitLab workflows checked to use its commands)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.conftest import BOXCTL, Device, ServerProc
from tests.e2e.helpers import one_line_error, push, tree_bytes
from tests.faultproxy import FaultProxy

REPO = Path(__file__).resolve().parents[2]
BOX = "alice/ci"


def job(tmp_path: Path, name: str = "job") -> Path:
    """A CI job's working folder: no synced folder anywhere above it."""
    path = tmp_path / name
    path.mkdir(exist_ok=True)
    return path


def make_dist(root: Path) -> Path:
    """A build's output: binary and text files, a nested folder, an empty folder, a script and a link."""
    dist = root / "dist"
    (dist / "lib").mkdir(parents=True)
    (dist / "empty").mkdir()
    (dist / "app.bin").write_bytes(random.Random(1).randbytes(700_000) + b"\x00\x01\xff" * 1000)
    (dist / "lib" / "VERSION").write_text("1.2.3\n")
    (dist / "run.sh").write_text("#!/bin/sh\necho run\n")
    (dist / "run.sh").chmod(0o755)
    (dist / "latest").symlink_to("app.bin")
    return dist


def put(device: Device, cwd: Path, *args: str) -> dict[str, Any]:
    return device.run("put", *args, "--json", cwd=cwd).json()


def run_bytes(device: Device, cwd: Path, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[bytes]:
    """boxctl with its stdout as bytes (what `cat` writes is binary)."""
    return subprocess.run([*BOXCTL, *args], cwd=cwd, env=env or device.env(), capture_output=True, timeout=120)


def test_put_get_cat_round_trip_with_no_synced_folder(make_device: Any, tmp_path: Path) -> None:
    ci = make_device("ci")
    build = job(tmp_path, "build")
    dist = make_dist(build)
    first = put(ci, build, "dist", f"{BOX}/builds/1", "--create", "-m", "build 1")
    assert isinstance(first["seq"], int) and not first["dry_run"]
    assert {"builds/1/app.bin", "builds/1/lib/VERSION", "builds/1/run.sh", "builds/1/latest",
            "builds/1/empty"} <= set(first["added"])
    assert first["files"] == 3 and first["blocks_sent"] >= 1
    assert not list(tmp_path.rglob(".box")), "put made a .box/ somewhere"

    again = put(ci, build, "dist", f"{BOX}/builds/1")  # a job run again: nothing new, no commit
    assert again["seq"] is None and again["added"] == again["modified"] == [] and again["blocks_sent"] == 0

    deploy = job(tmp_path, "deploy")
    got = ci.run("get", f"{BOX}/builds/1", "dist", "--json", cwd=deploy).json()
    assert got["seq"] == first["seq"] and sorted(got["written"]) == ["app.bin", "latest", "lib/VERSION", "run.sh"]
    assert tree_bytes(deploy / "dist") == tree_bytes(dist)
    assert (deploy / "dist" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert os.readlink(deploy / "dist" / "latest") == "app.bin"
    assert (deploy / "dist" / "empty").is_dir()
    assert not list(tmp_path.rglob(".box"))

    cat = run_bytes(ci, deploy, "cat", f"{BOX}/builds/1/app.bin")
    assert cat.returncode == 0 and cat.stdout == (dist / "app.bin").read_bytes()
    # A reader that stops early is no error (as with cat); -C DIR is where LOCAL paths start.
    command = " ".join([*BOXCTL, "cat", f"{BOX}/builds/1/app.bin"])
    head = subprocess.run(["bash", "-o", "pipefail", "-c", f"{command} | head -c 5"], cwd=deploy, env=ci.env(),
                          capture_output=True, timeout=60)
    assert (head.returncode, head.stdout, head.stderr) == (0, (dist / "app.bin").read_bytes()[:5], b"")
    assert ci.run("-C", str(build), "put", "dist", f"{BOX}/builds/1", cwd=deploy).out.startswith("nothing to put")

    # A device of the box gets the same files, and the folders above them come with entries of their own
    # (else its next push would commit them again).
    desk = make_device("desk")
    desk.run("clone", desk.server.url, BOX, str(desk.root), "--device", "desk", cwd=desk.config)
    assert desk.read("builds/1/lib/VERSION") == b"1.2.3\n"
    st = desk.run("status", "--json").json()
    assert (st["added"], st["modified"], st["deleted"]) == ([], [], [])


def test_where_put_and_get_place_paths(make_device: Any, tmp_path: Path) -> None:
    ci = make_device("ci")
    here = job(tmp_path)
    (here / "a.txt").write_text("a")
    (here / "b.txt").write_text("b")
    make_dist(here)
    put(ci, here, "a.txt", f"{BOX}/docs/report.txt", "--create")  # a single file becomes PATH
    put(ci, here, "b.txt", f"{BOX}/docs")  # PATH is a folder: inside, under its own name (as cp does)
    put(ci, here, "a.txt", "b.txt", f"{BOX}/two")  # several LOCALs: inside PATH
    put(ci, here, "a.txt", f"{BOX}/slash/")  # a trailing '/': inside PATH
    put(ci, here, "dist", BOX)  # the box root: inside, under its own name
    put(ci, here, "dist", f"{BOX}/named")  # a single folder becomes PATH
    out = job(tmp_path, "out")
    ci.run("get", BOX, "all", cwd=out)  # the whole box
    files = tree_bytes(out / "all")
    assert {"docs/report.txt", "docs/b.txt", "two/a.txt", "two/b.txt", "slash/a.txt", "dist/app.bin",
            "named/app.bin", "named/lib/VERSION"} <= set(files), sorted(files)
    # get: a file goes to its own name here, inside DEST if DEST is a folder, else to DEST.
    ci.run("get", f"{BOX}/docs/report.txt", cwd=out)
    ci.run("get", f"{BOX}/docs/b.txt", "all", cwd=out)
    ci.run("get", f"{BOX}/docs/b.txt", "new/name.txt", cwd=out)
    ci.run("get", f"{BOX}/named", cwd=out)  # a folder: its contents into DEST, its own name by default
    assert (out / "report.txt").read_bytes() == b"a" and (out / "all" / "b.txt").read_bytes() == b"b"
    assert (out / "new" / "name.txt").read_bytes() == b"b"
    assert tree_bytes(out / "named") == tree_bytes(here / "dist")


def test_put_overwrites_and_sends_only_what_changed(make_device: Any, tmp_path: Path) -> None:
    ci = make_device("ci")
    here = job(tmp_path)
    big = here / "image.bin"
    data = bytearray(random.Random(7).randbytes(3 << 20))
    big.write_bytes(data)
    first = put(ci, here, "image.bin", f"{BOX}/image.bin", "--create")
    assert first["bytes_sent"] > 3_000_000
    data[1_500_000:1_500_100] = b"x" * 100  # a small edit in the middle
    big.write_bytes(data)
    second = put(ci, here, "image.bin", f"{BOX}/image.bin")
    assert second["modified"] == ["image.bin"]
    assert second["bytes_sent"] < 300_000, second  # one block changed, sent as a delta against the old one
    assert second["blocks_delta"] >= 1
    out = job(tmp_path, "out")
    assert run_bytes(ci, out, "cat", f"{BOX}/image.bin").stdout == bytes(data)
    assert run_bytes(ci, out, "cat", f"{BOX}/image.bin", "--rev", str(first["seq"])).stdout[1_500_000:1_500_100] \
        != b"x" * 100
    # --no-delta sends the changed block whole; --dry-run sends nothing and commits nothing.
    data[100:110] = b"y" * 10
    big.write_bytes(data)
    before = commits_count(ci)
    dry = put(ci, here, "image.bin", f"{BOX}/image.bin", "--dry-run")
    assert dry["dry_run"] and dry["modified"] == ["image.bin"] and dry["seq"] is None and dry["bytes_sent"] == 0
    assert commits_count(ci) == before
    whole = put(ci, here, "image.bin", f"{BOX}/image.bin", "--no-delta")
    assert whole["blocks_delta"] == 0 and whole["bytes_sent"] >= 256 << 10


def commits_count(device: Device) -> int:
    """How many commits the server holds."""
    return device.server.count_rows("commits")


def test_put_overwrites_a_version_committed_while_it_uploaded(server: ServerProc, make_device: Any,
                                                            tmp_path: Path) -> None:
    """Another writer commits the same path while a put uploads: the put is based on the new head and wins,
    as `cp` over a file would; the other version stays in the history."""
    laptop = make_device("laptop")
    laptop.root.mkdir()
    laptop.run("init", str(laptop.root), "--server", server.url, "--box", "ci", "--device", "laptop")
    laptop.write("out/app.bin", "laptop's version")
    push(laptop)
    here = job(tmp_path)
    (here / "app.bin").write_bytes(random.Random(3).randbytes(1 << 20))
    with FaultProxy(server.port) as proxy:
        env = dict(os.environ, BOX_SERVER=proxy.url, BOX_TOKEN=server.tokens["alice"],
                   BOX_CONFIG_DIR=str(tmp_path / "no-login"))
        slow = subprocess.Popen([*BOXCTL, "put", "app.bin", f"{BOX}/out/app.bin", "--bwlimit", "256K", "--json"],
                                cwd=here, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while proxy.stats.bytes_up < 100_000:  # the put has read the head and is uploading
            assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()
            time.sleep(0.02)
        laptop.write("out/app.bin", "laptop's second version")
        between = push(laptop)["seq"]
        out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err
    seq = json.loads(out)["seq"]
    assert seq > between
    laptop.run("pull")
    assert laptop.read("out/app.bin") == (here / "app.bin").read_bytes()
    revs = [r["rev"] for r in laptop.run("log", "out/app.bin", "--json").json()["revisions"]]
    assert revs[:2] == [seq, between]


def test_get_never_overwrites_other_content_without_force(make_device: Any, tmp_path: Path) -> None:
    ci = make_device("ci")
    here = job(tmp_path)
    (here / "v.txt").write_text("version 1\n")
    one = put(ci, here, "v.txt", f"{BOX}/v.txt", "--create")["seq"]
    between = time.time()
    time.sleep(0.05)
    (here / "v.txt").write_text("version 2\n")
    put(ci, here, "v.txt", f"{BOX}/v.txt")
    out = job(tmp_path, "out")
    ci.run("get", f"{BOX}/v.txt", cwd=out)
    assert (out / "v.txt").read_text() == "version 2\n"
    same = ci.run("get", f"{BOX}/v.txt", "--json", cwd=out).json()  # already there: left as it is
    assert same["unchanged"] == ["v.txt"] and same["written"] == []
    (out / "v.txt").write_text("my own edit\n")
    refused = ci.run("get", f"{BOX}/v.txt", cwd=out, check=False)
    assert refused.code == 2 and "--force" in one_line_error(refused)
    assert (out / "v.txt").read_text() == "my own edit\n"
    ci.run("get", f"{BOX}/v.txt", "--force", cwd=out)
    assert (out / "v.txt").read_text() == "version 2\n"
    ci.run("get", f"{BOX}/v.txt", "old.txt", "--rev", str(one), cwd=out)
    ci.run("get", f"{BOX}/v.txt", "then.txt", "--at", f"@{between:.6f}", cwd=out)
    assert (out / "old.txt").read_text() == (out / "then.txt").read_text() == "version 1\n"
    assert run_bytes(ci, out, "cat", f"{BOX}/v.txt", "--rev", str(one)).stdout == b"version 1\n"
    assert run_bytes(ci, out, "cat", f"{BOX}/v.txt", "--at", f"@{between:.6f}").stdout == b"version 1\n"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".box-tmp")]
    # A folder where the file would go is refused, --force or not.
    (out / "dir.txt").mkdir()
    clash = ci.run("get", f"{BOX}/v.txt", "dir.txt/", cwd=out, check=False)
    assert clash.code == 0 and (out / "dir.txt" / "v.txt").exists()  # DEST a folder: the file goes inside
    (out / "x").mkdir()
    (out / "x" / "v.txt").mkdir()
    clash = ci.run("get", f"{BOX}/v.txt", "x", "--force", cwd=out, check=False)
    assert clash.code == 2 and "folder" in one_line_error(clash)


def test_bad_input_is_one_line_with_the_right_code(make_device: Any, tmp_path: Path) -> None:
    ci = make_device("ci")
    here = job(tmp_path)
    (here / "f.txt").write_text("f")
    make_dist(here)
    put(ci, here, "f.txt", f"{BOX}/file", "--create")
    put(ci, here, "dist", f"{BOX}/folder")
    before = commits_count(ci)
    cases: list[tuple[list[str], int, str]] = [
        (["put", "f.txt", "ci/file"], 7, "no box"),  # the owner is always named: 'ci' is a user here
        (["put", "f.txt", "ci"], 2, "OWNER/BOX"),
        (["put", f"{BOX}/x"], 2, "LOCAL"),
        (["put", "missing.txt", f"{BOX}/x"], 2, "no such file"),
        (["put", "f.txt", "alice/nobox/x"], 7, "no box"),
        (["put", "f.txt", "bob/ci/x", "--create"], 7, "your own"),
        (["put", "dist", f"{BOX}/file"], 2, "is a file in the box"),  # a folder where the box has a file
        (["put", "f.txt", f"{BOX}/folder/lib/VERSION/x"], 2, "file"),  # under a file of the box
        (["put", "f.txt", f"{BOX}/../x"], 2, ".."),
        (["get", f"{BOX}/nothing"], 7, "does not exist"),
        (["get", f"{BOX}/file", "--rev", "999"], 7, "no commit"),
        (["get", f"{BOX}/file", "--rev", "-1"], 2, "--rev"),
        (["get", f"{BOX}/file", "--rev", "1", "--at", "1h"], 2, "at most one"),
        (["get", f"{BOX}/file", "--at", "yesterday-ish"], 2, "time"),
        (["get", f"{BOX}/folder", "f.txt"], 2, "is a file"),
        (["cat", f"{BOX}/folder"], 2, "folder"),
        (["cat", f"{BOX}/folder/latest"], 2, "symlink"),
        (["cat", f"{BOX}/nothing"], 7, "does not exist"),
    ]
    for args, code, words in cases:
        result = ci.run(*args, cwd=here, check=False)
        assert result.code == code, (args, result)
        assert words in one_line_error(result), (args, result.err)
    (here / "dist" / "lib").rename(here / "dist" / "lib-moved")
    (here / "dist" / "lib").write_text("now a file")  # where the box has a folder with files in it
    result = ci.run("put", "dist", f"{BOX}/folder", cwd=here, check=False)
    assert result.code == 2 and "folder in the box" in one_line_error(result)
    assert commits_count(ci) == before
    assert (here / "f.txt").read_text() == "f"


def test_folder_members_put_and_get_inside_their_folder_only(make_device: Any, tmp_path: Path) -> None:
    alice = make_device("alice-laptop")
    alice.root.mkdir()
    alice.run("init", str(alice.root), "--server", alice.server.url, "--box", "team", "--device", "alice-laptop")
    alice.write("shared/plan.txt", "plan\n")
    alice.write("private/salary.txt", "secret\n")
    push(alice)
    bob, carol = make_device("bob", user="bob"), make_device("carol", user="carol")
    alice.run("share", "add", "bob", "shared", "--role", "editor")
    alice.run("share", "add", "carol", "shared", "--role", "viewer")
    here = job(tmp_path)
    (here / "report.txt").write_text("from bob's CI\n")
    bob.run("put", "report.txt", "alice/team/shared/reports/", cwd=here)
    assert run_bytes(bob, here, "cat", "alice/team/shared/plan.txt").stdout == b"plan\n"
    refused = bob.run("get", "alice/team/private/salary.txt", cwd=here, check=False)
    assert refused.code == 7 and not (here / "salary.txt").exists()
    viewer = carol.run("put", "report.txt", "alice/team/shared/x.txt", cwd=here, check=False)
    assert viewer.code == 3 and "viewer" in one_line_error(viewer)
    assert run_bytes(carol, here, "cat", "alice/team/shared/reports/report.txt").stdout == b"from bob's CI\n"
    alice.run("pull")
    assert alice.read("shared/reports/report.txt") == b"from bob's CI\n"


def peak_rss(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, int]:
    """(exit code, highest resident memory seen) of one boxctl run, sampled every 20 ms."""
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    proc.wait()
    return proc.returncode, peak


def test_put_and_get_of_a_big_file_stream_in_bounded_memory(make_device: Any, tmp_path: Path) -> None:
    ci = make_device("ci")
    here = job(tmp_path)
    big = here / "big.bin"
    unit = random.Random(5).randbytes(1 << 20)
    with open(big, "wb") as f:
        for _ in range(320):  # 320 MiB: a whole-file read would show; repeated, so little goes on the wire
            f.write(unit)
    code, peak_put = peak_rss([*BOXCTL, "put", "big.bin", f"{BOX}/big.bin", "--create", "-q"], here, ci.env())
    assert code == 0 and peak_put < 200 << 20, peak_put
    out = job(tmp_path, "out")
    code, peak_get = peak_rss([*BOXCTL, "get", f"{BOX}/big.bin", "-q"], out, ci.env())
    assert code == 0 and peak_get < 200 << 20, peak_get
    assert (out / "big.bin").stat().st_size == big.stat().st_size
    with open(out / "big.bin", "rb") as f:
        assert f.read(1 << 20) == unit and (f.seek(300 << 20), f.read(1 << 20))[1] == unit


def ci_commands(text: str) -> list[str]:
    """The Box commands of a CI script: each line that runs boxctl, as written."""
    return [line.strip() for line in text.splitlines() if "boxctl " in line and not line.lstrip().startswith("#")]


def test_ci_example_script_runs_and_the_workflows_use_its_commands(server: ServerProc, make_device: Any,
                                                                  tmp_path: Path) -> None:
    token = server.add_user("alice")
    fresh = tmp_path / "fresh-home"
    fresh.mkdir()
    # A CI runner: a fresh HOME, no login stored, boxctl on the PATH, the server and token in the environment.
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(fresh),
           "BOX_CONFIG_DIR": str(fresh / ".config" / "box"), "BOX_SERVER": server.url, "BOX_TOKEN": token,
           "ARTIFACTS": "alice/ci-artifacts", "BUILD_ID": "42"}
    script = REPO / "examples" / "ci_artifacts.sh"
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "build 42 fetched from alice/ci-artifacts" in result.stdout
    assert not (fresh / ".config" / "box" / "credentials.json").exists()  # nothing stored: the env was enough
    assert not list(tmp_path.rglob(".box"))
    ci = make_device("check")
    assert run_bytes(ci, tmp_path, "cat", "alice/ci-artifacts/builds/42/VERSION").stdout == b"42\n"

    commands = ci_commands(script.read_text())
    assert [c.split("boxctl ")[1].split()[0] for c in commands] == ["put", "get", "cat"]
    github = yaml.safe_load((REPO / "examples" / "ci" / "github-actions.yml").read_text())
    gh_runs = [step["run"] for j in github["jobs"].values() for step in j["steps"] if "run" in step]
    gitlab = yaml.safe_load((REPO / "examples" / "ci" / "gitlab-ci.yml").read_text())
    gl_runs = [line for name, j in gitlab.items() if isinstance(j, dict) and "script" in j for line in j["script"]]
    for runs, source in ((gh_runs, "github-actions.yml"), (gl_runs, "gitlab-ci.yml")):
        assert ci_commands("\n".join(runs)) == commands, source
    # Each workflow fetches in a later job than the one that uploads.
    assert github["jobs"]["deploy"]["needs"] == "build"
    assert gitlab["stages"] == ["build", "deploy"] and gitlab["deploy"]["stage"] == "deploy"
