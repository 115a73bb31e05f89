"""What a hostile server can make the client hold or write (issue 18): an endless JSON answer, a file
whose bytes run past its declared size, a zstd bomb, and a restore --to that would fill the disk.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from boxctl.errors import ServerRefused
from boxctl.transport import MAX_ANSWER, Transport
from tests.conftest import BOXCTL, Device, Result
from tests.security.evil_server import EvilServer, legit_entry

PIECE = b'{"path": "' + b"x" * 1000 + b'", "op": "put"},'
GIVE_UP = 256 << 20  # the server stops there: an unbounded client would have read it all
# Runs a command in a fresh small process and writes its peak memory (KiB) to a file. A command started by
# pytest itself starts with pytest's own peak as its high-water mark (the kernel carries it over exec), so
# a pytest grown by earlier tests would be measured instead of the command.
PEAK_OF = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
           "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
           "sys.exit(code)")


class _Endless(BaseHTTPRequestHandler):
    """GET /endless: a JSON page that never ends (close-delimited); GET /declared: a Content-Length of 1 TiB."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/v1/declared"):
            self.send_header("Content-Length", str(1 << 40))
        self.end_headers()
        sent = 0
        try:
            self.wfile.write(b'{"entries": [')
            while sent < GIVE_UP:
                self.wfile.write(PIECE * 64)
                sent += len(PIECE) * 64
        except OSError:
            pass  # the client hung up: what it should do

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endless() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_an_endless_json_answer_is_cut_at_the_cap(endless: str) -> None:
    transport = Transport(endless, "token", retries=0)
    limit = 4 << 20
    with pytest.raises(ServerRefused, match="bytes boxctl accepts"):
        transport.get_json("/endless", max_bytes=limit)
    transport.close()
    assert MAX_ANSWER <= 64 << 20  # and the default cap is what docs/security.md says


def test_an_answer_declaring_more_than_the_cap_is_refused_unread(endless: str) -> None:
    transport = Transport(endless, "token", retries=0)
    with pytest.raises(ServerRefused, match="1,099,511,627,776 bytes"):
        transport.get_json("/declared")
    transport.close()


