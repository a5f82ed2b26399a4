"""One Realtime response ("turn") of the emulator: its events, its output and its usage.

A response answers with function calls when the scenario asks for them (``tool=1`` / ``tools=N``,
alias ``@function_call``) and tools are offered, following ``tool_choice`` and
``parallel_tool_calls`` as chat does (:mod:`.tools`); otherwise with one assistant message: text
(``tok0 tok1 ...``, ``tokens`` words, or under ``echo`` the last user item's text; a user audio
item "says" its transcript or ``The emulator heard 1.5 seconds of audio.``), capped by
``max_output_tokens`` (status ``incomplete``). With audio output the text is the transcript and
the audio is :func:`~.media_synth.speech_pcm` of it, sent in 100 ms deltas (4 800 bytes), each
transcript delta just before the audio delta in which its sound starts.

Pacing and failures come from the scenario: ``ttfb_ms`` after ``response.created``,
``chunk_delay_ms`` between deltas, ``hang=1`` (nothing after ``response.created`` until
cancelled), ``status=N`` / ``fail_first=N`` (alias ``@error`` = ``status=500``: an ``error``
event, then ``response.done`` with status ``failed`` and zero usage), ``disconnect_after=N``
(the TCP connection drops after N deltas of any kind).

Usage (``response.done``), deterministic from the context the response read:
input text tokens = 3 + words per item (function arguments and outputs count their words; user
audio transcripts are not read by the model) + 3 + words of the instructions when there are any;
input audio tokens = one per started 50 ms of each item's audio; cached = the scenario's
``cached`` (capped); output text tokens = the deltas of text, transcript or arguments sent;
output audio tokens = one per started 50 ms of audio sent. A cancelled response counts what it
sent.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Protocol

from . import media_synth, text, tools
from .realtime_items import Dialect, Item, Part
from .realtime_vad import BYTES_PER_MS, audio_tokens
from .realtime_wire import Config, response_body, usage_body
from .scenario import Scenario

AUDIO_CHUNK = 100 * BYTES_PER_MS

_FAILURES: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (emulated)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (emulated)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (emulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (emulated)."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def failure(status: int) -> dict[str, Any]:
    """The ``error`` object a scenario failure with HTTP-like ``status`` reports."""
    kind, code, message = _FAILURES.get(
        status,
        (
            "server_error" if status >= 500 else "invalid_request_error",
            None,
            f"Emulated error (status {status}).",
        ),
    )
    return {"type": kind, "code": code, "message": message}


class Dropped(Exception):
    """The scenario dropped the connection (``disconnect_after``)."""


class Host(Protocol):
    """What a turn needs from its session."""

    dialect: Dialect
    scenario: Scenario
    conversation_id: str

    async def emit(self, event_type: str, **fields: Any) -> None: ...

    async def add_item(self, item: Item) -> None: ...

    def failure_status(self) -> int | None: ...

    async def drop(self) -> None: ...


def heard_text(item: Item) -> str:
    """What a user item "says": its text parts, and its audio's transcript (or its length)."""
    said = []
    for part in item.content:
        if part.type == "input_text":
            said.append(part.text or "")
        elif part.type == "input_audio":
            info = media_synth.AudioInfo("pcm", part.audio_bytes / (1000 * BYTES_PER_MS), part.transcript)
            said.append(media_synth.heard(info))
    return " ".join(s for s in said if s)


def last_user_text(context: list[Item]) -> str:
    for item in reversed(context):
        if item.type == "message" and item.role == "user":
            return heard_text(item)
    return ""


