"""The Anthropic stream state machine, fed chunk events directly: the frame grammar under random
chunking (property-style, seeded), the known regressions of other gateways, usage, tool calls,
failures; the encoder's bytes; ``with_pings``."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pydantic
import pytest
from anthropic.types import RawMessageStreamEvent

from services.contracts.errors import ProviderError
from services.contracts.events import ChunkEmitted, Delta, ErrorInfo, ToolCallDelta, Usage
from services.edge.api.anthropic_stream import PING, MessageEncoder, MessageStream, sse, with_pings

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
IDS = {"request_id": "r1", "tenant_id": "demo"}


def chunk(
    seq: int, text: str | None = None, tools: list[ToolCallDelta] | None = None, **kw: Any
) -> ChunkEmitted:
    return ChunkEmitted(**IDS, seq=seq, delta=Delta(content=text, tool_calls=tools), **kw)


def final(seq: int, finish: str = "stop", usage: Usage | None = None, **kw: Any) -> ChunkEmitted:
    usage = usage or Usage(prompt_tokens=30, completion_tokens=7, total_tokens=37, cached_tokens=10)
    return ChunkEmitted(**IDS, seq=seq, final=True, finish_reason=finish, usage=usage, **kw)


def run(chunks: list[ChunkEmitted], estimate: int = 11) -> list[tuple[str, dict[str, Any]]]:
    m = MessageStream("r1", "demo-openai", estimate)
    return [f for c in chunks for f in m.feed(c)]


def check_grammar(frames: list[tuple[str, dict[str, Any]]]) -> None:
    """The invariants every stream keeps (module docstring of anthropic_stream)."""
    names = [e for e, _ in frames]
    assert names[0] == "message_start" and names.count("message_start") == 1
    open_index: int | None = None
    next_index = 0
    for name, data in frames:
        assert data["type"] == name  # the event line names the data's type
        if name in ("message_start", "content_block_start", "content_block_delta", "content_block_stop"):
            EVENTS.validate_python(data)  # the SDK's own event types
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            assert data["content_block"].get("text", "") == ""  # all text comes as deltas (#30765)
            assert data["content_block"].get("input", {}) == {}  # all arguments too
            open_index, next_index = data["index"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index  # never a block that was not started, or was stopped
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif name in ("message_delta", "message_stop"):
            assert open_index is None
    if names[-1] != "error":
        assert names[-2:] == ["message_delta", "message_stop"]
        EVENTS.validate_python(frames[-2][1])


def rebuild(frames: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The content blocks the frames describe (an accumulator as the SDKs have one)."""
    blocks: list[dict[str, Any]] = []
    for name, data in frames:
        if name == "content_block_start":
            blocks.append({**data["content_block"], "json": ""})
        elif name == "content_block_delta":
            d = data["delta"]
            if d["type"] == "text_delta":
                blocks[data["index"]]["text"] += d["text"]
            else:
                blocks[data["index"]]["json"] += d["partial_json"]
    return blocks


def split(rng: random.Random, text: str) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(0, 6))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


# --- property-style: random answers, random chunking ------------------------------------------


@pytest.mark.parametrize("seed", range(300))
def test_random_chunkings_keep_the_grammar_and_lose_nothing(seed):
    rng = random.Random(seed)
    text = "".join(rng.choice("ab cé🙂") for _ in range(rng.randint(0, 30)))
    n_tools = rng.randint(0, 3)
    args = [orjson.dumps({"city": f"c{i}", "n": rng.randint(0, 99)}).decode() for i in range(n_tools)]
    # the pieces in stream order: text first, then each tool call (id and name on its first piece)
    pieces: list[tuple[str, Any]] = [("text", p) for p in (split(rng, text) if text else [])]
    for i, a in enumerate(args):
        for k, p in enumerate(split(rng, a)):
            first = k == 0
            pieces.append(
                (
                    "tool",
                    ToolCallDelta(
                        index=i,
                        id=f"call_{i}" if first else None,
                        name=f"fn{i}" if first else None,
                        arguments=p,
                    ),
                )
            )
    # coalesce random runs of pieces into chunks, as the executor's windows do (per tool call, in order)
    chunks: list[ChunkEmitted] = []
    while pieces:
        run_len = rng.randint(1, 4)
        group, pieces = pieces[:run_len], pieces[run_len:]
        content = "".join(p for k, p in group if k == "text") or None
        merged: dict[int, ToolCallDelta] = {}
        for k, p in group:
            if k == "tool":
                cur = merged.get(p.index)
                if cur is None:
                    merged[p.index] = p.model_copy()
                else:
                    cur.arguments += p.arguments
                    cur.id, cur.name = cur.id or p.id, cur.name or p.name
        tools = [merged[i] for i in sorted(merged)] or None
        if content and tools and rng.random() < 0.5:  # the text and the tool call in two chunks instead
            chunks += [chunk(len(chunks), content), chunk(len(chunks) + 1, None, tools)]
        else:
            chunks.append(chunk(len(chunks), content, tools))
    if rng.random() < 0.3:
        chunks.insert(0, chunk(0, None))  # an empty first chunk (role only)
    chunks.append(final(len(chunks), "tool_calls" if n_tools else "stop"))
    frames = run(chunks)
    check_grammar(frames)
    blocks = rebuild(frames)
    assert "".join(b.get("text", "") for b in blocks if b["type"] == "text") == text
    tool_blocks = [b for b in blocks if b["type"] == "tool_use"]
    assert [(b["id"], b["name"], orjson.loads(b["json"])) for b in tool_blocks] == [
        (f"call_{i}", f"fn{i}", orjson.loads(a)) for i, a in enumerate(args)
    ]
    assert frames[-2][1]["delta"]["stop_reason"] == ("tool_use" if n_tools else "end_turn")


