"""The .mscm container: round trip and clean rejection of malformed files."""

import dataclasses
import struct
import zlib

import pytest

from mscm_jax import bitstream
from mscm_jax.bitstream import FileHeader, FormatError

HEADER = FileHeader(
    fingerprint=bytes(range(16)), height=300, width=451, pattern=((0, 2), (3, 1)),
    stream_lengths=(), stream_crcs=(11, 22, 33),
)  # fmt: skip
STREAMS = [b"zzzz", b"", b"y" * 300]


def _with_checksum(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip():
    data = bitstream.pack(HEADER, STREAMS)
    header, streams = bitstream.unpack(data)
    assert streams == STREAMS
    assert header == dataclasses.replace(HEADER, stream_lengths=(4, 0, 300))
    serial, _ = bitstream.unpack(bitstream.pack(dataclasses.replace(HEADER, pattern=None), STREAMS))
    assert serial.pattern is None


def test_every_truncation_is_rejected():
    data = bitstream.pack(HEADER, STREAMS)
    for end in range(len(data)):
        with pytest.raises(FormatError):
            bitstream.unpack(data[:end])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"MSCX" + d[4:], "magic"),
        (lambda d: d[:4] + b"\x02" + d[5:], "newer than this mscm-jax supports"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum"),
        (lambda d: d[:30] + bytes([d[30] ^ 0x10]) + d[31:], "checksum"),
        (lambda d: _with_checksum(d[:5] + b"\x07" + d[6:-4]), "unknown coder"),
        (lambda d: _with_checksum(d[:5] + b"\x01" + d[6:-4]), "earlier mscm-jax"),
        (lambda d: _with_checksum(d[:5] + b"\x02" + d[6:-4]), "coder 2: .* earlier mscm-jax"),
    ],
)
def test_malformed_files_are_named(mutate, message):
    with pytest.raises(FormatError, match=message):
        bitstream.unpack(mutate(bitstream.pack(HEADER, STREAMS)))


def test_absurd_sizes_are_rejected_before_anything_is_allocated():
    huge = dataclasses.replace(HEADER, height=60000, width=60000)
    with pytest.raises(FormatError, match="60000x60000"):
        bitstream.unpack(bitstream.pack(huge, STREAMS))
    with pytest.raises(FormatError, match="at most 1000 pixels"):
        bitstream.unpack(bitstream.pack(HEADER, STREAMS), max_pixels=1000)


def test_stream_lengths_must_add_up():
    body = bitstream.pack(HEADER, STREAMS)[:-4]
    with pytest.raises(FormatError, match="add up"):
        bitstream.unpack(_with_checksum(body + b"extra"))
