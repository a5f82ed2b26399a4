"""The OpenAI Realtime API through the edge (``/v1/realtime``) and the pipeline: the official
``openai`` SDK's realtime clients (GA and beta) against the edge, the executor holding the
emulator's WebSocket; usage per turn on ``llm.usage``; the session's summary in the usage ledger
(``llmgw usage sessions``), never summed by ``llmgw usage report``; sessions lost with their
executor."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from openai.types import realtime as ga
from openai.types.beta import realtime as beta
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from services.emulator import media_synth
from services.emulator.text import completion_text
from tests.support import events_of, events_until, realtime_sdk

from .helpers import TopicTail
from .test_ledgers import llmgw

DEMO_KEY = "sk-llmgw-demo"
MS = 48  # bytes of 24 kHz PCM16 per millisecond
SPEECH = media_synth.speech_pcm("hello there")


def silence(ms: int) -> bytes:
    return bytes(ms * MS)


def realtime(url: str, model: str = "demo-realtime", *, dialect: str = "ga") -> Any:
    """A connection of the SDK's GA or beta Realtime client (``tests.support.realtime_sdk``)."""
    return realtime_sdk(url, model, api_key=DEMO_KEY, dialect=dialect)


async def until(conn: Any, last: str, timeout: float = 20) -> list[Any]:
    return await events_until(conn, last, timeout)


of = events_of


async def append(conn: Any, pcm: bytes, chunk_ms: int = 100) -> None:
    for at in range(0, len(pcm), chunk_ms * MS):
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[at : at + chunk_ms * MS]).decode())


def realtime_usage(records: list[Any]) -> list[dict[str, Any]]:
    docs = [json.loads(r.value) for r in records if b'"operation":"realtime"' in r.value]
    return [d for d in docs if d["alias"] == "demo-realtime"]


async def stored_sessions(settings: Any, session_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    """``llmgw usage sessions --json``'s summaries of ``session_id``, once the sink has one."""
    deadline = time.monotonic() + timeout
    while True:
        res = await llmgw(settings, "usage", "sessions", "--tenant", "demo", "--since", "1h", "--json")
        assert res.returncode == 0, res.stderr
        mine = [s for s in json.loads(res.stdout)["sessions"] if s["request_id"] == session_id]
        if mine or time.monotonic() > deadline:
            return mine


async def usage_of(tail: TopicTail) -> list[dict[str, Any]]:
    """The realtime usage records read since the tail started (this test's session only)."""
    await tail.until(lambda records: bool(realtime_usage(records)))
    return realtime_usage(tail.records)


async def test_ga_voice_turn_through_the_edge(edge_url, stack_settings):
    usage_topic = f"{stack_settings.topic_prefix}llm.usage"
    async with TopicTail(stack_settings.bootstrap_servers, usage_topic) as tail:
        async with realtime(edge_url) as conn:
            created = await conn.recv()
            assert isinstance(created, ga.SessionCreatedEvent)
            assert created.session.model == "gpt-realtime-emu"
            await conn.session.update(
                session={
                    "type": "realtime",
                    "output_modalities": ["audio"],
                    "audio": {"input": {"turn_detection": None}},
                }
            )
            assert isinstance(await conn.recv(), ga.SessionUpdatedEvent)
            await append(conn, silence(200) + SPEECH + silence(200))
            await conn.input_audio_buffer.commit()
            await conn.response.create()
            events = await until(conn, "response.done")
        assert of(events, "input_audio_buffer.committed")
        audio = b"".join(base64.b64decode(e.delta) for e in of(events, "response.output_audio.delta"))
        assert audio == media_synth.speech_pcm(completion_text(8))
        transcript = "".join(e.delta for e in of(events, "response.output_audio_transcript.delta"))
        assert transcript == completion_text(8)
        done = events[-1]
        assert isinstance(done, ga.ResponseDoneEvent) and done.response.status == "completed"
        usage = done.response.usage
        records = await usage_of(tail)
    assert len(records) == 1
    u = records[0]
    assert u["request_id"].endswith("/0")  # the session's first turn: its admission settled by it
    assert (u["operation"], u["alias"], u["status"]) == ("realtime", "demo-realtime", "ok")
    assert (u["prompt_tokens"], u["completion_tokens"], u["cached_tokens"]) == (
        usage.input_tokens,
        usage.output_tokens,
        usage.input_token_details.cached_tokens,
    )
    assert u["units"]["input_audio_tokens"] == usage.input_token_details.audio_tokens > 0
    assert u["units"]["output_audio_tokens"] == usage.output_token_details.audio_tokens > 0
    expected = (
        (usage.input_tokens - usage.input_token_details.cached_tokens) * 4.0
        + usage.input_token_details.cached_tokens * 0.4
        + usage.output_tokens * 16.0
    ) / 1e6
    assert u["cost_usd"] == pytest.approx(expected)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack_settings.emulator_port}") as http:
        calls = (await http.get("/_emulator/calls")).json()
    logged = next(c for c in calls if c.get("response_id") == done.response.id)
    assert logged["usage"]["total_tokens"] == u["total_tokens"]


