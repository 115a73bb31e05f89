"""Bad input against the real HTTP API of a real server process: a clear 4xx and nothing stored.

One server process serves the whole module (started with conftest's ServerProc, exactly as the
`server` fixture starts it), so the many small cases stay fast; every case makes its own box, and
checks "nothing stored" as a difference (box head, tree, pack files, /blocks/missing) before and
after the bad request.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import zstandard

from box_common.content import content_hash
from box_common.frames import CODEC_RAW, CODEC_ZSTD, Frame, decode_frames, encode_frames
from tests.conftest import ServerProc, free_port

PACK_LIMIT = 80 << 20
JSON_LIMIT = 256 << 20


@dataclass
class Api:
    """The module's server and two users with their tokens."""

    srv: ServerProc
    alice: str
    bob: str

    @property
    def url(self) -> str:
        return self.srv.url

    def call(self, method: str, path: str, token: str | None, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)

    def packs(self) -> set[Path]:
        return set((self.srv.data / "blocks" / "packs").rglob("*.pack"))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    srv = ServerProc(tmp_path_factory.mktemp("api") / "server-data", free_port())
    srv.start()
    try:
        yield Api(srv, srv.add_user("alice"), srv.add_user("bob"))
    finally:
        srv.kill(signal.SIGTERM)


# --- helpers --------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fresh(size: int = 3000) -> bytes:
    """Bytes no one has uploaded before."""
    return uuid.uuid4().bytes + os.urandom(size)


def assert_error(resp: requests.Response, *statuses: int) -> dict[str, Any]:
    """A 4xx (one of `statuses`) with a JSON body holding a string 'error' and a non-empty 'message'."""
    assert resp.status_code in statuses, f"expected {statuses}, got {resp.status_code}: {resp.text[:300]}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"].strip(), body
    return body


def upload(api: Api, token: str, *blocks: bytes, codec: int = CODEC_RAW) -> requests.Response:
    frames = []
    for data in blocks:
        payload = zstandard.ZstdCompressor().compress(data) if codec == CODEC_ZSTD else data
        frames.append(Frame(sha(data), codec, payload))
    return api.call("POST", "/v1/blocks/pack", token, data=encode_frames(frames),
                    headers={"Content-Type": "application/x-box-frames"})


def missing(api: Api, token: str, hashes: list[str]) -> list[str]:
    resp = api.call("POST", "/v1/blocks/missing", token, json={"hashes": hashes})
    assert resp.status_code == 200, resp.text
    return resp.json()["missing"]


def new_box(api: Api, token: str | None = None, seed: bool = True) -> tuple[int, str]:
    """A fresh box of alice (or `token`'s user), with one commit holding 'seed.txt' when `seed`."""
    token = token or api.alice
    name = f"box-{uuid.uuid4().hex[:12]}"
    resp = api.call("POST", "/v1/boxes", token, json={"name": name})
    assert resp.status_code == 200, resp.text
    box_id = int(resp.json()["id"])
    if seed:
        data = fresh(100)
        assert upload(api, token, data).status_code == 200
        put = {"path": "seed.txt", "op": "put", "size": len(data), "blocks": [sha(data)]}
        resp = api.call("POST", f"/v1/boxes/{box_id}/commits", token, json={"message": "seed", "changes": [put]})
        assert resp.status_code == 200, resp.text
    return box_id, name


def head(api: Api, box_id: int, token: str | None = None) -> int:
    resp = api.call("GET", f"/v1/boxes/{box_id}", token or api.alice)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["head"])


def tree_paths(api: Api, box_id: int, token: str | None = None) -> list[str]:
    resp = api.call("GET", f"/v1/boxes/{box_id}/tree", token or api.alice)
    assert resp.status_code == 200, resp.text
    return [e["path"] for e in resp.json()["entries"]]


def commit(api: Api, box_id: int, changes: list[dict[str, Any]], token: str | None = None,
           message: str = "test") -> requests.Response:
    return api.call("POST", f"/v1/boxes/{box_id}/commits", token or api.alice,
                    json={"message": message, "changes": changes})


