"""The emulated OpenAI Realtime API through the official ``openai`` SDK's realtime clients (GA and
beta), against the emulator served by uvicorn; and its VAD as a pure function."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from typing import Any

import httpx
import pytest
import websockets
from openai.types import realtime as ga
from openai.types.beta import realtime as beta
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from services.emulator import media_synth
from services.emulator.realtime_vad import FRAME_MS, InputBuffer, VadSettings, audio_tokens, frame_rms
from services.emulator.text import completion_text
from tests.support import events_of, events_until, realtime_sdk

MODEL = "gpt-realtime-emu"
MS = 48  # bytes of 24 kHz PCM16 per millisecond
SPEECH = media_synth.speech_pcm("hello there")  # 733 ms of tones, one 67 ms pause
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
DELTAS = {
    "response.output_audio.delta",
    "response.output_audio_transcript.delta",
    "response.output_text.delta",
    "response.function_call_arguments.delta",
}


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


def silence(ms: int) -> bytes:
    return bytes(ms * MS)


def rms(pcm: bytes) -> float:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def realtime(url: str, model: str = MODEL, *, dialect: str = "ga") -> Any:
    """A connection of the SDK's GA or beta Realtime client (``tests.support.realtime_sdk``)."""
    return realtime_sdk(url, model, api_key="sk-test", dialect=dialect)


async def until(conn: Any, last: str, timeout: float = 10) -> list[Any]:
    return await events_until(conn, last, timeout)


of = events_of


def one(events: list[Any], kind: str) -> Any:
    found = of(events, kind)
    assert len(found) == 1, [e.type for e in events]
    return found[0]


def non_delta_types(events: list[Any]) -> list[str]:
    names = DELTAS | {"response.audio.delta", "response.audio_transcript.delta", "response.text.delta"}
    return [e.type for e in events if e.type not in names]


async def append(conn: Any, pcm: bytes, chunk_ms: int = 100) -> None:
    for at in range(0, len(pcm), chunk_ms * MS):
        await conn.input_audio_buffer.append(audio=b64(pcm[at : at + chunk_ms * MS]))


async def text_session(conn: Any, **session: Any) -> None:
    """GA: text output, no turn detection (plus ``session``); consumes created/updated."""
    await until(conn, "session.created")
    body = {"type": "realtime", "output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}}
    await conn.session.update(session={**body, **session})
    await until(conn, "session.updated")


async def say(conn: Any, words: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": words}]}
    await conn.conversation.item.create(item=item)
    await until(conn, "conversation.item.done")


# --- a whole voice turn -----------------------------------------------------------------------------


async def test_voice_turn_with_server_vad(emulator_url):
    async with realtime(emulator_url) as conn:
        created = await conn.recv()
        assert isinstance(created, ga.SessionCreatedEvent)
        assert created.session.type == "realtime" and created.session.model == MODEL
        assert created.session.audio.input.turn_detection.type == "server_vad"
        assert created.session.audio.output.format.rate == 24000

        await conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["audio"],
                "instructions": "Answer briefly please",
                "tools": [WEATHER],
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
                    "output": {"voice": "verse"},
                },
            }
        )
        updated = await conn.recv()
        assert isinstance(updated, ga.SessionUpdatedEvent)
        session = updated.session
        assert session.output_modalities == ["audio"] and session.instructions == "Answer briefly please"
        assert session.audio.output.voice == "verse" and session.tools[0].name == "get_weather"
        assert session.audio.input.turn_detection.silence_duration_ms == 500
        assert session.audio.input.turn_detection.prefix_padding_ms == 300  # defaults kept

        await append(conn, silence(500) + SPEECH + silence(800))
        events = await until(conn, "rate_limits.updated")

    assert non_delta_types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "rate_limits.updated",
    ]
    started, stopped = events[0], events[1]
    assert isinstance(started, ga.InputAudioBufferSpeechStartedEvent)
    assert started.audio_start_ms == 500 - 300  # prefix padding before the first speech frame
    speech_end = math.ceil((500 + len(SPEECH) / MS) / FRAME_MS) * FRAME_MS
    assert isinstance(stopped, ga.InputAudioBufferSpeechStoppedEvent)
    assert stopped.audio_end_ms == speech_end + 500  # including the silence that ended the turn
    committed, user = events[2], events[3].item
    assert started.item_id == stopped.item_id == committed.item_id == user.id
    assert (user.role, user.content[0].type) == ("user", "input_audio")

    audio_deltas = of(events, "response.output_audio.delta")
    assert all(isinstance(e, ga.ResponseAudioDeltaEvent) for e in audio_deltas)
    chunks = [base64.b64decode(e.delta) for e in audio_deltas]
    assert {len(c) for c in chunks[:-1]} == {100 * MS} and 0 < len(chunks[-1]) <= 100 * MS
    audio = b"".join(chunks)
    assert audio == media_synth.speech_pcm(completion_text(8)) and rms(audio) > 1000
    transcript = "".join(e.delta for e in of(events, "response.output_audio_transcript.delta"))
    assert transcript == completion_text(8)
    assert one(events, "response.output_audio_transcript.done").transcript == transcript
    first_delta = next(e for e in events if e.type in DELTAS)
    assert first_delta.type == "response.output_audio_transcript.delta"  # words lead their sound

    done = one(events, "response.done")
    assert isinstance(done, ga.ResponseDoneEvent)
    response = done.response
    assert response.status == "completed" and response.conversation_id
    assert response.output[0].role == "assistant" and response.output[0].content[0].transcript == transcript
    usage = response.usage
    assert usage.input_token_details.audio_tokens == math.ceil((stopped.audio_end_ms - 200) / 50)
    assert usage.input_token_details.text_tokens == 3 + (3 + 3)  # the audio item; the instructions
    assert usage.input_token_details.cached_tokens == 0
    assert usage.output_token_details.text_tokens == 8
    assert usage.output_token_details.audio_tokens == math.ceil(len(audio) / (50 * MS))
    assert (
        usage.input_tokens == usage.input_token_details.text_tokens + usage.input_token_details.audio_tokens
    )
    assert usage.output_tokens == 8 + usage.output_token_details.audio_tokens
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    limits = {r.name: r for r in events[-1].rate_limits}
    assert limits["requests"].remaining == limits["requests"].limit - 1
    assert limits["tokens"].remaining == limits["tokens"].limit - usage.total_tokens


