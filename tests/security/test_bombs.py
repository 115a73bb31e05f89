"""Decompression and delta bombs: small uploads that would make the server allocate, compute or store GiBs.

Each answer must be a 413 or 422 with a JSON body, nothing of it stored, and the server's peak memory
(VmHWM) must not grow by more than a fraction of what the bomb declares.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
import zstandard

from box_common.frames import CODEC_DELTA, CODEC_RAW, CODEC_ZSTD, Frame, encode_frames
from tests.security.conftest import World, sha

MIB = 1 << 20


def peak_rss(w: World) -> int:
    """The server process's peak resident memory, in bytes."""
    assert w.srv.proc is not None
    for line in Path(f"/proc/{w.srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def declaring(size: int) -> bytes:
    """A zstd frame that really holds `size` zero bytes and says so in its header (a few KiB per GiB)."""
    cobj = zstandard.ZstdCompressor(level=1).compressobj(size=size)
    zeros = bytes(MIB)
    parts = [cobj.compress(zeros) for _ in range(size // MIB)]
    return b"".join(parts) + cobj.flush()


def header_only(size: int) -> bytes:
    """17 bytes: a zstd frame header declaring `size` bytes (single segment, 8-byte size), then one raw byte."""
    return b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", size) + b"\x09\x00\x00" + b"x"


def refused(w: World, resp: object, statuses: tuple[int, ...] = (413, 422)) -> None:
    assert resp.status_code in statuses, (resp.status_code, resp.text[:300])  # type: ignore[attr-defined]
    assert resp.headers["content-type"] == "application/json"  # type: ignore[attr-defined]
    assert resp.json()["error"] in ("too_large", "invalid")  # type: ignore[attr-defined]


def pack(w: World, frames: list[Frame]) -> object:
    return w.call("POST", "/v1/blocks/pack", "mallory", data=encode_frames(frames))


def test_zstd_declaring_a_gib_is_refused_before_it_is_allocated(unchanged: World) -> None:
    w = unchanged
    bomb = declaring(1 << 30)
    assert len(bomb) < 64 << 10
    before = peak_rss(w)
    resp = w.call("PUT", f"/v1/blocks/{sha(b'x')}", "mallory", data=bomb, headers={"X-Box-Codec": "zstd"})
    refused(w, resp)
    assert peak_rss(w) - before < 128 * MIB


@pytest.mark.parametrize("declared", [64 << 30, (1 << 64) - 2])
def test_zstd_header_declaring_64_gib_is_422_not_500(unchanged: World, declared: int) -> None:
    w = unchanged
    resp = w.call("PUT", f"/v1/blocks/{sha(b'x')}", "mallory", data=header_only(declared),
                  headers={"X-Box-Codec": "zstd"})
    refused(w, resp)
    resp = pack(w, [Frame(sha(b"y"), CODEC_ZSTD, header_only(declared))])
    refused(w, resp)


def test_block_over_the_block_limit_is_not_stored(unchanged: World) -> None:
    """32 MiB of plain bytes in a 3 KB upload: over the 16 MiB limit on blocks, refused and not stored."""
    w = unchanged
    plain = bytes(32 * MIB)
    resp = w.call("PUT", f"/v1/blocks/{sha(plain)}", "mallory", data=zstandard.ZstdCompressor().compress(plain),
                  headers={"X-Box-Codec": "zstd"})
    refused(w, resp)
    raw = os.urandom(16 * MIB + 100)
    refused(w, pack(w, [Frame(sha(raw), CODEC_RAW, raw)]))
    assert w.call("POST", "/v1/blocks/missing", "mallory", json={"hashes": [sha(plain), sha(raw)]}).json()[
        "missing"] == [sha(plain), sha(raw)]


def test_delta_ops_declaring_64_gib_are_refused(world: World) -> None:
    w = world
    base = b"mallory's base " + os.urandom(4096)
    assert w.upload("mallory", base).status_code == 200
    w.settle()
    payload = bytes.fromhex(sha(base)) + (2048).to_bytes(4, "big") + header_only(64 << 30)
    refused(w, pack(w, [Frame(sha(b"z"), CODEC_DELTA, payload)]))
    assert w.snapshot() == w.before


def test_delta_amplification_is_bounded_and_stores_nothing(world: World) -> None:
    """30 delta frames of ~100 bytes, each copying a whole 16 MiB base: 480 MiB of blocks from 3 KB."""
    w = world
    base = os.urandom(16 * MIB)
    assert w.upload("mallory", base).status_code == 200
    w.settle()
    window = 1 << 20
    frames = []
    for i in range(30):
        tail = f"variant {i}".encode()
        ops = struct.pack(">cII", b"C", 0, 15) + struct.pack(">cI", b"L", len(tail)) + tail
        plain = base[: 15 * window] + tail
        payload = bytes.fromhex(sha(base)) + window.to_bytes(4, "big") + zstandard.ZstdCompressor().compress(ops)
        frames.append(Frame(sha(plain), CODEC_DELTA, payload))
    body = encode_frames(frames)
    assert len(body) < 4096
    before = peak_rss(w)
    resp = w.call("POST", "/v1/blocks/pack", "mallory", data=body)
    refused(w, resp, (413,))
    assert peak_rss(w) - before < 256 * MIB
    assert w.snapshot() == w.before  # no pack written
    hashes = [f.sha256 for f in frames]
    assert w.call("POST", "/v1/blocks/missing", "mallory", json={"hashes": hashes}).json()["missing"] == hashes


def test_many_small_zstd_frames_expanding_to_16_mib_each_are_refused(unchanged: World) -> None:
    w = unchanged
    frames = []
    for i in range(20):
        plain = bytes(16 * MIB - 16) + i.to_bytes(16, "big")
        frames.append(Frame(hashlib.sha256(plain).hexdigest(), CODEC_ZSTD, zstandard.ZstdCompressor().compress(plain)))
    body = encode_frames(frames)
    assert len(body) < 64 << 10
    refused(w, w.call("POST", "/v1/blocks/pack", "mallory", data=body), (413,))
    hashes = [f.sha256 for f in frames]
    assert w.call("POST", "/v1/blocks/missing", "mallory", json={"hashes": hashes}).json()["missing"] == hashes


def test_a_real_clients_largest_pack_still_fits(world: World) -> None:
    """boxctl sends up to 32 MiB of plain bytes per pack plus one block of up to 16 MiB: all compressible
    here, so the body is tiny, and it must still be accepted."""
    w = world
    frames = []
    for i in range(3):
        plain = bytes(16 * MIB - 17) + os.urandom(16) + i.to_bytes(1, "big")
        frames.append(Frame(hashlib.sha256(plain).hexdigest(), CODEC_ZSTD, zstandard.ZstdCompressor().compress(plain)))
    resp = w.call("POST", "/v1/blocks/pack", "mallory", data=encode_frames(frames))
    assert resp.status_code == 200, resp.text
    assert resp.json()["stored"] == 3


def test_the_cpu_cap_of_an_upload_answers_413_and_stores_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 10 s CPU cap of one upload's decoding, lowered so the test is fast: the same pack that fits
    the byte budget answers 413 once its decoding has used up the CPU time, and nothing of it is kept."""
    from fastapi.testclient import TestClient

    from server_min.api.app import create_app
    from server_min.service import expand
    from server_min.wiring import service_for_data

    assert expand.CPU_SECONDS == 10.0
    service = service_for_data(tmp_path / "data")
    app = create_app(service)
    token = service.add_user("mallory")
    frames = []
    for i in range(12):  # 12 x 4 MiB of plain bytes: far inside the byte budget, a few tens of ms to decode
        plain = os.urandom(16) + bytes(4 * MIB - 32) + i.to_bytes(16, "big")
        frames.append(Frame(hashlib.sha256(plain).hexdigest(), CODEC_ZSTD, zstandard.ZstdCompressor().compress(plain)))
    body = encode_frames(frames)
    hashes = [f.sha256 for f in frames]
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        monkeypatch.setattr(expand, "CPU_SECONDS", 0.0)
        answer = client.post("/v1/blocks/pack", content=body, headers=headers)
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"] == "too_large" and "too long" in answer.json()["message"]
        assert client.post("/v1/blocks/missing", json={"hashes": hashes}, headers=headers).json()["missing"] == hashes
        monkeypatch.setattr(expand, "CPU_SECONDS", 10.0)
        assert client.post("/v1/blocks/pack", content=body, headers=headers).status_code == 200
