"""server_min/kinds.py against a real server: no commit may leave a file (or link) holding other paths.

Each case checks the 409 `not_a_folder` answer names the paths, and that nothing was committed;
then that the same change, made whole (the folder's children deleted in the same commit), goes through.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerProc, free_port
from tests.test_api import (
    Api,
    assert_error,
    commit,
    commit_stage,
    head,
    new_box,
    puts,
    stage,
    tree_paths,
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One server for the module, as in tests/test_api.py."""
    srv = ServerProc(tmp_path_factory.mktemp("kinds") / "server-data", free_port())
    srv.start()
    try:
        yield Api(srv, srv.add_user("alice"), srv.add_user("bob"))
    finally:
        srv.kill(signal.SIGTERM)


def clash(resp: Any) -> list[dict[str, Any]]:
    """The paths of a 409 not_a_folder answer."""
    body = assert_error(resp, 409)
    assert body["error"] == "not_a_folder", body
    assert "pull" in body["message"], body
    return body["paths"]


def revs(api: Api, box_id: int) -> dict[str, int]:
    tree = api.call("GET", f"/v1/boxes/{box_id}/tree", api.alice).json()
    return {e["path"]: e["seq"] for e in tree["entries"]}


def test_file_given_children_in_one_commit(api: Api) -> None:
    box_id, _ = new_box(api)
    before = head(api, box_id), tree_paths(api, box_id)
    paths = clash(commit(api, box_id, puts(api, ["x", "x/y", "x/z/deep"])))
    assert paths == [{"path": "x", "kind": "file", "children": ["x/y", "x/z/deep"]}]
    link = {"path": "l", "op": "put", "kind": "link", "target": "seed.txt"}
    assert clash(commit(api, box_id, [link, *puts(api, ["l/inside"])])) == [
        {"path": "l", "kind": "link", "children": ["l/inside"]}]
    assert (head(api, box_id), tree_paths(api, box_id)) == before


def test_file_given_children_against_an_existing_file(api: Api) -> None:
    box_id, _ = new_box(api)
    before = head(api, box_id), tree_paths(api, box_id)
    # Directly inside it, and deeper through a folder that exists only through its paths.
    paths = clash(commit(api, box_id, puts(api, ["seed.txt/inner", "ok/a.txt"])))
    assert paths == [{"path": "seed.txt", "kind": "file", "children": ["seed.txt/inner"]}]
    assert clash(commit(api, box_id, puts(api, ["seed.txt/a/b"])))[0]["path"] == "seed.txt"
    # Staged in parts: checked against the stage as a whole, when it is committed.
    stage_id, resp = stage(api, box_id, puts(api, ["p/1.txt"]))
    assert resp.status_code == 200
    stage(api, box_id, puts(api, ["seed.txt/staged"]), stage_id)
    assert clash(commit_stage(api, box_id, stage_id))[0] == {
        "path": "seed.txt", "kind": "file", "children": ["seed.txt/staged"]}
    assert (head(api, box_id), tree_paths(api, box_id)) == before
    # Made whole: the file becomes a folder in the same commit.
    rev = revs(api, box_id)["seed.txt"]
    folder = {"path": "seed.txt", "op": "put", "kind": "dir", "parent_rev": rev}
    resp = commit(api, box_id, [folder, *puts(api, ["seed.txt/inner"])])
    assert resp.status_code == 200, resp.text
    assert tree_paths(api, box_id) == ["seed.txt", "seed.txt/inner"]


def test_file_put_over_a_folder_whose_children_remain(api: Api) -> None:
    box_id, _ = new_box(api, seed=False)
    names = ["d/a", "d/b", "d/sub/c", "implicit/x", "top/f", "top/in/x"]
    folder = [{"path": "d", "op": "put", "kind": "dir"}, *puts(api, names)]
    assert commit(api, box_id, folder).status_code == 200
    rev = revs(api, box_id)
    before = head(api, box_id), tree_paths(api, box_id)
    file_d = puts(api, ["d"])[0] | {"parent_rev": rev["d"]}
    delete = [{"path": p, "op": "delete", "parent_rev": rev[p]} for p in ("d/a", "d/sub/c")]
    assert clash(commit(api, box_id, [file_d, *delete])) == [{"path": "d", "kind": "file", "children": ["d/b"]}]
    # A folder that exists only through the paths under it counts the same.
    assert clash(commit(api, box_id, puts(api, ["implicit"]))) == [
        {"path": "implicit", "kind": "file", "children": ["implicit/x"]}]
    assert clash(commit(api, box_id, puts(api, ["top/in", "top/g"]))) == [
        {"path": "top/in", "kind": "file", "children": ["top/in/x"]}]
    # Staged: the file in one part, the deletes in another, one child left out.
    stage_id, _ = stage(api, box_id, [file_d])
    stage(api, box_id, delete, stage_id)
    assert clash(commit_stage(api, box_id, stage_id))[0]["children"] == ["d/b"]
    assert (head(api, box_id), tree_paths(api, box_id)) == before
    # With every child deleted in the same (staged) commit, the folder becomes a file.
    resp = commit_stage(api, box_id, stage_id, [{"path": "d/b", "op": "delete", "parent_rev": rev["d/b"]}])
    assert resp.status_code == 200, resp.text
    assert tree_paths(api, box_id) == ["d", "implicit/x", "top/f", "top/in/x"]