async def test_manual_commit_transcribes_and_echo_answers_what_it_heard(emulator_url):
    async with realtime(emulator_url, f"{MODEL}@echo,cached=4") as conn:
        await until(conn, "session.created")
        await conn.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}},
            }
        )
        await until(conn, "session.updated")
        await append(conn, (SPEECH * 3)[: 1500 * MS])  # 1.5 s, committed by hand (no VAD)
        await conn.input_audio_buffer.commit()
        events = await until(conn, "conversation.item.input_audio_transcription.completed")
        assert [e.type for e in events][:3] == [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
        ]
        heard = "The emulator heard 1.5 seconds of audio."
        assert events[-1].transcript == heard and events[-1].usage.seconds == 1.5
        await conn.response.create()
        events = await until(conn, "response.done")
    assert "".join(e.delta for e in of(events, "response.output_audio_transcript.delta")) == heard
    usage = events[-1].response.usage
    assert usage.input_token_details.audio_tokens == 30 and usage.input_token_details.cached_tokens == 4


# --- the beta dialect --------------------------------------------------------------------------------


async def test_beta_dialect_answers_in_beta_names(emulator_url):
    async with realtime(emulator_url, dialect="beta") as conn:
        created = await conn.recv()
        assert isinstance(created, beta.SessionCreatedEvent)
        assert (
            created.session.modalities == ["text", "audio"] and created.session.input_audio_format == "pcm16"
        )
        assert created.session.turn_detection.type == "server_vad"

        await conn.session.update(session={"modalities": ["text"], "voice": "ash", "turn_detection": None})
        updated = await conn.recv()
        assert isinstance(updated, beta.SessionUpdatedEvent)
        assert (updated.session.modalities, updated.session.voice) == (["text"], "ash")
        assert updated.session.turn_detection is None

        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi there"}]}
        await conn.conversation.item.create(item=item)
        added = await conn.recv()
        assert (
            isinstance(added, beta.ConversationItemCreatedEvent) and added.item.content[0].text == "hi there"
        )

        await conn.response.create()
        text_turn = await until(conn, "rate_limits.updated")
        await conn.response.create(response={"modalities": ["text", "audio"]})
        audio_turn = await until(conn, "rate_limits.updated")

        await append(conn, SPEECH)
        await conn.input_audio_buffer.commit()
        commit = await until(conn, "conversation.item.created")

    assert non_delta_types(text_turn) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.created",
        "response.content_part.added",
        "response.text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    deltas = of(text_turn, "response.text.delta")
    assert all(isinstance(e, beta.ResponseTextDeltaEvent) for e in deltas)
    assert "".join(e.delta for e in deltas) == completion_text(8) == one(text_turn, "response.text.done").text
    done = one(text_turn, "response.done")
    assert isinstance(done, beta.ResponseDoneEvent) and done.response.modalities == ["text"]
    assert done.response.output[0].content[0].type == "text"  # beta's name for output_text
    assert done.response.usage.input_token_details.text_tokens == 3 + 2

    audio = b"".join(base64.b64decode(e.delta) for e in of(audio_turn, "response.audio.delta"))
    assert audio == media_synth.speech_pcm(completion_text(8))
    transcript = "".join(e.delta for e in of(audio_turn, "response.audio_transcript.delta"))
    assert transcript == one(audio_turn, "response.audio_transcript.done").transcript == completion_text(8)
    assert isinstance(one(audio_turn, "response.audio.done"), beta.ResponseAudioDoneEvent)
    final = one(audio_turn, "response.done").response
    assert final.output[0].content[0].type == "audio" and final.modalities == ["text", "audio"]
    # the context now holds the first answer: 3 + 2 words, 3 + 8 words
    assert final.usage.input_token_details.text_tokens == 5 + 11

    every = [e.type for e in text_turn + audio_turn + commit]
    assert not [
        t for t in every if t.startswith("response.output_") and not t.startswith("response.output_item")
    ]
    assert "conversation.item.added" not in every and "conversation.item.done" not in every
    assert [e.type for e in commit] == ["input_audio_buffer.committed", "conversation.item.created"]
    assert commit[-1].item.content[0].type == "input_audio"


