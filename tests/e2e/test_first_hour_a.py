"""Issue 21, part A: what a new user met in the first hour (each test fails on the code before the fix).

Real server processes on loopback ports and the real `boxctl` command in device folders.
"""

from __future__ import annotations

import email.utils
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.conftest import BOXCTL, Device, wait_until
from tests.e2e.helpers import one_line_error, push, random_bytes, remote_paths, status


def second_folder(device: Device, tmp_path: Path, name: str = "second") -> Device:
    """Another synced folder of the same box on the same machine (same config dir, so the same device),
    cloned as the README's tour does: no --device."""
    other = Device(name, tmp_path / name, device.config, device.server, device.user)
    device.run("clone", device.server.url, "docs", str(other.root), cwd=tmp_path)
    return other


def test_status_counts_changes_made_in_another_folder_of_the_same_device(make_device: Any, tmp_path: Path) -> None:
    first = make_device("laptop")
    first.root.mkdir()
    first.run("init", str(first.root), "--server", first.server.url, "--box", "docs")
    second = second_folder(first, tmp_path)
    first.write("report.txt", "draft")
    first.write("notes/a.txt", "a")
    push(first)
    assert status(second)["remote_waiting"] == 3  # notes/, notes/a.txt, report.txt
    assert "3 remote change(s) waiting: run 'boxctl pull'" in second.run("status").out
    assert status(first)["remote_waiting"] == 0
    # `devices` counts per synced folder too: the second folder has not pulled yet.
    (laptop,) = second.run("devices", "--json").json()["devices"]
    behind = {b["folder"]: b["behind"] for b in laptop["boxes"]}
    assert len(behind) == 2 and sorted(behind.values()) == [0, 3], laptop
    assert laptop["behind"] == 3
    second.run("pull")
    assert status(second)["remote_waiting"] == 0
    (laptop,) = second.run("devices", "--json").json()["devices"]
    assert laptop["behind"] == 0, laptop


def test_status_leaves_out_the_folders_own_commits_past_its_cursor(make_device: Any, tmp_path: Path) -> None:
    first = make_device("laptop")
    first.root.mkdir()
    first.run("init", str(first.root), "--server", first.server.url, "--box", "docs")
    second = second_folder(first, tmp_path)
    first.write("one.txt", "1")
    push(first)
    # The second folder pushes without pulling: its cursor stays before the first folder's commit.
    second.write("two.txt", "2")
    second.write("three.txt", "3")
    push(second)
    assert status(second)["remote_waiting"] == 1  # one.txt only, not its own two changes
    assert status(first)["remote_waiting"] == 2
    second.run("pull")
    assert status(second)["remote_waiting"] == 0


def _file_link(a: Device, rel: str, data: bytes) -> str:
    """Push `data` as `rel` and make a link to it; the direct download URL."""
    a.write(rel, data)
    push(a)
    return a.run("link", rel).out.strip() + "?dl=1"


def test_link_downloads_answer_head_ranges_and_validators(two_devices: tuple[Device, Device]) -> None:
    a, _ = two_devices
    data = random_bytes(3 << 20, seed=21)  # several blocks
    url = _file_link(a, "big.bin", data)
    page = requests.head(url.removesuffix("?dl=1"), timeout=30)  # the page too, not only the download
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(data)) and head.headers["Accept-Ranges"] == "bytes"
    etag, modified = head.headers["ETag"], head.headers["Last-Modified"]
    assert etag.startswith('"') and not etag.startswith('W/')
    assert modified == email.utils.formatdate(int((a.root / "big.bin").stat().st_mtime), usegmt=True)

    part = requests.get(url, headers={"Range": "bytes=1000000-2999999"}, timeout=30)
    assert part.status_code == 206 and part.content == data[1000000:3000000]
    assert part.headers["Content-Range"] == f"bytes 1000000-2999999/{len(data)}"
    tail = requests.get(url, headers={"Range": "bytes=-100"}, timeout=30)
    assert tail.status_code == 206 and tail.content == data[-100:]
    past = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=30)
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{len(data)}"
    several = requests.get(url, headers={"Range": "bytes=0-1,5-6"}, timeout=30)
    assert several.status_code == 200 and several.content == data  # the whole file, as the RFC allows

    assert requests.get(url, headers={"If-None-Match": etag}, timeout=30).status_code == 304
    same = requests.get(url, headers={"Range": "bytes=10-19", "If-Range": etag}, timeout=30)
    assert same.status_code == 206 and same.content == data[10:20]
    # The file changed since the client's partial copy: If-Range no longer matches, so the whole new file.
    newer = random_bytes(1 << 20, seed=22)
    a.write("big.bin", newer)
    push(a)
    changed = requests.get(url, headers={"Range": "bytes=10-19", "If-Range": etag}, timeout=30)
    assert changed.status_code == 200 and changed.content == newer and changed.headers["ETag"] != etag


