"""Everyday sync between two devices: add, edit, delete, rename, folders, odd names, modes, links, big files."""

from __future__ import annotations

import os
import shutil
import stat
import time
import unicodedata
from pathlib import Path

from tests.conftest import Device
from tests.e2e.helpers import (
    assert_clean,
    packs,
    pull,
    push,
    random_bytes,
    remote_paths,
    revisions,
    status,
    sync_file,
)


def test_add_file_reaches_other_device(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("hello.txt", "hello world\n")
    pushed = push(a, "-m", "add hello")
    assert pushed["added"] == ["hello.txt"]
    assert pushed["modified"] == [] and pushed["deleted"] == []
    assert isinstance(pushed["seq"], int) and pushed["seq"] >= 1
    assert status(b)["remote_waiting"] >= 1
    pulled = pull(b)
    assert pulled["written"] == ["hello.txt"]
    assert b.files() == {"hello.txt": b"hello world\n"}
    assert_clean(b)
    assert status(b)["remote_waiting"] == 0


def test_edit_file_reaches_other_device(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    sync_file(a, b, "notes.md", "version one\n")
    a.write("notes.md", "version two, a little longer\n")
    pushed = push(a)
    assert pushed["modified"] == ["notes.md"] and pushed["added"] == []
    pulled = pull(b)
    assert pulled["written"] == ["notes.md"] and pulled["conflicts"] == []
    assert b.read("notes.md") == b"version two, a little longer\n"
    # An edit that keeps the same size (and maybe the same mtime second) is still seen.
    b.write("notes.md", "VERSION TWO, A LITTLE LONGER\n")
    assert push(b)["modified"] == ["notes.md"]
    pull(a)
    assert a.read("notes.md") == b"VERSION TWO, A LITTLE LONGER\n"


def test_delete_file_reaches_other_device(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    sync_file(a, b, "gone.txt", "short-lived")
    sync_file(a, b, "stays.txt", "stays")
    (a.root / "gone.txt").unlink()
    pushed = push(a)
    assert pushed["deleted"] == ["gone.txt"] and pushed["added"] == [] and pushed["modified"] == []
    pulled = pull(b)
    assert pulled["deleted"] == ["gone.txt"]
    assert not (b.root / "gone.txt").exists()
    assert b.files() == {"stays.txt": b"stays"}
    assert "gone.txt" not in remote_paths(b)


def test_rename_uploads_no_block(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    data = random_bytes(300_000, seed=1)
    code = random_bytes(50_000, seed=2)
    a.write("old name.bin", data)
    a.write("proj/src/main.py", code)
    a.write("proj/README", "readme")
    push(a)
    pull(b)
    os.rename(a.root / "old name.bin", a.root / "new name.bin")
    os.rename(a.root / "proj", a.root / "project")
    pushed = push(a)
    assert pushed["blocks_sent"] == 0 and pushed["bytes_sent"] == 0, pushed
    assert set(pushed["added"]) == {"new name.bin", "project", "project/src", "project/src/main.py",
                                    "project/README"}
    assert set(pushed["deleted"]) == {"old name.bin", "proj", "proj/src", "proj/src/main.py", "proj/README"}
    pull(b)
    assert not (b.root / "proj").exists()
    assert b.files() == {"new name.bin": data, "project/README": b"readme", "project/src/main.py": code}


def test_nested_folders_and_folder_delete(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("a/top.txt", "top")
    a.write("a/b/c/d/deep.txt", "deep")
    a.write("a/b/side.txt", "side")
    push(a)
    pull(b)
    assert b.files() == {"a/top.txt": b"top", "a/b/c/d/deep.txt": b"deep", "a/b/side.txt": b"side"}
    assert (b.root / "a/b/c/d").is_dir()
    shutil.rmtree(a.root / "a/b")
    pushed = push(a)
    assert set(pushed["deleted"]) == {"a/b", "a/b/c", "a/b/c/d", "a/b/c/d/deep.txt", "a/b/side.txt"}
    pull(b)
    assert not (b.root / "a/b").exists()
    assert b.files() == {"a/top.txt": b"top"}
    assert_clean(b)


def test_unicode_names(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    names = {
        unicodedata.normalize("NFC", "café/naïve résumé.txt"): "résumé body ✓".encode(),
        "日本語.txt": "日本語の本文".encode(),
        "emoji 🎉/space name.md": b"party",
    }
    for rel, data in names.items():
        a.write(rel, data)
    pushed = push(a)
    assert set(names) <= set(pushed["added"])
    pull(b)
    assert b.files() == names
    assert_clean(b)
    assert_clean(a)
    assert revisions(b, "日本語.txt")[0]["path"] == "日本語.txt"


def test_empty_file(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("empty.txt", b"")
    a.write("dir/also-empty", b"")
    pushed = push(a)
    assert "empty.txt" in pushed["added"]
    pull(b)
    assert b.files() == {"empty.txt": b"", "dir/also-empty": b""}
    # A file emptied later is an edit like any other.
    a.write("full.txt", "something")
    push(a)
    a.write("full.txt", b"")
    assert push(a)["modified"] == ["full.txt"]
    pull(b)
    assert b.read("full.txt") == b""


def test_empty_folders(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    (a.root / "empty").mkdir()
    (a.root / "outer/inner").mkdir(parents=True)
    pushed = push(a)
    assert set(pushed["added"]) == {"empty", "outer", "outer/inner"}
    pull(b)
    assert (b.root / "empty").is_dir() and not any((b.root / "empty").iterdir())
    assert (b.root / "outer/inner").is_dir()
    (a.root / "empty").rmdir()
    assert push(a)["deleted"] == ["empty"]
    pull(b)
    assert not (b.root / "empty").exists()
    assert (b.root / "outer/inner").is_dir()


def test_executable_bit_kept(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    script = a.write("run.sh", "#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    a.write("plain.txt", "plain")
    (a.root / "plain.txt").chmod(0o644)
    push(a)
    pull(b)
    assert stat.S_IMODE(os.stat(b.root / "run.sh").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(b.root / "plain.txt").st_mode) & 0o111 == 0
    # Only the mode changes: a modification that sends no block.
    (a.root / "plain.txt").chmod(0o755)
    pushed = push(a)
    assert pushed["modified"] == ["plain.txt"] and pushed["blocks_sent"] == 0, pushed
    pull(b)
    assert stat.S_IMODE(os.stat(b.root / "plain.txt").st_mode) & 0o111 == 0o111


def test_symlinks_synced_as_links_not_followed(two_devices: tuple[Device, Device], tmp_path: Path) -> None:
    a, b = two_devices
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (outside / "secret.txt").write_text("must not be synced")
    a.write("real.txt", "real")
    a.write("docs/page.txt", "page")
    os.symlink("real.txt", a.root / "link.txt")
    os.symlink("docs", a.root / "docs-link")
    os.symlink(str(outside), a.root / "outside")
    os.symlink("nowhere.txt", a.root / "dangling")
    pushed = push(a)
    assert {"link.txt", "docs-link", "outside", "dangling"} <= set(pushed["added"])
    held = remote_paths(a)
    assert {held[p]["kind"] for p in ("link.txt", "docs-link", "outside", "dangling")} == {"link"}
    assert held["outside"]["target"] == str(outside)
    assert not any(p.startswith(("outside/", "docs-link/")) for p in held), sorted(held)
    pulled = pull(b)
    for name, target in (("link.txt", "real.txt"), ("docs-link", "docs"), ("dangling", "nowhere.txt")):
        assert (b.root / name).is_symlink(), name
        assert os.readlink(b.root / name) == target
    # A link from the server that points outside the folder is refused and listed, never made (README).
    assert "outside" in {r["path"] for r in pulled["refused"]}
    assert not (b.root / "outside").is_symlink()
    assert b.files() == {"real.txt": b"real", "docs/page.txt": b"page"}
    assert (outside / "secret.txt").read_text() == "must not be synced"
    # Retargeting a link is a change that reaches the other device.
    os.remove(a.root / "link.txt")
    os.symlink("docs/page.txt", a.root / "link.txt")
    assert push(a)["modified"] == ["link.txt"]
    pull(b)
    assert os.readlink(b.root / "link.txt") == "docs/page.txt"


BIG = 50 * 1024 * 1024


def test_50_mb_file_byte_exact(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    data = random_bytes(BIG, seed=50)
    a.write("big/blob.bin", data)
    started = time.monotonic()
    pushed = push(a)
    assert pushed["added"] == ["big", "big/blob.bin"]
    assert pushed["bytes_plain"] >= BIG and pushed["blocks_sent"] >= 1
    stored = sum(packs(a.server).values())
    assert stored >= BIG * 0.99  # random bytes do not compress
    pulled = pull(b)
    assert pulled["written"] == ["big", "big/blob.bin"]
    got = b.read("big/blob.bin")
    assert len(got) == BIG and got == data
    print(f"50 MB push + pull took {time.monotonic() - started:.1f}s")
