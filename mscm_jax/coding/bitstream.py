"""The `.mscm` file format, version 3 (documented in docs/format.md; version 2 is read too).

All integers little-endian; `varint` is unsigned LEB128 (at most 5 bytes).

    magic            4 bytes  b"MSCM"
    format version   u8       3 (2: as 3 without the size step)
    coder            u8       4 = `rans` with the integer models of `coding`, entropy
                              parameters from the float networks (`CODER_RANS`);
                              5 = the same, parameters from the model's integer path
                              (`integer_path`, `CODER_RANS_INTEGER`): decodes on every backend
    fingerprint      16 bytes first 16 bytes of the model's sha256 fingerprint
    height, width    varint   image size in pixels (1 .. MAX_SIDE each)
    schedule         u8 n, then n*n bytes: the stage pattern (n = 0: serial)
    lanes            varint   interleaved rANS lanes L (1 .. rans.MAX_LANES)
    size step        varint   k: the stages were computed on the latent of the image's sides
                              rounded up to multiples of k * SIZE_STEP_UNIT pixels
                              (0: the image's own; k <= MAX_SIZE_STEP / SIZE_STEP_UNIT)
    symbol checksum  u32      of every decoded symbol (`integer_cdf.symbol_checksum`)
    payload          one rANS stream of 16-bit words: z, then every stage of y
    file checksum    u32      CRC32 of every byte before it

Parsing checks, in order: length, magic, version, the file checksum, header
fields and their limits, then the payload's length, so an absurd size is
rejected before anything is allocated for it.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from mscm_jax.coding import rans

MAGIC = b"MSCM"
FORMAT_VERSION = 3
READ_FORMATS = (2, 3)  # 2: mscm-jax 0.2.0 to 0.3.15, no size step (the image's own latent)
CODER_RANS = 4
CODER_RANS_INTEGER = 5
CODERS = (CODER_RANS, CODER_RANS_INTEGER)
# What wrote the earlier formats, for the message that refuses them.
EARLIER_FORMATS = {1: "mscm-jax 0.1 (constriction's range coder, float tables)"}
FINGERPRINT_BYTES = 16
# The size step's unit, the hyper-analysis stride of every transform family, and its largest value:
# a bucket's latent is at most one step per side larger than the image's, which the decoder's
# pixel limit also bounds (`codec.Codec`).
SIZE_STEP_UNIT = 64
MAX_SIZE_STEP = 4096
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28
_FIXED = len(MAGIC) + 2 + FINGERPRINT_BYTES


class FormatError(ValueError):
    """A file that is not a valid `.mscm` file for this version."""


@dataclasses.dataclass(frozen=True)
class FileHeader:
    fingerprint: bytes
    height: int
    width: int
    pattern: tuple[tuple[int, ...], ...] | None  # None: serial
    lanes: int
    symbol_checksum: int
    coder: int = CODER_RANS
    version: int = FORMAT_VERSION
    size_step: int = 0  # pixels; 0: the stages ran on the image's own latent (every version-2 file)


def valid_size_step(step: int) -> bool:
    """Whether a header can record `step` pixels: 0, or a multiple of SIZE_STEP_UNIT up to MAX_SIZE_STEP."""
    return 0 <= step <= MAX_SIZE_STEP and step % SIZE_STEP_UNIT == 0


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


def pack(header: FileHeader, payload: bytes) -> bytes:
    """The file bytes of a header and its rANS stream."""
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
    out += _varint(header.lanes)
    if header.version >= 3:
        if not valid_size_step(header.size_step):
            raise ValueError(f"size_step must be a multiple of {SIZE_STEP_UNIT} from 0 to {MAX_SIZE_STEP}")
        out += _varint(header.size_step // SIZE_STEP_UNIT)
    out += struct.pack("<I", header.symbol_checksum)
    out += payload
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


def unpack(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[FileHeader, bytes]:
    """Header and payload of a file; FormatError for anything malformed."""
    if len(data) < _FIXED + 4:
        raise FormatError(f"truncated or not an .mscm file ({len(data)} bytes)")
    if data[:4] != MAGIC:
        raise FormatError("not an .mscm file (bad magic bytes)")
    version, coder = data[4], data[5]
    if version in EARLIER_FORMATS:
        raise FormatError(
            f"file format {version} (coder {coder}) was written by {EARLIER_FORMATS[version]}; this "
            f"mscm-jax reads format {FORMAT_VERSION}: decode it with that version, or encode the image again"
        )
    if version > FORMAT_VERSION:
        raise FormatError(
            f"file format version {version} is newer than this mscm-jax supports ({FORMAT_VERSION}); upgrade"
        )
    if version not in READ_FORMATS:
        raise FormatError(f"invalid file format version {version}")
    (stored_crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != stored_crc:
        raise FormatError("file checksum mismatch: the file is corrupt or truncated")
    if coder not in CODERS:
        raise FormatError(f"unknown coder id {coder} (this version knows {', '.join(map(str, CODERS))})")
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
    lanes = reader.varint("the lane count")
    if not 1 <= lanes <= rans.MAX_LANES:
        raise FormatError(f"header claims {lanes} rANS lanes; accepted: 1..{rans.MAX_LANES}")
    size_step = SIZE_STEP_UNIT * reader.varint("the size step") if version >= 3 else 0
    if size_step > MAX_SIZE_STEP:
        raise FormatError(
            f"header claims a size step of {size_step} pixels; accepted: multiples of {SIZE_STEP_UNIT} "
            f"up to {MAX_SIZE_STEP}"
        )
    (checksum,) = struct.unpack("<I", reader.take(4, "the symbol checksum"))
    payload = bytes(data[reader.pos : reader.end])
    if len(payload) % 2 or len(payload) < 4 * lanes:
        raise FormatError(
            f"payload of {len(payload)} bytes: a stream of {lanes} lanes is an even number of bytes, "
            f"at least {4 * lanes}"
        )
    header = FileHeader(fingerprint, height, width, pattern, lanes, checksum, coder, version, size_step)
    return header, payload


def header_bytes(data: bytes) -> int:
    """Bytes of a valid file that are not payload: the header and the file checksum."""
    reader = _Reader(data, len(data) - 4)
    reader.pos = _FIXED
    reader.varint("the height"), reader.varint("the width")
    n = reader.take(1, "the schedule")[0]
    reader.take(n * n, "the schedule pattern")
    reader.varint("the lane count")
    if data[4] >= 3:
        reader.varint("the size step")
    return reader.pos + 4 + 4