# --- regressions of other gateways, by name ---------------------------------------------------


def test_no_delta_for_a_block_never_started_litellm_13373():
    # a tool call right after text, in the same chunk, and a second tool in the next one
    frames = run(
        [
            chunk(
                0, "Let me check.", [ToolCallDelta(index=0, id="t0", name="get_weather", arguments='{"ci')]
            ),
            chunk(
                1,
                None,
                [
                    ToolCallDelta(index=0, arguments='ty":"Paris"}'),
                    ToolCallDelta(index=1, id="t1", name="get_time", arguments="{}"),
                ],
            ),
            final(2, "tool_calls"),
        ]
    )
    check_grammar(frames)
    starts = {d["index"] for e, d in frames if e == "content_block_start"}
    assert {d["index"] for e, d in frames if e == "content_block_delta"} <= starts == {0, 1, 2}


def test_exactly_one_message_start_32357():
    m = MessageStream("r1", "demo-openai")
    frames = [f for i in range(5) for f in m.feed(chunk(i, f"w{i} "))] + m.ping() + m.feed(final(5))
    assert [e for e, _ in frames].count("message_start") == 1 and frames[0][0] == "message_start"
    assert m.feed(chunk(6, "late")) == [] and m.ping() == []  # nothing after message_stop


def test_first_text_delta_is_not_dropped_30765():
    frames = run([chunk(0, "Hello"), chunk(1, " world"), final(2)])
    assert frames[1] == (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    assert frames[2][1]["delta"] == {"type": "text_delta", "text": "Hello"}
    assert rebuild(frames)[0]["text"] == "Hello world"


def test_a_one_chunk_answer_has_every_frame():
    frames = run([final(0, delta=Delta(role="assistant", content="all at once"))])
    check_grammar(frames)
    assert [e for e, _ in frames] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


# --- usage ---------------------------------------------------------------------------------------


def test_message_start_has_the_estimate_and_message_delta_the_real_cumulative_usage():
    frames = run([chunk(0, "hi"), final(1)], estimate=42)
    start = frames[0][1]["message"]
    assert start["usage"] == {"input_tokens": 42, "output_tokens": 0, "cache_read_input_tokens": 0}
    assert (start["id"], start["model"], start["content"], start["role"]) == (
        "msg_r1",
        "demo-openai",
        [],
        "assistant",
    )
    # the upstream's 30 prompt tokens, 10 of them cached: Anthropic counts them apart
    assert frames[-2][1]["usage"] == {"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 10}


def test_message_start_takes_the_upstreams_prompt_count_when_the_first_chunk_has_it():
    u = Usage(prompt_tokens=25, completion_tokens=1, total_tokens=26)
    frames = run([chunk(0, "hi", usage=u), final(1)], estimate=999)
    assert frames[0][1]["message"]["usage"]["input_tokens"] == 25


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_stop_reasons(finish, reason):
    assert run([chunk(0, "x"), final(1, finish)])[-2][1]["delta"] == {
        "stop_reason": reason,
        "stop_sequence": None,
    }


# --- tool calls -----------------------------------------------------------------------------------


def test_a_tool_call_waits_for_its_name_and_keeps_the_arguments_that_came_first():
    frames = run(
        [
            chunk(0, None, [ToolCallDelta(index=0, id="t0", arguments='{"a":')]),
            chunk(1, None, [ToolCallDelta(index=0, name="f", arguments="1}")]),
            final(2, "tool_calls"),
        ]
    )
    check_grammar(frames)
    assert rebuild(frames) == [{"type": "tool_use", "id": "t0", "name": "f", "input": {}, "json": '{"a":1}'}]


def test_interleaved_tool_calls_end_the_stream_with_an_error_not_a_lost_argument():
    m = MessageStream("r1", "demo-openai")
    frames = m.feed(chunk(0, None, [ToolCallDelta(index=0, id="a", name="f", arguments="{")]))
    frames += m.feed(chunk(1, None, [ToolCallDelta(index=1, id="b", name="g", arguments="{}")]))
    frames += m.feed(chunk(2, None, [ToolCallDelta(index=0, arguments="}")]))
    assert frames[-1][0] == "error" and frames[-1][1]["error"]["type"] == "api_error"
    assert "interleaved" in frames[-1][1]["error"]["message"]
    assert m.feed(final(3)) == [] and m.end() == []


# --- failures ---------------------------------------------------------------------------------------


def test_a_failed_final_chunk_is_one_error_frame_and_nothing_after():
    m = MessageStream("r1", "demo-openai")
    frames = m.feed(chunk(0, "par"))
    err = ErrorInfo(code="response_blocked", message="blocked by policy")
    frames += m.feed(ChunkEmitted(**IDS, seq=1, final=True, finish_reason="error", error=err))
    assert [e for e, _ in frames][-1] == "error" and "message_stop" not in [e for e, _ in frames]
    assert frames[-1][1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "blocked by policy"},
        "request_id": "r1",
    }
    assert m.fail(ProviderError("again")) == [] and m.end() == [] and m.ping() == []


def test_a_pipeline_error_mid_stream_is_an_overloaded_error_frame():
    m = MessageStream("r1", "demo-openai")
    m.feed(chunk(0, "a"))
    [(name, data)] = m.fail(ProviderError("upstream dropped the stream", details={"upstream_status": None}))
    assert name == "error" and data["error"]["type"] == "overloaded_error"


def test_a_source_that_ends_early_gets_an_error_frame():
    m = MessageStream("r1", "demo-openai")
    m.feed(chunk(0, "a"))
    assert m.end()[0][0] == "error"
    done = MessageStream("r1", "demo-openai")
    done.feed(final(0))
    assert done.end() == []


def test_pings_only_between_message_start_and_the_end():
    m = MessageStream("r1", "demo-openai")
    assert m.ping() == []
    m.feed(chunk(0, "a"))
    assert m.ping() == [("ping", {"type": "ping"})]


def test_sse_bytes_have_an_event_line_per_frame():
    enc = MessageEncoder(MessageStream("r1", "demo-openai"))
    data = enc.encode(chunk(0, "hi")) + enc.encode(PING) + enc.encode(final(1)) + enc.end()
    frames = [f for f in data.split(b"\n\n") if f]
    assert len(frames) == 7
    for f in frames:
        event, payload = f.split(b"\n")
        assert event.startswith(b"event: ") and payload.startswith(b"data: ")
        assert orjson.loads(payload[6:])["type"] == event[7:].decode()
    assert sse([]) == b""


# --- with_pings -----------------------------------------------------------------------------------


async def test_with_pings_pings_a_quiet_source_after_its_first_event_only():
    gate, closed = asyncio.Event(), asyncio.Event()
    first, second = chunk(0, "a"), final(1)

    async def source():
        try:
            yield first
            await gate.wait()
            yield second
        finally:
            closed.set()

    events = with_pings(source(), 0.01)
    assert await anext(events) is first
    assert await anext(events) is PING and await anext(events) is PING
    gate.set()
    rest = [e async for e in events]
    assert rest[-1] is second and all(e is PING for e in rest[:-1]) and closed.is_set()


async def test_with_pings_is_silent_before_the_first_event():
    gate = asyncio.Event()

    async def source():
        await gate.wait()
        yield chunk(0, "a")

    events = with_pings(source(), 0.005)
    waiting = asyncio.ensure_future(anext(events))
    done, _ = await asyncio.wait((waiting,), timeout=0.05)  # ten ping intervals
    assert not done
    gate.set()
    assert (await waiting).seq == 0
    await events.aclose()


async def test_closing_with_pings_closes_the_source_it_waits_on():
    cleaned = asyncio.Event()

    async def source():
        try:
            yield chunk(0, "a")
            await asyncio.Event().wait()  # never answers
            yield chunk(1, "b")
        finally:
            cleaned.set()  # where the SDK's stream publishes the cancel

    events = with_pings(source(), 0.01)
    await anext(events)
    assert await anext(events) is PING
    await events.aclose()
    assert cleaned.is_set()