async def test_beta_dialect_answers_in_beta_names(edge_url):
    async with realtime(edge_url, dialect="beta") as conn:
        created = await conn.recv()
        assert isinstance(created, beta.SessionCreatedEvent)
        await conn.session.update(session={"modalities": ["text", "audio"], "turn_detection": None})
        await until(conn, "session.updated")
        await append(conn, silence(200) + SPEECH + silence(200))
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await until(conn, "response.done")
    kinds = {e.type for e in events}
    assert "response.audio.delta" in kinds and "response.audio_transcript.delta" in kinds
    assert "response.output_audio.delta" not in kinds
    transcript = "".join(e.delta for e in of(events, "response.audio_transcript.delta"))
    assert transcript == completion_text(8)


async def test_function_call_turn(edge_url):
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    async with realtime(edge_url, "demo-realtime-tools") as conn:
        await until(conn, "session.created")
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "tools": [tool]}
        )
        await until(conn, "session.updated")
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "weather in Paris"}],
        }
        await conn.conversation.item.create(item=item)
        await conn.response.create()
        events = await until(conn, "response.done")
    args = of(events, "response.function_call_arguments.done")
    assert len(args) == 1 and args[0].name == "get_weather"
    assert isinstance(json.loads(args[0].arguments)["city"], str)
    assert events[-1].response.output[0].type == "function_call"


async def test_cancel_a_response(edge_url):
    async with realtime(edge_url, "demo-realtime-slow") as conn:
        await until(conn, "session.created")
        await conn.response.create()
        created = await until(conn, "response.created")
        await until(conn, "response.output_audio.delta")
        await conn.response.cancel(response_id=created[-1].response.id)
        events = await until(conn, "response.done")
    done = events[-1].response
    assert (done.id, done.status) == (created[-1].response.id, "cancelled")