async def test_beta_session_refuses_ga_fields(emulator_url):
    async with realtime(emulator_url, dialect="beta") as conn:
        await until(conn, "session.created")
        await conn.send({"type": "session.update", "event_id": "evt_ga", "session": {"type": "realtime"}})
        error = await conn.recv()
    assert isinstance(error, beta.ErrorEvent)
    assert (error.error.type, error.error.code, error.error.param) == (
        "invalid_request_error",
        "unknown_parameter",
        "session.type",
    )
    assert error.error.event_id == "evt_ga"


# --- function calls ----------------------------------------------------------------------------------


async def test_function_call_turn_then_tool_result(emulator_url):
    async with realtime(emulator_url, f"{MODEL}@function_call") as conn:
        await text_session(conn, tools=[WEATHER])
        await say(conn, "weather in Paris")
        await conn.response.create(event_id="evt_call")
        events = await until(conn, "response.done")

        added = one(events, "response.output_item.added").item
        assert isinstance(added, ga.RealtimeConversationItemFunctionCall)
        assert (added.type, added.name, added.status) == ("function_call", "get_weather", "in_progress")
        deltas = of(events, "response.function_call_arguments.delta")
        assert deltas and all(isinstance(e, ga.ResponseFunctionCallArgumentsDeltaEvent) for e in deltas)
        args_done = one(events, "response.function_call_arguments.done")
        assert isinstance(args_done, ga.ResponseFunctionCallArgumentsDoneEvent)
        assert args_done.arguments == "".join(e.delta for e in deltas)
        assert isinstance(json.loads(args_done.arguments)["city"], str)
        assert args_done.call_id == added.call_id and args_done.name == "get_weather"
        response = events[-1].response
        call = response.output[0]
        assert (call.type, call.status, call.arguments) == ("function_call", "completed", args_done.arguments)
        assert response.usage.output_token_details.text_tokens == len(deltas)
        assert response.usage.input_token_details.text_tokens == 3 + 3

        output = {"type": "function_call_output", "call_id": added.call_id, "output": '{"temp": 21}'}
        await conn.conversation.item.create(item=output)
        await until(conn, "conversation.item.done")
        await conn.response.create()
        answer = await until(conn, "response.done")
    assert "".join(e.delta for e in of(answer, "response.output_text.delta")) == completion_text(8)
    assert answer[-1].response.output[0].type == "message"
    # context: the question (3 + 3), the call (3 + its words), the output (3 + 2)
    arguments_words = len(args_done.arguments.split())
    assert answer[-1].response.usage.input_token_details.text_tokens == 6 + 3 + arguments_words + 5

    async with httpx.AsyncClient(base_url=emulator_url) as http:
        calls = (await http.get("/_emulator/calls")).json()
    logged = {c["response_id"]: c for c in calls if c["kind"] == "realtime"}
    first = logged[response.id]
    assert (first["model"], first["inputs"], first["status"], first["response_status"]) == (
        MODEL,
        ["weather in Paris"],
        200,
        "completed",
    )
    assert first["usage"]["total_tokens"] == response.usage.total_tokens


