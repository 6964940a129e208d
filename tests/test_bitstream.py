"""The .mscm container: round trip and clean rejection of malformed files."""

import dataclasses
import struct
import zlib

import pytest

from mscm_jax.coding import bitstream
from mscm_jax.coding.bitstream import FileHeader, FormatError

HEADER = FileHeader(
    fingerprint=bytes(range(16)), height=300, width=451, pattern=((0, 2), (3, 1)), lanes=3,
    symbol_checksum=77, size_step=256,
)  # fmt: skip
PAYLOAD = bytes(range(40))


def _with_checksum(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip_and_header_size():
    data = bitstream.pack(HEADER, PAYLOAD)
    header, payload = bitstream.unpack(data)
    assert payload == PAYLOAD and header == HEADER
    assert bitstream.header_bytes(data) == len(data) - len(PAYLOAD)
    serial, _ = bitstream.unpack(bitstream.pack(dataclasses.replace(HEADER, pattern=None), PAYLOAD))
    assert serial.pattern is None


def test_version_2_files_are_read_as_coded_on_the_image_s_own_latent():
    """Format 2 (0.2.0 to 0.3.15) has no size step: one byte fewer, read as step 0."""
    data = bitstream.pack(dataclasses.replace(HEADER, version=2, size_step=0), PAYLOAD)
    assert len(data) == len(bitstream.pack(HEADER, PAYLOAD)) - 1
    header, payload = bitstream.unpack(data)
    assert payload == PAYLOAD and header == dataclasses.replace(HEADER, version=2, size_step=0)
    assert bitstream.header_bytes(data) == len(data) - len(PAYLOAD)


def test_every_truncation_is_rejected():
    data = bitstream.pack(HEADER, PAYLOAD)
    for end in range(len(data)):
        with pytest.raises(FormatError):
            bitstream.unpack(data[:end])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"MSCX" + d[4:], "magic"),
        (lambda d: d[:4] + b"\x04" + d[5:], "newer than this mscm-jax supports"),
        (lambda d: d[:4] + b"\x01\x03" + d[6:], "format 1 .coder 3. was written by mscm-jax 0.1"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum"),
        (lambda d: d[:30] + bytes([d[30] ^ 0x10]) + d[31:], "checksum"),
        (lambda d: _with_checksum(d[:5] + b"\x07" + d[6:-4]), "unknown coder"),
    ],
)
def test_malformed_files_are_named(mutate, message):
    with pytest.raises(FormatError, match=message):
        bitstream.unpack(mutate(bitstream.pack(HEADER, PAYLOAD)))


def test_absurd_sizes_are_rejected_before_anything_is_allocated():
    huge = dataclasses.replace(HEADER, height=60000, width=60000)
    with pytest.raises(FormatError, match="60000x60000"):
        bitstream.unpack(bitstream.pack(huge, PAYLOAD))
    with pytest.raises(FormatError, match="at most 1000 pixels"):
        bitstream.unpack(bitstream.pack(HEADER, PAYLOAD), max_pixels=1000)
    # A size step beyond the largest: its bucket could be far larger than the image.
    step_at = len(bitstream.pack(HEADER, PAYLOAD)) - len(PAYLOAD) - 4 - 4 - 1
    data = bytearray(bitstream.pack(HEADER, PAYLOAD)[:-4])
    assert data[step_at] == 256 // bitstream.SIZE_STEP_UNIT
    data[step_at] = bitstream.MAX_SIZE_STEP // bitstream.SIZE_STEP_UNIT + 1
    with pytest.raises(FormatError, match="size step of 4160 pixels; accepted: multiples of 64 up to 4096"):
        bitstream.unpack(_with_checksum(bytes(data)))
    with pytest.raises(FormatError, match="rANS lanes"):
        bitstream.unpack(bitstream.pack(dataclasses.replace(HEADER, lanes=10**6), PAYLOAD))


def test_the_payload_must_hold_the_lanes_states_in_whole_words():
    with pytest.raises(FormatError, match="even number of bytes"):
        bitstream.unpack(bitstream.pack(HEADER, PAYLOAD[:-1]))
    with pytest.raises(FormatError, match="at least 12"):
        bitstream.unpack(bitstream.pack(HEADER, PAYLOAD[:10]))
