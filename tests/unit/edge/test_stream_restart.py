"""A plan restarted mid-stream, as an OpenAI SSE client of the edge sees it: the edge streams
through the SDK's ``stream``, whose check replays the new run against what was sent, so the SSE
text is the answer once; a new run that differs ends the stream with an error event."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from services.client import GatewayClient
from services.contracts.events import ChatRequested, ChunkEmitted, Delta, Usage
from services.edge.app import create_app

from .conftest import AsgiCall, FakePipeline
from .test_stream import STREAM, events


def run_chunks(req: ChatRequested, run: str, pieces: list[str]) -> list[ChunkEmitted]:
    out = [
        ChunkEmitted(
            request_id=req.request_id,
            tenant_id=req.tenant_id,
            run_id=run,
            seq=i,
            delta=Delta(role="assistant" if i == 0 else None, content=p),
        )
        for i, p in enumerate(pieces)
    ]
    final = ChunkEmitted(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        run_id=run,
        seq=len(pieces),
        final=True,
        finish_reason="stop",
        usage=Usage(prompt_tokens=1, completion_tokens=len(pieces), total_tokens=len(pieces) + 1),
    )
    return [*out, final]


class SdkPipeline(FakePipeline):
    """The SDK's own ``stream``, fed by a queue instead of the reply partition."""

    def __init__(self, replies: Any):
        super().__init__()
        self.replies = replies
        self.gw = GatewayClient("127.0.0.1:1", "edge")

        async def send(req: ChatRequested) -> asyncio.Queue[Any]:
            q: asyncio.Queue[Any] = asyncio.Queue()
            for item in self.replies(req):
                q.put_nowait(item)
            return q

        async def cancel(request_id: str, reason: str = "client_cancelled") -> None:
            self.cancels.append(request_id)

        self.gw.send = send  # type: ignore[method-assign]
        self.gw.cancel = cancel  # type: ignore[method-assign]

    def stream(self, req: ChatRequested, timeout: float):  # type: ignore[no-untyped-def,override]
        self.requests.append(req)
        return self.gw.stream(req, timeout)


async def sse_text(edge_settings, demo_config, pipeline) -> tuple[str, list[dict[str, Any]]]:
    app = create_app(edge_settings, config=demo_config, pipeline=pipeline)
    await app.startup()
    c = AsgiCall(app, "POST", "/v1/chat/completions", orjson.dumps(STREAM))
    await c.start()
    assert c.status == 200
    evs = events(c.data)
    objs = [orjson.loads(e[6:]) for e in evs if e != b"data: [DONE]"]
    text = "".join(
        o["choices"][0]["delta"].get("content") or "" for o in objs if o.get("choices") and "error" not in o
    )
    return text, objs + ([{"done": True}] if evs[-1] == b"data: [DONE]" else [])


async def test_a_restarted_stream_reaches_the_client_once(edge_settings, demo_config):
    def replies(req: ChatRequested) -> list[ChunkEmitted]:
        first = run_chunks(req, "run-a", ["The ", "quick "])[:2]  # the executor died after two chunks
        return [*first, *run_chunks(req, "run-b", ["The ", "quick ", "brown ", "fox"])]

    text, objs = await sse_text(edge_settings, demo_config, SdkPipeline(replies))
    assert text == "The quick brown fox"
    assert objs[-1] == {"done": True} and objs[-2]["usage"]["completion_tokens"] == 4


async def test_a_restart_that_differs_ends_the_sse_stream_with_an_error(edge_settings, demo_config):
    def replies(req: ChatRequested) -> list[ChunkEmitted]:
        first = run_chunks(req, "run-a", ["The ", "quick "])[:2]
        return [*first, *run_chunks(req, "run-b", ["A ", "slow ", "turtle"])]

    pipeline = SdkPipeline(replies)
    text, objs = await sse_text(edge_settings, demo_config, pipeline)
    assert text == "The quick "  # what was sent stays; nothing of the other answer follows it
    assert (
        objs[-1]["error"]["code"] == "stream_interrupted"
        and "retry the request" in objs[-1]["error"]["message"]
    )
    assert pipeline.cancels  # the SDK stopped the request it gave up on
