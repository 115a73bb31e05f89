"""What is never synced: .boxignore matches (gitignore syntax) and the .box/ folder itself."""

from __future__ import annotations

import json

from tests.conftest import Device
from tests.e2e.helpers import assert_clean, pull, push, remote_paths, status


def test_boxignore_keeps_files_out(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write(".boxignore", "# build output\n*.tmp\nbuild/\n!keep.tmp\n")
    a.write("src/main.c", "int main(){}")
    a.write("scratch.tmp", "junk")
    a.write("src/deep/also.tmp", "junk")
    a.write("keep.tmp", "negated: synced")
    a.write("build/out.o", "object")
    a.write("src/build/gen.c", "generated")
    a.write("build.txt", "a file named like the folder is not ignored")

    st = status(a)
    assert sorted(st["added"]) == sorted([".boxignore", "src", "src/main.c", "src/deep", "keep.tmp",
                                          "build.txt"])
    pushed = push(a)
    assert sorted(pushed["added"]) == sorted(st["added"])
    held = remote_paths(a)
    for ignored in ("scratch.tmp", "src/deep/also.tmp", "build", "build/out.o", "src/build", "src/build/gen.c"):
        assert ignored not in held, ignored
    b.write("desk-only.tmp", "desk's own scratch file")
    pull(b)
    assert b.files() == {".boxignore": b"# build output\n*.tmp\nbuild/\n!keep.tmp\n", "src/main.c": b"int main(){}",
                         "keep.tmp": b"negated: synced", "build.txt": b"a file named like the folder is not ignored",
                         "desk-only.tmp": b"desk's own scratch file"}
    # The rules came with the pull: the receiver's own ignored files stay local.
    assert push(b)["seq"] is None

    # Changing or deleting an ignored file is not a change either.
    a.write("scratch.tmp", "more junk")
    (a.root / "build/out.o").unlink()
    assert push(a)["seq"] is None
    assert set(remote_paths(a)) == set(held)


def test_box_folder_never_synced(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("visible.txt", "v")
    a.write(".box/extra-note.txt", "private to this device")
    pushed = push(a)
    assert pushed["added"] == ["visible.txt"]
    held = remote_paths(a)
    assert not any(p == ".box" or p.startswith(".box/") for p in held), sorted(held)
    pull(b)
    assert not (b.root / ".box/extra-note.txt").exists()
    # Each device keeps its own identity.
    assert json.loads((b.root / ".box/config").read_text())["device_name"] == "desk"
    assert json.loads((a.root / ".box/config").read_text())["device_name"] == "laptop"
    assert_clean(a)