async def test_a_long_client_side_stretch_keeps_the_session(edge_url):
    """The caller talks for longer than the edge's silence limit (5 s) while the provider says
    nothing (no turn detection): the executor's ``alive`` frames keep the session."""
    async with realtime(edge_url) as conn:
        await until(conn, "session.created")
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await until(conn, "session.updated")
        start = asyncio.get_running_loop().time()
        for i in range(65):  # 6.5 s of audio, sent as it is spoken
            await asyncio.sleep(max(0.0, start + i * 0.1 - asyncio.get_running_loop().time()))
            await conn.input_audio_buffer.append(audio=base64.b64encode(silence(100)).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await until(conn, "response.done")
    assert not of(events, "error")
    assert events[-1].response.status == "completed"


async def test_handshake_needs_a_valid_key(edge_url):
    url = f"{edge_url.replace('http', 'ws', 1)}/v1/realtime?model=demo-realtime"
    with pytest.raises(Exception, match="403|1008"):
        async with ws_connect(url, additional_headers={"Authorization": "Bearer sk-wrong"}):
            pass
    # the browsers' subprotocol authenticates
    protocols = [Subprotocol("realtime"), Subprotocol(f"openai-insecure-api-key.{DEMO_KEY}")]
    async with ws_connect(url, subprotocols=protocols) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "session.created"
        assert ws.subprotocol == "realtime"


async def test_unknown_alias_gets_an_error_and_a_close(edge_url):
    url = f"{edge_url.replace('http', 'ws', 1)}/v1/realtime?model=no-such-model"
    async with ws_connect(url, additional_headers={"Authorization": f"Bearer {DEMO_KEY}"}) as ws:
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["error"]["code"] == "model_not_found"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_sdk_realtime_session(gw):
    async with gw.realtime(model="demo-realtime") as session:
        await session.send({"type": "response.create"})
        seen = []
        async with asyncio.timeout(20):
            async for event in session:
                seen.append(event["type"])
                if event["type"] == "response.done":
                    assert event["response"]["status"] == "completed"
                    break
    assert seen[0] == "session.created" and "response.output_audio_transcript.delta" in seen


async def test_twenty_concurrent_sessions(edge_url):
    async def one() -> str:
        async with realtime(edge_url) as conn:
            await until(conn, "session.created")
            await conn.response.create()
            events = await until(conn, "response.done", timeout=60)
        return "".join(e.delta for e in of(events, "response.output_audio_transcript.delta"))

    transcripts = await asyncio.gather(*(one() for _ in range(20)))
    assert transcripts == [completion_text(8)] * 20


async def test_executor_killed_mid_session_ends_it_with_an_error(edge_url, stack, stack_settings):
    usage_topic = f"{stack_settings.topic_prefix}llm.usage"
    async with TopicTail(stack_settings.bootstrap_servers, usage_topic) as tail:
        async with realtime(edge_url, "demo-realtime-slow") as conn:
            await until(conn, "session.created")
            await conn.response.create()  # turn 0: cancelled, so done (and billed) before the kill
            await until(conn, "response.output_audio.delta")
            await conn.response.cancel()
            first = of(await until(conn, "response.done"), "response.done")[0]
            assert first.response.status == "cancelled"
            await conn.response.create()  # turn 1: under way when its executor dies
            await until(conn, "response.output_audio.delta")
            for c in stack.load():
                if c.name.startswith("executor-"):
                    os.kill(c.pid, signal.SIGKILL)
            async with asyncio.timeout(20):
                while True:
                    event = await conn.recv()
                    if event.type == "error":
                        break
            assert event.error.code == "session_lost"
            usage_event = await conn.recv()  # the usage billed before the executor died
            assert usage_event.type == "session.usage"
            assert (usage_event.usage["turns"], usage_event.usage["input_tokens"]) == (
                1,
                first.response.usage.input_tokens,
            )
            with pytest.raises(Exception) as closed:  # then a clean close
                await conn.recv()
        assert "1011" in str(closed.value)
        for name in ("executor-0", "executor-1"):
            stack.restart(name)
        # A turn of a later session after the restart: its usage follows anything the restarted
        # executors could have written again about the killed session.
        async with realtime(edge_url) as conn:
            await until(conn, "session.created")
            await conn.response.create()
            await until(conn, "response.done", timeout=60)
        await usage_of(tail)
    slow = [json.loads(r.value) for r in tail.records if b'"alias":"demo-realtime-slow"' in r.value]
    ids = [d["request_id"] for d in slow]
    # the finished turn billed exactly once (its own request id); the killed turn never
    assert len(ids) == 1, ids
    assert ids[0].endswith("/0")
    assert slow[0]["status"] == "cancelled"
    assert slow[0]["prompt_tokens"] == first.response.usage.input_tokens
    assert slow[0]["completion_tokens"] == first.response.usage.output_tokens
    # its summary, written by the edge that declared it lost, once; equal to what was billed
    summaries = await stored_sessions(stack_settings, slow[0]["conversation_id"])
    assert len(summaries) == 1
    lost = summaries[0]
    assert (lost["ended_by"], lost["close_code"], lost["usage"]["turns"]) == ("gateway", 1011, 1)
    assert (lost["usage"]["prompt_tokens"], lost["usage"]["cost_usd"]) == (
        slow[0]["prompt_tokens"],
        pytest.approx(slow[0]["cost_usd"]),
    )


async def test_budget_exhaustion_closes_the_session(edge_url):
    url = f"{edge_url.replace('http', 'ws', 1)}/v1/realtime?model=demo-realtime"
    headers = {"Authorization": "Bearer sk-llmgw-realtime-budgeted"}
    seen: list[dict[str, Any]] = []
    async with ws_connect(url, additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"  # the first turn's lease fits
        await ws.send(json.dumps({"type": "response.create"}))
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(15):
                while True:
                    seen.append(json.loads(await ws.recv()))
    kinds = [e["type"] for e in seen]
    assert "response.done" in kinds  # the paid turn ran to its end
    errors = [e for e in seen if e["type"] == "error"]
    assert [e["error"]["code"] for e in errors] == ["budget_exceeded"]
    summary = next(e for e in seen if e["type"] == "session.usage")["usage"]
    done = next(e for e in seen if e["type"] == "response.done")["response"]["usage"]
    assert (summary["turns"], summary["input_tokens"], summary["output_tokens"]) == (
        1,
        done["input_tokens"],
        done["output_tokens"],
    )
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    # and a new session of the tenant is refused at open
    async with ws_connect(url, additional_headers=headers) as ws:
        refused = json.loads(await ws.recv())
        assert (refused["type"], refused["error"]["code"]) == ("error", "budget_exceeded")


async def test_a_closed_sessions_summary_is_in_the_ledger_and_not_in_the_report(edge_url, stack_settings):
    usage_topic = f"{stack_settings.topic_prefix}llm.usage"
    since = datetime.now(UTC).isoformat()  # the report's window: this session's turns only
    async with TopicTail(stack_settings.bootstrap_servers, usage_topic) as tail:
        async with realtime(edge_url) as conn:
            await until(conn, "session.created")
            for _ in range(2):
                await conn.response.create()
                await until(conn, "response.done")
        await tail.until(lambda records: len(realtime_usage(records)) >= 2)
    turns = realtime_usage(tail.records)
    assert len(turns) == 2 and turns[0]["conversation_id"] == turns[1]["conversation_id"]
    summaries = await stored_sessions(stack_settings, turns[0]["conversation_id"])
    assert len(summaries) == 1
    summary = summaries[0]
    assert (summary["ended_by"], summary["close_code"], summary["alias"]) == (
        "executor",
        1000,
        "demo-realtime",
    )
    assert summary["api_key"] == turns[0]["api_key"] and summary["user_id"] == turns[0]["user_id"]
    usage = summary["usage"]
    assert usage["turns"] == 2
    for field in ("prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens"):
        assert usage[field] == sum(t[field] for t in turns), field
    assert usage["cost_usd"] == pytest.approx(sum(t["cost_usd"] for t in turns))
    for unit in ("input_audio_tokens", "output_audio_tokens", "output_text_tokens"):
        assert usage["units"][unit] == sum(t["units"][unit] for t in turns), unit
    # the report counts the two turns, and the summary not at all
    deadline = time.monotonic() + 30
    while True:
        res = await llmgw(stack_settings, "usage", "report", "--tenant", "demo", "--since", since, "--json")
        assert res.returncode == 0, res.stderr
        total = json.loads(res.stdout)["total"]
        if total["requests"] >= 2 or time.monotonic() > deadline:
            break
    assert total["requests"] == 2
    assert total["total_tokens"] == usage["total_tokens"]
    assert total["cost_usd"] == pytest.approx(usage["cost_usd"])
    table = await llmgw(stack_settings, "usage", "sessions", "--tenant", "demo", "--since", "1h")
    assert turns[0]["conversation_id"] in table.stdout


async def test_an_event_above_the_inline_limit_travels_by_claim_check(edge_url, stack_settings):
    """One ``input_audio_buffer.append`` of ~6 s of audio (its JSON ~390 KB, above the 256 KiB
    inline limit): its frame on ``llm.realtime.in`` names an object in S3 instead of carrying it,
    the executor relays the event whole, and the turn is what the same audio sent in small pieces
    gives."""
    pcm = silence(200) + SPEECH + silence(200)
    pcm = pcm + silence(max(0, 6000 - len(pcm) // MS))
    assert len(base64.b64encode(pcm)) > 256 * 1024
    in_topic = f"{stack_settings.topic_prefix}llm.realtime.in"

    async def turn(chunk_ms: int) -> Any:
        async with realtime(edge_url) as conn:
            await conn.recv()
            await conn.session.update(
                session={
                    "type": "realtime",
                    "output_modalities": ["audio"],
                    "audio": {"input": {"turn_detection": None}},
                }
            )
            await conn.recv()
            await append(conn, pcm, chunk_ms=chunk_ms)
            await conn.input_audio_buffer.commit()
            await conn.response.create()
            return (await until(conn, "response.done"))[-1]

    async with TopicTail(stack_settings.bootstrap_servers, in_topic) as frames:
        whole = await turn(chunk_ms=len(pcm) // MS)  # one append
        claimed = [(r, f) for r in frames.records if (f := json.loads(r.value)).get("data_ref") is not None]
    assert len(claimed) == 1
    record, frame = claimed[0]
    assert frame.get("data") is None and len(record.value) < 4096  # the event is not in the frame
    ref = frame["data_ref"]
    assert ref["key"].startswith("tenants/demo/realtime/") and ref["bytes"] > 256 * 1024
    pieces = await turn(chunk_ms=100)
    assert whole.response.status == pieces.response.status == "completed"
    a, b = whole.response.usage, pieces.response.usage
    assert a.input_token_details.audio_tokens == b.input_token_details.audio_tokens > 0
    assert a.output_tokens == b.output_tokens
