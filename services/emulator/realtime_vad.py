"""The Realtime emulator's input audio buffer and server VAD (voice activity detection). Pure.

Audio is 24 kHz mono PCM16 (48 bytes a millisecond). Positions are bytes on the session's audio
clock: everything ever appended, so ``ms = position / 48`` is the ``audio_start_ms`` /
``audio_end_ms`` the Realtime API reports ("milliseconds from the start of all audio written to
the buffer during the session").

VAD looks at consecutive 20 ms frames (960 bytes; a trailing partial frame waits for more audio).
A frame is speech when its RMS is at least ``threshold * 1000`` (0.5, the API's default, is 500
of 32 767, about -36 dBFS). Speech starts at the first speech frame, reported
``prefix_padding_ms`` earlier (never before the uncommitted audio); it stops once
``silence_duration_ms`` of frames after the last speech frame were silent, reported at the end of
that silence, so ``audio_end_ms`` includes it, as the API documents. The speech item holds the
audio from the start to the end; audio before the start is dropped, audio after the end stays.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal

BYTES_PER_MS = 48
FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS
RMS_PER_THRESHOLD = 1000.0
#: The API refuses to commit less than 100 ms of audio.
MIN_COMMIT_BYTES = 100 * BYTES_PER_MS
#: One audio token per 50 ms of audio, in and out.
BYTES_PER_AUDIO_TOKEN = 50 * BYTES_PER_MS


def audio_tokens(n_bytes: int) -> int:
    """Audio tokens for ``n_bytes`` of PCM16 at 24 kHz: one per started 50 ms."""
    return -(-n_bytes // BYTES_PER_AUDIO_TOKEN)


def to_ms(position: int) -> int:
    return position // BYTES_PER_MS


def frame_rms(frame: bytes) -> float:
    """Root mean square of the signed 16-bit little-endian samples in ``frame``."""
    count = len(frame) // 2
    if not count:
        return 0.0
    samples = struct.unpack(f"<{count}h", frame[: 2 * count])
    return math.sqrt(sum(s * s for s in samples) / count)


@dataclass(frozen=True, slots=True)
class VadSettings:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True, slots=True)
class VadEvent:
    kind: Literal["speech_started", "speech_stopped"]
    position: int  # session clock, bytes

    @property
    def ms(self) -> int:
        return to_ms(self.position)


class InputBuffer:
    """Appended audio not committed yet, with VAD state (``vad=None``: no turn detection)."""

    def __init__(self) -> None:
        self.audio = bytearray()
        self.base = 0  # session-clock position of audio[0]
        self.scanned = 0  # VAD has looked at everything before this position
        self.speech_start: int | None = None  # reported start (padding applied)
        self.last_speech_end = 0

    @property
    def end(self) -> int:
        return self.base + len(self.audio)

    @property
    def speaking(self) -> bool:
        return self.speech_start is not None

    def append(self, pcm: bytes) -> None:
        self.audio += pcm

    def detect(self, vad: VadSettings | None) -> VadEvent | None:
        """Scan the frames not scanned yet up to the next VAD event (None: no event in the audio
        so far, or no turn detection). After ``speech_stopped`` the caller takes the speech
        (:meth:`take_speech`) and calls this again for the rest."""
        if vad is None:
            self.scanned = self.end
            return None
        floor = vad.threshold * RMS_PER_THRESHOLD
        silence = vad.silence_duration_ms * BYTES_PER_MS
        while self.scanned + FRAME_BYTES <= self.end:
            at = self.scanned - self.base
            frame_start, frame_end = self.scanned, self.scanned + FRAME_BYTES
            self.scanned = frame_end
            if frame_rms(bytes(self.audio[at : at + FRAME_BYTES])) >= floor:
                self.last_speech_end = frame_end
                if self.speech_start is None:
                    self.speech_start = max(self.base, frame_start - vad.prefix_padding_ms * BYTES_PER_MS)
                    return VadEvent("speech_started", self.speech_start)
            elif self.speech_start is not None and frame_end - self.last_speech_end >= silence:
                return VadEvent("speech_stopped", frame_end)
        return None

    def take_speech(self, stop: int) -> bytes:
        """The speech from its start to ``stop`` (a ``speech_stopped`` position); earlier audio is
        dropped, later audio stays for the next turn."""
        start = self.speech_start if self.speech_start is not None else self.base
        speech = bytes(self.audio[start - self.base : stop - self.base])
        del self.audio[: stop - self.base]
        self.base = stop
        self.speech_start = None
        return speech

    def take_all(self) -> bytes:
        """Everything uncommitted (a manual commit); VAD starts afresh after it."""
        audio = bytes(self.audio)
        self.clear()
        return audio

    def clear(self) -> None:
        self.base = self.end
        self.audio.clear()
        self.scanned = self.base
        self.speech_start = None
