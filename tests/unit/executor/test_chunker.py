import asyncio

from services.contracts.events import ChunkEmitted, ToolCallDelta, Usage
from services.executor.chunker import ChunkEmitter


class Sink:
    def __init__(self):
        self.chunks: list[ChunkEmitted] = []
        self.times: list[float] = []

    async def send(self, chunk):
        self.chunks.append(chunk)
        self.times.append(asyncio.get_running_loop().time())
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def emitter(sink, window_ms=20):
    return ChunkEmitter(sink.send, ChunkEmitted(request_id="r", tenant_id="t", seq=0), window_ms)


async def test_first_delta_goes_out_at_once_rest_is_merged():
    sink = Sink()
    e = emitter(sink, window_ms=50)
    e.set_source("p", "m")
    await e.add("a", None)
    assert [c.delta.content for c in sink.chunks] == ["a"]
    assert sink.chunks[0].delta.role == "assistant" and sink.chunks[0].provider == "p"
    for piece in "bcd":
        await e.add(piece, None)
    assert len(sink.chunks) == 1  # inside the window: buffered
    await e.finish("stop", Usage(prompt_tokens=1, completion_tokens=4, total_tokens=5))
    assert [c.seq for c in sink.chunks] == [0, 1]
    last = sink.chunks[-1]
    assert last.final and last.delta.content == "bcd" and last.finish_reason == "stop"
    assert last.usage.completion_tokens == 4 and last.provider is None


async def test_window_bounds_event_rate_and_keeps_order():
    sink = Sink()
    e = emitter(sink, window_ms=20)
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while loop.time() - start < 0.3:  # a fast stream: a token every ~2 ms for 300 ms
        await e.add(f"t{n} ", None)
        n += 1
        await asyncio.sleep(0.002)
    await e.finish("stop", None)
    text = "".join(c.delta.content or "" for c in sink.chunks)
    assert text == "".join(f"t{i} " for i in range(n))
    assert [c.seq for c in sink.chunks] == list(range(len(sink.chunks)))
    gaps = [b - a for a, b in zip(sink.times[1:-1], sink.times[2:-1], strict=False)]
    assert all(g >= 0.019 for g in gaps), gaps  # after the first, at most one per window
    assert len(sink.chunks) <= 2 + 0.3 / 0.02 + 1
    assert n > 3 * len(sink.chunks)


async def test_tool_call_deltas_merge_by_index():
    sink = Sink()
    e = emitter(sink, window_ms=1000)
    await e.add(None, [ToolCallDelta(index=0, id="c1", name="f", arguments="")])
    await e.add(None, [ToolCallDelta(index=0, arguments='{"a":')])
    await e.add(None, [ToolCallDelta(index=0, arguments="1}")])
    await e.finish("tool_calls", None)
    assert sink.chunks[0].delta.tool_calls[0].name == "f"
    merged = sink.chunks[1].delta.tool_calls[0]
    assert merged.index == 0 and merged.arguments == '{"a":1}'
    assert sink.chunks[1].finish_reason == "tool_calls"


async def test_first_chunk_names_provider_ttft_only():
    sink = Sink()
    e = emitter(sink, window_ms=0)
    e.first_token(12.5)
    await e.add("a", None)
    await e.add("b", None)
    await e.finish("stop", None)
    assert [c.ttft_ms for c in sink.chunks] == [12.5, None]
    assert sink.chunks[-1].delta.content == "b"
