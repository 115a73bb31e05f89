"""What reaches the server: each block once (dedup), and nothing at all without a valid token."""

from __future__ import annotations

import json

from tests.conftest import Device
from tests.e2e.helpers import commits, one_line_error, packs, pull, push, random_bytes, remote_paths


def test_identical_file_sends_no_block(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    data = random_bytes(400_000, seed=7)
    a.write("photos/original.jpg", data)
    a.write("photos/same again.jpg", data)  # identical files in one push: each block goes once
    first = push(a)
    assert first["blocks_sent"] >= 1 and first["bytes_plain"] == len(data), first
    stored = packs(a.server)
    assert stored and sum(stored.values()) >= len(data) * 0.99

    a.write("backup/copy of original.jpg", data)
    second = push(a)
    assert second["added"] == ["backup", "backup/copy of original.jpg"]
    assert second["blocks_sent"] == 0 and second["bytes_sent"] == 0, second
    assert packs(a.server) == stored

    # The same content pushed from the other device of the same user is not sent again either.
    pull(b)
    b.write("desk copy.jpg", data)
    third = push(b)
    assert third["added"] == ["desk copy.jpg"] and third["blocks_sent"] == 0, third
    assert packs(a.server) == stored
    pull(a)
    assert a.read("desk copy.jpg") == data


def test_bad_token_is_refused_and_stores_nothing(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("base.txt", "base")
    push(a)
    pull(b)
    stored = packs(a.server)
    history = commits(a)

    creds_file = b.config / "credentials.json"
    creds = json.loads(creds_file.read_text())
    wrong = "box_" + "x" * 43
    for entry in creds.values():  # the account token and every device token of this machine
        entry["token"] = wrong
        for device in entry.get("devices", {}).values():
            device["token"] = wrong
    creds_file.write_text(json.dumps(creds))

    b.write("secret.bin", random_bytes(100_000, seed=9))
    b.write("base.txt", "edited with a bad token")
    for command in (["push"], ["push", "--json"], ["pull"], ["status"], ["log"]):
        res = b.run(*command, check=False)
        assert res.code != 0, (command, res)
        line = one_line_error(res)
        assert "token" in line.lower(), line
        assert res.out == "", (command, res.out)

    # Logging in with a wrong token fails the same way and stores no credentials.
    fresh = b.config.parent / "config-intruder"
    fresh.mkdir()
    login = b.run("login", b.server.url, "--user", "alice", "--token", "box_not-a-real-token", cwd=fresh,
                  env=b.env() | {"BOX_CONFIG_DIR": str(fresh)}, check=False)
    assert login.code != 0 and "token" in one_line_error(login).lower()
    assert not (fresh / "credentials.json").exists()

    assert packs(a.server) == stored
    assert commits(a) == history
    assert set(remote_paths(a)) == {"base.txt"}
    assert b.read("base.txt") == b"edited with a bad token"
