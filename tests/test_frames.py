"""box_common.frames: the binary frame format of block uploads and downloads."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from box_common.frames import (
    CODEC_IDS,
    CODEC_NAMES,
    CODEC_RAW,
    CODEC_ZSTD,
    HEADER,
    Frame,
    FrameError,
    decode_frames,
    encode_frame,
    encode_frames,
    frame_parts,
)

frames_st = st.builds(
    Frame,
    sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
    codec=st.sampled_from(sorted(CODEC_NAMES)),
    payload=st.binary(max_size=300),
)


def plain(frames: list[Frame]) -> list[tuple[str, int, bytes]]:
    return [(f.sha256, f.codec, bytes(f.payload)) for f in frames]


def test_header_layout() -> None:
    data = b"hello"
    digest = hashlib.sha256(data).hexdigest()
    wire = encode_frame(Frame(digest, CODEC_ZSTD, data))
    assert HEADER.size == 37
    assert wire[:32] == bytes.fromhex(digest)
    assert wire[32] == CODEC_ZSTD
    assert wire[33:37] == (5).to_bytes(4, "big")
    assert wire[37:] == data


def test_codec_tables_agree() -> None:
    assert CODEC_IDS["raw"] == CODEC_RAW and CODEC_IDS["zstd"] == CODEC_ZSTD
    assert {v: k for k, v in CODEC_IDS.items()} == CODEC_NAMES


def test_empty_body_has_no_frames() -> None:
    assert list(decode_frames(b"")) == []


def test_empty_payload_round_trips() -> None:
    frame = Frame(hashlib.sha256(b"").hexdigest(), CODEC_RAW, b"")
    assert plain(list(decode_frames(encode_frame(frame)))) == plain([frame])


def test_payloads_are_zero_copy_views() -> None:
    body = encode_frames([Frame("ab" * 32, CODEC_RAW, b"xyz")])
    (frame,) = decode_frames(body)
    assert isinstance(frame.payload, memoryview)
    assert bytes(frame.payload) == b"xyz"


def test_memoryview_payload_encodes() -> None:
    frame = Frame("cd" * 32, CODEC_RAW, memoryview(b"0123456789")[2:5])
    assert plain(list(decode_frames(encode_frame(frame)))) == [("cd" * 32, CODEC_RAW, b"234")]


@given(st.lists(frames_st, max_size=8))
def test_round_trip(frames: list[Frame]) -> None:
    body = encode_frames(frames)
    assert body == b"".join(encode_frame(f) for f in frames)
    assert len(body) == sum(HEADER.size + len(f.payload) for f in frames)
    assert plain(list(decode_frames(body))) == plain(frames)


@given(st.lists(frames_st, min_size=1, max_size=5), st.data())
@settings(max_examples=200)
def test_any_cut_inside_a_frame_is_an_error(frames: list[Frame], data: st.DataObject) -> None:
    body = encode_frames(frames)
    boundaries = {0}
    pos = 0
    for f in frames:
        pos += HEADER.size + len(f.payload)
        boundaries.add(pos)
    cut = data.draw(st.integers(min_value=1, max_value=len(body) - 1).filter(lambda c: c not in boundaries))
    with pytest.raises(FrameError):
        list(decode_frames(body[:cut]))


@given(st.lists(frames_st, min_size=1, max_size=4))
def test_cut_on_a_boundary_gives_the_leading_frames(frames: list[Frame]) -> None:
    body = encode_frames(frames)
    pos = 0
    for i, f in enumerate(frames):
        assert plain(list(decode_frames(body[:pos]))) == plain(frames[:i])
        pos += HEADER.size + len(f.payload)


@given(st.integers(min_value=0, max_value=255).filter(lambda c: c not in CODEC_NAMES))
def test_unknown_codec_is_refused(codec: int) -> None:
    body = bytearray(encode_frame(Frame("00" * 32, CODEC_RAW, b"abc")))
    body[32] = codec
    with pytest.raises(FrameError, match="codec"):
        list(decode_frames(bytes(body)))


def test_truncated_header_and_payload() -> None:
    body = encode_frame(Frame("11" * 32, CODEC_RAW, b"payload"))
    with pytest.raises(FrameError, match="header"):
        list(decode_frames(body[:10]))
    with pytest.raises(FrameError, match="payload"):
        list(decode_frames(body[:-1]))
    # A second frame cut short after a good first one: the error still comes.
    with pytest.raises(FrameError):
        list(decode_frames(body + body[:HEADER.size + 2]))


def test_payload_over_the_limit_is_refused_before_reading_it() -> None:
    body = encode_frame(Frame("22" * 32, CODEC_RAW, b"x" * 100))
    assert len(list(decode_frames(body, max_payload=100))) == 1
    with pytest.raises(FrameError, match="limit"):
        list(decode_frames(body, max_payload=99))
    # A header that claims 4 GiB with nothing behind it is refused by the limit, not by trying to read it.
    huge = HEADER.pack(b"\0" * 32, CODEC_RAW, 0xFFFFFFFF)
    with pytest.raises(FrameError, match="limit"):
        list(decode_frames(huge))


def test_frames_decode_lazily() -> None:
    good = encode_frame(Frame("33" * 32, CODEC_RAW, b"ok"))
    frames = decode_frames(good + b"\x00" * 5)
    assert bytes(next(frames).payload) == b"ok"
    with pytest.raises(FrameError):
        next(frames)


@pytest.mark.parametrize("bad", ["zz" * 32, "abc"], ids=["not-hex", "odd-length"])
def test_encode_refuses_non_hex(bad: str) -> None:
    with pytest.raises(ValueError):
        encode_frame(Frame(bad, CODEC_RAW, b"x"))


@pytest.mark.parametrize("bad", ["ab" * 31, "ab" * 33, ""], ids=["31-bytes", "33-bytes", "empty"])
def test_encode_refuses_ids_that_are_not_32_bytes(bad: str) -> None:
    """A frame's id must be a whole SHA-256: a short or long id must not be padded or cut silently."""
    with pytest.raises(ValueError):
        encode_frame(Frame(bad, CODEC_RAW, b"x"))


@settings(max_examples=100)
@given(st.lists(frames_st, max_size=8), st.integers(min_value=0, max_value=400))
def test_frame_parts_send_the_same_bytes_as_encode_frames(frames: list[Frame], merge_below: int) -> None:
    assert b"".join(frame_parts(frames, merge_below)) == encode_frames(frames)


def test_frame_parts_keep_large_payloads_as_they_are_and_merge_small_ones() -> None:
    big = memoryview(bytearray(b"b" * 100_000))
    frames = [Frame("11" * 32, CODEC_RAW, b"tiny"), Frame("22" * 32, CODEC_ZSTD, b"small"),
              Frame("33" * 32, CODEC_RAW, big), Frame("44" * 32, CODEC_RAW, b"last")]
    parts = frame_parts(frames, merge_below=1000)
    assert len(parts) == 3 and parts[1] is big  # headers and tiny payloads merged; the big one not copied
    with pytest.raises(ValueError, match="SHA-256"):
        frame_parts([Frame("abcd", CODEC_RAW, b"")])