def raw_request(port: int, method: str, path: str, headers: dict[str, str],
                body: bytes = b"") -> tuple[int, Any, str]:
    """Send exactly these headers (requests would rewrite Content-Length) and read the JSON answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None), resp.getheader("content-type", "")
    finally:
        conn.close()


# --- the happy path first: what the bad cases are measured against ------------------------------


def test_upload_commit_and_read_back(api: Api) -> None:
    box_id, _ = new_box(api, seed=False)
    text = b"hello box\n" * 2000  # compressible: travels as zstd
    noise = fresh(5000)  # incompressible: travels raw
    resp = upload(api, api.alice, text, codec=CODEC_ZSTD)
    assert resp.status_code == 200, resp.text
    assert resp.json()["stored"] == 1
    assert upload(api, api.alice, noise).status_code == 200
    assert missing(api, api.alice, [sha(text), sha(noise)]) == []

    changes = [
        {"path": "docs/a.txt", "op": "put", "size": len(text), "blocks": [sha(text)], "mode": 0o644},
        {"path": "b.bin", "op": "put", "size": len(noise), "blocks": [sha(noise)]},
        {"path": "both.bin", "op": "put", "size": len(text) + len(noise), "blocks": [sha(text), sha(noise)]},
    ]
    resp = commit(api, box_id, changes, message="first")
    assert resp.status_code == 200, resp.text
    seq = resp.json()["seq"]
    assert seq == 1 and resp.json()["changes"] == 3
    assert head(api, box_id) == 1

    page = api.call("GET", f"/v1/boxes/{box_id}/changes", api.alice, params={"cursor": 0}).json()
    assert sorted(e["path"] for e in page["entries"]) == ["b.bin", "both.bin", "docs/a.txt"]
    assert page["cursor"] == 1 and page["head"] == 1 and page["more"] is False
    assert api.call("GET", f"/v1/boxes/{box_id}/changes", api.alice, params={"cursor": 1}).json()["entries"] == []

    tree = api.call("GET", f"/v1/boxes/{box_id}/tree", api.alice).json()
    by_path = {e["path"]: e for e in tree["entries"]}
    assert set(by_path) == {"b.bin", "both.bin", "docs/a.txt"}
    both = by_path["both.bin"]
    assert both["blocks"] == [sha(text), sha(noise)]
    assert both["size"] == len(text) + len(noise)
    assert both["content_hash"] == content_hash("file", bytes.fromhex(sha(text) + sha(noise)), None)
    sub = api.call("GET", f"/v1/boxes/{box_id}/tree", api.alice, params={"path": "docs"}).json()
    assert [e["path"] for e in sub["entries"]] == ["docs/a.txt"]

    log = api.call("GET", f"/v1/boxes/{box_id}/log", api.alice).json()
    assert [c["seq"] for c in log["commits"]] == [1]
    assert log["commits"][0]["message"] == "first" and log["commits"][0]["user"] == "alice"
    revs = api.call("GET", f"/v1/boxes/{box_id}/log", api.alice, params={"path": "docs/a.txt"}).json()
    assert [(r["rev"], r["op"]) for r in revs["revisions"]] == [(1, "put")]

    got = api.call("GET", f"/v1/blocks/{sha(text)}", api.alice)
    assert got.status_code == 200 and got.content == text
    assert api.call("GET", f"/v1/blocks/{sha(noise)}", api.alice).content == noise
    fetched = api.call("POST", "/v1/blocks/fetch", api.alice, json={"hashes": [sha(noise), sha(text)]})
    assert fetched.status_code == 200
    frames = list(decode_frames(fetched.content))
    assert [f.sha256 for f in frames] == [sha(noise), sha(text)]
    plain = [bytes(f.payload) if f.codec == CODEC_RAW else zstandard.ZstdDecompressor().decompress(f.payload)
             for f in frames]
    assert plain == [noise, text]

    one = fresh(700)
    put = api.call("PUT", f"/v1/blocks/{sha(one)}", api.alice, data=one, headers={"X-Box-Codec": "raw"})
    assert put.status_code == 200, put.text
    assert api.call("GET", f"/v1/blocks/{sha(one)}", api.alice).content == one

    # A delete is a new commit; the old version stays readable in the snapshot.
    resp = commit(api, box_id, [{"path": "b.bin", "op": "delete", "parent_rev": 1}])
    assert resp.status_code == 200, resp.text
    assert resp.json() | {"time": 0} == {"seq": 2, "previous_head": 1, "changes": 1, "time": 0}
    assert "b.bin" not in tree_paths(api, box_id)
    old = api.call("GET", f"/v1/boxes/{box_id}/tree", api.alice, params={"at": 1}).json()
    assert "b.bin" in [e["path"] for e in old["entries"]]
    waited = api.call("GET", f"/v1/boxes/{box_id}/wait", api.alice, params={"cursor": 0, "timeout": 0}).json()
    assert waited["changes"] is True and waited["head"] == 2


def test_pack_of_new_stored_repeated_and_zstd_blocks_reads_back_each(api: Api) -> None:
    """Blocks stored already or repeated are squeezed out of the pack: every block still reads back."""
    stored, big, small, text = fresh(5000), fresh((3 << 20) + 123), fresh(777), b"zstd me " * 5000
    assert upload(api, api.alice, stored).status_code == 200
    packs = api.packs()
    frames = [Frame(sha(big), CODEC_RAW, big), Frame(sha(stored), CODEC_RAW, stored),
              Frame(sha(small), CODEC_RAW, small), Frame(sha(big), CODEC_RAW, big),
              Frame(sha(text), CODEC_ZSTD, zstandard.ZstdCompressor().compress(text))]
    resp = api.call("POST", "/v1/blocks/pack", api.alice, data=encode_frames(frames))
    assert resp.status_code == 200, resp.text
    assert resp.json()["received"] == 5 and resp.json()["stored"] == 4
    new_packs = api.packs() - packs
    assert len(new_packs) == 1
    assert new_packs.pop().stat().st_size == len(big) + len(small) + len(frames[4].payload)  # nothing else
    for data in (stored, big, small, text):
        assert api.call("GET", f"/v1/blocks/{sha(data)}", api.alice).content == data


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_pack_is_stored_whole_and_reads_back(api: Api, chunked: bool) -> None:
    """Several MiB of new blocks (the common upload) land in one pack: page-aligned part and tail."""
    blocks = [fresh((1 << 20) + 4095), fresh(3 << 20), fresh(10)]
    body = encode_frames([Frame(sha(b), CODEC_RAW, b) for b in blocks])
    packs = api.packs()
    data: Any = body if not chunked else (body[i : i + 100_000] for i in range(0, len(body), 100_000))
    resp = api.call("POST", "/v1/blocks/pack", api.alice, data=data)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"received": 3, "stored": 3, "bytes": len(body)}
    new_packs = api.packs() - packs
    assert len(new_packs) == 1 and new_packs.pop().read_bytes() == b"".join(blocks)  # payloads only
    for data in blocks:
        assert api.call("GET", f"/v1/blocks/{sha(data)}", api.alice).content == data
    assert missing(api, api.alice, [sha(b) for b in blocks]) == []


def test_openapi_lists_v1_routes(api: Api) -> None:
    resp = requests.get(f"{api.url}/openapi.json", timeout=10)
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for route, method in [
        ("/v1/health", "get"), ("/v1/me", "get"), ("/v1/devices", "post"), ("/v1/boxes", "post"),
        ("/v1/boxes", "get"), ("/v1/boxes/{box_id}", "get"), ("/v1/blocks/missing", "post"),
        ("/v1/blocks/pack", "post"), ("/v1/blocks/{sha256}", "put"), ("/v1/blocks/{sha256}", "get"),
        ("/v1/blocks/fetch", "post"), ("/v1/boxes/{box_id}/commits", "post"), ("/v1/boxes/{box_id}/changes", "get"),
        ("/v1/boxes/{box_id}/wait", "get"), ("/v1/boxes/{box_id}/tree", "get"), ("/v1/boxes/{box_id}/log", "get"),
    ]:
        assert route in paths, f"{route} missing from openapi.json"
        assert method in paths[route], f"{method.upper()} {route} missing from openapi.json"
    assert all(p.startswith("/v1/") for p in paths)


# --- malformed bodies -----------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b'{"hashes": [', b"\xff\xfe\x00", b""])
def test_malformed_json_body_on_missing(api: Api, body: bytes) -> None:
    resp = api.call("POST", "/v1/blocks/missing", api.alice, data=body, headers={"Content-Type": "application/json"})
    assert_error(resp, 400, 422)


@pytest.mark.parametrize("body", [b'{"message": "x", "changes": [', b"changes=1", b"[]", b'{"changes": "all"}',
                                  b'{"changes": [{"op": "put"}]}', b'{"changes": [{"path": 5, "op": "put"}]}'])
def test_malformed_commit_body_changes_nothing(api: Api, body: bytes) -> None:
    box_id, _ = new_box(api)
    before = head(api, box_id), tree_paths(api, box_id)
    resp = api.call("POST", f"/v1/boxes/{box_id}/commits", api.alice, data=body,
                    headers={"Content-Type": "application/json"})
    assert_error(resp, 400, 422)
    assert (head(api, box_id), tree_paths(api, box_id)) == before


@pytest.mark.parametrize("hashes", [["xyz"], ["A" * 64], ["0" * 63], [5], "not-a-list"])
def test_missing_refuses_bad_hashes(api: Api, hashes: Any) -> None:
    assert_error(api.call("POST", "/v1/blocks/missing", api.alice, json={"hashes": hashes}), 400, 422)


@pytest.mark.parametrize("change", [
    {"path": "x.txt", "op": "rename"},
    {"path": "x.txt", "op": "put", "kind": "socket"},
    {"path": "x.txt", "op": "put", "size": -1, "blocks": []},
    {"path": "x.txt", "op": "put", "mode": "rw"},
    {"path": "x.txt", "op": "put", "blocks": ["nothex"]},
    {"path": "x.txt", "op": "put", "kind": "link", "target": ""},
    {"path": "seed.txt", "op": "delete", "parent_rev": 0},  # stale parent: 409
    {"path": "never.txt", "op": "delete", "parent_rev": 0},  # deleting what is not there: 409
])
def test_bad_change_changes_nothing(api: Api, change: dict[str, Any]) -> None:
    box_id, _ = new_box(api)
    before = head(api, box_id), tree_paths(api, box_id)
    assert_error(commit(api, box_id, [change]), 400, 409, 422)
    assert (head(api, box_id), tree_paths(api, box_id)) == before


def test_commit_edge_cases_change_nothing(api: Api) -> None:
    box_id, _ = new_box(api)
    data = fresh(50)
    assert upload(api, api.alice, data).status_code == 200
    good = {"path": "new.txt", "op": "put", "size": len(data), "blocks": [sha(data)]}
    before = head(api, box_id), tree_paths(api, box_id)
    assert_error(commit(api, box_id, []), 400)
    assert_error(commit(api, box_id, [good, good]), 400)  # same path twice
    assert_error(commit(api, box_id, [good | {"size": len(data) + 1}]), 422)  # size does not match the blocks
    # One change conflicts: the good one is not applied either (all or nothing), and the 409 names the path.
    body = assert_error(commit(api, box_id, [good, {"path": "seed.txt", "op": "put", "parent_rev": 7,
                                                    "size": len(data), "blocks": [sha(data)]}]), 409)
    assert [c["path"] for c in body["conflicts"]] == ["seed.txt"]
    assert (head(api, box_id), tree_paths(api, box_id)) == before
    assert commit(api, box_id, [good]).status_code == 200  # and the same change alone is fine


# --- blocks that do not match their hash ----------------------------------------------------


def test_pack_with_wrong_hash_stores_nothing(api: Api) -> None:
    good, bad, claimed = fresh(), fresh(), fresh()
    packs = api.packs()
    body = encode_frames([Frame(sha(good), CODEC_RAW, good), Frame(sha(claimed), CODEC_RAW, bad)])
    resp = api.call("POST", "/v1/blocks/pack", api.alice, data=body)
    assert_error(resp, 400, 422)
    assert api.packs() == packs
    # Not even the good frame of the same body was kept.
    assert missing(api, api.alice, [sha(good), sha(claimed), sha(bad)]) == [sha(good), sha(claimed), sha(bad)]
    assert_error(api.call("GET", f"/v1/blocks/{sha(good)}", api.alice), 404)
    assert_error(api.call("GET", f"/v1/blocks/{sha(claimed)}", api.alice), 404)


def test_pack_with_wrong_hash_in_zstd_payload_stores_nothing(api: Api) -> None:
    real, claimed = b"A" * 10_000, fresh()
    packs = api.packs()
    body = encode_frames([Frame(sha(claimed), CODEC_ZSTD, zstandard.ZstdCompressor().compress(real))])
    assert_error(api.call("POST", "/v1/blocks/pack", api.alice, data=body), 400, 422)
    assert_error(api.call("POST", "/v1/blocks/pack", api.alice,
                          data=encode_frames([Frame(sha(claimed), CODEC_ZSTD, b"not zstd at all")])), 400, 422)
    assert api.packs() == packs
    assert missing(api, api.alice, [sha(claimed), sha(real)]) == [sha(claimed), sha(real)]


@pytest.mark.parametrize("mangle", ["truncated_header", "truncated_payload", "unknown_codec"])
def test_malformed_pack_stores_nothing(api: Api, mangle: str) -> None:
    data = fresh()
    body = bytearray(encode_frames([Frame(sha(data), CODEC_RAW, data)]))
    if mangle == "truncated_header":
        body = body[:20]
    elif mangle == "truncated_payload":
        body = body[:-1]
    else:
        body[32] = 9
    packs = api.packs()
    assert_error(api.call("POST", "/v1/blocks/pack", api.alice, data=bytes(body)), 400, 422)
    assert api.packs() == packs
    assert missing(api, api.alice, [sha(data)]) == [sha(data)]


def test_put_block_with_wrong_hash_stores_nothing(api: Api) -> None:
    data, claimed = fresh(), fresh()
    packs = api.packs()
    resp = api.call("PUT", f"/v1/blocks/{sha(claimed)}", api.alice, data=data, headers={"X-Box-Codec": "raw"})
    assert_error(resp, 400, 422)
    assert api.packs() == packs
    assert missing(api, api.alice, [sha(claimed), sha(data)]) == [sha(claimed), sha(data)]


@pytest.mark.parametrize("name,codec", [("nothex" * 9 + "z", "raw"), ("ab", "raw"), ("0" * 64, "gzip")])
def test_put_block_bad_name_or_codec(api: Api, name: str, codec: str) -> None:
    packs = api.packs()
    resp = api.call("PUT", f"/v1/blocks/{name}", api.alice, data=b"abc", headers={"X-Box-Codec": codec})
    assert_error(resp, 400, 422)
    assert api.packs() == packs


# --- commits naming blocks that are not there -----------------------------------------------


def test_commit_naming_a_block_never_uploaded(api: Api) -> None:
    box_id, _ = new_box(api)
    ghost = fresh()
    before = head(api, box_id), tree_paths(api, box_id)
    body = assert_error(commit(api, box_id, [{"path": "ghost.bin", "op": "put", "size": len(ghost),
                                              "blocks": [sha(ghost)]}]), 422)
    assert body.get("missing") == [sha(ghost)]
    assert (head(api, box_id), tree_paths(api, box_id)) == before


# --- paths ----------------------------------------------------------------------------------


BAD_PATHS = [
    "../escape.txt", "a/../../b.txt", "a/..", "..", "/etc/passwd", "/abs/x", "a\x00b.txt", "nul\x00",
    "cafe\u0301.txt",  # NFD: not canonical
    "dir/re\u0301sume\u0301.txt", "a\\b.txt", "a//b", "./a", "a/./b", "a/", "", ".box/config", ".box",
    "C:/Windows/x", "tab\there", "x" * 256, "/".join(["d"] * 65),
]


@pytest.mark.parametrize("path", BAD_PATHS, ids=[repr(p)[:40] for p in BAD_PATHS])
def test_commit_with_bad_path_changes_nothing(api: Api, path: str) -> None:
    box_id, _ = new_box(api)
    data = fresh(64)
    assert upload(api, api.alice, data).status_code == 200
    before = head(api, box_id), tree_paths(api, box_id)
    good = {"path": "fine.txt", "op": "put", "size": len(data), "blocks": [sha(data)]}
    bad = {"path": path, "op": "put", "size": len(data), "blocks": [sha(data)]}
    assert_error(commit(api, box_id, [bad]), 400, 422)
    assert_error(commit(api, box_id, [good, bad]), 400, 422)  # the good change is not applied either
    assert (head(api, box_id), tree_paths(api, box_id)) == before


@pytest.mark.parametrize("route", ["tree", "log"])
@pytest.mark.parametrize("path", ["..", "../x", "a/../../b", "a\x00b"])
def test_tree_and_log_refuse_bad_paths(api: Api, route: str, path: str) -> None:
    box_id, _ = new_box(api)
    assert_error(api.call("GET", f"/v1/boxes/{box_id}/{route}", api.alice, params={"path": path}), 400, 422)


# --- boxes that are not there or not yours --------------------------------------------------


@pytest.mark.parametrize("box_id", [424242, 0])
def test_unknown_box_id(api: Api, box_id: int) -> None:
    data = fresh(10)
    assert upload(api, api.alice, data).status_code == 200
    for method, route, kw in [
        ("GET", "", {}), ("GET", "/changes", {}), ("GET", "/tree", {}), ("GET", "/log", {}),
        ("GET", "/pending", {}), ("GET", "/wait", {"params": {"timeout": 0}}),
        ("POST", "/commits", {"json": {"changes": [{"path": "a", "op": "put", "size": 10, "blocks": [sha(data)]}]}}),
    ]:
        body = assert_error(api.call(method, f"/v1/boxes/{box_id}{route}", api.alice, **kw), 404)
        assert body["error"] == "not_found"


@pytest.mark.parametrize("box_id", ["99999999999999999999999", str(1 << 63), "-1", "abc", "1.5"])
def test_out_of_range_box_id_is_a_client_error(api: Api, box_id: str) -> None:
    """An id that is no box (too big for SQLite, negative, not a number) is a 4xx, never a 500."""
    assert_error(api.call("GET", f"/v1/boxes/{box_id}", api.alice), 404, 422)
    assert_error(api.call("GET", f"/v1/boxes/{box_id}/tree", api.alice), 404, 422)


def test_other_users_box_is_not_found_and_leaks_nothing(api: Api) -> None:
    box_id, name = new_box(api)
    secret = fresh(80)
    assert upload(api, api.alice, secret).status_code == 200
    assert commit(api, box_id, [{"path": "secret-plans.txt", "op": "put", "size": len(secret),
                                 "blocks": [sha(secret)]}], message="top secret message").status_code == 200
    before = head(api, box_id), tree_paths(api, box_id)
    bob_data = fresh(30)
    assert upload(api, api.bob, bob_data).status_code == 200
    device = api.call("POST", "/v1/devices", api.bob, json={"name": "bobs-laptop"}).json()["id"]
    unknown = 10**9
    for method, route, kw in [
        ("GET", "", {}), ("GET", "/changes", {}), ("GET", "/tree", {}), ("GET", "/tree", {"params": {"at": 1}}),
        ("GET", "/log", {}), ("GET", "/log", {"params": {"path": "secret-plans.txt"}}), ("GET", "/pending", {}),
        ("GET", "/wait", {"params": {"timeout": 0}}),
        ("POST", "/ack", {"json": {"device": device, "cursor": 1}}),
        ("POST", "/commits", {"json": {"changes": [
            {"path": "secret-plans.txt", "op": "put", "parent_rev": 2, "size": len(bob_data),
             "blocks": [sha(bob_data)]}]}}),
        ("POST", "/commits", {"json": {"changes": [{"path": "seed.txt", "op": "delete", "parent_rev": 1}]}}),
    ]:
        resp = api.call(method, f"/v1/boxes/{box_id}{route}", api.bob, **kw)
        body = assert_error(resp, 404)
        for leak in (name, "secret-plans", "top secret", "seed.txt", "alice", sha(secret)):
            assert leak not in resp.text, f"{method} {route} leaks {leak!r}: {resp.text}"
        # The same answer as for a box that does not exist at all.
        other = api.call(method, f"/v1/boxes/{unknown}{route}", api.bob, **kw)
        assert other.status_code == 404
        assert other.json() == json.loads(json.dumps(body).replace(str(box_id), str(unknown))), (route, body)
    assert_error(api.call("GET", "/v1/boxes", api.bob, params={"name": f"alice/{name}"}), 404)
    assert_error(api.call("GET", f"/v1/blocks/{sha(secret)}", api.bob), 404)
    assert_error(api.call("POST", "/v1/blocks/fetch", api.bob, json={"hashes": [sha(secret)]}), 404)
    assert missing(api, api.bob, [sha(secret)]) == [sha(secret)]
    me = api.call("GET", "/v1/me", api.bob).json()
    assert box_id not in [b["id"] for b in me["boxes"]]
    assert (head(api, box_id), tree_paths(api, box_id)) == before


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "Bearer ", "Bearer box_wrongtoken", "Basic YWxpY2U6cHc=", "box_no_scheme"])
def test_missing_or_wrong_token_is_401(api: Api, auth: str | None) -> None:
    box_id, _ = new_box(api)
    before = head(api, box_id), tree_paths(api, box_id)
    data = fresh(20)
    packs = api.packs()
    headers = {"Authorization": auth} if auth is not None else {}
    for method, route, kw in [
        ("GET", "/v1/me", {}), ("GET", f"/v1/boxes/{box_id}", {}), ("GET", f"/v1/boxes/{box_id}/tree", {}),
        ("POST", "/v1/blocks/missing", {"json": {"hashes": [sha(data)]}}),
        ("POST", "/v1/blocks/pack", {"data": encode_frames([Frame(sha(data), CODEC_RAW, data)])}),
        ("PUT", f"/v1/blocks/{sha(data)}", {"data": data}),
        ("POST", f"/v1/boxes/{box_id}/commits", {"json": {"changes": [{"path": "seed.txt", "op": "delete",
                                                                       "parent_rev": 1}]}}),
    ]:
        resp = requests.request(method, f"{api.url}{route}", headers=headers, timeout=10, **kw)
        assert_error(resp, 401)
    assert api.packs() == packs
    assert missing(api, api.alice, [sha(data)]) == [sha(data)]
    assert (head(api, box_id), tree_paths(api, box_id)) == before


def test_revoked_device_token_is_401_and_stores_nothing(api: Api) -> None:
    box_id, _ = new_box(api)
    device = api.call("POST", "/v1/devices", api.alice, json={"name": f"lost-{uuid.uuid4().hex[:8]}"}).json()
    token = device["token"]
    data = fresh(40)
    assert upload(api, token, data).status_code == 200  # the device token works while it is active
    resp = api.call("POST", f"/v1/devices/{device['id']}/revoke", api.alice)
    assert resp.status_code == 200, resp.text
    before = head(api, box_id), tree_paths(api, box_id)
    packs = api.packs()
    other = fresh(40)
    assert_error(api.call("GET", "/v1/me", token), 401)
    assert_error(upload(api, token, other), 401)
    assert_error(commit(api, box_id, [{"path": "late.txt", "op": "put", "size": 40, "blocks": [sha(data)]}],
                        token=token), 401)
    assert api.packs() == packs
    assert missing(api, api.alice, [sha(other)]) == [sha(other)]
    assert (head(api, box_id), tree_paths(api, box_id)) == before
    assert api.call("GET", "/v1/me", api.alice).status_code == 200  # the user's other tokens still work


# --- the missing-blocks oracle --------------------------------------------------------------


def test_blocks_of_other_users_stay_missing_and_unreadable(api: Api) -> None:
    box_id, _ = new_box(api)
    bobs = fresh(4000)
    assert upload(api, api.bob, bobs).status_code == 200
    assert missing(api, api.bob, [sha(bobs)]) == []
    never = fresh(4000)
    # To alice, bob's block looks exactly like one that is nowhere on the server.
    assert missing(api, api.alice, [sha(bobs), sha(never)]) == [sha(bobs), sha(never)]
    got = assert_error(api.call("GET", f"/v1/blocks/{sha(bobs)}", api.alice), 404)
    nope = assert_error(api.call("GET", f"/v1/blocks/{sha(never)}", api.alice), 404)
    assert got["message"].replace(sha(bobs), "X") == nope["message"].replace(sha(never), "X")
    fetched = api.call("POST", "/v1/blocks/fetch", api.alice, json={"hashes": [sha(bobs)]})
    assert_error(fetched, 404)
    assert bobs not in fetched.content
    # Alice cannot commit it without proving she holds it.
    before = head(api, box_id), tree_paths(api, box_id)
    body = assert_error(commit(api, box_id, [{"path": "stolen.bin", "op": "put", "size": len(bobs),
                                              "blocks": [sha(bobs)]}]), 422)
    assert body.get("missing") == [sha(bobs)]
    assert (head(api, box_id), tree_paths(api, box_id)) == before
    # Once she uploads it herself, it is hers to commit and read.
    assert upload(api, api.alice, bobs).status_code == 200
    assert missing(api, api.alice, [sha(bobs)]) == []
    assert commit(api, box_id, [{"path": "mine.bin", "op": "put", "size": len(bobs),
                                 "blocks": [sha(bobs)]}]).status_code == 200
    assert api.call("GET", f"/v1/blocks/{sha(bobs)}", api.alice).content == bobs


def test_upload_answer_does_not_reveal_other_users_blocks(api: Api) -> None:
    """Uploading a block bob already stored must answer like uploading a brand-new block of the same size.

    Otherwise the upload itself is the cross-user confirmation oracle that /blocks/missing hides.
    """
    bobs, new = fresh(4000), fresh(4000)
    assert upload(api, api.bob, bobs).status_code == 200
    known = upload(api, api.alice, bobs)
    unknown = upload(api, api.alice, new)
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json()


# --- oversized bodies -----------------------------------------------------------------------


@pytest.mark.parametrize("method,route,limit", [
    ("POST", "/v1/blocks/pack", PACK_LIMIT),
    ("PUT", "/v1/blocks/" + "ab" * 32, PACK_LIMIT),
    ("POST", "/v1/blocks/missing", PACK_LIMIT),
    ("POST", "/v1/boxes/{box}/commits", JSON_LIMIT),
])
def test_content_length_over_limit_is_413(api: Api, method: str, route: str, limit: int) -> None:
    box_id, _ = new_box(api)
    before = head(api, box_id), tree_paths(api, box_id)
    packs = api.packs()
    status, body, ctype = raw_request(api.srv.port, method, route.format(box=box_id), {
        "Authorization": f"Bearer {api.alice}", "Content-Type": "application/octet-stream",
        "Content-Length": str(limit + 1),
    }, b"x" * 100)
    assert status == 413, body
    assert ctype.startswith("application/json")
    assert body["error"] and body["message"]
    assert api.packs() == packs
    assert (head(api, box_id), tree_paths(api, box_id)) == before


def test_streamed_pack_over_limit_is_413(api: Api) -> None:
    """No Content-Length (chunked upload): the server still stops at the limit and stores nothing."""
    packs = api.packs()
    data = fresh(1000)
    frame = encode_frames([Frame(sha(data), CODEC_RAW, data)])
    piece = b"\0" * (1 << 20)

    def body() -> Iterator[bytes]:
        yield frame
        remaining = PACK_LIMIT + 1 - len(frame)  # one byte over the limit in all
        while remaining > 0:
            n = min(remaining, len(piece))
            remaining -= n
            yield piece[:n]

    resp = api.call("POST", "/v1/blocks/pack", api.alice, data=body())
    assert_error(resp, 413)
    assert api.packs() == packs
    assert missing(api, api.alice, [sha(data)]) == [sha(data)]


# --- anything else the server does not know ---------------------------------------------------


def test_unknown_route_and_method_answer_json_errors(api: Api) -> None:
    """Rule 7: every 4xx carries a JSON body with 'error' and 'message', not only those of known routes."""
    assert_error(api.call("GET", "/v1/no-such-route", api.alice), 404)
    assert_error(api.call("DELETE", "/v1/me", api.alice), 405)


# --- staged commits: a commit sent in parts ----------------------------------------------------


def stage(api: Api, box_id: int, changes: list[dict[str, Any]], stage_id: int | None = None,
          token: str | None = None) -> tuple[int, requests.Response]:
    """Add `changes` to `stage_id` (a new stage when None); return the stage id and the answer."""
    token = token or api.alice
    if stage_id is None:
        resp = api.call("POST", f"/v1/boxes/{box_id}/stages", token)
        assert resp.status_code == 200, resp.text
        stage_id = int(resp.json()["stage"])
    return stage_id, api.call("POST", f"/v1/boxes/{box_id}/stages/{stage_id}", token, json={"changes": changes})


def commit_stage(api: Api, box_id: int, stage_id: int, changes: list[dict[str, Any]] | None = None,
                 token: str | None = None, key: str | None = None) -> requests.Response:
    body: dict[str, Any] = {"message": "staged", "changes": changes or [], "stage": stage_id}
    if key is not None:
        body["key"] = key
    return api.call("POST", f"/v1/boxes/{box_id}/commits", token or api.alice, json=body)


def puts(api: Api, names: list[str]) -> list[dict[str, Any]]:
    """Upload one fresh block per name; the changes that put them."""
    datas = [fresh(40) for _ in names]
    assert upload(api, api.alice, *datas).status_code == 200
    return [{"path": n, "op": "put", "size": len(d), "blocks": [sha(d)], "mtime_ns": 5}
            for n, d in zip(names, datas, strict=True)]


def test_staged_commit_applies_every_part_at_once(api: Api) -> None:
    box_id, _ = new_box(api)
    start = head(api, box_id)
    first = puts(api, [f"a/{i}.txt" for i in range(30)])
    second = [
        *puts(api, [f"b/{i}.txt" for i in range(20)]),
        {"path": "seed.txt", "op": "delete", "parent_rev": start},
        {"path": "emptydir", "op": "put", "kind": "dir"},
        {"path": "link", "op": "put", "kind": "link", "target": "a/0.txt"},
    ]
    last = puts(api, ["last.txt"])
    stage_id, resp = stage(api, box_id, first)
    assert resp.status_code == 200 and resp.json() == {"stage": stage_id, "staged": 30}, resp.text
    _, resp = stage(api, box_id, second, stage_id)
    assert resp.json()["staged"] == 53
    _, resp = stage(api, box_id, second, stage_id)  # a retried part changes nothing
    assert resp.status_code == 200 and resp.json()["staged"] == 53
    # Staged changes are seen by no reader until the commit.
    assert head(api, box_id) == start and tree_paths(api, box_id) == ["seed.txt"]
    resp = commit_stage(api, box_id, stage_id, last, key="stagedkey1")
    assert resp.status_code == 200, resp.text
    assert resp.json()["seq"] == start + 1 and resp.json()["changes"] == 54
    assert head(api, box_id) == start + 1
    expected = sorted([c["path"] for c in first + second + last if c["op"] == "put"])
    assert tree_paths(api, box_id) == expected
    changes = api.call("GET", f"/v1/boxes/{box_id}/changes?cursor={start}", api.alice).json()
    assert {e["seq"] for e in changes["entries"]} == {start + 1} and len(changes["entries"]) == 54
    by_path = {e["path"]: e for e in changes["entries"]}
    assert by_path["a/3.txt"]["blocks"] == first[3]["blocks"] and by_path["a/3.txt"]["size"] == 40 + 16
    assert by_path["link"]["target"] == "a/0.txt" and by_path["seed.txt"]["op"] == "delete"
    # The blocks read back through the box; the stage is gone; a retried commit is answered, not re-applied.
    assert api.call("GET", f"/v1/blocks/{first[0]['blocks'][0]}", api.alice).status_code == 200
    assert commit_stage(api, box_id, stage_id, key="stagedkey1").json()["replayed"] is True
    assert_error(commit_stage(api, box_id, stage_id), 404)
    assert_error(stage(api, box_id, last, stage_id)[1], 404)
    assert head(api, box_id) == start + 1


def test_bad_stage_part_stages_nothing(api: Api) -> None:
    box_id, _ = new_box(api)
    good = puts(api, ["good.txt"])
    stage_id, resp = stage(api, box_id, good)
    assert resp.json()["staged"] == 1
    never = fresh(10)
    for bad in ([{"path": "x.txt", "op": "put", "size": 10, "blocks": [sha(never)]}],  # block not uploaded: 422
                [puts(api, ["y.txt"])[0] | {"size": 1}],  # size does not match: 422
                [{"path": "../x", "op": "put", "blocks": []}],  # bad path: 400
                puts(api, ["z.txt"]) * 2,  # same path twice in one part: 400
                []):  # nothing: 400
        assert_error(stage(api, box_id, bad, stage_id)[1], 400, 422)
    resp = commit_stage(api, box_id, stage_id)
    assert resp.status_code == 200 and resp.json()["changes"] == 1
    assert tree_paths(api, box_id) == ["good.txt", "seed.txt"]


def test_staged_conflict_applies_nothing_and_names_the_path(api: Api) -> None:
    box_id, _ = new_box(api)
    before = head(api, box_id), tree_paths(api, box_id)
    fine = puts(api, [f"f{i}.txt" for i in range(5)])
    stale = puts(api, ["seed.txt"])[0] | {"parent_rev": 0}  # seed.txt exists: a put based on nothing conflicts
    stage_id, resp = stage(api, box_id, [*fine, stale])
    assert resp.status_code == 200
    body = assert_error(commit_stage(api, box_id, stage_id), 409)
    assert [c["path"] for c in body["conflicts"]] == ["seed.txt"]
    assert (head(api, box_id), tree_paths(api, box_id)) == before
    # Staging the path again with the right parent replaces its change; then the commit goes through.
    _, resp = stage(api, box_id, [stale | {"parent_rev": before[0]}], stage_id)
    assert resp.json()["staged"] == 6
    assert commit_stage(api, box_id, stage_id).status_code == 200
    assert head(api, box_id) == before[0] + 1


def test_stage_of_another_user_or_box_is_not_found(api: Api) -> None:
    box_id, _ = new_box(api)
    other_box, _ = new_box(api)
    stage_id, resp = stage(api, box_id, puts(api, ["x.txt"]))
    assert resp.status_code == 200
    bobs_box, _ = new_box(api, api.bob, seed=False)
    assert_error(commit_stage(api, bobs_box, stage_id, token=api.bob), 404)
    assert_error(commit_stage(api, box_id, stage_id, token=api.bob), 404)  # not bob's box at all
    assert_error(commit_stage(api, other_box, stage_id), 404)  # alice's stage, but of another box
    empty_id, _ = stage(api, box_id, [])
    assert_error(commit_stage(api, box_id, empty_id), 400)  # an empty stage commits nothing
    assert head(api, box_id) == 1 and head(api, other_box) == 1
    assert commit_stage(api, box_id, stage_id).status_code == 200


def test_commit_by_key_finds_only_a_landed_commit(api: Api) -> None:
    """GET .../commits/by-key/{key}: how a push that died before the answer learns its commit landed."""
    box_id, _ = new_box(api)
    data = fresh(50)
    assert upload(api, api.alice, data).status_code == 200
    put = {"path": "k.txt", "op": "put", "size": len(data), "blocks": [sha(data)]}
    resp = api.call("POST", f"/v1/boxes/{box_id}/commits", api.alice, json={"changes": [put], "key": "landedkey1"})
    assert resp.status_code == 200, resp.text
    found = api.call("GET", f"/v1/boxes/{box_id}/commits/by-key/landedkey1", api.alice)
    assert found.status_code == 200 and found.json()["seq"] == resp.json()["seq"], found.text
    assert found.json()["changes"] == 1
    assert_error(api.call("GET", f"/v1/boxes/{box_id}/commits/by-key/neversentkey", api.alice), 404)
    assert_error(api.call("GET", f"/v1/boxes/{box_id}/commits/by-key/landedkey1", api.bob), 404)  # not bob's box
    assert_error(api.call("GET", f"/v1/boxes/{box_id}/commits/by-key/bad%20key!", api.alice), 422)
