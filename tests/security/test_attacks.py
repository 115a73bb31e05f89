"""Attacks against the walls between users, each asserted to fail with nothing stored or revealed.

The `unchanged` fixture checks after every attack that alice's box (tree and history), its shares,
its links and the block store are exactly as before.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from typing import Any

import pytest

from box_common.frames import Frame, encode_frame
from tests.security.conftest import World, secret_hashes, sha, shared_hashes

BOX_ROUTES = ["", "/changes", "/tree", "/log", "/pending", "/members"]


def _same_but_ids(a: str, b: str) -> bool:
    """Two error bodies that differ only in the numbers or names they echo back."""
    def scrub(s: str) -> str:
        return re.sub(r"\d+|'[^']*'", "#", s)
    return scrub(a) == scrub(b)


# --- reading another user's box by guessing ids or names ----------------------------------------


@pytest.mark.parametrize("route", BOX_ROUTES)
def test_guessing_box_ids_reveals_nothing(unchanged: World, route: str) -> None:
    w = unchanged
    answers = {}
    for box_id in (w.box, w.box + 1000, 0, 1 << 40):
        resp = w.call("GET", f"/v1/boxes/{box_id}{route}", "mallory")
        assert resp.status_code == 404, (box_id, resp.text)
        answers[box_id] = resp.text
    # alice's real box and a box that does not exist answer alike: existence is not revealed
    assert _same_but_ids(answers[w.box], answers[w.box + 1000])
    for secret in ("salary", "diary", "plan", "alice"):
        assert secret not in answers[w.box]


@pytest.mark.parametrize("name", ["alice/team", "alice/team/shared", "alice/team/private", "team", "alice/nope"])
def test_guessing_box_names_reveals_nothing(unchanged: World, name: str) -> None:
    w = unchanged
    resp = w.call("GET", "/v1/boxes", "mallory", params={"name": name})
    assert resp.status_code == 404
    ghost = w.call("GET", "/v1/boxes", "mallory", params={"name": "nobody/nothing"})
    assert _same_but_ids(resp.text, ghost.text)


def test_folder_member_cannot_resolve_other_folders(unchanged: World) -> None:
    w = unchanged
    assert w.call("GET", "/v1/boxes", "bob", params={"name": "alice/team/private"}).status_code == 404
    assert w.call("GET", "/v1/boxes", "bob", params={"name": "alice/team/shared/../private"}).status_code in (
        400, 404, 422)
    mine = w.call("GET", "/v1/boxes", "bob", params={"name": "alice/team/shared"}).json()
    assert mine["prefix"] == "shared" and mine["role"] == "editor"


def test_other_users_commits_and_writes_are_refused(unchanged: World) -> None:
    w = unchanged
    data = b"mallory writes"
    assert w.upload("mallory", data).status_code == 200  # her own block, in her own account
    w.settle()
    assert w.commit("mallory", [w.put("shared/evil.txt", data)]).status_code == 404
    assert w.call("POST", f"/v1/boxes/{w.box}/links", "mallory", json={"path": ""}).status_code == 404
    assert w.call("POST", f"/v1/boxes/{w.box}/members", "mallory",
                  json={"user": "mallory", "path": "", "role": "editor"}).status_code == 404
    assert w.call("DELETE", f"/v1/boxes/{w.box}/members/bob", "mallory").status_code == 404
    assert w.call("POST", f"/v1/boxes/{w.box}/ack", "mallory", json={"device": 1, "cursor": 5}).status_code in (
        400, 404)


# --- a folder share reaching outside its folder -------------------------------------------------


def test_folder_member_sees_only_its_folder(unchanged: World) -> None:
    w = unchanged
    tree = w.call("GET", f"/v1/boxes/{w.box}/tree", "bob").json()
    assert {e["path"] for e in tree["entries"] if e["kind"] == "file"} == {"plan.txt", "notes/a.md"}
    changes = w.call("GET", f"/v1/boxes/{w.box}/changes", "bob", params={"cursor": 0}).json()
    assert {e["path"] for e in changes["entries"] if e["kind"] == "file"} == {"plan.txt", "notes/a.md"}
    log = w.call("GET", f"/v1/boxes/{w.box}/log", "bob").json()
    text = str(log) + str(tree) + str(changes)
    assert "private" not in text and "salary" not in text and "diary" not in text
    assert all(p["path"] in ("plan.txt", "notes/a.md", "notes") for c in log["commits"] for p in c["paths"])
    assert all(c["changes"] == len(c["paths"]) for c in log["commits"])  # no count of what is elsewhere


@pytest.mark.parametrize("path", [
    "../private", "../private/salary.txt", "..", "/private", "/private/salary.txt", "..\\private",
    "shared/../../private", "./../private", "notes/../../private", "\u2024\u2024/private", "%2e%2e/private",
])
def test_folder_member_path_escapes_fail(unchanged: World, path: str) -> None:
    w = unchanged
    for route in ("tree", "log"):
        resp = w.call("GET", f"/v1/boxes/{w.box}/{route}", "bob", params={"path": path})
        if resp.status_code == 200:  # a literal odd name inside the folder: must show nothing of private/
            assert "salary" not in resp.text and "diary" not in resp.text, resp.text
            body = resp.json()
            assert not body.get("entries") and not body.get("revisions")
        else:
            assert resp.status_code in (400, 404, 422), resp.text
    made = w.call("POST", f"/v1/boxes/{w.box}/links", "bob", json={"path": path})
    assert made.status_code in (400, 404, 422), made.text


@pytest.mark.parametrize("path", [
    "../private/stolen.txt", "/private/stolen.txt", "..\\private\\stolen.txt", "a/../../private/stolen.txt",
    "private/../../x", ".box/config", "", ".", "./x", "x/", "x//y", "x\x00y", "x\ny",
])
def test_folder_member_cannot_write_outside(unchanged: World, path: str) -> None:
    w = unchanged
    data = b"bob's payload " + path.encode(errors="replace")
    assert w.upload("bob", data).status_code == 200
    w.settle()
    resp = w.commit("bob", [w.put(path, data)])
    assert resp.status_code in (400, 422), resp.text


def test_encoded_separators_in_url_paths(unchanged: World) -> None:
    w = unchanged
    host, port = w.url.removeprefix("http://").split(":")
    for raw in (f"/v1/boxes/{w.box}%2F..%2F1/tree", f"/v1/boxes/{w.box}/..%2Ftree", f"/v1/boxes/{w.box}/../../v1/me",
                f"/v1/boxes/{w.box}/tree?path=..%2Fprivate", f"/v1/boxes/{w.box}/tree?path=%2e%2e%2fprivate",
                f"/v1/boxes/{w.box}/tree?path=shared%2F..%2F..%2Fprivate"):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", raw, headers={"Authorization": f"Bearer {w.tokens['bob']}"})
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        assert "salary" not in body and "diary" not in body, (raw, body)
        assert resp.status >= 400 or not re.search(r"private", body), (raw, resp.status, body)


def test_symlink_in_shared_folder_reaches_nothing(world: World) -> None:
    w = world
    private_before = w.call("GET", f"/v1/boxes/{w.box}/tree", "alice", params={"path": "private"}).json()["entries"]
    link = {"path": "escape", "op": "put", "kind": "link", "parent_rev": 0, "target": "../private"}
    made = w.commit("bob", [link])
    assert made.status_code == 200  # a symlink is content like any other: stored, never followed
    share = w.call("POST", f"/v1/boxes/{w.box}/links", "bob", json={"path": ""}).json()
    try:
        for path in ("escape", "escape/salary.txt"):
            tree = w.call("GET", f"/v1/boxes/{w.box}/tree", "bob", params={"path": path}).json()
            assert "salary" not in str(tree)
            assert all(e["kind"] == "link" for e in tree["entries"])
        for sub in ("escape", "escape/salary.txt", "escape/diary.txt"):
            for params in ({}, {"dl": 1}):
                page = w.call("GET", f"{share['url_path']}/{sub}", params=params)
                assert page.status_code == 404 and b"alice earns" not in page.content
        zipped = w.call("GET", share["url_path"], params={"dl": 1})
        assert zipped.status_code == 200 and b"alice earns" not in zipped.content
        assert w.call("POST", f"/v1/boxes/{w.box}/links", "bob", json={"path": "escape"}).status_code == 400
        after = w.call("GET", f"/v1/boxes/{w.box}/tree", "alice", params={"path": "private"}).json()["entries"]
        assert after == private_before
    finally:
        w.commit("bob", [{"path": "escape", "op": "delete", "kind": "link", "parent_rev": made.json()["seq"]}])
        w.call("DELETE", f"/v1/links/{share['id']}", "bob")


# --- blocks: guessing or learning hashes ------------------------------------------------------


@pytest.mark.parametrize("user", ["mallory", "bob", "carol"])
def test_block_reads_by_hash_fail_outside_readable_files(unchanged: World, user: str) -> None:
    w = unchanged
    for h in secret_hashes(w):
        for method, path, kw in (("GET", f"/v1/blocks/{h}", {}),
                                 ("POST", "/v1/blocks/fetch", {"json": {"hashes": [h]}}),
                                 ("GET", f"/v1/blocks/{h}/signature", {})):
            resp = w.call(method, path, user, **kw)
            assert resp.status_code == 404, (user, path, resp.status_code)
            assert b"alice earns" not in resp.content and b"dear diary" not in resp.content
    never = sha(b"no one ever stored this")
    known, unknown = w.call("GET", f"/v1/blocks/{secret_hashes(w)[0]}", user), w.call("GET", f"/v1/blocks/{never}",
                                                                                       user)
    assert known.status_code == unknown.status_code == 404
    assert _same_but_ids(known.text.replace(secret_hashes(w)[0], "H"), unknown.text.replace(never, "H"))


def test_folder_member_reads_blocks_of_its_folder_only(unchanged: World) -> None:
    w = unchanged
    for h in shared_hashes(w):
        assert w.call("GET", f"/v1/blocks/{h}", "carol").status_code == 200
    fetched = w.call("POST", "/v1/blocks/fetch", "carol", json={"hashes": shared_hashes(w) + secret_hashes(w)[:1]})
    assert fetched.status_code == 404 and b"alice earns" not in fetched.content
    # dave (viewer of private/) reads private blocks, and none of shared/
    assert w.call("GET", f"/v1/blocks/{secret_hashes(w)[0]}", "dave").status_code == 200
    assert w.call("GET", f"/v1/blocks/{shared_hashes(w)[0]}", "dave").status_code == 404


@pytest.mark.parametrize("user", ["mallory", "bob", "carol", "dave"])
def test_missing_blocks_oracle(unchanged: World, user: str) -> None:
    """Asking which blocks are missing never tells whether another user stores them."""
    w = unchanged
    theirs = secret_hashes(w) if user != "dave" else shared_hashes(w)
    never = [sha(f"never stored {i}".encode()) for i in range(3)]
    missing = w.call("POST", "/v1/blocks/missing", user, json={"hashes": theirs + never}).json()["missing"]
    assert missing == theirs + never  # stored-but-unreadable looks exactly like never-stored


def test_commit_cannot_adopt_unreadable_blocks(unchanged: World) -> None:
    """Naming a hash one cannot read in a commit (to then read it back through one's own file) fails."""
    w = unchanged
    secret = w.files["private/salary.txt"]
    adopt = w.put("stolen.txt", secret)
    for user, box in (("bob", w.box), ("mallory", w.mallory_box)):
        resp = w.commit(user, [adopt], box=box)
        assert resp.status_code == 422, resp.text
        ghost = w.commit(user, [w.put("stolen.txt", b"never uploaded anywhere 123")], box=box)
        assert resp.status_code == ghost.status_code
        assert resp.json()["missing"] == [sha(secret)]  # the same answer as for a block that does not exist


def test_delta_against_unreadable_base_fails(unchanged: World) -> None:
    """A delta upload names a base block; a base the user cannot read gives nothing and stores nothing."""
    w = unchanged
    base = bytes.fromhex(secret_hashes(w)[0])
    payload = base + (2048).to_bytes(4, "big") + b"\x28\xb5\x2f\xfd" + b"\x00" * 16
    frame = encode_frame(Frame(sha(b"whatever the result"), 2, payload))
    resp = w.call("POST", "/v1/blocks/pack", "mallory", data=frame)
    assert resp.status_code in (400, 404, 422), resp.text
    assert b"alice earns" not in resp.content


# --- notifications -------------------------------------------------------------------------------


def test_long_poll_of_folder_member_ignores_commits_elsewhere(world: World) -> None:
    w = world
    head = int(w.call("GET", f"/v1/boxes/{w.box}", "alice").json()["head"])
    cursor = int(w.call("GET", f"/v1/boxes/{w.box}/changes", "bob", params={"cursor": 0}).json()["cursor"])
    answers: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        answers["bob"] = w.call("GET", f"/v1/boxes/{w.box}/wait", "bob", params={"cursor": cursor, "timeout": 3})
        answers["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    data = b"more private notes " + str(time.time()).encode()
    assert w.upload("alice", data).status_code == 200
    assert w.commit("alice", [w.put(f"private/n-{time.time_ns()}.txt", data)]).status_code == 200
    waiter.join(10)
    body = answers["bob"].json()
    assert body["changes"] is False and body["head"] == cursor, body  # no news, and the head does not move
    assert answers["seconds"] >= 2.5  # it was not woken early either: the timing says nothing
    pending = w.call("GET", f"/v1/boxes/{w.box}/pending", "bob", params={"cursor": cursor}).json()
    assert pending == {"head": cursor, "waiting": 0}
    assert int(w.call("GET", f"/v1/boxes/{w.box}", "bob").json()["head"]) <= head
    # a commit inside shared/ wakes bob at once
    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    note = b"shared note " + str(time.time()).encode()
    assert w.upload("alice", note).status_code == 200
    seq = w.commit("alice", [w.put(f"shared/n-{time.time_ns()}.txt", note)]).json()["seq"]
    waiter.join(10)
    assert answers["bob"].json() == {"changes": True, "head": seq, "backoff": 0}
    assert answers["seconds"] < 2.5


def test_outsider_long_poll_is_refused_at_once(unchanged: World) -> None:
    w = unchanged
    started = time.monotonic()
    resp = w.call("GET", f"/v1/boxes/{w.box}/wait", "mallory", params={"cursor": 0, "timeout": 5})
    assert resp.status_code == 404 and time.monotonic() - started < 3


def test_removed_share_stops_at_the_next_request_and_the_next_wakeup(world: World) -> None:
    w = world
    assert w.call("POST", f"/v1/boxes/{w.box}/members", "alice",
                  json={"user": "mallory", "path": "shared", "role": "viewer"}).status_code == 200
    assert w.call("GET", f"/v1/boxes/{w.box}/tree", "mallory").status_code == 200
    cursor = int(w.call("GET", f"/v1/boxes/{w.box}/changes", "mallory", params={"cursor": 0}).json()["cursor"])
    answers: dict[str, Any] = {}

    def poll() -> None:
        answers["r"] = w.call("GET", f"/v1/boxes/{w.box}/wait", "mallory", params={"cursor": cursor, "timeout": 10})

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    assert w.call("DELETE", f"/v1/boxes/{w.box}/members/mallory", "alice", params={"path": "shared"}).status_code == 200
    note = b"after removal " + str(time.time()).encode()
    assert w.upload("alice", note).status_code == 200
    assert w.commit("alice", [w.put(f"shared/r-{time.time_ns()}.txt", note)]).status_code == 200
    waiter.join(15)
    assert answers["r"].status_code == 404  # woken, re-checked, refused: no head, no news
    for route in BOX_ROUTES:
        assert w.call("GET", f"/v1/boxes/{w.box}{route}", "mallory").status_code == 404
    for h in shared_hashes(w):
        assert w.call("GET", f"/v1/blocks/{h}", "mallory").status_code == 404


# --- roles -----------------------------------------------------------------------------------------


def test_viewer_cannot_push_share_or_link(unchanged: World) -> None:
    w = unchanged
    data = b"carol's edit"
    assert w.upload("carol", data).status_code == 200
    w.settle()
    resp = w.commit("carol", [w.put("plan.txt", data, parent=w.revs["shared/plan.txt"])])
    assert resp.status_code == 403 and "viewer" in resp.json()["message"]
    assert w.commit("carol", [{"path": "plan.txt", "op": "delete", "kind": "file",
                               "parent_rev": w.revs["shared/plan.txt"]}]).status_code == 403
    assert w.call("POST", f"/v1/boxes/{w.box}/links", "carol", json={"path": "plan.txt"}).status_code == 403
    assert w.call("POST", f"/v1/boxes/{w.box}/members", "carol",
                  json={"user": "mallory", "path": "", "role": "viewer"}).status_code == 403


def test_editor_cannot_escalate(unchanged: World) -> None:
    w = unchanged
    for body in ({"user": "bob", "path": "", "role": "editor"}, {"user": "mallory", "path": "", "role": "viewer"},
                 {"user": "bob", "path": "", "role": "owner"}):
        assert w.call("POST", f"/v1/boxes/{w.box}/members", "bob", json=body).status_code in (400, 403)
    assert w.call("DELETE", f"/v1/boxes/{w.box}/members/carol", "bob").status_code == 403
    assert w.call("DELETE", f"/v1/boxes/{w.box}/members/alice", "bob").status_code == 403
    assert w.call("POST", f"/v1/boxes/{w.box}/members", "alice",
                  json={"user": "bob", "path": "", "role": "owner"}).status_code == 400


def test_member_list_hides_other_folders(unchanged: World) -> None:
    w = unchanged
    seen = w.call("GET", f"/v1/boxes/{w.box}/members", "bob").json()["members"]
    assert {m["user"] for m in seen} == {"alice", "bob", "carol"}  # not dave, who has private/
    assert "private" not in str(seen)


# --- revoked device token -----------------------------------------------------------------------


def test_revoked_device_token_is_refused_everywhere(unchanged: World) -> None:
    w = unchanged
    device = w.call("POST", "/v1/devices", "alice", json={"name": "stolen-laptop", "kind": "laptop"}).json()
    token = device["token"]
    assert w.call("GET", "/v1/me", token=token).status_code == 200
    assert w.call("POST", f"/v1/devices/{device['id']}/revoke", "alice", json={}).status_code == 200
    data = b"written with a stolen token"
    for method, path, kw in (
        ("GET", "/v1/me", {}), ("GET", f"/v1/boxes/{w.box}/tree", {}), ("GET", f"/v1/blocks/{shared_hashes(w)[0]}", {}),
        ("PUT", f"/v1/blocks/{sha(data)}", {"data": data}),
        ("POST", f"/v1/boxes/{w.box}/commits", {"json": {"changes": [w.put("shared/x.txt", data)]}}),
        ("POST", f"/v1/boxes/{w.box}/links", {"json": {"path": ""}}), ("GET", "/v1/links", {}),
        ("POST", f"/v1/boxes/{w.box}/members", {"json": {"user": "mallory", "role": "editor"}}),
        ("GET", f"/v1/boxes/{w.box}/wait", {"params": {"timeout": 0}}),
    ):
        resp = w.call(method, path, token=token, **kw)
        assert resp.status_code == 401, (path, resp.text)
        assert token not in resp.text


# --- links -----------------------------------------------------------------------------------------


def test_expired_revoked_and_forged_links(world: World) -> None:
    w = world
    made = w.call("POST", f"/v1/boxes/{w.box}/links", "alice", json={"path": "shared/plan.txt", "expires_in": 1}).json()
    url = made["url_path"]
    assert w.call("GET", url, params={"dl": 1}).content == w.files["shared/plan.txt"]
    time.sleep(1.2)
    for params in ({}, {"dl": 1}):
        gone = w.call("GET", url, params=params)
        assert gone.status_code == 410 and b"the shared plan" not in gone.content
        assert "text/html" in gone.headers["content-type"]
    made = w.call("POST", f"/v1/boxes/{w.box}/links", "alice", json={"path": "shared"}).json()
    assert w.call("DELETE", f"/v1/links/{made['id']}", "mallory").status_code == 404  # not hers
    assert w.call("DELETE", f"/v1/links/{made['id']}", "alice").status_code == 200
    for sub in ("", "/plan.txt", "/notes/a.md"):
        gone = w.call("GET", made["url_path"] + sub, params={"dl": 1})
        assert gone.status_code == 410 and b"the shared plan" not in gone.content and b"# notes" not in gone.content
    token = url.rsplit("/", 1)[-1]
    for forged in (token[:-1] + ("A" if token[-1] != "A" else "B"), "x" * 43, token[:20], "..", "%2e%2e",
                   token + "/../../private/salary.txt"):
        resp = w.call("GET", f"/l/{forged}", params={"dl": 1})
        assert resp.status_code in (404, 410) and b"alice earns" not in resp.content


def test_link_cannot_reach_outside_its_path(world: World) -> None:
    w = world
    url = w.call("POST", f"/v1/boxes/{w.box}/links", "alice", json={"path": "shared"}).json()["url_path"]
    host, port = w.url.removeprefix("http://").split(":")
    for raw in (f"{url}/../private/salary.txt", f"{url}/..%2Fprivate%2Fsalary.txt", f"{url}/%2e%2e/private/salary.txt",
                f"{url}/notes/../../private/salary.txt", f"{url}/%2fprivate/salary.txt", f"{url}//private/salary.txt",
                f"{url}/..\\private\\salary.txt", f"{url}/notes/%00", f"{url}/../../v1/me"):
        for query in ("", "?dl=1"):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", raw + query)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status in (404, 410, 400), (raw, resp.status)
            assert b"alice earns" not in body and b"dear diary" not in body


def test_link_page_escapes_hostile_file_names(world: World) -> None:
    w = world
    evil = {"shared/x/<script>alert(1)</script>.txt": b"xss one", "shared/x/\"><img src=x onerror=alert(2)>": b"two",
            "shared/x/a&b.txt": b"amp"}
    for data in evil.values():
        assert w.upload("alice", data).status_code == 200
    assert w.commit("alice", [w.put(p, d) for p, d in evil.items()]).status_code == 200
    url = w.call("POST", f"/v1/boxes/{w.box}/links", "alice", json={"path": "shared/x"}).json()["url_path"]
    page = w.call("GET", url)
    assert page.status_code == 200
    assert "<script>" not in page.text and "<img" not in page.text
    assert "&lt;script&gt;" in page.text
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Referrer-Policy"] == "no-referrer"
    raw = w.call("GET", url + "/%3Cscript%3Ealert(1)%3C%2Fscript%3E.txt", params={"dl": 1})
    assert raw.status_code == 200 and raw.content == b"xss one"
    assert raw.headers["content-type"] == "application/octet-stream"  # never rendered as HTML by the browser
    assert raw.headers["content-disposition"].startswith("attachment;")


# --- oversized and malformed requests -------------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/login", "/v1/boxes/{box}/members", "/v1/boxes/{box}/links"])
def test_oversized_small_bodies_are_413(unchanged: World, route: str) -> None:
    w = unchanged
    path = route.format(box=w.box)
    big = b'{"user": "' + b"a" * (100 << 10) + b'"}'
    declared = w.call("POST", path, "alice", data=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"
    chunked = w.call("POST", path, "alice", data=iter([big[:50_000], big[50_000:]]),
                     headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["error"] == "too_large"


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"user": 5, "password": []}', b'{"user": "alice"}', b"\xff\xfe",
                                  b'{"user": "' + b"a" * 65 + b'", "password": "x"}'])
def test_malformed_login_bodies(unchanged: World, body: bytes) -> None:
    resp = unchanged.call("POST", "/v1/login", data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code in (400, 422) and resp.headers["content-type"] == "application/json"


@pytest.mark.parametrize("body", [
    {"user": "bob", "path": "shared", "role": "admin"}, {"user": "bob", "path": "../x", "role": "viewer"},
    {"user": "", "path": "", "role": "viewer"}, {"user": "x" * 65}, {"path": "shared"}, {"user": ["bob"]},
    {"user": "bob", "path": "a" * 5000}, {"user": "bob", "path": "/".join(["d"] * 70)},
])
def test_malformed_share_requests(unchanged: World, body: dict[str, Any]) -> None:
    resp = unchanged.call("POST", f"/v1/boxes/{unchanged.box}/members", "alice", json=body)
    assert resp.status_code in (400, 404, 422), resp.text


@pytest.mark.parametrize("body", [
    {"path": "shared", "expires_in": 0}, {"path": "shared", "expires_in": -5}, {"path": "shared", "expires_in": 1e12},
    {"path": "shared", "expires_in": "soon"}, {"path": "nope"}, {"path": "a" * 5000}, {"path": 7},
])
def test_malformed_link_requests(unchanged: World, body: dict[str, Any]) -> None:
    resp = unchanged.call("POST", f"/v1/boxes/{unchanged.box}/links", "alice", json=body)
    assert resp.status_code in (400, 404, 422), resp.text


def test_chunked_commit_over_json_limit_is_413(unchanged: World) -> None:
    """Without a Content-Length, the body is still counted (a bare stream of JSON is not a way around it)."""
    w = unchanged

    def stream() -> Any:
        yield b'{"message": "'
        chunk = b"a" * (1 << 20)
        for _ in range(300):
            yield chunk
        yield b'", "changes": []}'

    resp = w.call("POST", f"/v1/boxes/{w.box}/commits", "alice", data=stream(),
                  headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"] == "too_large"


@pytest.mark.parametrize("path", ["a" * 256, "/".join(["d"] * 65), "/".join(["x" * 200] * 21)])
def test_commit_over_path_limits(unchanged: World, path: str) -> None:
    w = unchanged
    data = b"limit test"
    assert w.upload("alice", data).status_code == 200
    w.settle()
    resp = w.commit("alice", [w.put(path, data)])
    assert resp.status_code == 422 and resp.json()["error"] == "invalid", resp.text


def test_commit_over_change_limit_is_413(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """More changes than a commit may hold: 413, nothing applied (in-process, with the limit lowered to 3)."""
    from starlette.testclient import TestClient

    import server_min.service.changes as service_module
    from server_min.api import create_app
    from server_min.wiring import service_for_data

    monkeypatch.setattr(service_module, "MAX_CHANGES", 3)
    app = create_app(service_for_data(tmp_path / "data"))
    token = app.state.service.add_user("alice")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        box = client.post("/v1/boxes", json={"name": "b"}, headers=auth).json()["id"]
        dirs = [{"path": f"d{i}", "op": "put", "kind": "dir"} for i in range(4)]
        resp = client.post(f"/v1/boxes/{box}/commits", json={"changes": dirs}, headers=auth)
        assert resp.status_code == 413 and resp.json()["error"] == "too_large"
        assert client.get(f"/v1/boxes/{box}/tree", headers=auth).json()["entries"] == []
        assert client.post(f"/v1/boxes/{box}/commits", json={"changes": dirs[:3]}, headers=auth).status_code == 200


# --- passwords -------------------------------------------------------------------------------------


def test_password_guessing_is_rate_limited(world: World) -> None:
    w = world
    import subprocess

    from tests.conftest import BOXCTL

    subprocess.run([*BOXCTL, "admin", "passwd", "carol", "--data", str(w.srv.data)], input="carol's long password\n",
                   text=True, capture_output=True, check=True)
    ok = w.call("POST", "/v1/login", json={"user": "carol", "password": "carol's long password"})
    assert ok.status_code == 200 and ok.json()["token"].startswith("box_")
    assert "password" not in ok.text
    wrong = w.call("POST", "/v1/login", json={"user": "carol", "password": "guess 0"})
    ghost = w.call("POST", "/v1/login", json={"user": "no-such-user", "password": "guess 0"})
    assert wrong.status_code == ghost.status_code == 401 and wrong.json() == ghost.json()  # names stay secret
    for i in range(1, 6):
        last = w.call("POST", "/v1/login", json={"user": "carol", "password": f"guess {i}"})
    assert last.status_code == 429 and int(last.headers["Retry-After"]) >= 1
    locked = w.call("POST", "/v1/login", json={"user": "carol", "password": "carol's long password"})
    assert locked.status_code == 429  # even the right password waits: no oracle during the lock
    assert "carol's long password" not in locked.text


def test_stage_made_in_one_folder_cannot_be_committed_into_another(unchanged: World) -> None:
    """A folder member stages a file under its folder, loses that share and gets another folder: its old
    stage holds paths outside what it may now write, so the commit is refused and nothing lands."""
    w = unchanged
    members = f"/v1/boxes/{w.box}/members"
    data = b"staged by mallory " + str(time.time_ns()).encode()
    assert w.upload("mallory", data).status_code == 200
    w.settle()
    assert w.call("POST", members, "alice", json={"user": "mallory", "path": "shared", "role": "editor"}).ok
    stage = int(w.call("POST", f"/v1/boxes/{w.box}/stages", "mallory").json()["stage"])
    staged = w.call("POST", f"/v1/boxes/{w.box}/stages/{stage}", "mallory", json={"changes": [w.put("x.txt", data)]})
    assert staged.status_code == 200, staged.text
    assert w.call("DELETE", f"{members}/mallory", "alice", params={"path": "shared"}).status_code == 200
    assert w.call("POST", members, "alice", json={"user": "mallory", "path": "private", "role": "editor"}).ok
    try:
        resp = w.call("POST", f"/v1/boxes/{w.box}/commits", "mallory", json={"stage": stage, "changes": []})
        assert resp.status_code == 403, resp.text
    finally:
        assert w.call("DELETE", f"{members}/mallory", "alice", params={"path": "private"}).status_code == 200


def test_download_all_zip_entry_names_stay_inside(world: World) -> None:
    """Hostile but valid names in a folder shared by link: every entry of its "Download all" zip is a
    relative name with no `..` component, no backslash and no drive, so unzipping stays in one folder."""
    import io
    import zipfile

    w = world
    names = ["...", ".. x", "x ..", "-rf", "~", "C:evil.txt", "sub/..hidden", "sub/.../deeper.txt", "é/ü.txt",
             "a\\b.txt", "../up.txt", "/abs.txt"]
    data = b"zip me"
    assert w.upload("mallory", data).status_code == 200
    accepted = [n for n in names if w.commit("mallory", [w.put(n, data)], box=w.mallory_box).status_code == 200]
    assert "..." in accepted and "~" in accepted  # (":" and "\\" are refused at commit)
    share = w.call("POST", f"/v1/boxes/{w.mallory_box}/links", "mallory", json={"path": ""}).json()
    try:
        zipped = w.call("GET", share["url_path"], params={"dl": 1})
        assert zipped.status_code == 200
        entries = zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
        assert len(entries) >= len(accepted)
        for name in entries:
            parts = name.rstrip("/").split("/")
            assert not name.startswith("/") and "\\" not in name and ".." not in parts, name
            assert ":" not in parts[0], name  # the top folder is the link's own name, never a drive
    finally:
        w.call("DELETE", f"/v1/links/{share['id']}", "mallory")
