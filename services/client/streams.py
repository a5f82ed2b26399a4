"""Checking a streamed answer's chunks before a caller sees them (the SDK's ``stream``, and so
the edge's SSE streams).

Chunks of one run of a plan carry one ``run_id`` and ``seq`` gap-free from 0. What can arrive
instead, and what the caller gets:

* **a duplicate** (a ``seq`` already seen in this run): dropped;
* **a gap** (a ``seq`` past the next one): the stream ends with ``stream_interrupted``, since
  the missing text cannot be recovered;
* **a restart**: the executor running the plan died mid-stream and another one runs it again,
  from ``seq`` 0 under a new ``run_id`` (a chunk of the old run arriving later is dropped).
  The caller may already hold part of the answer, and bytes sent to an HTTP client cannot be
  taken back, so the new run is *replayed against what was delivered*: its text (and tool-call
  deltas, and the audio of a speech stream) up to what the caller already holds must be the
  same, and is not delivered again; what comes after it is. A new run that differs from the
  delivered part (another wording, another tool-call id, other audio bytes), or ends before
  reaching its end, ends the stream with ``stream_interrupted``. Audio is compared by a SHA-256
  of the delivered bytes, so a speech stream holds no copy of its audio.

A caller therefore assembles each answer exactly once, or gets an explicit error. The chunks it
is given are numbered again, gap-free from 0 across a restart (unchanged when nothing restarted).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from services.contracts.errors import StreamInterrupted
from services.contracts.events import ChunkEmitted, Delta, ToolCallDelta

_NOT_YET = object()


@dataclass(slots=True)
class _Tool:
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class _Replay:
    """How far a restarted run has re-covered what was delivered."""

    text: int = 0
    tools: dict[int, int] = field(default_factory=dict)  # index -> arguments re-covered
    audio: int = 0  # audio bytes re-covered (their digest: ``StreamCheck._replay_hash``)


class StreamCheck:
    def __init__(self, request_id: str):
        self.request_id = request_id
        self._run: object = _NOT_YET
        self._abandoned: set[str] = set()
        self._expected = 0  # the next seq of the current run
        self._yielded = 0  # the next seq the caller sees
        self._text: list[str] = []
        self._text_len = 0
        self._tools: dict[int, _Tool] = {}
        self._audio_len = 0
        self._audio_hash = hashlib.sha256()
        self._replay_hash = hashlib.sha256()
        self._replay: _Replay | None = None
        self.restarts = 0

    def accept(self, chunk: ChunkEmitted) -> ChunkEmitted | None:
        """The chunk to give the caller (renumbered), or None when there is nothing new in it;
        ``StreamInterrupted`` when the stream cannot go on without duplicating or losing text."""
        run = chunk.run_id
        if run in self._abandoned:
            return None  # a chunk of a run given up for a newer one
        if self._run is _NOT_YET:
            if chunk.seq != 0:
                raise self._gap(chunk)
            self._run = run
        elif run != self._run or (run is None and chunk.seq == 0 and self._expected > 0):
            if chunk.seq != 0:
                raise self._gap(chunk, 0)  # the new run's beginning never arrived
            if self._run is not None:  # (chunks that name no run cannot be told apart)
                if isinstance(self._run, str):
                    self._abandoned.add(self._run)
            self._run, self._expected, self._replay = run, 0, _Replay()
            self._replay_hash = hashlib.sha256()
            self.restarts += 1
        if chunk.seq < self._expected:
            return None
        if chunk.seq > self._expected:
            raise self._gap(chunk)
        self._expected += 1
        out = chunk if self._replay is None else self._replayed(chunk)
        if out is None:
            return None
        self._delivered(out)
        if out.seq != self._yielded:
            out = out.model_copy(update={"seq": self._yielded})
        self._yielded += 1
        return out

    def _gap(self, chunk: ChunkEmitted, expected: int | None = None) -> StreamInterrupted:
        expected = self._expected if expected is None else expected
        return StreamInterrupted(
            f"stream {self.request_id} lost chunks: expected seq {expected}, got {chunk.seq}",
            details={"reason": "gap"},
        )

    def _diverged(self, what: str) -> StreamInterrupted:
        return StreamInterrupted(
            f"stream {self.request_id} was restarted after an executor failure and the new answer"
            f" {what} than the part already delivered; retry the request",
            details={
                "reason": "restart",
                "delivered_chars": self._text_len,
                **({"delivered_audio_bytes": self._audio_len} if self._audio_len else {}),
            },
        )

    def _delivered(self, chunk: ChunkEmitted) -> None:
        d = chunk.delta
        if d.content:
            self._text.append(d.content)
            self._text_len += len(d.content)
        for tc in d.tool_calls or ():
            cur = self._tools.setdefault(tc.index, _Tool())
            cur.id, cur.name = cur.id or tc.id, cur.name or tc.name
            cur.arguments += tc.arguments
        if d.audio:
            raw = base64.b64decode(d.audio)
            self._audio_hash.update(raw)
            self._audio_len += len(raw)

    def _replayed(self, chunk: ChunkEmitted) -> ChunkEmitted | None:
        """What of a restarted run's chunk the caller does not hold yet."""
        replay = self._replay
        assert replay is not None
        if chunk.final and chunk.error is not None:  # the new run failed: its own error ends the stream
            return chunk.model_copy(update={"delta": Delta()})
        d = chunk.delta
        content = None
        if d.content:
            content = self._cover_text(replay, d.content)
        tools: list[ToolCallDelta] = []
        for tc in d.tool_calls or ():
            rest = self._cover_tool(replay, tc)
            if rest is not None:
                tools.append(rest)
        audio = self._cover_audio(replay, d.audio) if d.audio else None
        if self._covered(replay):
            self._replay = None  # everything delivered is re-covered: the run goes on as it comes
        elif chunk.final:
            raise self._diverged("is shorter")
        if content is None and not tools and audio is None and not chunk.final:
            return None
        return chunk.model_copy(
            update={
                "delta": Delta(content=content, tool_calls=tools or None, audio=audio),
                "model": None,
                "provider": None,
                "ttft_ms": None,
                "fallback": None,
                "ratelimit": None,
            }
        )

    def _cover_text(self, replay: _Replay, text: str) -> str | None:
        held = "".join(self._text)
        self._text = [held] if held else []
        have = held[replay.text :]
        if len(text) <= len(have):
            if not have.startswith(text):
                raise self._diverged("differs")
            replay.text += len(text)
            return None
        if not text.startswith(have):
            raise self._diverged("differs")
        replay.text = len(held)
        return text[len(have) :]

    def _cover_tool(self, replay: _Replay, tc: ToolCallDelta) -> ToolCallDelta | None:
        held = self._tools.get(tc.index)
        if held is None:
            return tc  # a tool call the caller has not seen
        if (tc.id and held.id and tc.id != held.id) or (tc.name and held.name and tc.name != held.name):
            raise self._diverged("differs")
        pos = replay.tools.get(tc.index, 0)
        have = held.arguments[pos:]
        if len(tc.arguments) <= len(have):
            if not have.startswith(tc.arguments):
                raise self._diverged("differs")
            replay.tools[tc.index] = pos + len(tc.arguments)
            return None
        if not tc.arguments.startswith(have):
            raise self._diverged("differs")
        replay.tools[tc.index] = len(held.arguments)
        return ToolCallDelta(index=tc.index, arguments=tc.arguments[len(have) :])

    def _cover_audio(self, replay: _Replay, audio: str) -> str | None:
        """The part of a restarted run's audio (base64) past what was delivered, once the bytes
        up to there are the delivered ones (same length, same digest)."""
        raw = base64.b64decode(audio)
        need = self._audio_len - replay.audio
        head, rest = raw[:need], raw[need:]
        if head:
            self._replay_hash.update(head)
            replay.audio += len(head)
            if replay.audio == self._audio_len and self._replay_hash.digest() != self._audio_hash.digest():
                raise self._diverged("differs")
        return base64.b64encode(rest).decode("ascii") if rest else None

    def _covered(self, replay: _Replay) -> bool:
        return (
            replay.text >= self._text_len
            and replay.audio >= self._audio_len
            and all(replay.tools.get(i, 0) >= len(t.arguments) for i, t in self._tools.items())
        )
