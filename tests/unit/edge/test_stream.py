"""Streams through the app, driven at the ASGI level: SSE format, errors before and after the
status line, keep-alive comments, client disconnect -> cancel, slow readers, shutdown."""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import pytest

from services.contracts.errors import ModelNotApproved, ProviderError
from services.contracts.events import ChunkEmitted, Delta
from services.edge.app import create_app
from tests.support import eventually

from .conftest import AsgiCall, chunks_for
from .openai_spec import check

STREAM = {
    "model": "demo-openai",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


def events(data: bytes) -> list[bytes]:
    return [e for e in data.split(b"\n\n") if e]


def call(app, body=STREAM, **kw) -> AsgiCall:
    return AsgiCall(app, "POST", "/v1/chat/completions", orjson.dumps(body), **kw)


async def test_stream_is_openai_sse(app, pipeline):
    c = call(app)
    await c.start()
    assert c.status == 200 and c.headers[b"content-type"].startswith(b"text/event-stream")
    assert float(c.headers[b"x-llmgw-overhead-ms"]) >= 0 and c.headers[b"x-request-id"]
    evs = events(c.data)
    assert evs[-1] == b"data: [DONE]"
    objs = [orjson.loads(e[6:]) for e in evs[:-1]]
    for o in objs:
        check("CreateChatCompletionStreamResponse", o)
    assert "".join(o["choices"][0]["delta"].get("content") or "" for o in objs if o["choices"]) == "hello"
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] == 2
    assert not pipeline.cancels


async def test_rejection_before_first_chunk_is_a_plain_http_error(app, pipeline):
    pipeline.chunks = lambda req: [
        ModelNotApproved("tenant 'demo' is not approved for model 'x'", param="model")
    ]
    c = call(app)
    await c.start()
    assert c.status == 403 and c.headers[b"content-type"] == b"application/json"
    assert orjson.loads(c.data)["error"]["code"] == "model_not_approved"
    assert c.headers[b"x-request-id"]


async def test_error_mid_stream_is_an_error_event(app, pipeline):
    pipeline.chunks = lambda req: [*chunks_for(req, ["a"])[:1], ProviderError("upstream dropped the stream")]
    c = call(app)
    await c.start()
    assert c.status == 200
    last = orjson.loads(events(c.data)[-1][6:])
    check("ErrorResponse", last)
    assert last["error"]["code"] == "provider_error"
    assert b"[DONE]" not in c.data


async def test_keepalive_comments_while_waiting(edge_settings, demo_config, pipeline):
    app = create_app(
        dataclasses.replace(edge_settings, keepalive_s=0.05), config=demo_config, pipeline=pipeline
    )
    await app.startup()
    pipeline.chunks = lambda req: [0.3, *chunks_for(req, ["late"])]
    c = call(app)
    await c.start()
    assert c.status == 200
    evs = events(c.data)
    assert evs[0] == b": keep-alive" and evs.count(b": keep-alive") >= 3
    assert evs[-1] == b"data: [DONE]" and b"late" in c.data


async def test_disconnect_cancels_the_request(app, pipeline):
    pipeline.chunks = lambda req: [*chunks_for(req, ["a"])[:1], 30.0, *chunks_for(req, ["never"])[1:]]
    c = call(app)
    task = c.start()
    await c.wait_for(lambda: b"data: " in c.data)
    c.disconnect.set()
    await asyncio.wait_for(task, 2)
    assert pipeline.cancels == [pipeline.requests[0].request_id]
    assert b"never" not in c.data and not c.complete


async def test_disconnect_before_first_chunk_cancels(app, pipeline):
    pipeline.chunks = lambda req: [30.0, *chunks_for(req, ["never"])]
    c = call(app)
    task = c.start()
    await eventually(lambda: len(pipeline.requests) == 1, within=2)  # the edge waits for the first chunk
    c.disconnect.set()
    await asyncio.wait_for(task, 2)
    assert pipeline.cancels == [pipeline.requests[0].request_id] and c.status is None


async def test_slow_reader_is_bounded_and_cancelled(edge_settings, demo_config, pipeline):
    app = create_app(
        dataclasses.replace(edge_settings, stream_buffer_bytes=4096), config=demo_config, pipeline=pipeline
    )
    await app.startup()
    produced = []

    def endless(req):
        for i in range(100_000):
            produced.append(i)
            yield ChunkEmitted(
                request_id=req.request_id,
                tenant_id=req.tenant_id,
                seq=i,
                delta=Delta(role="assistant" if i == 0 else None, content="x" * 100),
            )

    pipeline.chunks = endless
    c = call(app)
    c.send_gate = asyncio.Event()  # the client reads nothing
    task = c.start()
    await eventually(lambda: bool(pipeline.cancels), within=2)
    assert pipeline.cancels == [pipeline.requests[0].request_id]
    assert len(produced) < 100  # the source stopped after ~4 KiB, not 100k chunks
    c.send_gate.set()  # the client reads again: buffered data, then the error event
    await asyncio.wait_for(task, 2)
    last = orjson.loads(events(c.data)[-1][6:])
    assert last["error"]["code"] == "cancelled" and "too slowly" in last["error"]["message"]


async def test_shutdown_ends_streams_with_an_error_event(app, pipeline):
    pipeline.chunks = lambda req: [*chunks_for(req, ["a"])[:1], 30.0]
    c = call(app)
    task = c.start()
    await c.wait_for(lambda: b"data: " in c.data)
    task.cancel()  # what uvicorn does past timeout_graceful_shutdown
    with pytest.raises(asyncio.CancelledError):
        await task
    last = orjson.loads(events(c.data)[-1][6:])
    assert last["error"]["code"] == "internal_error" and "shutting down" in last["error"]["message"]
    assert c.complete and pipeline.cancels == [pipeline.requests[0].request_id]
