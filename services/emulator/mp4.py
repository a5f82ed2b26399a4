"""A minimal, valid MP4 (ISO/IEC 14496-12) holding one video track of JPEG frames.

Layout: ``ftyp`` (isom), ``moov`` (``mvhd``; one ``trak``: ``tkhd``, ``mdia`` with ``mdhd``,
``hdlr`` ``vide``, ``minf``: ``vmhd``, ``dinf``/``dref``, ``stbl``), then ``mdat`` with the frames
back to back. The sample table has one ``mp4v`` sample entry whose ``esds`` declares object type
``0x6C`` (ISO/IEC 10918-1, JPEG: how MPEG-4 systems, and ffmpeg's MP4 muxer, carry Motion JPEG),
``stts`` (every frame the same duration), ``stsc`` (all frames in one chunk), ``stsz`` (each
frame's size) and ``stco`` (the chunk's offset); every frame is a sync sample, so there is no
``stss``. Movie and media timescales are :data:`TIMESCALE` (milliseconds), so ``mvhd`` and
``mdhd`` durations are the clip's length in milliseconds. Pure: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

TIMESCALE = 1000
_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
#: ISO/IEC 14496-1 objectTypeIndication of JPEG (Visual ISO/IEC 10918-1).
JPEG_OBJECT_TYPE = 0x6C


def box(kind: bytes, *payload: bytes) -> bytes:
    """One box: 32-bit size, four-character type, payload."""
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A box with the 8-bit version and 24-bit flags of a FullBox."""
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _descriptor(tag: int, *payload: bytes) -> bytes:
    body = b"".join(payload)
    if len(body) > 0x0FFFFFFF:
        raise ValueError("descriptor too large")
    size = bytes(
        [
            0x80 | ((len(body) >> 21) & 0x7F),
            0x80 | ((len(body) >> 14) & 0x7F),
            0x80 | ((len(body) >> 7) & 0x7F),
        ]
    ) + bytes([len(body) & 0x7F])
    return bytes([tag]) + size + body


def _esds(max_frame: int, bitrate: int) -> bytes:
    decoder_config = _descriptor(
        0x04,
        bytes([JPEG_OBJECT_TYPE, (0x04 << 2) | 0x01]),  # streamType 4 (visual), upStream 0, reserved 1
        max_frame.to_bytes(3, "big"),
        struct.pack(">II", bitrate, bitrate),
    )
    es = _descriptor(0x03, struct.pack(">HB", 1, 0), decoder_config, _descriptor(0x06, b"\x02"))
    return full_box(b"esds", 0, 0, es)


def _sample_entry(width: int, height: int, esds: bytes) -> bytes:
    name = b"Motion JPEG"
    compressor = bytes([len(name)]) + name + bytes(31 - len(name))
    return box(
        b"mp4v",
        bytes(6),
        struct.pack(">H", 1),  # data_reference_index
        bytes(16),  # pre_defined, reserved, pre_defined[3]
        struct.pack(">HHII", width, height, 0x00480000, 0x00480000),  # 72 dpi
        bytes(4),
        struct.pack(">H", 1),  # frame_count
        compressor,
        struct.pack(">Hh", 0x0018, -1),  # depth, pre_defined
        esds,
    )


def _stbl(frames: Sequence[bytes], delta: int, width: int, height: int, offset: int, bitrate: int) -> bytes:
    return box(
        b"stbl",
        full_box(
            b"stsd",
            0,
            0,
            struct.pack(">I", 1),
            _sample_entry(width, height, _esds(max(map(len, frames)), bitrate)),
        ),
        full_box(b"stts", 0, 0, struct.pack(">III", 1, len(frames), delta)),
        full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(frames), 1)),
        full_box(
            b"stsz",
            0,
            0,
            struct.pack(">II", 0, len(frames)),
            struct.pack(f">{len(frames)}I", *map(len, frames)),
        ),
        full_box(b"stco", 0, 0, struct.pack(">II", 1, offset)),
    )


def _moov(frames: Sequence[bytes], delta: int, width: int, height: int, offset: int, created: int) -> bytes:
    duration = delta * len(frames)
    seconds = max(duration / TIMESCALE, 1e-3)
    bitrate = int(sum(map(len, frames)) * 8 / seconds)
    when = struct.pack(">II", created, created)
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        when,
        struct.pack(
            ">IIIH", TIMESCALE, duration, 0x00010000, 0x0100
        ),  # timescale, duration, rate 1.0, volume 1.0
        bytes(10),
        _MATRIX,
        bytes(24),
        struct.pack(">I", 2),  # next_track_ID
    )
    tkhd = full_box(
        b"tkhd",
        0,
        0x000003,  # enabled, in movie
        when,
        struct.pack(">III", 1, 0, duration),  # track_ID, reserved, duration
        bytes(8),
        struct.pack(">hhhH", 0, 0, 0, 0),  # layer, alternate_group, volume 0 (video), reserved
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, when, struct.pack(">IIHH", TIMESCALE, duration, 0x55C4, 0))  # 'und'
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\x00")
    vmhd = full_box(b"vmhd", 0, 1, bytes(8))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    minf = box(b"minf", vmhd, dinf, _stbl(frames, delta, width, height, offset, bitrate))
    return box(b"moov", mvhd, box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf)))


#: Seconds between 1904-01-01 (the MP4 epoch) and 1970-01-01.
MP4_EPOCH_OFFSET = 2_082_844_800


def jpeg_movie(frames: Sequence[bytes], frame_ms: int, width: int, height: int, unix_time: int = 0) -> bytes:
    """An MP4 of the JPEG ``frames``, each shown ``frame_ms`` milliseconds, ``width`` x ``height``.

    ``unix_time`` is written as the creation time (0: the MP4 epoch itself, for byte-identical
    output). Raises ``ValueError`` for no frames or a non-positive frame duration.
    """
    if not frames or frame_ms <= 0:
        raise ValueError("a movie needs at least one frame and a positive frame duration")
    ftyp = box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isom", b"iso2", b"mp41")
    created = unix_time + MP4_EPOCH_OFFSET if unix_time else 0
    placeholder = _moov(frames, frame_ms, width, height, 0, created)
    offset = len(ftyp) + len(placeholder) + 8  # the first frame, right after mdat's header
    moov = _moov(frames, frame_ms, width, height, offset, created)
    return ftyp + moov + box(b"mdat", *frames)
