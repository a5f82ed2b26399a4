"""How long a piece of audio or video lasts, read from its container's headers (no decoding).

Each function takes the whole body and answers seconds, or None when the container does not
say (a stream written without a length, a free-bitrate MP3 …); ``ValueError`` when the headers
that must be there are broken. Lengths are never taken on trust beyond the bytes present: a WAV
header claiming more frames than the body holds counts only the frames there are.

* WAV: the ``wave`` module (PCM), else the RIFF ``fmt``/``data`` chunks (float, extensible …).
* MP3: the first frame's header; a Xing/Info or VBRI header's frame count when there is one,
  else (constant bitrate) the audio bytes over the bitrate.
* MP4/M4A: ``moov/mvhd`` duration over its timescale (``mvex/mehd`` for fragmented files).
* FLAC: STREAMINFO's total samples over its sample rate.
* Ogg (Opus, Vorbis): the last page's granule position over the sample rate.
* WebM/Matroska: ``Segment/Info/Duration`` times ``TimecodeScale``.
"""

from __future__ import annotations

import io
import struct
import wave
from collections.abc import Iterator


def _num(fmt: str, body: bytes, off: int) -> int:
    """The one integer ``fmt`` (a ``struct`` format) reads at ``off``."""
    return int(struct.unpack_from(fmt, body, off)[0])


# --- WAV ---------------------------------------------------------------------------------------