# --- cancellation ------------------------------------------------------------------------------------


async def test_cancel_a_hanging_response(emulator_url):
    async with realtime(emulator_url, f"{MODEL}@hang=1") as conn:
        await text_session(conn)
        await conn.response.create()
        created = await conn.recv()
        assert isinstance(created, ga.ResponseCreatedEvent) and created.response.status == "in_progress"
        await conn.send({"type": "response.create", "event_id": "evt_second"})
        busy = await conn.recv()
        assert (busy.type, busy.error.code, busy.error.event_id) == (
            "error",
            "conversation_already_has_active_response",
            "evt_second",
        )
        await conn.response.cancel(response_id=created.response.id)
        events = await until(conn, "rate_limits.updated")
        done = one(events, "response.done").response
        assert (done.id, done.status, done.status_details.reason) == (
            created.response.id,
            "cancelled",
            "client_cancelled",
        )
        assert done.output == [] and done.usage.output_tokens == 0
        await conn.response.cancel(event_id="evt_nothing")
        error = await conn.recv()
    assert (error.error.code, error.error.event_id) == ("response_cancel_not_active", "evt_nothing")


async def test_cancel_mid_audio_keeps_what_was_sent(emulator_url):
    async with realtime(emulator_url, f"{MODEL}@tokens=60,chunk_delay_ms=20") as conn:
        await until(conn, "session.created")
        await conn.response.create()
        head = await until(conn, "response.output_audio.delta")
        await conn.response.cancel()
        events = head + await until(conn, "response.done")
    sent = [base64.b64decode(e.delta) for e in of(events, "response.output_audio.delta")]
    said = "".join(e.delta for e in of(events, "response.output_audio_transcript.delta"))
    full = completion_text(60)
    assert said and full.startswith(said) and len(said) < len(full)
    assert b"".join(sent) == media_synth.speech_pcm(full)[: sum(map(len, sent))]
    assert one(events, "response.output_audio_transcript.done").transcript == said
    response = events[-1].response
    assert (response.status, response.status_details.reason) == ("cancelled", "client_cancelled")
    assert response.output[0].status == "incomplete"
    usage = response.usage.output_token_details
    assert usage.text_tokens == len(of(events, "response.output_audio_transcript.delta"))
    assert usage.audio_tokens == math.ceil(sum(map(len, sent)) / (50 * MS))


async def test_speech_interrupts_a_running_response(emulator_url):
    async with realtime(emulator_url, f"{MODEL}@hang=1") as conn:
        await until(conn, "session.created")
        await conn.response.create()
        created = await until(conn, "response.created")
        await append(conn, SPEECH[: 200 * MS])
        events = await until(conn, "response.done")
        assert events[0].type == "input_audio_buffer.speech_started"
        assert (events[-1].response.id, events[-1].response.status_details.reason) == (
            created[0].response.id,
            "turn_detected",
        )
        await append(conn, silence(600))
        after = await until(conn, "response.created")  # the next turn's response
    assert [e.type for e in after][:3] == [
        "rate_limits.updated",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "kind", "code"),
    [(f"{MODEL}@error", "server_error", None), (f"{MODEL}@status=429", "requests", "rate_limit_exceeded")],
)
async def test_scenario_error(emulator_url, model, kind, code):
    async with realtime(emulator_url, model) as conn:
        await text_session(conn)
        await conn.response.create(event_id="evt_fail")
        events = await until(conn, "response.done")
    assert [e.type for e in events] == ["response.created", "error", "response.done"]
    error = events[1]
    assert isinstance(error, ga.RealtimeErrorEvent)
    assert (error.error.type, error.error.code, error.error.event_id) == (kind, code, "evt_fail")
    response = events[2].response
    assert (response.status, response.status_details.error.type) == ("failed", kind)
    assert response.usage.total_tokens == 0