def test_a_file_whose_blocks_run_past_its_declared_size_is_refused(
        evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, honest, target, _ = evil
    entry = legit_entry(srv)
    # One small block listed 2,000 times under a size of 13 bytes: the free-space check counts 13.
    srv.poison = [entry | {"path": "bomb.bin", "blocks": entry["blocks"] * 2000}]
    honest.write("legit.txt", "next version")
    honest.run("push")
    result = target.run("pull", "--json", check=False)
    assert "Traceback" not in result.err, result.err
    damaged = {d["path"]: d["reason"] for d in result.json()["damaged"]}
    assert "declares" in damaged.get("bomb.bin", ""), result.out
    assert not (target.root / "bomb.bin").exists()
    assert target.read("legit.txt") == b"next version"  # the pull went on
    assert not [p for p in target.root.iterdir() if p.name.startswith(".box-")]  # no temp left


def test_restore_to_checks_free_space_before_it_writes(
        evil: tuple[EvilServer, Device, Device, Path], tmp_path: Path) -> None:
    srv, _, target, _ = evil
    entry = legit_entry(srv)
    honest_tree = srv.service.journal.tree

    def tree(caller: Any, box_id: int, at: int | None, when: float | None, prefix: str) -> dict[str, Any]:
        answer = honest_tree(caller, box_id, at, when, prefix)
        answer["entries"] = answer["entries"] + [entry | {"path": "huge.bin", "size": 1 << 50}]
        return answer

    srv.service.journal.tree = tree
    dest = tmp_path / "restored"
    result = target.run("restore", ".", "--rev", str(entry["seq"]), "--to", str(dest), check=False)
    assert result.code == 1 and "not enough free space" in result.err, result
    assert "Traceback" not in result.err
    assert not dest.exists() or list(dest.iterdir()) == []


def test_restore_to_refuses_a_file_over_its_declared_size(
        evil: tuple[EvilServer, Device, Device, Path], tmp_path: Path) -> None:
    srv, _, target, _ = evil
    entry = legit_entry(srv)
    honest_tree = srv.service.journal.tree

    def tree(caller: Any, box_id: int, at: int | None, when: float | None, prefix: str) -> dict[str, Any]:
        answer = honest_tree(caller, box_id, at, when, prefix)
        answer["entries"] = answer["entries"] + [entry | {"path": "bomb.bin", "blocks": entry["blocks"] * 500}]
        return answer

    srv.service.journal.tree = tree
    dest = tmp_path / "restored"
    result = target.run("restore", ".", "--rev", str(entry["seq"]), "--to", str(dest), "--json", check=False)
    assert result.code == 0, result.err
    assert "bomb.bin" in {r["path"] for r in result.json()["refused"]}
    assert not (dest / "bomb.bin").exists()
    assert (dest / "legit.txt").read_bytes() == b"legit content"


class _NewNamesTransport:
    """Pages of new names, each page moving on, the head always further."""

    received_bytes = 0

    def get_json(self, route: str, **params: Any) -> dict[str, Any]:
        cursor = params["cursor"]
        entries = [{"path": f"n{cursor}-{i}", "seq": cursor + 1} for i in range(500)]
        return {"entries": entries, "cursor": cursor + 1, "head": 1 << 61, "more": True}


def test_a_change_feed_is_bounded_in_paths_held(monkeypatch: pytest.MonkeyPatch) -> None:
    from boxctl.engine import Engine
    from boxctl.engine import pull as pull_module

    assert pull_module.MAX_FEED_PATHS <= 1_000_000  # about 1.3 GB of entries at most
    monkeypatch.setattr(pull_module, "MAX_FEED_PATHS", 2000)
    engine = Engine.__new__(Engine)
    engine.transport = _NewNamesTransport()  # type: ignore[assignment]
    engine.config = type("C", (), {"box_id": 1, "folder": ""})()  # type: ignore[assignment]
    with pytest.raises(ServerRefused, match="2,000 paths"):
        engine.remote_changes(0)


def test_zstd_bombs_from_the_server_are_refused_in_bounded_memory(
        evil: tuple[EvilServer, Device, Device, Path], tmp_path: Path) -> None:
    """The evil server answers two blocks with zstd bombs: one frame declaring 1 GiB in its header, one
    that declares no content size and streams 64 MiB of zeros. Each file is listed as damaged, the other
    files of the pull are written, and the client never holds more than about one block."""
    import hashlib

    import zstandard

    from box_common.frames import CODEC_ZSTD, Frame, encode_frames

    srv, honest, target, _ = evil
    declared = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (1 << 30).to_bytes(8, "little") + b"\x09\x00\x00" + b"x"
    sizeless = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    endless = b"".join(sizeless.compress(bytes(1 << 20)) for _ in range(64)) + sizeless.flush()
    assert zstandard.get_frame_parameters(endless).content_size in (0, -1, zstandard.CONTENTSIZE_UNKNOWN)
    one, two = b"first file, bombed", b"second file, bombed"
    bombs = {hashlib.sha256(one).hexdigest(): declared, hashlib.sha256(two).hexdigest(): endless}
    honest_frames = srv.service.blocks.frame_bytes

    def frame_bytes(block: Any) -> Iterator[bytes]:
        sha = block.sha256.hex()
        if sha in bombs:
            yield encode_frames([Frame(sha, CODEC_ZSTD, bombs[sha])])
        else:
            yield from honest_frames(block)

    honest.write("one.txt", one)
    honest.write("two.txt", two)
    honest.write("fine.txt", "not bombed")
    honest.run("push")
    srv.service.blocks.frame_bytes = frame_bytes
    honest_read = srv.service.blocks.read  # a block that arrived damaged is asked for again alone
    srv.service.blocks.read = lambda caller, sha: bombs.get(sha) or honest_read(caller, sha)
    peak_file = tmp_path / "pull-peak"
    proc = subprocess.run([sys.executable, "-c", PEAK_OF, str(peak_file), *BOXCTL, "pull", "--json"],
                          cwd=target.root, env=target.env(), capture_output=True, text=True, timeout=300)
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.err, result.err
    damaged = {d["path"] for d in result.json()["damaged"]}
    assert damaged == {"one.txt", "two.txt"}, result.out
    assert target.read("fine.txt") == b"not bombed"
    assert not (target.root / "one.txt").exists() and not (target.root / "two.txt").exists()
    peak = int(peak_file.read_text()) * 1024  # the pull's peak (and its own children's), nothing else
    assert peak < 400 << 20, peak
