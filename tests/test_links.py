"""server_min/links.py and link_pages.py in-process: link lifecycle, the streamed zip, escaping, headers."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from server_min.api import create_app, link_pages, ranges
from server_min.service.links import ZIP_PART
from server_min.wiring import service_for_data


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], int, dict[str, bytes]]]:
    app = create_app(service_for_data(tmp_path / "data"))
    token = app.state.service.add_user("alice")
    auth = {"Authorization": f"Bearer {token}"}
    files = {"docs/a.txt": b"alpha\n", "docs/sub/b.bin": os.urandom(3 * ZIP_PART // 2),
             "docs/sub/deeper/c.txt": b"", "other.txt": b"not in the link"}
    with TestClient(app) as client:
        box = client.post("/v1/boxes", json={"name": "b"}, headers=auth).json()["id"]
        changes = []
        for path, data in files.items():
            digest = hashlib.sha256(data).hexdigest()
            if data:
                assert client.put(f"/v1/blocks/{digest}", content=data, headers=auth | {"X-Box-Codec": "raw"}
                                  ).status_code == 200
            changes.append({"path": path, "op": "put", "kind": "file", "size": len(data),
                            "blocks": [digest] if data else [], "mode": 0o755 if path.endswith(".bin") else 0o644})
        changes.append({"path": "docs/empty", "op": "put", "kind": "dir"})
        changes.append({"path": "docs/ln", "op": "put", "kind": "link", "target": "../other.txt"})
        assert client.post(f"/v1/boxes/{box}/commits", json={"changes": changes}, headers=auth).status_code == 200
        yield client, auth, box, files


def _link(client: TestClient, auth: dict[str, str], box: int, path: str, **extra: Any) -> dict[str, Any]:
    resp = client.post(f"/v1/boxes/{box}/links", json={"path": path, **extra}, headers=auth)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_folder_zip_streams_everything_under_the_link(site: Any) -> None:
    client, auth, box, files = site
    link = _link(client, auth, box, "docs")
    with client.stream("GET", link["url_path"], params={"dl": 1}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
        assert "content-length" not in resp.headers  # streamed, not built first
        body = b"".join(resp.iter_bytes())
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        assert names == {"docs/a.txt", "docs/sub/b.bin", "docs/sub/deeper/c.txt", "docs/empty/"}
        assert zf.read("docs/sub/b.bin") == files["docs/sub/b.bin"]
        assert zf.read("docs/sub/deeper/c.txt") == b""
        assert (zf.getinfo("docs/sub/b.bin").external_attr >> 16) & 0o777 == 0o755


def test_listing_pages_and_direct_downloads(site: Any) -> None:
    client, auth, box, files = site
    link = _link(client, auth, box, "docs")
    page = client.get(link["url_path"])
    assert page.status_code == 200
    for name in ("a.txt", "sub/", "empty/", "ln", "Download all"):
        assert name in page.text
    assert "other.txt" in page.text  # as the target of the symlink, shown as text, never followed
    assert client.get(link["url_path"] + "/ln", params={"dl": 1}).status_code == 404
    assert client.get(link["url_path"] + "/sub/b.bin", params={"dl": 1}).content == files["docs/sub/b.bin"]
    sub = client.get(link["url_path"] + "/sub")
    assert "b.bin" in sub.text and "deeper/" in sub.text and "a.txt" not in sub.text
    for header, value in link_pages.HEADERS.items():
        assert page.headers[header] == value


def test_file_link_and_expiry_validation(site: Any) -> None:
    client, auth, box, _ = site
    link = _link(client, auth, box, "docs/a.txt", expires_in=3600)
    assert link["expires"] is not None and link["kind"] == "file"
    assert client.get(link["url_path"] + "/anything").status_code == 404  # a file link has no inside
    direct = client.get(link["url_path"], params={"dl": 1})
    assert direct.content == b"alpha\n" and direct.headers["content-length"] == "6"
    listed = client.get("/v1/links", headers=auth).json()["links"]
    assert [entry["path"] for entry in listed] == ["docs/a.txt"] and "token" not in str(listed)
    assert client.post(f"/v1/boxes/{box}/links", json={"path": "docs/ln"}, headers=auth).status_code == 400
    assert client.post(f"/v1/boxes/{box}/links", json={"path": "nope"}, headers=auth).status_code == 404


def test_link_to_a_deleted_file_is_gone(site: Any) -> None:
    client, auth, box, _ = site
    link = _link(client, auth, box, "docs/a.txt")
    rev = client.get(f"/v1/boxes/{box}/tree", params={"path": "docs/a.txt"}, headers=auth).json()["entries"][0]["seq"]
    client.post(f"/v1/boxes/{box}/commits", headers=auth,
                json={"changes": [{"path": "docs/a.txt", "op": "delete", "kind": "file", "parent_rev": rev}]})
    assert client.get(link["url_path"]).status_code == 404


NAMES = ["plain.txt", "naïve résumé.pdf", 'quote".txt', "semi;colon", "pct%41.txt", "日本.txt"]


@pytest.mark.parametrize("name", NAMES)
def test_content_disposition_survives_any_name(name: str) -> None:
    header = link_pages.content_disposition(name)
    assert header.startswith("attachment; filename=\"")
    assert header.isascii() and "\n" not in header
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert '"' not in fallback and ";" not in fallback


def test_pages_escape_names() -> None:
    page = link_pages.folder_page("/l/t", "root", "", "<b>root</b>",
                                  [{"name": "<script>x</script>", "kind": "file", "size": 1, "mtime_ns": 0}])
    assert "<script>x" not in page and "&lt;script&gt;" in page and "<b>root" not in page
    assert link_pages.STYLE_HASH in link_pages.CSP


def test_a_range_reads_only_the_blocks_that_hold_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte range is mapped onto the block list first: the blocks before and after it are never read."""
    app = create_app(service_for_data(tmp_path / "data"))
    service = app.state.service
    token = service.add_user("alice")
    auth = {"Authorization": f"Bearer {token}"}
    blocks = [os.urandom(1000 + i) for i in range(5)]  # sizes 1000..1004
    digests = [hashlib.sha256(b).hexdigest() for b in blocks]
    with TestClient(app) as client:
        box = client.post("/v1/boxes", json={"name": "b"}, headers=auth).json()["id"]
        for digest, data in zip(digests, blocks, strict=True):
            client.put(f"/v1/blocks/{digest}", content=data, headers=auth | {"X-Box-Codec": "raw"})
        change = {"path": "f.bin", "op": "put", "kind": "file", "size": sum(map(len, blocks)), "blocks": digests}
        assert client.post(f"/v1/boxes/{box}/commits", json={"changes": [change]}, headers=auth).status_code == 200
        url = _link(client, auth, box, "f.bin")["url_path"]
        read: list[str] = []
        plain = service.links.blocks.verified_plain
        monkeypatch.setattr(service.links.blocks, "verified_plain",
                            lambda block: (read.append(block.sha256.hex()), plain(block))[1])
        whole = b"".join(blocks)
        start, stop = 1000 + 1001 + 10, 1000 + 1001 + 1002 + 20  # from inside block 2 into block 3
        resp = client.get(url, params={"dl": 1}, headers={"Range": f"bytes={start}-{stop - 1}"})
        assert resp.status_code == 206 and resp.content == whole[start:stop]
        assert read == digests[2:4]
        read.clear()
        assert client.head(url, params={"dl": 1}).status_code == 200 and read == []  # HEAD reads no block


@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 10, None), ("bytes=0-4", 10, (0, 5)), ("bytes=5-", 10, (5, 10)), ("bytes=-3", 10, (7, 10)),
    ("bytes=-30", 10, (0, 10)), ("bytes=8-100", 10, (8, 10)), ("bytes=0-0,5-6", 10, None), ("items=0-4", 10, None),
    ("bytes=5-2", 10, None), ("bytes=-", 10, None), ("BYTES = 1 - 2", 10, (1, 3)),
])
def test_byte_ranges_are_read_as_rfc_9110_says(header: str | None, size: int, expected: Any) -> None:
    assert ranges.byte_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"),
                         [("bytes=10-", 10), ("bytes=11-20", 10), ("bytes=-0", 10), ("bytes=-5", 0)])
def test_a_range_past_the_end_is_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(ranges.Unsatisfiable):
        ranges.byte_range(header, size)
