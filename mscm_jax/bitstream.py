"""The `.mscm` file format, version 1 (documented in docs/format.md).

All integers little-endian; `varint` is unsigned LEB128 (at most 5 bytes).

    magic            4 bytes  b"MSCM"
    format version   u8       1
    coder            u8       2 = constriction range coder (queue), see `CODER_OPTIONS`
    fingerprint      16 bytes first 16 bytes of the model's sha256 fingerprint
    height, width    varint   image size in pixels (1 .. MAX_SIDE each)
    schedule         u8 n, then n*n bytes: the stage pattern (n = 0: serial)
    streams          varint   count (1 for z, then one per y stream)
    per stream       varint byte length, u32 CRC32 of its decoded symbols (int32 LE)
    payload          the streams, concatenated in that order
    file checksum    u32      CRC32 of every byte before it

Parsing checks, in order: length, magic, version, the file checksum, header
fields and their limits, then that the stream lengths add up to the payload,
so an absurd size is rejected before anything is allocated for it.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

MAGIC = b"MSCM"
FORMAT_VERSION = 1
# Coder 1 (mscm-jax up to 2026-11-26) built y tables in float64 on the host, coder 2 (up to
# 2026-11-27) from two CDFs per bin: same layout, other probabilities, so their files are
# refused by id rather than failing a CRC.
CODER_CONSTRICTION_RANGE = 3
CODER_OPTIONS = (
    "constriction range coder (queue, 32-bit words); y: Categorical(perfect=False) tables of "
    "Gaussian mixtures (K > 1; float32, compiled) or QuantizedGaussian (K = 1); z: per-channel "
    "Categorical(perfect=False) tables; parameters on a 2^-10 grid (means, log-scales), 2^-14 (weights); "
    "escapes for values beyond each table"
)
FINGERPRINT_BYTES = 16
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28
MAX_STREAMS = 1 << 16  # serial codes all of y as one stream; patterns have at most 256 stages
_FIXED = len(MAGIC) + 2 + FINGERPRINT_BYTES


class FormatError(ValueError):
    """A file that is not a valid `.mscm` file for this version."""


@dataclasses.dataclass(frozen=True)
class FileHeader:
    fingerprint: bytes
    height: int
    width: int
    pattern: tuple[tuple[int, ...], ...] | None  # None: serial
    stream_lengths: tuple[int, ...]
    stream_crcs: tuple[int, ...]
    coder: int = CODER_CONSTRICTION_RANGE
    version: int = FORMAT_VERSION


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes, end: int):
        self.data, self.pos, self.end = data, 0, end

    def take(self, size: int, what: str) -> bytes:
        if self.pos + size > self.end:
            raise FormatError(f"truncated file: header ends inside {what}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def varint(self, what: str) -> int:
        value = 0
        for shift in range(0, 35, 7):
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise FormatError(f"corrupt header: {what} is not a valid varint")


def pack(header: FileHeader, streams: list[bytes]) -> bytes:
    """The file bytes of a header and its streams."""
    if len(header.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes")
    out = bytearray(MAGIC)
    out += struct.pack("<BB", header.version, header.coder) + header.fingerprint
    out += _varint(header.height) + _varint(header.width)
    if header.pattern is None:
        out.append(0)
    else:
        out.append(len(header.pattern))
        out += bytes(np.asarray(header.pattern, np.uint8).ravel())
    out += _varint(len(streams))
    for data, crc in zip(streams, header.stream_crcs, strict=True):
        out += _varint(len(data)) + struct.pack("<I", crc)
    for data in streams:
        out += data
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


def unpack(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[FileHeader, list[bytes]]:
    """Header and streams of a file; FormatError for anything malformed."""
    if len(data) < _FIXED + 4:
        raise FormatError(f"truncated or not an .mscm file ({len(data)} bytes)")
    if data[:4] != MAGIC:
        raise FormatError("not an .mscm file (bad magic bytes)")
    version, coder = data[4], data[5]
    if version > FORMAT_VERSION:
        raise FormatError(
            f"file format version {version} is newer than this mscm-jax supports ({FORMAT_VERSION}); upgrade"
        )
    if version < 1:
        raise FormatError(f"invalid file format version {version}")
    (stored_crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != stored_crc:
        raise FormatError("file checksum mismatch: the file is corrupt or truncated")
    if coder in (1, 2):
        raise FormatError(
            f"coder {coder}: the file was written by an earlier mscm-jax (other y tables); encode it again"
        )
    if coder != CODER_CONSTRICTION_RANGE:
        raise FormatError(f"unknown coder id {coder} (this version knows {CODER_CONSTRICTION_RANGE})")
    reader = _Reader(data, len(data) - 4)
    reader.pos = len(MAGIC) + 2
    fingerprint = reader.take(FINGERPRINT_BYTES, "the fingerprint")
    height, width = reader.varint("the height"), reader.varint("the width")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE) or height * width > max_pixels:
        raise FormatError(
            f"header claims a {width}x{height} image; accepted: 1..{MAX_SIDE} pixels a side, "
            f"at most {max_pixels} pixels"
        )
    n = reader.take(1, "the schedule")[0]
    pattern = None
    if n:
        cells = np.frombuffer(reader.take(n * n, "the schedule pattern"), np.uint8).reshape(n, n)
        pattern = tuple(tuple(int(v) for v in row) for row in cells)
    count = reader.varint("the stream count")
    if not 1 <= count <= MAX_STREAMS:
        raise FormatError(f"header claims {count} streams; accepted: 1..{MAX_STREAMS}")
    lengths, crcs = [], []
    for i in range(count):
        lengths.append(reader.varint(f"stream {i}'s length"))
        crcs.append(struct.unpack("<I", reader.take(4, f"stream {i}'s checksum"))[0])
    if reader.pos + sum(lengths) != reader.end:
        raise FormatError(
            f"stream lengths add up to {sum(lengths)} bytes but the file holds {reader.end - reader.pos}"
        )
    streams = []
    for length in lengths:
        streams.append(bytes(data[reader.pos : reader.pos + length]))
        reader.pos += length
    header = FileHeader(fingerprint, height, width, pattern, tuple(lengths), tuple(crcs), coder, version)
    return header, streams