def test_curl_and_wget_resume_a_link_download(two_devices: tuple[Device, Device], tmp_path: Path) -> None:
    a, _ = two_devices
    data = random_bytes(5 << 20, seed=23)
    url = _file_link(a, "video.bin", data)
    for tool in ("curl", "wget"):
        partial = tmp_path / f"{tool}.bin"
        partial.write_bytes(data[: 2 << 20])  # a download cut off after 2 MiB
        command = (["curl", "-sS", "-f", "-C", "-", "-o", str(partial), url] if tool == "curl"
                   else ["wget", "-q", "-c", "-O", str(partial), url])
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (tool, done.stderr)
        assert partial.read_bytes() == data, tool


def test_log_pull_and_sync_say_added_modified_deleted(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("keep.txt", "v1")
    a.write("gone.txt", "bye")
    push(a)
    b.run("pull")
    a.write("keep.txt", "v2")
    a.write("new.txt", "hello")
    (a.root / "gone.txt").unlink()
    push(a)
    log = a.run("log", "-n", "1").out
    assert "    modified  keep.txt" in log and "    added     new.txt" in log and "    deleted   gone.txt" in log, log
    (latest,) = a.run("log", "--json", "-n", "1").json()["commits"]
    assert {p["path"]: p["change"] for p in latest["paths"]} == {
        "keep.txt": "modified", "new.txt": "added", "gone.txt": "deleted"}
    pulled = b.run("pull").out
    assert "added     new.txt" in pulled and "modified  keep.txt" in pulled and "deleted   gone.txt" in pulled, pulled
    assert "updated" not in pulled
    assert b.run("pull", "--json").json()["added"] == []
    # sync lists what it pushed, path by path, as push does.
    b.write("from-b.txt", "b")
    b.write("keep.txt", "v3")
    synced = b.run("sync").out
    assert "added     from-b.txt" in synced and "modified  keep.txt" in synced, synced
    assert "pushed 2 change(s) as commit" in synced, synced
    synced = a.run("sync").out
    assert "added     from-b.txt" in synced and "modified  keep.txt" in synced and "nothing to push" in synced


def test_not_found_and_bad_numbers_are_said_with_their_exit_codes(two_devices: tuple[Device, Device]) -> None:
    a, _ = two_devices
    a.write("real.txt", "here")
    push(a)
    before = a.run("log", "--json").json()
    for args in (["ls", "nosuch"], ["ls", "nosuch", "--json"], ["log", "nosuchpath"], ["log", "nosuchpath", "--json"],
                 ["ls", "real.txt", "--rev", "0"], ["ls", "--rev", "99"], ["restore", "real.txt", "--rev", "99"]):
        result = a.run(*args, check=False)
        assert result.code == 7, (args, result)
        line = one_line_error(result)
        assert line.startswith("error: ") and "Traceback" not in result.err, (args, line)
    assert "nosuch" in one_line_error(a.run("ls", "nosuch", check=False))
    assert "alice/docs" in one_line_error(a.run("log", "nosuchpath", check=False))
    for args, option in ((["ls", "--rev", "-5"], "--rev"), (["log", "-n", "0"], "-n"), (["log", "-n", "-3"], "-n"),
                         (["log", "-n", "20000"], "-n"), (["restore", "real.txt", "--rev", "-1"], "--rev"),
                         (["ls", "--rev", str(1 << 63)], "--rev")):
        result = a.run(*args, check=False)
        assert result.code == 2, (args, result)
        line = one_line_error(result)
        assert line.startswith(f"error: {option} must be"), (args, line)
        assert "server" not in line and "query" not in line, line
    assert a.run("ls", "real.txt").code == 0 and a.run("log", "real.txt").code == 0
    assert a.run("log", "--json").json() == before  # nothing changed


def test_dash_c_names_a_missing_folder_as_such(two_devices: tuple[Device, Device], tmp_path: Path) -> None:
    a, _ = two_devices
    (tmp_path / "a-file").write_text("x")
    for where, words in ((tmp_path / "nonexistent", "no such folder"), (tmp_path / "a-file", "is not a folder")):
        for command in (["status"], ["devices"], ["link", "ls"], ["share", "ls"]):
            result = a.run("-C", str(where), *command, check=False)
            assert result.code == 2, (command, result)
            assert one_line_error(result) == f"error: -C {where}: {words}", command


def test_an_unshared_box_is_named_not_numbered(make_device: Any) -> None:
    alice = make_device("alice-laptop", user="alice")
    alice.root.mkdir()
    alice.run("init", str(alice.root), "--server", alice.server.url, "--box", "docs", "--device", "alice-laptop")
    alice.write("a.txt", "a")
    push(alice)
    bob = make_device("bob-desk", user="bob")
    alice.run("share", "add", "bob", "--role", "editor")
    bob.run("clone", bob.server.url, "alice/docs", str(bob.root), "--device", "bob-desk", cwd=bob.config)
    alice.run("share", "rm", "bob")
    for command in (["pull"], ["status"], ["log"], ["share", "ls"]):
        result = bob.run(*command, check=False)
        line = one_line_error(result)
        assert result.code == 7 and "alice/docs" in line and "no box 1" not in line, (command, line)


def test_init_and_clone_inside_a_synced_folder_are_refused(two_devices: tuple[Device, Device]) -> None:
    a, _ = two_devices
    a.write("team/plan.txt", "plan")
    push(a)
    for command in (["init", str(a.root / "team" / "inner"), "--server", a.server.url, "--box", "inner"],
                    ["init", "sub", "--server", a.server.url, "--box", "inner"],
                    ["clone", a.server.url, "docs", str(a.root / "copy")]):
        result = a.run(*command, check=False, cwd=a.root / "team")
        assert result.code == 2, (command, result)
        line = one_line_error(result)
        assert f"is inside the synced folder {a.root} (box alice/docs)" in line, line
    assert not (a.root / "team" / "inner").exists() and not (a.root / "copy").exists()
    assert not (a.root / "team" / "sub").exists()
    me = requests.get(f"{a.server.url}/v1/me", timeout=30,
                      headers={"Authorization": f"Bearer {a.server.tokens['alice']}"}).json()
    assert [b["name"] for b in me["boxes"]] == ["docs"], me  # nothing was made on the server either
    assert status(a)["added"] == []
    # A .box/ that got below the root anyway (made by hand, or by an older boxctl) is never uploaded.
    (a.root / "team" / "old" / ".box").mkdir(parents=True)
    (a.root / "team" / "old" / ".box" / "config").write_text("{}")
    (a.root / "team" / "old" / "kept.txt").write_text("mine")
    pushed = push(a)
    assert "team/old/kept.txt" in pushed["added"]
    assert not any(".box" in p.split("/") for p in remote_paths(a))


def test_watch_makes_the_folder_of_its_log_file(two_devices: tuple[Device, Device], tmp_path: Path) -> None:
    a, _ = two_devices
    state = tmp_path / "home" / ".local" / "state" / "box"  # as on a fresh account: none of it exists
    log = state / "watch.log"
    err = tmp_path / "watch.err"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen([*BOXCTL, "watch", str(a.root), "--log-file", str(log)], cwd=a.root, env=a.env(),
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_until(lambda: proc.poll() is not None or log.exists(), what="the log file")
        assert proc.poll() is None, err.read_text()
        a.write("hello.txt", "hi")
        wait_until(lambda: "hello.txt" in log.read_text(), what="the push in the log")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, err.read_text()
    # A log file that cannot be made is one line and exit 1, before anything syncs.
    (tmp_path / "blocker").write_text("a file, not a folder")
    result = a.run("watch", str(a.root), "--log-file", str(tmp_path / "blocker" / "watch.log"), check=False)
    assert result.code == 1 and "cannot open the log file" in one_line_error(result)


SIZES = re.compile(r"(\d+(?:\.\d)?) (B|KiB|MiB|GiB) / (\d+(?:\.\d)?) (B|KiB|MiB|GiB)")
UNIT = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def run_on_a_terminal(device: Device, *args: str) -> tuple[int, list[tuple[float, str]]]:
    """Run boxctl with its stderr on a pseudo-terminal (so it draws its progress bar); its exit code and
    what the terminal received, as (seconds since start, text) pieces."""
    main, side = pty.openpty()
    env = device.env() | {"COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    started = time.monotonic()
    proc = subprocess.Popen([*BOXCTL, *args], cwd=device.root, env=env, stdout=subprocess.DEVNULL, stderr=side)
    os.close(side)
    pieces: list[tuple[float, str]] = []
    try:
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            pieces.append((time.monotonic() - started, data.decode(errors="replace")))
    finally:
        os.close(main)
    return proc.wait(timeout=120), pieces


def test_the_push_bar_follows_the_bytes_sent_in_binary_units(two_devices: tuple[Device, Device]) -> None:
    a, _ = two_devices
    size = 6 << 20
    a.write("big.bin", random_bytes(size, seed=7))  # incompressible: 6 MiB on the wire too
    code, pieces = run_on_a_terminal(a, "push", "--bwlimit", "1M")
    assert code == 0
    shown = [(t, float(m[1]) * UNIT[m[2]], float(m[3]) * UNIT[m[4]])
             for t, text in pieces for m in SIZES.finditer(text)]
    assert shown, "".join(text for _, text in pieces)
    assert all(abs(total - size) < (1 << 20) / 10 for _, _, total in shown), shown
    text = "".join(text for _, text in pieces)
    assert "MiB/s" in text or "KiB/s" in text, text
    assert not re.search(r"\d (kB|MB|GB)\b", text), text  # rich's decimal units are gone
    # At 1 MiB/s the upload takes about 6 s: the bar moves with it instead of reaching the end at once.
    first, last = shown[0][0], shown[-1][0]
    assert last - first > 3, shown
    middle = [done for t, done, _ in shown if t <= first + (last - first) / 2][-1]
    assert 0.15 * size < middle < 0.85 * size, (middle, shown)
    # The same units in the CLI's lines and on the link page.
    a.write("small.txt", random_bytes(200_000, seed=8))
    assert re.search(r"sent in", a.run("push").out) and "195.3 KiB  rev" in a.run("ls").out
    page = requests.get(a.run("link", "small.txt").out.strip(), timeout=30).text
    assert "195.3 KiB" in page and "KB" not in page


REPO = Path(__file__).resolve().parents[2]
CRON_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # what cron gives a job: no .venv/bin


def cron_env(device: Device, home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return CRON_ENV | {"HOME": str(home), "BOX_CONFIG_DIR": str(device.config)}


def exit_code_in(record: str) -> Any:
    """The exit code a failure's JSON record names (the script's own record, or boxctl's --json error)."""
    doc = json.loads(record)
    error = doc.get("error")
    return doc.get("exit_code", error.get("exit_code") if isinstance(error, dict) else None)


def test_the_cron_script_exits_with_boxctls_code_and_logs_a_record(two_devices: tuple[Device, Device],
                                                                     tmp_path: Path) -> None:
    a, _ = two_devices
    script = REPO / "examples" / "cron_backup.sh"
    env = cron_env(a, tmp_path / "home")  # boxctl found beside the script (../.venv/bin), not on the PATH
    a.write("notes.txt", "nightly")
    ok = subprocess.run(["bash", str(script), str(a.root)], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok
    first, record = ok.stdout.split("\n", 1)
    assert first.startswith(f"box backup {a.root} ") and first.endswith(" exit 0")
    assert json.loads(record)["push"]["added"] == ["notes.txt"]
    # The server is gone: the script fails with boxctl's own code (6, unreachable), and still logs a record.
    a.server.kill()
    a.write("notes.txt", "nightly, again")
    failed = subprocess.run(["bash", str(script), str(a.root)], env=env | {"BOX_RETRIES": "0"},
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 6, failed
    first, record = failed.stdout.split("\n", 1)
    assert first.endswith(" exit 6")
    assert exit_code_in(record) == 6 and "cannot reach" in failed.stderr + record
    assert "failed with exit code 6" in failed.stderr
    # A folder that is not synced: exit 5, as the README's table says.
    (tmp_path / "plain").mkdir()
    plain = subprocess.run(["bash", str(script), str(tmp_path / "plain")], env=env, capture_output=True, text=True,
                           timeout=120)
    assert plain.returncode == 5 and exit_code_in(plain.stdout.split("\n", 1)[1]) == 5


def test_the_readmes_cron_line_works_on_a_fresh_account(two_devices: tuple[Device, Device], tmp_path: Path) -> None:
    a, _ = two_devices
    (line,) = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("*/5 * * * *")]
    command = line.split(None, 5)[5].replace("/home/alice/box", str(REPO))  # where Box is installed here
    home = tmp_path / "fresh-home"  # no ~/.cache yet
    env = cron_env(a, home)
    (home / "Documents").symlink_to(a.root)
    a.write("from-cron.txt", "every five minutes")
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done
    assert done.stdout == ""  # -q: cron mails nothing when all went well
    assert "from-cron.txt" in remote_paths(a)


def test_the_demo_prints_no_colour_codes_when_piped(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", TMPDIR=str(tmp_path))
    env.pop("NO_COLOR", None)
    demo = subprocess.run(["bash", str(REPO / "examples" / "two_devices.sh")], env=env, capture_output=True,
                          timeout=300)
    assert demo.returncode == 0, demo
    assert b"== start a server" in demo.stdout and b"== done" in demo.stdout
    assert b"\x1b" not in demo.stdout and b"\x1b" not in demo.stderr, demo.stdout
    # On a terminal the headings are bold, unless NO_COLOR asks for none.
    for no_color, bold in (("", True), ("1", False)):
        main, side = pty.openpty()
        shown = subprocess.run(["bash", "-c", 'source <(sed -n "/^if \\[ -t 1 \\]/,/^fi/p" "$0"); step hello',
                                str(REPO / "examples" / "two_devices.sh")], stdout=side,
                               env=env | {"NO_COLOR": no_color}, timeout=30)
        os.close(side)
        text = os.read(main, 4096)
        os.close(main)
        assert shown.returncode == 0 and b"== hello" in text
        assert (b"\x1b[1m" in text) == bold, text


def test_the_readme_keeps_to_the_repository_and_says_what_a_new_user_needs() -> None:
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)", readme):
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).resolve().is_relative_to(REPO) and (REPO / target).exists(), target
    assert "Ctrl-C stops it" not in readme and "'kill %1' stops it" in readme
    for needed in ("Python 3.11", "scripts/install_chromium.sh", "chromium", "XDG_CONFIG_HOME", "BOX_USER",
                   "minutes"):
        assert needed in readme, needed
    assert "Every command takes `-q`" not in readme
