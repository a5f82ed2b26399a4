"""Deterministic media for the emulated media APIs (:mod:`.media_api`): images, speech, and the
reading of uploaded audio. Everything here is pure.

* Images are real Pillow images of the asked size: an 8x8 grid of flat colours derived from
  SHAKE-128 of the prompt and the image's index, so a prompt always gives the same pictures and
  a 1024x1024 PNG stays a few KB.
* Speech is 24 kHz mono 16-bit audio, :data:`CHARS_PER_SECOND` characters of input per second
  (divided by ``speed``): each character a short tone whose pitch comes from the character,
  spaces silent. As WAV it carries the input text in a RIFF ``LIST``/``INFO`` ``ICMT`` chunk,
  which :func:`audio_info` reads back, so the emulator's transcription of its own speech is the
  text spoken (a round trip). ``pcm`` is the same samples without a header. MP3 is valid
  MPEG-1 Layer III frames of silence (48 kHz mono 32 kbit/s, zeroed side info and main data).
* Uploaded audio: WAV durations come from the header (and the text from ``ICMT``), MP3's from the
  first frame's bitrate and the size, anything else is estimated at 16 000 bytes a second.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image

SAMPLE_RATE = 24_000
CHARS_PER_SECOND = 15.0
#: Bytes per second assumed for audio the emulator cannot read (128 kbit/s).
UNKNOWN_BYTES_PER_SECOND = 16_000

# --- images ---------------------------------------------------------------------------------------

_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
IMAGE_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def image_bytes(prompt: str, index: int, width: int, height: int, fmt: str = "png") -> bytes:
    """Image ``index`` of ``prompt`` as ``fmt`` (png, jpeg or webp), ``width`` x ``height``."""
    colours = hashlib.shake_128(f"{index}\x00{prompt}".encode()).digest(8 * 8 * 3)
    picture = Image.frombytes("RGB", (8, 8), colours).resize((width, height), Image.Resampling.NEAREST)
    out = io.BytesIO()
    picture.save(out, _PILLOW_FORMATS[fmt])
    return out.getvalue()


# --- speech ---------------------------------------------------------------------------------------


def speech_seconds(text: str, speed: float = 1.0) -> float:
    """How long ``text`` takes to say at ``speed`` (at least one character's time)."""
    return max(len(text), 1) / CHARS_PER_SECOND / speed


@lru_cache(maxsize=256)
def _tone(char: str, samples: int) -> bytes:
    if char.isspace():
        return bytes(2 * samples)
    hz = 180 + (ord(char) % 40) * 15
    return struct.pack(
        f"<{samples}h", *(int(8000 * math.sin(2 * math.pi * hz * i / SAMPLE_RATE)) for i in range(samples))
    )


def speech_pcm(text: str, speed: float = 1.0) -> bytes:
    """``text`` "spoken": signed 16-bit little-endian mono samples at :data:`SAMPLE_RATE`."""
    per_char = max(int(SAMPLE_RATE / CHARS_PER_SECOND / speed), 1)
    return b"".join(_tone(c, per_char) for c in (text or " "))


def _chunk(name: bytes, payload: bytes) -> bytes:
    return name + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")


def wav_bytes(pcm: bytes, comment: str | None = None) -> bytes:
    """A WAV file (RIFF, PCM, 24 kHz mono 16-bit) of ``pcm``; ``comment`` goes in ``ICMT``."""
    fmt = struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    chunks = _chunk(b"fmt ", fmt)
    if comment:
        chunks += _chunk(b"LIST", b"INFO" + _chunk(b"ICMT", comment.encode() + b"\x00"))
    chunks += _chunk(b"data", pcm)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


MP3_SAMPLE_RATE = 48_000
MP3_FRAME = b"\xff\xfb\x14\xc4" + bytes(92)  # MPEG-1 Layer III, 32 kbit/s, 48 kHz, mono: 96 bytes
MP3_FRAME_SECONDS = 1152 / MP3_SAMPLE_RATE


def mp3_silence(seconds: float) -> bytes:
    """``seconds`` of silence as MPEG-1 Layer III frames (at least one)."""
    return MP3_FRAME * max(math.ceil(seconds / MP3_FRAME_SECONDS), 1)


# --- reading audio --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    kind: str  # "wav", "mp3" or "unknown"
    duration_s: float
    comment: str | None = None


def audio_info(body: bytes) -> AudioInfo:
    """What the emulator can tell about uploaded audio (never raises)."""
    if body[:4] == b"RIFF" and body[8:12] == b"WAVE":
        info = _wav_info(body)
        if info is not None:
            return info
    duration = _mp3_duration(body)
    if duration is not None:
        return AudioInfo("mp3", duration)
    return AudioInfo("unknown", len(body) / UNKNOWN_BYTES_PER_SECOND)


def _wav_info(body: bytes) -> AudioInfo | None:
    pos, byte_rate, data_bytes, comment = 12, 0, None, None
    while pos + 8 <= len(body):
        name, size = body[pos : pos + 4], struct.unpack_from("<I", body, pos + 4)[0]
        payload = body[pos + 8 : pos + 8 + size]
        if name == b"fmt " and len(payload) >= 16:
            byte_rate = struct.unpack_from("<I", payload, 8)[0]
        elif name == b"data":
            data_bytes = len(payload)
        elif name == b"LIST" and payload[:4] == b"INFO":
            comment = _info_comment(payload[4:])
        pos += 8 + size + (size % 2)
    if not byte_rate or data_bytes is None:
        return None
    return AudioInfo("wav", data_bytes / byte_rate, comment)


def _info_comment(info: bytes) -> str | None:
    pos = 0
    while pos + 8 <= len(info):
        name, size = info[pos : pos + 4], struct.unpack_from("<I", info, pos + 4)[0]
        if name == b"ICMT":
            return info[pos + 8 : pos + 8 + size].rstrip(b"\x00").decode("utf-8", "replace")
        pos += 8 + size + (size % 2)
    return None


_MP3_KBPS = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2 (and 2.5)
}


