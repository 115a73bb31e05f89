"""The shortest whole round trip: push on one device, pull on another."""

from __future__ import annotations

from tests.conftest import Device


def test_push_then_pull_between_two_devices(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("notes/hello.txt", "hello")
    a.run("push", "-m", "first")
    b.run("pull")
    assert b.read("notes/hello.txt") == b"hello"
    assert b.run("status", "--json").json()["remote_waiting"] == 0
