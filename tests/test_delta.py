"""box_common/delta.py: rsync-style signatures and deltas rebuild exactly, and bad input is refused."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from box_common.delta import (
    COPY,
    LITERAL,
    SIG_HEADER,
    WINDOW,
    DeltaError,
    Signature,
    _weak_all,
    apply_delta,
    make_delta,
    signature,
)

WINDOWS = st.sampled_from([16, 64, 256])


def roundtrip(base: bytes, new: bytes, window: int) -> bytes:
    sig = Signature.decode(signature(base, window).encode())  # through the wire format, as the client sees it
    delta = make_delta(new, sig)
    return apply_delta(base, delta, window, limit=max(len(new), 1))


def ops(delta: bytes) -> list[tuple[str, int, int]]:
    """The ops of a delta as (kind, a, b): ('C', first window, count) or ('L', length, 0)."""
    found = []
    pos = 0
    while pos < len(delta):
        if delta[pos : pos + 1] == b"C":
            _, first, count = COPY.unpack_from(delta, pos)
            found.append(("C", first, count))
            pos += COPY.size
        else:
            _, length = LITERAL.unpack_from(delta, pos)
            found.append(("L", length, 0))
            pos += LITERAL.size + length
    return found


@st.composite
def edited(draw: st.DrawFn) -> tuple[bytes, bytes, int]:
    """A base block, an edited copy of it (inserts, deletes, overwrites, moved pieces), and a window."""
    window = draw(WINDOWS)
    seed = draw(st.integers(0, 2**32 - 1))
    size = draw(st.integers(0, 40 * window))
    rng = random.Random(seed)
    base = rng.randbytes(size)
    new = bytearray(base)
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["insert", "delete", "overwrite", "move", "duplicate"]))
        at = draw(st.integers(0, len(new)))
        n = draw(st.integers(1, 3 * window))
        if kind == "insert":
            new[at:at] = rng.randbytes(n)
        elif kind == "delete":
            del new[at : at + n]
        elif kind == "overwrite":
            new[at : at + n] = rng.randbytes(min(n, len(new) - at))
        elif kind == "move":
            piece = bytes(new[at : at + n])
            del new[at : at + n]
            to = draw(st.integers(0, len(new)))
            new[to:to] = piece
        else:
            new[at:at] = bytes(new[: min(n, len(new))])
    return base, bytes(new), window


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited())
def test_apply_of_make_delta_rebuilds_the_new_block(case: tuple[bytes, bytes, int]) -> None:
    base, new, window = case
    assert roundtrip(base, new, window) == new


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=3000), WINDOWS)
def test_unrelated_blocks_rebuild_too(base: bytes, new: bytes, window: int) -> None:
    assert roundtrip(base, new, window) == new


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=600), st.integers(16, 64))
def test_weak_checksum_matches_a_plain_rsync_rolling_sum(data: bytes, window: int) -> None:
    if len(data) < window:
        data = data * (window // len(data) + 1)
    got = _weak_all(np.frombuffer(data, dtype=np.uint8), window)
    want = []
    for k in range(len(data) - window + 1):
        piece = data[k : k + window]
        a = sum(piece) & 0xFFFF
        b = sum((window - i) * x for i, x in enumerate(piece)) & 0xFFFF
        want.append(a | (b << 16))
    assert got.tolist() == want


def test_identical_block_is_one_copy_op() -> None:
    base = random.Random(1).randbytes(64 * WINDOW)
    delta = make_delta(base, signature(base))
    assert ops(delta) == [("C", 0, 64)]
    assert apply_delta(base, delta, WINDOW, len(base)) == base


def test_small_edit_of_a_large_block_gives_a_small_delta() -> None:
    rng = random.Random(2)
    base = rng.randbytes(1 << 20)
    new = bytearray(base)
    new[500_000:500_005] = b"HELLO"  # overwrite 5 bytes
    new[700_000:700_000] = b"an inserted paragraph " * 20  # and insert 440 bytes
    delta = make_delta(bytes(new), signature(base))
    assert len(delta) < 3 * WINDOW + 1000, len(delta)
    assert apply_delta(base, delta, WINDOW, len(new)) == bytes(new)


def test_insert_at_the_start_still_finds_every_window() -> None:
    """Matches at any byte offset are found (the rolling checksum), not only at multiples of the window."""
    base = random.Random(3).randbytes(32 * WINDOW)
    new = b"xyz" + base
    found = ops(make_delta(new, signature(base)))
    assert found == [("L", 3, 0), ("C", 0, 32)]


def test_tail_shorter_than_a_window_is_sent_literally() -> None:
    base = random.Random(4).randbytes(10 * WINDOW + 100)
    delta = make_delta(base, signature(base))
    assert ops(delta) == [("C", 0, 10), ("L", 100, 0)]
    assert apply_delta(base, delta, WINDOW, len(base)) == base


def test_weak_collision_is_caught_by_the_strong_checksum() -> None:
    """A window changed so that rsync's weak checksum stays the same must not be copied from the base."""
    window = 64
    base = bytearray(random.Random(5).randbytes(4 * window))
    for i in range(len(base)):  # keep every byte in 1..254 so that +-1 stays a byte
        base[i] = 1 + base[i] % 254
    new = bytearray(base)
    i, j = window + 10, window + 30  # in the second window: +1 -1 at i, -1 +1 at j keeps a and b
    new[i] += 1
    new[i + 1] -= 1
    new[j] -= 1
    new[j + 1] += 1
    sig_base, sig_new = signature(bytes(base), window), signature(bytes(new), window)
    assert sig_base.weak[1] == sig_new.weak[1] and sig_base.strong[1] != sig_new.strong[1]
    delta = make_delta(bytes(new), sig_base)
    assert apply_delta(bytes(base), delta, window, len(new)) == bytes(new)
    assert all(not (kind == "C" and a <= 1 < a + b) for kind, a, b in ops(delta))