async def test_fail_first_then_succeed(emulator_url, unique_key):
    async with realtime(emulator_url, f"{MODEL}@fail_first=1,status=503,key={unique_key}") as conn:
        await text_session(conn)
        await conn.response.create()
        first = await until(conn, "response.done")
        await conn.response.create()
        second = await until(conn, "response.done")
    assert first[-1].response.status == "failed" and first[1].error.type == "server_error"
    assert second[-1].response.status == "completed"


def event(kind: str | None, **fields: Any) -> str:
    return json.dumps({**({"type": kind} if kind else {}), "event_id": "evt_bad", **fields})


@pytest.mark.parametrize(
    ("raw", "param", "code"),
    [
        ("not json", None, "invalid_json"),
        (event("no.such.event"), "type", "invalid_value"),
        (event(None), "type", "missing_required_parameter"),
        (event("input_audio_buffer.append", audio="***"), "audio", "invalid_value"),
        (event("input_audio_buffer.append"), "audio", "missing_required_parameter"),
        (event("input_audio_buffer.commit"), None, "input_audio_buffer_commit_empty"),
        (event("session.update", session={"voice": "ash"}), "session.type", "missing_required_parameter"),
        (
            event("session.update", session={"type": "realtime", "modalities": []}),
            "session.modalities",
            "unknown_parameter",
        ),
        (
            event("session.update", session={"type": "realtime", "instructions": 3}),
            "session.instructions",
            "invalid_type",
        ),
        (
            event(
                "session.update",
                session={"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}},
            ),
            "session.audio.input.format.type",
            "invalid_value",
        ),
        (
            event("conversation.item.create", item={"type": "message", "role": "robot", "content": []}),
            "item.role",
            "invalid_value",
        ),
        (event("conversation.item.delete", item_id="item_nope"), "item_id", "item_delete_invalid_item_id"),
        (
            event("response.create", response={"modalities": ["text"]}),
            "response.modalities",
            "unknown_parameter",
        ),
    ],
)
async def test_malformed_client_events_get_an_error_and_the_session_goes_on(emulator_url, raw, param, code):
    async with realtime(emulator_url) as conn:
        await until(conn, "session.created")
        await conn.send_raw(raw)
        error = await conn.recv()
        await conn.input_audio_buffer.clear()
        after = await conn.recv()
    assert isinstance(error, ga.RealtimeErrorEvent) and error.event_id
    assert error.error.type == "invalid_request_error" and error.error.message
    assert error.error.event_id == (None if raw == "not json" else "evt_bad")
    assert (error.error.param, error.error.code) == (param, code)
    assert after.type == "input_audio_buffer.cleared"


async def test_disconnect_after_drops_the_connection(emulator_url):
    async with realtime(emulator_url, f"{MODEL}@disconnect_after=3") as conn:
        await text_session(conn)
        await conn.response.create()
        events = []
        with pytest.raises(websockets.ConnectionClosedError):
            async with asyncio.timeout(10):
                while True:
                    events.append(await conn.recv())
    assert len([e for e in events if e.type in DELTAS]) == 3
    assert "response.done" not in [e.type for e in events]


# --- items -------------------------------------------------------------------------------------------


async def test_item_create_delete_truncate_retrieve(emulator_url):
    spoken = media_synth.speech_pcm("one two three")  # 867 ms
    async with realtime(emulator_url) as conn:
        await text_session(conn)
        await say(conn, "first words")
        await conn.send_raw(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "previous_item_id": "root",
                    "item": {
                        "id": "item_answer",
                        "type": "message",
                        "role": "assistant",
                        "content": [
                            {"type": "output_audio", "audio": b64(spoken), "transcript": "one two three"}
                        ],
                    },
                }
            )
        )
        added = await until(conn, "conversation.item.done")
        assert added[0].previous_item_id is None and added[0].item.content[0].type == "output_audio"

        await conn.conversation.item.truncate(item_id="item_answer", content_index=0, audio_end_ms=400)
        truncated = await conn.recv()
        assert isinstance(truncated, ga.ConversationItemTruncatedEvent) and truncated.audio_end_ms == 400
        await conn.conversation.item.truncate(item_id="item_answer", content_index=0, audio_end_ms=5000)
        too_long = await conn.recv()
        assert (too_long.type, too_long.error.param) == ("error", "audio_end_ms")
        await conn.conversation.item.retrieve(item_id="item_answer")
        retrieved = await conn.recv()
        assert retrieved.type == "conversation.item.retrieved" and retrieved.item.content[0].transcript == ""

        await conn.response.create()
        events = await until(conn, "rate_limits.updated")
        usage = one(events, "response.done").response.usage.input_token_details
        assert usage.audio_tokens == 400 // 50  # the truncated audio
        assert usage.text_tokens == 3 + 0 + 3 + 2  # the answer (its transcript gone), the question

        await conn.conversation.item.delete(item_id="item_answer")
        deleted = await conn.recv()
        assert isinstance(deleted, ga.ConversationItemDeletedEvent) and deleted.item_id == "item_answer"


