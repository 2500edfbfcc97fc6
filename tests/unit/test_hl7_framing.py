"""The MLLP decoder: frames across reads, bounded memory on oversize input, framing errors."""

from __future__ import annotations

import pytest

from pacsflow.hl7.mllp import (
    END_BLOCK,
    START_BLOCK,
    Frame,
    FramingError,
    MllpDecoder,
    MllpEvent,
    OversizeFrame,
    frame,
)


def _feed_in_chunks(decoder: MllpDecoder, data: bytes, size: int) -> list[MllpEvent]:
    events: list[MllpEvent] = []
    for start in range(0, len(data), size):
        events += decoder.feed(data[start : start + size])
    return events


def test_frame_bytes() -> None:
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\x0d"
    assert START_BLOCK == b"\x0b" and END_BLOCK == b"\x1c\x0d"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_frames_split_anywhere(chunk: int) -> None:
    stream = frame(b"MSH|one") + b"\r\n" + frame(b"MSH|two") + frame(b"MSH|three")
    decoder = MllpDecoder(100)
    events = _feed_in_chunks(decoder, stream, chunk)
    assert events == [Frame(b"MSH|one"), Frame(b"MSH|two"), Frame(b"MSH|three")]
    assert not decoder.in_frame


def test_in_frame_while_incomplete() -> None:
    decoder = MllpDecoder(100)
    assert decoder.feed(b"\x0bMSH|partial\x1c") == []
    assert decoder.in_frame
    assert decoder.feed(b"\x0d") == [Frame(b"MSH|partial")]
    assert not decoder.in_frame


def test_fs_without_cr_stays_in_the_payload() -> None:
    decoder = MllpDecoder(100)
    assert decoder.feed(b"\x0bMSH|a\x1cb\x1c\x0d") == [Frame(b"MSH|a\x1cb")]


@pytest.mark.parametrize("chunk", [1, 5, 4096, 1 << 20])
def test_oversize_frame_is_dropped_with_its_head(chunk: int) -> None:
    body = b"MSH|^~\\&|RIS|" + b"x" * 50_000
    stream = frame(body) + frame(b"MSH|next")
    decoder = MllpDecoder(1000)
    events = _feed_in_chunks(decoder, stream, chunk)
    assert len(events) == 2
    oversize, following = events
    assert isinstance(oversize, OversizeFrame)
    assert oversize.size == len(body)
    assert oversize.head.startswith(b"MSH|^~\\&|RIS|")
    assert len(oversize.head) <= 8192
    assert following == Frame(b"MSH|next")


def test_memory_stays_bounded_while_discarding() -> None:
    decoder = MllpDecoder(1000)
    decoder.feed(b"\x0bMSH|")
    for _ in range(200):
        assert decoder.feed(b"y" * 10_000) == []
        assert len(decoder._buffer) <= 1  # only a possible FS is carried between reads
    assert decoder.in_frame


def test_oversize_without_msh_fails_early() -> None:
    decoder = MllpDecoder(1000)
    events = decoder.feed(b"\x0b" + b"z" * 5000)
    assert len(events) == 1 and isinstance(events[0], FramingError)
    assert "MSH" in events[0].reason
    assert decoder.feed(frame(b"MSH|late")) == []  # a failed stream stays failed


def test_endless_oversize_gives_up() -> None:
    decoder = MllpDecoder(100, max_discard_bytes=10_000)
    events = decoder.feed(b"\x0bMSH|" + b"q" * 20_000)
    assert isinstance(events[-1], FramingError)


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"hello" + frame(b"MSH|x"), "outside an MLLP frame"),
        (b"MSH|^~\\&|no framing\r", "outside an MLLP frame"),
        (b"\x0bMSH|one\x0bMSH|two\x1c\x0d", "missing end block"),
    ],
)
def test_framing_errors(stream: bytes, reason: str) -> None:
    events = MllpDecoder(1000).feed(stream)
    assert isinstance(events[-1], FramingError)
    assert reason in events[-1].reason


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        MllpDecoder(0)