class Turn:
    """One response, from ``response.created`` to ``response.done``; :meth:`cancel` ends it early."""

    def __init__(
        self,
        host: Host,
        config: Config,
        context: list[Item],
        *,
        in_conversation: bool,
        metadata: dict[str, Any] | None,
        client_event_id: str | None,
    ) -> None:
        self.host, self.config, self.context = host, config, context
        self.in_conversation, self.metadata, self.client_event_id = in_conversation, metadata, client_event_id
        self.id = text.new_id("resp_")
        self.output: list[Item] = []
        self.cancelled = asyncio.Event()
        self.reason: str | None = None
        self.capped = False
        self.deltas = 0
        self.text_out = 0
        self.audio_out = 0  # bytes
        self.status = "in_progress"
        self.failed_status: int | None = None
        self.usage: dict[str, Any] | None = None

    def cancel(self, reason: str) -> None:
        if not self.cancelled.is_set():
            self.reason = reason
            self.cancelled.set()

    # --- the whole response ---------------------------------------------------------------------

    async def run(self) -> None:
        await self._emit("response.created", response=self._body())
        scenario = self.host.scenario
        if scenario.ttfb_ms and await self._wait(scenario.ttfb_ms / 1000):
            return await self._finish("cancelled")
        status = self.host.failure_status()
        if status is not None:
            return await self._fail(status)
        if scenario.hang:
            await self.cancelled.wait()
            return await self._finish("cancelled")
        calls = self._plan_calls()
        if calls:
            for index, call in enumerate(calls):
                if not await self._function_call(index, call):
                    break
        else:
            await self._message(0)
        if self.cancelled.is_set():
            await self._finish("cancelled")
        else:
            await self._finish("incomplete" if self.capped else "completed")

    def input_usage(self) -> tuple[int, int]:
        """(text tokens, audio tokens) of the context and instructions this response reads."""
        words = text.count_words(self.config.instructions)
        text_in = text.PER_MESSAGE + words if self.config.instructions else 0
        text_in += sum(text.PER_MESSAGE + item.words() for item in self.context)
        return text_in, sum(audio_tokens(item.audio_bytes()) for item in self.context)

    def _plan_calls(self) -> list[tools.Call]:
        choice = self.config.tool_choice
        offered = [
            (str(t["name"]), t.get("parameters"))
            for t in self.config.tools
            if t.get("type", "function") == "function"
        ]
        if choice == "none":
            return []
        named = isinstance(choice, dict) and choice.get("type") == "function"
        if named:
            offered = [f for f in offered if f[0] == choice.get("name")]
        count = tools.call_count(
            self.host.scenario,
            forced=named or choice == "required",
            single=not self.config.parallel_tool_calls,
            after_tool_result=bool(self.context) and self.context[-1].type == "function_call_output",
        )
        return tools.make_calls(offered, count, self.host.scenario)

    def _pieces(self) -> list[str]:
        scenario = self.host.scenario
        if scenario.echo:
            pieces = text.echo_pieces(last_user_text(self.context))
        else:
            pieces = text.completion_pieces(scenario.tokens)
        cap = self.config.token_cap()
        if cap is not None and len(pieces) > cap:
            self.capped = True
            pieces = pieces[:cap]
        return pieces

    # --- output items ---------------------------------------------------------------------------

    async def _open(self, item: Item, index: int) -> None:
        self.output.append(item)
        await self._emit(
            "response.output_item.added", response_id=self.id, output_index=index, item=self._item(item)
        )
        if self.in_conversation:
            await self.host.add_item(item)

    async def _close(self, item: Item, index: int) -> None:
        item.status = "incomplete" if self.cancelled.is_set() or self.capped else "completed"
        await self._emit(
            "response.output_item.done", response_id=self.id, output_index=index, item=self._item(item)
        )
        if self.in_conversation:
            await self._emit("conversation.item.done", item=self._item(item))

    async def _message(self, index: int) -> None:
        item = Item(text.new_id("item_"), "message", role="assistant", status="in_progress")
        await self._open(item, index)
        audio = self.config.output_audio
        part = Part("output_audio", transcript="") if audio else Part("output_text", text="")
        item.content.append(part)
        where = {"response_id": self.id, "item_id": item.id, "output_index": index, "content_index": 0}
        await self._emit("response.content_part.added", **where, part=_part_event(part))
        pieces = self._pieces()
        if audio:
            await self._speak(part, pieces, where)
            await self._emit("response.output_audio.done", **where)
            await self._emit("response.output_audio_transcript.done", **where, transcript=part.transcript)
        else:
            for piece in pieces:
                if not await self._delta("response.output_text.delta", **where, delta=piece):
                    break
                part.text = (part.text or "") + piece
                self.text_out += 1
            await self._emit("response.output_text.done", **where, text=part.text)
        await self._emit("response.content_part.done", **where, part=_part_event(part))
        await self._close(item, index)

    async def _speak(self, part: Part, pieces: list[str], where: dict[str, Any]) -> None:
        sounds = [media_synth.speech_pcm(piece, self.config.speed) for piece in pieces]
        starts, at = [], 0
        for sound in sounds:
            starts.append(at)
            at += len(sound)
        audio, said = b"".join(sounds), 0
        for offset in range(0, len(audio), AUDIO_CHUNK):
            while said < len(pieces) and starts[said] < offset + AUDIO_CHUNK:
                piece = pieces[said]
                if not await self._delta("response.output_audio_transcript.delta", **where, delta=piece):
                    return
                part.transcript = (part.transcript or "") + piece
                self.text_out += 1
                said += 1
            chunk = audio[offset : offset + AUDIO_CHUNK]
            if not await self._delta(
                "response.output_audio.delta", **where, delta=base64.b64encode(chunk).decode()
            ):
                return
            part.audio_bytes += len(chunk)
            self.audio_out += len(chunk)

    async def _function_call(self, index: int, call: tools.Call) -> bool:
        item = Item(
            text.new_id("item_"),
            "function_call",
            status="in_progress",
            name=call.name,
            call_id=text.new_id("call_"),
            arguments="",
        )
        await self._open(item, index)
        where = {"response_id": self.id, "item_id": item.id, "output_index": index, "call_id": item.call_id}
        for piece in call.pieces:
            if not await self._delta("response.function_call_arguments.delta", **where, delta=piece):
                break
            item.arguments = (item.arguments or "") + piece
            self.text_out += 1
        await self._emit(
            "response.function_call_arguments.done", **where, name=item.name, arguments=item.arguments
        )
        await self._close(item, index)
        return not self.cancelled.is_set()

    # --- the end --------------------------------------------------------------------------------

    async def _fail(self, status: int) -> None:
        self.failed_status = status
        error = failure(status)
        await self._emit("error", error={**error, "param": None, "event_id": self.client_event_id})
        await self._finish("failed", {"type": "failed", "error": error})

    async def _finish(self, status: str, details: dict[str, Any] | None = None) -> None:
        self.status = status
        if status == "cancelled":
            details = {"type": "cancelled", "reason": self.reason}
        elif status == "incomplete":
            details = {"type": "incomplete", "reason": "max_output_tokens"}
        if status == "failed":
            self.usage = usage_body(0, 0, 0, 0, 0)
        else:
            text_in, audio_in = self.input_usage()
            self.usage = usage_body(
                text_in, audio_in, self.host.scenario.cached, self.text_out, audio_tokens(self.audio_out)
            )
        await self._emit("response.done", response=self._body(status_details=details, usage=self.usage))

    # --- plumbing -------------------------------------------------------------------------------

    def _body(self, status_details: dict[str, Any] | None = None, usage: dict[str, Any] | None = None) -> Any:
        return response_body(
            self.id,
            self.config,
            self.host.dialect,
            status=self.status,
            output=self.output,
            conversation_id=self.host.conversation_id if self.in_conversation else None,
            metadata=self.metadata,
            status_details=status_details,
            usage=usage,
        )

    def _item(self, item: Item) -> dict[str, Any]:
        return item.render(self.host.dialect)

    async def _emit(self, event_type: str, **fields: Any) -> None:
        await self.host.emit(event_type, **fields)

    async def _wait(self, seconds: float) -> bool:
        """Wait ``seconds`` unless cancelled first; True when cancelled."""
        try:
            await asyncio.wait_for(self.cancelled.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _delta(self, event_type: str, **fields: Any) -> bool:
        """Send one delta (paced by ``chunk_delay_ms``); False, sending nothing, once cancelled."""
        scenario = self.host.scenario
        if self.deltas and scenario.chunk_delay_ms:
            if await self._wait(scenario.chunk_delay_ms / 1000):
                return False
        elif self.cancelled.is_set():
            return False
        if scenario.disconnect_after is not None and self.deltas >= scenario.disconnect_after:
            await self.host.drop()
            raise Dropped
        await self._emit(event_type, **fields)
        self.deltas += 1
        return True


def _part_event(part: Part) -> dict[str, Any]:
    """A content part as ``response.content_part.*`` names it (``text`` / ``audio`` in both dialects)."""
    if part.type == "output_audio":
        return {"type": "audio", "transcript": part.transcript}
    return {"type": "text", "text": part.text}
