"""Sharing between three users on their own device folders, through the real server and boxctl:
folder shares (editor and viewer), a conflict inside a shared folder, `log` naming who changed what,
removing a share, read-only links (file, folder, zip, expiry, revocation) and password login."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import time
import zipfile
from typing import Any

import pytest
import requests

from tests.conftest import BOXCTL, Device, ServerProc
from tests.e2e.helpers import commits, conflict_copy_re, one_line_error, packs, pull, push


@pytest.fixture
def team(make_device: Any) -> tuple[Device, Device, Device]:
    """alice owns box 'team' with shared/ and private/; bob (editor) and carol (viewer) share shared/."""
    alice = make_device("alice-laptop", user="alice")
    alice.root.mkdir()
    alice.run("init", str(alice.root), "--server", alice.server.url, "--box", "team", "--device", "alice-laptop")
    alice.write("shared/plan.txt", "plan v1\n")
    alice.write("shared/notes/a.md", "# notes\n")
    alice.write("private/salary.txt", "alice earns a lot\n")
    push(alice, "-m", "first")
    bob = make_device("bob-desk", user="bob")
    carol = make_device("carol-phone", user="carol")
    alice.run("share", "add", "bob", "shared", "--role", "editor")
    alice.run("share", "add", "carol", "shared", "--role", "viewer")
    bob.run("clone", bob.server.url, "alice/team/shared", str(bob.root), "--device", "bob-desk", cwd=bob.config)
    carol.run("clone", carol.server.url, "alice/team/shared", str(carol.root), "--device", "carol-phone",
              cwd=carol.config)
    return alice, bob, carol


def test_folder_share_is_the_members_root_and_nothing_else(team: tuple[Device, Device, Device]) -> None:
    alice, bob, carol = team
    expected = {"plan.txt": b"plan v1\n", "notes/a.md": b"# notes\n"}
    assert bob.files() == expected
    assert carol.files() == expected
    listed = {e["path"] for e in bob.run("ls", "--json").json()["entries"]}
    assert listed == {"plan.txt", "notes", "notes/a.md"}
    # History of the folder only, with paths relative to it; private/ never shows.
    for c in commits(bob):
        assert all(not p["path"].startswith("private") for p in c["paths"]), c
        assert "salary" not in str(c)
    members = {(m["user"], m["path"], m["role"]) for m in alice.run("share", "ls", "--json").json()["members"]}
    assert members == {("alice", "", "owner"), ("bob", "shared", "editor"), ("carol", "shared", "viewer")}
    # A member sees the shares of its own folder, relative to it, and no other folder's name.
    seen = {(m["user"], m["path"]) for m in bob.run("share", "ls", "--json").json()["members"]}
    assert seen == {("alice", ""), ("bob", ""), ("carol", "")}


def test_editor_pushes_and_owner_log_says_who(team: tuple[Device, Device, Device]) -> None:
    alice, bob, carol = team
    bob.write("from-bob.txt", "hello from bob\n")
    push(bob, "-m", "bob adds a file")
    pull(alice)
    assert alice.read("shared/from-bob.txt") == b"hello from bob\n"
    latest = commits(alice)[0]
    assert latest["user"] == "bob" and latest["device"] == "bob-desk" and latest["message"] == "bob adds a file"
    assert [p["path"] for p in latest["paths"]] == ["shared/from-bob.txt"]
    text = alice.run("log").out
    assert "bob@bob-desk" in text and "alice@alice-laptop" in text
    pull(carol)
    assert carol.read("from-bob.txt") == b"hello from bob\n"
    # A commit outside the folder is invisible to the members: no entry, no log line.
    alice.write("private/more.txt", "more secrets\n")
    push(alice, "-m", "private stuff")
    assert pull(bob)["written"] == []
    assert all(c["message"] != "private stuff" for c in commits(bob))


def test_conflict_in_shared_folder_keeps_both(team: tuple[Device, Device, Device]) -> None:
    alice, bob, _ = team
    alice.write("shared/plan.txt", "plan by alice\n")
    bob.write("plan.txt", "plan by bob\n")
    push(bob, "-m", "bob's plan")
    rejected = alice.run("push", check=False)
    assert rejected.code == 4, rejected
    result = pull(alice)
    assert len(result["conflicts"]) == 1
    push(alice, "-m", "keep alice's copy")
    pull(bob)
    files = bob.files()
    assert files["plan.txt"] == b"plan by bob\n"
    copies = [p for p in files if conflict_copy_re("plan", "alice-laptop", ".txt").match(p)]
    assert len(copies) == 1 and files[copies[0]] == b"plan by alice\n"
    assert alice.read("shared/plan.txt") == b"plan by bob\n"


def test_viewer_push_is_refused_and_changes_nothing(team: tuple[Device, Device, Device]) -> None:
    alice, _, carol = team
    before_log, before_packs = commits(alice), packs(alice.server)
    carol.write("plan.txt", "carol was here\n")
    carol.write("new-from-carol.bin", bytes(range(256)) * 1000)
    refused = carol.run("push", check=False)
    line = one_line_error(refused)
    assert refused.code == 3 and "viewer" in line, line
    assert commits(alice) == before_log
    assert packs(alice.server) == before_packs  # not one block was uploaded
    assert carol.read("plan.txt") == b"carol was here\n"  # and the local edit is kept


def test_removing_a_share_stops_access_at_once(team: tuple[Device, Device, Device]) -> None:
    alice, bob, carol = team
    alice.run("share", "rm", "carol", "shared")
    gone = carol.run("pull", check=False)
    assert gone.code == 7, gone
    one_line_error(gone)
    assert bob.run("pull", check=False).code == 0  # bob's share is untouched
    members = {m["user"] for m in alice.run("share", "ls", "--json").json()["members"]}
    assert members == {"alice", "bob"}


def test_share_rules(team: tuple[Device, Device, Device]) -> None:
    alice, bob, _ = team
    assert alice.run("share", "add", "nobody", "shared", check=False).code != 0
    assert alice.run("share", "add", "bob", "private", check=False).code != 0  # bob has a share already
    assert alice.run("share", "add", "bob", "no-such-folder", check=False).code != 0
    assert alice.run("share", "add", "bob", "shared/plan.txt", check=False).code != 0  # a file, not a folder
    assert bob.run("share", "add", "carol", check=False).code != 0  # only the owner shares
    alice.run("share", "add", "bob", "shared", "--role", "viewer")  # same folder: changes the role
    bob.write("x.txt", "x")
    refused = bob.run("push", check=False)
    assert refused.code == 3


def _server_url_of(link: str) -> str:
    return re.sub(r"/l/.*$", "", link)


def test_links_file_folder_zip_and_revocation(team: tuple[Device, Device, Device]) -> None:
    alice, bob, _ = team
    big = bytes(range(256)) * 20_000  # several blocks
    alice.write("shared/big.bin", big)
    push(alice)
    url = alice.run("link", "shared/big.bin", "--expires", "7d").out
    assert url.endswith("\n") and url.count("\n") == 1
    url = url.strip()
    assert re.fullmatch(rf"{re.escape(alice.server.url)}/l/[A-Za-z0-9_-]{{43}}", url)
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "big.bin" in page.text and "Download" in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert requests.get(url + "?dl=1", timeout=30).content == big
    if shutil.which("curl"):  # curl -L works, as with Dropbox links
        curl = subprocess.run(["curl", "-sSfL", url + "?dl=1"], capture_output=True, timeout=30)
        assert curl.returncode == 0 and curl.stdout == big
    # A folder link, made by the editor from its own view: listing, per-file download, streamed zip.
    bob.run("pull")
    folder = bob.run("link", ".").out.strip()
    listing = requests.get(folder, timeout=10)
    assert listing.status_code == 200
    assert "plan.txt" in listing.text and "notes/" in listing.text and "Download all" in listing.text
    assert "salary" not in listing.text
    assert requests.get(folder + "/notes/a.md?dl=1", timeout=10).content == b"# notes\n"
    zipped = requests.get(folder + "?dl=1", timeout=30)
    assert zipped.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        names = set(zf.namelist())
        assert {"shared/plan.txt", "shared/notes/a.md", "shared/big.bin"} <= names
        assert zf.read("shared/big.bin") == big
        assert not any("salary" in n or "private" in n for n in names)
    listed = {link["id"]: link for link in alice.run("link", "ls", "--json").json()["links"]}
    assert len(listed) == 2 and all(link["state"] == "active" for link in listed.values())
    assert "/l/" not in alice.run("link", "ls", "--json").out  # never the secret URL
    alice.run("link", "rm", url)
    assert requests.get(url, timeout=10).status_code == 410
    assert requests.get(url + "?dl=1", timeout=10).status_code == 410
    # The owner can revoke the editor's link by id.
    other = next(i for i, link in listed.items() if link["path"] == "shared")
    alice.run("link", "rm", str(other))
    assert requests.get(folder, timeout=10).status_code == 410


def test_expired_link_and_link_of_removed_member(team: tuple[Device, Device, Device]) -> None:
    alice, bob, _ = team
    short = alice.run("link", "shared/plan.txt", "--expires", "1s").out.strip()
    bobs = bob.run("link", "plan.txt").out.strip()
    assert requests.get(bobs + "?dl=1", timeout=10).content == b"plan v1\n"
    time.sleep(1.2)
    expired = requests.get(short, timeout=10)
    assert expired.status_code == 410 and "expired" in expired.text.lower()
    alice.run("share", "rm", "bob")
    assert requests.get(bobs, timeout=10).status_code == 410  # the link dies with its maker's access
    assert requests.get(_server_url_of(short) + "/l/" + "x" * 43, timeout=10).status_code == 404


def test_viewer_cannot_make_links(team: tuple[Device, Device, Device]) -> None:
    _, _, carol = team
    refused = carol.run("link", "plan.txt", check=False)
    assert refused.code == 3 and "editor" in one_line_error(refused)


def _passwd(server: ServerProc, user: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BOXCTL, "admin", "passwd", user, "--data", str(server.data)], input=password + "\n",
                          capture_output=True, text=True, timeout=60)


def test_password_login_and_rate_limit(make_device: Any, server: ServerProc) -> None:
    server.add_user("dave")
    assert _passwd(server, "dave", "short").returncode != 0  # too short: refused
    assert _passwd(server, "dave", "correct horse battery").returncode == 0
    dave = make_device("dave-laptop", user="dave")  # logged in with the admin token; log in again by password
    login = subprocess.run([*BOXCTL, "login", server.url, "--user", "dave"], input="correct horse battery\n",
                           capture_output=True, text=True, env=dave.env(), timeout=60)
    assert login.returncode == 0, login.stderr
    assert "correct horse" not in login.stdout + login.stderr
    creds = (dave.config / "credentials.json").read_text()
    assert "correct horse" not in creds
    dave.root.mkdir()
    dave.run("init", str(dave.root), "--server", server.url, "--box", "d", "--device", "dave-laptop")
    dave.write("x.txt", "x")
    push(dave)
    codes = []
    for _ in range(6):
        wrong = subprocess.run([*BOXCTL, "login", server.url, "--user", "dave"], input="wrong password!\n",
                               capture_output=True, text=True, env=dave.env(), timeout=60)
        codes.append(wrong.returncode)
        assert "wrong password!" not in wrong.stderr + wrong.stdout
    assert all(code == 3 for code in codes)
    assert "too many" in wrong.stderr
    # Locked out now, even with the right password; the answer is 429 with Retry-After.
    answer = requests.post(f"{server.url}/v1/login", json={"user": "dave", "password": "correct horse battery"},
                           timeout=30)
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    assert "correct horse" not in answer.text


def test_tls_serve_and_sync(tmp_path: Any, make_device: Any) -> None:
    from tests.security.tlscert import self_signed

    cert, key = self_signed(tmp_path / "tls")
    from tests.conftest import free_port, wait_until

    port = free_port()
    data = tmp_path / "tls-data"
    proc = subprocess.Popen([*BOXCTL, "serve", "--data", str(data), "--port", str(port), "--tls-cert", str(cert),
                             "--tls-key", str(key)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"https://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return requests.get(f"{url}/v1/health", timeout=1, verify=str(cert)).ok
            except requests.RequestException:
                return False

        wait_until(up, what="TLS server")
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/v1/health", timeout=5)  # an unknown certificate is refused by default
        token = subprocess.run([*BOXCTL, "admin", "add-user", "erin", "--data", str(data)], capture_output=True,
                               text=True, check=True).stdout.strip()
        a = Device("erin-a", tmp_path / "erin-a", tmp_path / "cfg-erin", ServerProc(data, port), "erin")
        a.config.mkdir()
        env = a.env() | {"REQUESTS_CA_BUNDLE": str(cert)}
        a.run("login", url, "--user", "erin", "--token", token, env=env, cwd=a.config)
        a.root.mkdir()
        a.run("init", str(a.root), "--server", url, "--box", "secure", "--device", "a", env=env)
        a.write("over-tls.txt", "encrypted on the wire")
        a.run("push", env=env)
        b_root = tmp_path / "erin-b"
        a.run("clone", url, "secure", str(b_root), "--device", "b", env=env, cwd=a.config)
        assert (b_root / "over-tls.txt").read_text() == "encrypted on the wire"
        # Plain HTTP to the TLS port gets nothing useful.
        with pytest.raises(requests.RequestException):
            requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).raise_for_status()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
