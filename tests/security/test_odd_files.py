"""Files a hostile neighbour or an odd program leaves in a synced folder: FIFOs, device nodes, hard links,
names that differ only by case. A push never hangs on them and never silently drops a regular file."""

from __future__ import annotations

import os
import stat

import pytest

from tests.conftest import Device
from tests.e2e.helpers import push, remote_paths


def test_fifos_and_device_nodes_are_skipped_with_a_line_never_a_hang(two_devices: tuple[Device, Device]) -> None:
    a, _ = two_devices
    a.write("plain.txt", "synced")
    os.mkfifo(a.root / "pipe")
    if os.geteuid() == 0:
        os.mknod(a.root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    result = a.run("push", timeout=60)
    assert "not pushed: pipe: not a regular file" in result.err, result.err
    assert set(remote_paths(a)) == {"plain.txt"}


def test_hard_links_and_names_differing_by_case_all_sync(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("one.txt", "shared inode")
    os.link(a.root / "one.txt", a.root / "two.txt")
    a.write("Readme", "upper")
    a.write("readme", "lower")
    result = push(a)
    assert set(result["added"]) == {"one.txt", "two.txt", "Readme", "readme"}
    b.run("pull")
    assert b.read("two.txt") == b"shared inode" and b.read("Readme") == b"upper" and b.read("readme") == b"lower"
    assert os.stat(b.root / "one.txt").st_ino != os.stat(b.root / "two.txt").st_ino  # two files on the device


@pytest.mark.parametrize("name", ["cafe\u0301.txt"])
def test_a_name_not_in_nfc_form_is_listed_not_dropped(two_devices: tuple[Device, Device], name: str) -> None:
    a, _ = two_devices
    a.write(name, "decomposed")
    result = push(a)
    assert any(s["path"] == name for s in result["skipped"]), result


def test_nfc_and_nfd_forms_of_one_name_side_by_side(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("caf\u00e9.txt", "composed")  # NFC
    a.write("cafe\u0301.txt", "decomposed")  # NFD: the same name to a person, another to the disk
    result = push(a)
    assert [s["path"] for s in result["skipped"]] == ["cafe\u0301.txt"], result  # listed, not dropped
    assert set(remote_paths(a)) == {"caf\u00e9.txt"}
    b.run("pull")
    assert b.files() == {"caf\u00e9.txt": b"composed"}  # never the other form's bytes under this name
    assert (a.root / "cafe\u0301.txt").read_bytes() == b"decomposed"  # and nothing of the device is lost