def wav_duration(body: bytes) -> float | None:
    try:
        with wave.open(io.BytesIO(body)) as w:
            rate, frames = int(w.getframerate()), int(w.getnframes())
            frame_bytes = int(w.getsampwidth()) * int(w.getnchannels())
    except (wave.Error, EOFError):
        return _riff_duration(body)
    if rate <= 0 or frame_bytes <= 0:
        raise ValueError("the WAV header has no sample rate or sample size")
    return min(frames, len(body) // frame_bytes) / rate


def _riff_duration(body: bytes) -> float:
    byte_rate = 0
    off = 12
    while off + 8 <= len(body):
        kind, size = body[off : off + 4], _num("<I", body, off + 4)
        start = off + 8
        if kind == b"fmt " and size >= 16 and start + 16 <= len(body):
            byte_rate = _num("<I", body, start + 8)
        elif kind == b"data":
            if byte_rate <= 0:
                raise ValueError("the WAV has no fmt chunk with a byte rate before its data")
            return min(size, len(body) - start) / byte_rate
        off = start + size + (size & 1)
    raise ValueError("the WAV has no data chunk")


# --- MP3 ---------------------------------------------------------------------------------------

_BITRATES = {  # (MPEG-1 or not, layer) -> kbit/s by index
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
#: How far past an ID3 tag the first frame is looked for.
_MP3_SCAN = 64 * 1024


class Mp3Frame:
    """An MPEG audio frame header: version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5), layer 1-3."""

    def __init__(self, version: int, layer: int, kbps: int, rate: int, padding: int, mono: bool):
        self.version, self.layer, self.kbps, self.rate, self.mono = version, layer, kbps, rate, mono
        self.samples = 384 if layer == 1 else 1152 if layer == 2 or version == 3 else 576
        if kbps == 0:
            self.length = 0
        elif layer == 1:
            self.length = (12 * kbps * 1000 // rate + padding) * 4
        else:
            self.length = self.samples // 8 * kbps * 1000 // rate + padding


def mp3_frame(head: bytes, off: int = 0) -> Mp3Frame | None:
    """The frame header at ``off``, or None when the four bytes there are not one."""
    if off + 4 > len(head) or head[off] != 0xFF or head[off + 1] & 0xE0 != 0xE0:
        return None
    b1, b2, b3 = head[off + 1], head[off + 2], head[off + 3]
    version, layer_bits, index, rate_index = (b1 >> 3) & 3, (b1 >> 1) & 3, b2 >> 4, (b2 >> 2) & 3
    if version == 1 or layer_bits == 0 or index == 15 or rate_index == 3:
        return None
    layer = 4 - layer_bits
    kbps = _BITRATES[(version == 3, layer)][index]
    return Mp3Frame(version, layer, kbps, _SAMPLE_RATES[version][rate_index], (b2 >> 1) & 1, b3 >> 6 == 3)


def id3_size(body: bytes) -> int:
    """The length of an ID3v2 tag at the start of ``body`` (0 when there is none)."""
    if len(body) < 10 or body[:3] != b"ID3":
        return 0
    size = 0
    for b in body[6:10]:
        size = size << 7 | (b & 0x7F)
    return 10 + size + (10 if body[5] & 0x10 else 0)


def mp3_duration(body: bytes) -> float | None:
    start = id3_size(body)
    off, frame = _first_frame(body, start)
    if frame is None:
        raise ValueError("no MPEG audio frame found")
    side = (32 if not frame.mono else 17) if frame.version == 3 else (17 if not frame.mono else 9)
    xing = off + 4 + side
    if body[xing : xing + 4] in (b"Xing", b"Info") and len(body) >= xing + 12:
        flags = _num(">I", body, xing + 4)
        if flags & 1:
            return _num(">I", body, xing + 8) * frame.samples / frame.rate
    vbri = off + 4 + 32
    if body[vbri : vbri + 4] == b"VBRI" and len(body) >= vbri + 18:
        return _num(">I", body, vbri + 14) * frame.samples / frame.rate
    if frame.kbps == 0:  # free bitrate: no length without walking every frame
        return None
    audio = len(body) - off - (128 if body[-128:-125] == b"TAG" else 0)
    return max(audio, 0) * 8 / (frame.kbps * 1000)


def _first_frame(body: bytes, start: int) -> tuple[int, Mp3Frame | None]:
    """The first frame header from ``start`` that the next frame confirms (or that ends the body)."""
    for off in range(start, min(len(body) - 3, start + _MP3_SCAN)):
        frame = mp3_frame(body, off)
        if frame is None:
            continue
        after = off + frame.length
        if frame.length == 0 or after >= len(body) - 3 or mp3_frame(body, after) is not None:
            return off, frame
    return start, None


# --- MP4 ---------------------------------------------------------------------------------------


def _boxes(body: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, content start, end) of each ISO-BMFF box in ``body[start:end]``, until one is cut."""
    off = start
    while off + 8 <= end:
        size, kind = struct.unpack_from(">I4s", body, off)
        header = 8
        if size == 1:
            if off + 16 > end:
                return
            size, header = _num(">Q", body, off + 8), 16
        elif size == 0:
            size = end - off
        if size < header or off + size > end:
            return
        yield kind, off + header, off + size
        off += size


def _child(body: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((s, e) for k, s, e in _boxes(body, start, end) if k == kind), None)


def mp4_duration(body: bytes) -> float | None:
    moov = _child(body, 0, len(body), b"moov")
    mvhd = moov and _child(body, *moov, b"mvhd")
    if moov is None or mvhd is None:
        return None
    s, e = mvhd
    if body[s] == 1:
        if s + 32 > e:
            raise ValueError("the mvhd box is cut short")
        timescale, duration = struct.unpack_from(">IQ", body, s + 20)
        unknown = duration == 2**64 - 1
    else:
        if s + 20 > e:
            raise ValueError("the mvhd box is cut short")
        timescale, duration = struct.unpack_from(">II", body, s + 12)
        unknown = duration == 2**32 - 1
    if timescale == 0:
        raise ValueError("the mvhd box has a timescale of 0")
    if duration == 0 or unknown:  # fragmented: the movie extends header may know
        mvex = _child(body, *moov, b"mvex")
        mehd = mvex and _child(body, *mvex, b"mehd")
        if mehd is None:
            return None
        fmt = ">Q" if body[mehd[0]] == 1 else ">I"
        if mehd[0] + 4 + struct.calcsize(fmt) > mehd[1]:
            return None
        duration = struct.unpack_from(fmt, body, mehd[0] + 4)[0]
    return duration / timescale or None


# --- FLAC, Ogg ---------------------------------------------------------------------------------


def flac_duration(body: bytes) -> float | None:
    if len(body) < 8 + 34 or body[:4] != b"fLaC" or body[4] & 0x7F != 0:
        raise ValueError("the FLAC has no STREAMINFO block")
    (packed,) = struct.unpack_from(">Q", body, 8 + 10)
    rate, total = packed >> 44, packed & (2**36 - 1)
    if rate == 0:
        raise ValueError("the FLAC STREAMINFO has a sample rate of 0")
    return total / rate if total else None


def ogg_duration(body: bytes) -> float | None:
    if len(body) < 28 or body[:4] != b"OggS":
        raise ValueError("no Ogg page")
    packet = 27 + body[26]
    skip = 0
    if body[packet : packet + 8] == b"OpusHead" and len(body) >= packet + 12:
        rate, skip = 48000, _num("<H", body, packet + 10)
    elif body[packet : packet + 7] == b"\x01vorbis" and len(body) >= packet + 16:
        rate = _num("<I", body, packet + 12)
    else:
        return None
    last = body.rfind(b"OggS")
    while last > 0 and (last + 27 > len(body) or body[last + 4] != 0):
        last = body.rfind(b"OggS", 0, last)
    granule = _num("<q", body, last + 6)
    if rate == 0 or granule <= 0:
        return None
    return max(granule - skip, 0) / rate


# --- WebM / Matroska ---------------------------------------------------------------------------

_SEGMENT, _INFO, _CLUSTER = 0x18538067, 0x1549A966, 0x1F43B675
_TIMECODE_SCALE, _DURATION = 0x2AD7B1, 0x4489


def ebml_vint(body: bytes, off: int, *, marker: bool) -> tuple[int, int, bool]:
    """(value, length, all ones) of the EBML variable-size integer at ``off``."""
    if off >= len(body) or body[off] == 0:
        raise ValueError("a broken EBML element")
    length = 9 - body[off].bit_length()
    if off + length > len(body):
        raise ValueError("an EBML element is cut short")
    value = int.from_bytes(body[off : off + length], "big")
    bare = value & ((1 << (7 * length)) - 1)
    return (value if marker else bare), length, bare == (1 << (7 * length)) - 1


def _elements(body: bytes, start: int, end: int) -> Iterator[tuple[int, int, int | None]]:
    """(id, content start, content end or None when unknown) of each element in ``body[start:end]``."""
    off = start
    while off < end:
        ident, n, _ = ebml_vint(body, off, marker=True)
        size, m, unknown = ebml_vint(body, off + n, marker=False)
        content = off + n + m
        yield ident, content, None if unknown else min(content + size, end)
        if unknown:
            return
        off = content + size


def webm_duration(body: bytes) -> float | None:
    for ident, start, end in _elements(body, 0, len(body)):
        if ident != _SEGMENT:
            continue
        for child, s, e in _elements(body, start, end if end is not None else len(body)):
            if child == _CLUSTER or e is None:
                return None
            if child == _INFO:
                return _info_duration(body, s, e)
    return None


def _info_duration(body: bytes, start: int, end: int) -> float | None:
    scale, duration = 1_000_000, None
    for ident, s, e in _elements(body, start, end):
        if e is None:
            break
        if ident == _TIMECODE_SCALE and e > s:
            scale = int.from_bytes(body[s:e], "big")
        elif ident == _DURATION and e - s in (4, 8):
            (duration,) = struct.unpack(">f" if e - s == 4 else ">d", body[s:e])
    return duration * scale / 1e9 if duration and duration > 0 else None