def test_empty_and_tiny_blocks() -> None:
    assert roundtrip(b"", b"", 16) == b""
    assert roundtrip(b"", b"new", 16) == b"new"
    assert roundtrip(b"old" * 100, b"", 16) == b""
    assert roundtrip(b"short", b"short", 16) == b"short"


# --- signatures on the wire -----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=5000), WINDOWS)
def test_signature_encodes_and_decodes(block: bytes, window: int) -> None:
    sig = signature(block, window)
    back = Signature.decode(sig.encode())
    assert (back.window, back.length) == (window, len(block))
    assert back.weak.tolist() == sig.weak.tolist() and back.strong.tolist() == sig.strong.tolist()
    assert len(back.weak) == len(block) // window


@pytest.mark.parametrize("data", [
    b"",
    b"\x00\x00\x08",  # shorter than the header
    SIG_HEADER.pack(8, 64),  # a window under 16 bytes
    SIG_HEADER.pack(16, 64),  # says 4 windows, holds none
    SIG_HEADER.pack(16, 16) + b"\x00" * 11,  # an entry cut short
    SIG_HEADER.pack(16, 16) + b"\x00" * 24,  # one entry too many
])
def test_malformed_signature_is_refused(data: bytes) -> None:
    with pytest.raises(DeltaError):
        Signature.decode(data)


# --- malformed deltas -----------------------------------------------------------------------

BASE = bytes(range(256)) * 4  # 1024 bytes: 64 windows of 16


@pytest.mark.parametrize("delta, why", [
    (b"X", "unknown op"),
    (b"C\x00\x00", "truncated copy op"),
    (b"L\x00\x00", "truncated literal op"),
    (LITERAL.pack(b"L", 10) + b"abc", "literal longer than what follows"),
    (COPY.pack(b"C", 0, 0), "copy of nothing"),
    (COPY.pack(b"C", 64, 1), "copy just past the end of the base"),
    (COPY.pack(b"C", 60, 5), "copy running past the end"),
    (COPY.pack(b"C", 0xFFFFFFFF, 0xFFFFFFFF), "copy far out of range"),
    (COPY.pack(b"C", 0, 1) + b"\x00", "trailing junk"),
])
def test_malformed_delta_raises_delta_error(delta: bytes, why: str) -> None:
    with pytest.raises(DeltaError):
        apply_delta(BASE, delta, 16, 1 << 20)


def test_copy_out_of_range_is_refused_even_with_a_large_window() -> None:
    """The window comes from the sender: it must not let a copy reach past the base."""
    with pytest.raises(DeltaError):
        apply_delta(BASE, COPY.pack(b"C", 0, 1), 4096, 1 << 20)
    with pytest.raises(DeltaError):
        apply_delta(BASE, COPY.pack(b"C", 1, 1), 1024, 1 << 20)
    assert apply_delta(BASE, COPY.pack(b"C", 0, 1), 1024, 1 << 20) == BASE


def test_output_over_the_limit_is_refused() -> None:
    many_copies = COPY.pack(b"C", 0, 64) * 10  # 10 KiB from a 1 KiB base
    with pytest.raises(DeltaError):
        apply_delta(BASE, many_copies, 16, 4096)
    literal = LITERAL.pack(b"L", 5000) + b"x" * 5000
    with pytest.raises(DeltaError):
        apply_delta(BASE, literal, 16, 4096)
    assert len(apply_delta(BASE, many_copies, 16, 10 * 1024)) == 10 * 1024


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.integers(16, 512), st.integers(0, 4096))
def test_arbitrary_bytes_either_rebuild_within_the_limit_or_raise_delta_error(
        delta: bytes, window: int, limit: int) -> None:
    try:
        out = apply_delta(BASE, delta, window, limit)
    except DeltaError:
        return
    assert len(out) <= limit


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 80), st.integers(0, 80)), max_size=8))
def test_copy_ops_rebuild_from_the_right_windows_or_are_refused(copies: list[tuple[int, int]]) -> None:
    delta = b"".join(COPY.pack(b"C", first, count) for first, count in copies)
    valid = all(count > 0 and (first + count) * 16 <= len(BASE) for first, count in copies)
    if not valid:
        with pytest.raises(DeltaError):
            apply_delta(BASE, delta, 16, 1 << 20)
        return
    want = b"".join(BASE[first * 16 : (first + count) * 16] for first, count in copies)
    assert apply_delta(BASE, delta, 16, 1 << 20) == want


def test_op_struct_sizes_are_the_documented_wire_format() -> None:
    assert COPY.size == 9 and LITERAL.size == 5
    assert COPY.pack(b"C", 1, 2) == b"C" + struct.pack(">II", 1, 2)