# --- handshake ---------------------------------------------------------------------------------------


async def test_handshake_needs_a_key_and_a_model(emulator_url):
    ws = emulator_url.replace("http", "ws", 1)
    with pytest.raises(websockets.InvalidStatus) as missing_key:
        async with ws_connect(f"{ws}/v1/realtime?model={MODEL}"):
            pass
    assert missing_key.value.response.status_code == 401
    assert json.loads(missing_key.value.response.body)["error"]["code"] == "missing_api_key"
    headers = {"Authorization": "Bearer sk-test"}
    for query, status in (("", 400), (f"?model={MODEL}@bogus=1", 400)):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with ws_connect(f"{ws}/v1/realtime{query}", additional_headers=headers):
                pass
        assert refused.value.response.status_code == status


async def test_browser_subprotocols_authenticate_and_pick_the_beta_dialect(emulator_url):
    ws = emulator_url.replace("http", "ws", 1)
    protocols = [
        Subprotocol(p) for p in ("realtime", "openai-insecure-api-key.sk-test", "openai-beta.realtime-v1")
    ]
    async with ws_connect(f"{ws}/v1/realtime?model={MODEL}", subprotocols=protocols) as conn:
        assert conn.subprotocol == "realtime"
        created = json.loads(await conn.recv())
    assert created["type"] == "session.created" and created["event_id"]
    assert created["session"]["modalities"] == ["text", "audio"]


# --- VAD, pure ---------------------------------------------------------------------------------------


def tone(ms: int, amplitude: int) -> bytes:
    n = ms * 24
    return struct.pack(
        f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * 440 * i / 24000)) for i in range(n))
    )


def events_of(buffer: InputBuffer, pcm: bytes, vad: VadSettings) -> list[tuple[str, int]]:
    buffer.append(pcm)
    found = []
    while (event := buffer.detect(vad)) is not None:
        found.append((event.kind, event.ms))
        if event.kind == "speech_stopped":
            buffer.take_speech(event.position)
    return found


def test_vad_threshold_is_rms_per_frame():
    quiet = tone(100, 560)  # RMS about 396
    assert 390 < frame_rms(quiet[: 20 * MS]) < 400
    assert events_of(InputBuffer(), quiet, VadSettings()) == []
    assert events_of(InputBuffer(), quiet, VadSettings(threshold=0.3))[0] == ("speech_started", 0)


def test_vad_start_padding_stop_after_silence_and_partial_frames():
    vad = VadSettings(prefix_padding_ms=100, silence_duration_ms=200)
    buffer = InputBuffer()
    assert events_of(buffer, silence(250), vad) == []
    assert events_of(buffer, tone(5, 8000), vad) == []  # a partial frame waits for more audio
    assert events_of(buffer, tone(95, 8000), vad) == [("speech_started", 240 - 100)]  # frame 240..260
    assert events_of(buffer, silence(190), vad) == []
    assert events_of(buffer, silence(30), vad) == [("speech_stopped", 360 + 200)]
    assert buffer.base == 560 * MS and len(buffer.audio) == (250 + 100 + 220 - 560) * MS
    # the next speech starts its padding no earlier than the uncommitted audio
    assert events_of(buffer, tone(20, 8000), vad) == [("speech_started", 560)]


def test_take_speech_drops_audio_before_the_padding():
    vad = VadSettings(prefix_padding_ms=0, silence_duration_ms=100)
    buffer = InputBuffer()
    buffer.append(silence(100) + tone(100, 8000) + silence(120))
    assert buffer.detect(vad).ms == 100
    stop = buffer.detect(vad)
    assert stop.kind == "speech_stopped" and stop.ms == 300
    assert len(buffer.take_speech(stop.position)) == 200 * MS
    assert len(buffer.audio) == 20 * MS


def test_audio_tokens_are_started_50_ms():
    assert [audio_tokens(n) for n in (0, 1, 50 * MS, 50 * MS + 1, 1000 * MS)] == [0, 1, 1, 2, 20]
