"""A link chain built across two pulls (issue 18): a target accepted while a name in it is a folder must
not escape once a later pull turns that folder into a link.

Pull 1 brings `esc -> d/up/../../x` while `d/up` is a folder (inside, then); pull 2 turns `d/up` into a
link `-> ..` (inside on its own). Followed together, `esc` would lead two folders above the synced folder.
The client refuses a `..` after a name, so `esc` is never made, and every link left resolves inside.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boxctl.engine.linkcheck import check_link_target
from boxctl.local.workspace import UnsafePath
from tests.conftest import Device
from tests.security.evil_server import EvilServer, legit_entry


def _links_resolve_inside(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_symlink():
            assert Path(os.path.realpath(path)).is_relative_to(root.resolve()), (path, os.readlink(path))


def test_a_link_chain_built_across_two_pulls_never_escapes(evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, honest, target, _ = evil
    entry = legit_entry(srv)
    folder = {**entry, "kind": "dir", "blocks": [], "size": 0, "content_hash": ""}
    link = {**entry, "kind": "link", "blocks": [], "size": 0}
    srv.poison = [folder | {"path": "d"}, folder | {"path": "d/up"},
                  link | {"path": "esc", "target": "d/up/../../x"}]
    honest.write("one.txt", "carries pull 1")
    honest.run("push")
    first = target.run("pull", "--json", check=False)
    assert first.code == 0, first.err
    assert "esc" in {r["path"] for r in first.json()["refused"]}
    assert (target.root / "d" / "up").is_dir()

    srv.poison = [link | {"path": "d/up", "target": ".."}]
    honest.write("two.txt", "carries pull 2")
    honest.run("push")
    second = target.run("pull", "--json", check=False)
    assert second.code == 0, second.err
    assert "Traceback" not in second.err
    assert (target.root / "d" / "up").is_symlink()  # fine on its own: it points at the root
    assert not (target.root / "esc").is_symlink()
    _links_resolve_inside(target.root)


@pytest.mark.parametrize("target", ["d/up/../../x", "a/..", "./a/../../b", "x/./../y"])
def test_dot_dot_after_a_name_is_refused(target: str) -> None:
    with pytest.raises(UnsafePath, match="after a name"):
        check_link_target("esc", target)


@pytest.mark.parametrize("target", ["../b", "../../c/d", "./../e", "a/b/c", "."])
def test_leading_dot_dot_within_the_depth_is_accepted(target: str) -> None:
    check_link_target("p/q/link", target)