def _mp3_duration(body: bytes) -> float | None:
    start = 0
    if body[:3] == b"ID3" and len(body) >= 10:  # skip an ID3v2 tag (its size is synch-safe)
        start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(body[6:10]))
    head = body[start : start + 4]
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0 or (head[1] >> 1) & 3 != 1:
        return None  # not a Layer III frame sync
    version = (head[1] >> 3) & 3
    kbps = _MP3_KBPS[3 if version == 3 else 2][head[2] >> 4 if head[2] >> 4 < 15 else 0]
    if not kbps:
        return None
    return (len(body) - start) * 8 / (kbps * 1000)


# --- transcripts ----------------------------------------------------------------------------------


def heard(info: AudioInfo) -> str:
    """The transcript of ``info``'s audio: the text it carries, else a sentence naming its length."""
    if info.comment:
        return info.comment
    return f"The emulator heard {info.duration_s:.1f} seconds of audio."


@dataclass(frozen=True)
class Timed:
    text: str
    start: float
    end: float


_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORDS_PER_SEGMENT = 12


def _spread(pieces: list[str], duration: float) -> list[Timed]:
    """``pieces`` laid end to end over ``duration``, each as long as its share of the characters."""
    total = sum(len(p) for p in pieces) or 1
    out, at = [], 0.0
    for piece in pieces:
        end = at + duration * len(piece) / total
        out.append(Timed(piece, round(at, 3), round(end, 3)))
        at = end
    return out


def segments(text: str, duration: float) -> list[Timed]:
    """Sentences (at most :data:`_WORDS_PER_SEGMENT` words each) with their times."""
    pieces: list[str] = []
    for sentence in _SENTENCE.split(text.strip()):
        words = sentence.split()
        for i in range(0, len(words), _WORDS_PER_SEGMENT):
            pieces.append(" ".join(words[i : i + _WORDS_PER_SEGMENT]))
    return _spread([p for p in pieces if p], duration)


def words(text: str, duration: float) -> list[Timed]:
    """Each word (punctuation around it dropped) with its time."""
    return _spread([w for w in (raw.strip(".,!?;:\"'()") for raw in text.split()) if w], duration)


def _stamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{separator}{ms % 1000:03d}"


def srt(cues: list[Timed]) -> str:
    return "".join(
        f"{i}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n{c.text}\n\n" for i, c in enumerate(cues, 1)
    )


def vtt(cues: list[Timed]) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n{c.text}\n\n" for c in cues
    )
