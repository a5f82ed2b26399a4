"""The batch routes in-process (OpenAI's Batch API, Anthropic's Message Batches), driven by the
official ``openai`` and ``anthropic`` SDKs, on a fake pipeline whose batch and job views are the
real ``BatchesView`` / ``JobsView`` fed by hand (no broker) and an in-memory FileStorage. The
batch service's part is played by the test: it moves batches and writes the items' job records.
Answers are checked against the SDKs' types and OpenAI's published spec."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from services.client import GatewayClient
from services.contracts.events import (
    AssistantMessage,
    BatchUpdated,
    ChatRequested,
    Embedding,
    EmbeddingsOutput,
    EmbedRequested,
    ErrorInfo,
    JobUpdated,
    Latency,
    MediaRef,
    ResultProduced,
    Usage,
)
from services.edge.api import batch_results
from services.edge.api.batches import batch_json, page_after
from services.edge.api.message_batches import batch_json as message_batch_json
from services.edge.api.message_batches import page
from services.edge.app import create_app
from services.edge.batch_ops import BatchOperations
from services.edge.pipeline import EdgeClient
from services.runtime.batches import (
    BatchesView,
    error_file_id,
    item_id,
    moved,
    output_file_id,
)
from services.runtime.codec import decode_any, encode
from services.runtime.job_results import result_key
from services.runtime.jobs import JobsView, job_state
from services.runtime.media.storage import MemoryFileStorage
from services.runtime.topics import Topics

from .conftest import DEMO_KEY, RESTRICTED_KEY, ROOT, FakePipeline
from .openai_spec import check

TOPICS = Topics.load(ROOT / "topics.yaml")


class LocalBatchesView(BatchesView):
    """The real view, fed by ``apply`` only: everything written is read already."""

    async def caught_up(self) -> None:
        return None


class LocalJobsView(JobsView):
    async def caught_up(self) -> None:
        return None


class FakePublisher:
    """An in-memory broker: every write is acknowledged at once and read at once by the reader of
    its topic (``readers``), as a consumer would read it (tombstones too)."""

    def __init__(self, readers: dict[str, Callable[[ConsumerRecord], None]]) -> None:
        self.readers = readers
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def publish(self, topic: str, event: Any, *, key: str | None, **kw: Any) -> asyncio.Future[object]:
        return await self.send_raw(topic, encode(event), key=key.encode() if key else None)

    async def send_raw(
        self, topic: str, value: bytes | None, *, key: bytes | None, **kw: Any
    ) -> asyncio.Future[object]:
        self.sent.append((topic, value, key))
        reader = self.readers.get(topic)
        if reader is not None:
            size = len(value) if value is not None else 0
            reader(
                ConsumerRecord(topic, 0, len(self.sent), 0, 0, key, value, None, len(key or b""), size, ())
            )
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


@dataclasses.dataclass
class BatchPipeline(FakePipeline, BatchOperations):
    """``FakePipeline`` with the edge client's own batch calls (``BatchOperations``) over local views."""

    build_embed = GatewayClient.build_embed
    _common = GatewayClient._common
    embed_request = EdgeClient.embed_request
    storage: Any = None
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        self.topics = TOPICS
        self._bootstrap = "unused:9092"
        self._batches_view = LocalBatchesView(self._bootstrap, TOPICS)
        self._jobs_view = LocalJobsView(self._bootstrap, TOPICS)
        readers = {
            TOPICS.batches.name: self._batches_view._on_record,
            TOPICS.jobs.name: self._jobs_view._on_record,
        }
        self._publisher = FakePublisher(readers)  # type: ignore[assignment]

    @property
    def published(self) -> list[BatchUpdated]:
        sent = self._publisher.sent  # type: ignore[attr-defined]
        return [BatchUpdated.model_validate_json(v) for t, v, _ in sent if t == TOPICS.batches.name and v]

    @property
    def batches(self) -> BatchesView:
        assert self._batches_view is not None
        return self._batches_view

    @property
    def jobs_view(self) -> JobsView:
        assert self._jobs_view is not None
        return self._jobs_view


@pytest.fixture
def storage() -> MemoryFileStorage:
    return MemoryFileStorage("llmgw-media")


@pytest.fixture
def pipeline(storage) -> BatchPipeline:
    return BatchPipeline(storage=storage)


@pytest.fixture
async def app(edge_settings, demo_config, pipeline, storage):
    app = create_app(edge_settings, config=demo_config, pipeline=pipeline, storage=storage)
    await app.startup()
    return app


def sdk(app, key: str = DEMO_KEY) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return openai.AsyncOpenAI(api_key=key, base_url="http://edge/v1", http_client=http, max_retries=0)


def claude(app, key: str = DEMO_KEY) -> anthropic.AsyncAnthropic:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    return anthropic.AsyncAnthropic(api_key=key, base_url="http://edge", http_client=http, max_retries=0)


@pytest.fixture
async def oai(app) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk(app) as client:
        yield client


@pytest.fixture
async def ant(app) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with claude(app) as client:
        yield client


def chat_line(custom_id: str, text: str = "hi", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "demo-openai", "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines)


async def upload(oai: openai.AsyncOpenAI, lines: list[Any], purpose: str = "batch") -> str:
    f = await oai.files.create(file=("in.jsonl", jsonl(lines), "application/jsonl"), purpose=purpose)  # type: ignore[arg-type]
    return f.id


async def create(oai: openai.AsyncOpenAI, lines: list[Any], **kw: Any) -> openai.types.Batch:
    file_id = await upload(oai, lines)
    return await oai.batches.create(
        input_file_id=file_id,
        endpoint=kw.pop("endpoint", "/v1/chat/completions"),
        completion_window="24h",
        **kw,
    )


def without_nulls(doc: Any) -> Any:
    """OpenAI's spec does not mark the Batch's optional fields nullable; the API sends them null."""
    if isinstance(doc, dict):
        return {k: without_nulls(v) for k, v in doc.items() if v is not None}
    if isinstance(doc, list):
        return [without_nulls(v) for v in doc]
    return doc


async def item_requests(storage: MemoryFileStorage, batch: BatchUpdated) -> list[Any]:
    return [decode_any(line) for line in (await storage.get(batch.requests_key)).splitlines()]


def chat_result(
    req: ChatRequested, text: str, prompt: int = 7, completion: int = 3, cached: int = 2
) -> ResultProduced:
    return ResultProduced(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        status="ok",
        message=AssistantMessage(content=text),
        finish_reason="stop",
        alias=req.model,
        provider="emulator-openai",
        model="gpt-emu",
        usage=Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cached_tokens=cached,
        ),
        latency=Latency(total_ms=3.0, provider_ms=2.0),
    )


def run(pipeline: BatchPipeline, batch: BatchUpdated, *states: str) -> BatchUpdated:
    """Play the batch service: move the batch through ``states``."""
    for s in states:
        batch = moved(batch, s)  # type: ignore[arg-type]
        pipeline.batches.apply(batch)
    return pipeline.batches.get(batch.tenant_id, batch.batch_id)


def counted(pipeline: BatchPipeline, batch: BatchUpdated, **counts: int) -> BatchUpdated:
    record = batch.model_copy(update={"counts": batch.counts.model_copy(update=counts)})
    pipeline.batches.apply(record)
    return pipeline.batches.get(batch.tenant_id, batch.batch_id)


# --- OpenAI: create -------------------------------------------------------------------------------


async def test_create_writes_the_items_as_their_routes_would_and_publishes_validating(oai, pipeline, storage):
    lines = [
        chat_line("a", "hello", max_tokens=50, temperature=0.2, user="u-1"),
        chat_line("b", "x" * 40),  # no max_tokens: demo-openai's max_output_tokens
    ]
    raw = await oai.batches.with_raw_response.create(
        input_file_id=await upload(oai, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    check("Batch", without_nulls(raw.http_response.json()))
    batch = raw.parse()
    assert batch.id.startswith("batch_") and len(batch.id) == len("batch_") + 32 and "." not in batch.id
    assert (batch.status, batch.endpoint, batch.completion_window, batch.model) == (
        "validating",
        "/v1/chat/completions",
        "24h",
        "demo-openai",
    )
    assert batch.request_counts is not None and batch.request_counts.model_dump() == {
        "total": 2,
        "completed": 0,
        "failed": 0,
    }
    assert (batch.output_file_id, batch.error_file_id) == (output_file_id(batch.id), error_file_id(batch.id))
    assert batch.metadata == {"job": "nightly"} and batch.expires_at == batch.created_at + 86400

    [record] = pipeline.published
    topic, _, key = pipeline._publisher.sent[-1]  # type: ignore[attr-defined]
    assert (topic, key) == ("llm.batches", f"demo/{batch.id}".encode())
    assert (record.api, record.tenant_id, record.user_id, record.request_id) == (
        "openai",
        "demo",
        "demo-user",
        batch.id,
    )
    assert record.requests_key == f"tenants/demo/batches/{batch.id}/requests.jsonl"
    assert record.max_output_tokens == 50 + 16384  # demo-openai's max_output_tokens for "b"
    events = await item_requests(storage, record)
    assert [type(e) for e in events] == [ChatRequested, ChatRequested]
    a, b = events
    assert [e.request_id for e in events] == [item_id(batch.id, 0), item_id(batch.id, 1)]
    assert all(e.job and e.reply_to is None and not e.stream for e in events)
    assert [(e.batch.batch_id, e.batch.custom_id, e.batch.index) for e in events] == [
        (batch.id, "a", 0),
        (batch.id, "b", 1),
    ]
    assert (a.tenant_id, a.user_id, a.api_key, a.model) == ("demo", "demo-user", "demo key", "demo-openai")
    assert (a.params.max_tokens, a.params.temperature, a.params.extra) == (50, 0.2, {"user": "u-1"})
    # the estimate: the edge's (UTF-8 bytes / 4, + 4 per message, + 3 per request)
    assert record.prompt_tokens == (3 + 4 + 2) + (3 + 4 + 10)

    got = await oai.batches.retrieve(batch.id)  # read back from the view, right after the write
    assert got.model_dump() == batch.model_dump()


async def test_the_model_is_none_when_lines_name_different_aliases(oai, pipeline):
    lines = [chat_line("a"), {**chat_line("b"), "body": {**chat_line("b")["body"], "model": "demo-ollama"}}]
    batch = await create(oai, lines)
    assert batch.model is None and pipeline.published[0].counts.total == 2


async def test_an_embeddings_batch(oai, pipeline, storage):
    lines = [
        {
            "custom_id": "e1",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "demo-embed", "input": ["abcd", "efgh1"]},
        },
        {
            "custom_id": "e2",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "demo-embed", "input": "x", "dimensions": 8},
        },
    ]
    batch = await create(oai, lines, endpoint="/v1/embeddings")
    record = pipeline.published[0]
    assert (batch.status, batch.model, record.prompt_tokens, record.max_output_tokens) == (
        "validating",
        "demo-embed",
        1 + 2 + 1,
        0,
    )
    e1, e2 = await item_requests(storage, record)
    assert isinstance(e1, EmbedRequested) and (e1.input, e2.input, e2.dimensions) == (
        ["abcd", "efgh1"],
        ["x"],
        8,
    )


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"endpoint": "/v1/completions"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 60}}, "output_expires_after"),
        ({"input_file_id": ""}, "input_file_id"),
    ],
)
async def test_create_refuses_a_bad_request_with_a_400(oai, pipeline, change, param):
    body = {
        "input_file_id": await upload(oai, [chat_line("a")]),
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **change,
    }
    with pytest.raises(openai.BadRequestError) as info:
        await oai.post("/batches", body=body, cast_to=openai.types.Batch)
    assert info.value.code == "validation_error" and info.value.param == param
    assert pipeline.published == []


async def test_output_expires_after_is_accepted(oai):
    batch = await oai.batches.create(
        input_file_id=await upload(oai, [chat_line("a")]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert batch.status == "validating"


async def test_the_input_file_must_be_the_callers_and_for_batches(app, oai, pipeline):
    file_id = await upload(oai, [chat_line("a")])
    async with sdk(app, RESTRICTED_KEY) as other:
        with pytest.raises(openai.NotFoundError) as info:
            await other.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )
    assert info.value.code == "media_not_found"
    vision = await upload(oai, [chat_line("a")], purpose="vision")
    with pytest.raises(openai.BadRequestError) as bad:
        await oai.batches.create(
            input_file_id=vision, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert bad.value.param == "input_file_id" and "purpose" in bad.value.message
    assert pipeline.published == []


async def test_refused_lines_fail_the_batch_with_every_error_by_line(oai, pipeline, storage):
    lines = [
        chat_line("ok"),
        b"{not json",
        chat_line("ok"),  # a duplicate custom_id
        {**chat_line("c"), "url": "/v1/embeddings"},
    ]
    raw = await oai.batches.with_raw_response.create(
        input_file_id=await upload(oai, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    check("Batch", without_nulls(raw.http_response.json()))
    batch = raw.parse()
    assert batch.status == "failed" and batch.failed_at == batch.created_at
    assert batch.errors is not None and batch.errors.object == "list"
    assert [(e.code, e.line, e.param) for e in batch.errors.data or []] == [
        ("invalid_json_line", 2, None),
        ("duplicate_custom_id", 3, "custom_id"),
        ("mismatched_endpoint", 4, "url"),
    ]
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert (batch.output_file_id, batch.error_file_id) == (None, None)
    assert await storage.keys(f"tenants/demo/batches/{batch.id}/") == []  # nothing to run
    assert pipeline.published[0].status == "failed"


async def test_a_body_the_route_would_refuse_fails_the_batch_naming_line_and_field(oai, storage):
    lines = [
        chat_line("a"),
        {**chat_line("b"), "body": {"model": "demo-openai", "messages": []}},
        chat_line("c", n=3),
        {**chat_line("d"), "body": {**chat_line("d")["body"], "temperature": 7}},
    ]
    batch = await create(oai, lines)
    assert batch.status == "failed" and batch.errors is not None
    assert [(e.code, e.line, e.param) for e in batch.errors.data or []] == [
        ("invalid_request", 2, "body.messages"),
        ("invalid_request", 3, "body.n"),
        ("invalid_request", 4, "body.temperature"),
    ]
    assert all((e.message or "").startswith("body.") for e in batch.errors.data or [])
    assert await storage.keys(f"tenants/demo/batches/{batch.id}/") == []


async def test_large_inline_media_are_stored_before_the_items_are_written(
    oai, pipeline, storage, demo_config
):
    big = "data:image/png;base64," + "A" * (demo_config.media.inline_max_bytes * 2)
    content = [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": big}}]
    lines = [
        {
            **chat_line("a"),
            "body": {"model": "demo-openai", "messages": [{"role": "user", "content": content}]},
        }
    ]
    await create(oai, lines)
    [event] = await item_requests(storage, pipeline.published[0])
    media_id = event.messages[0].content[1]["image_url"]["url"]
    assert media_id.startswith("med_") and await storage.head(f"tenants/demo/media/{media_id}") is not None


# --- OpenAI: read, list, cancel ---------------------------------------------------------------------


async def test_another_tenants_batch_is_not_found(app, oai):
    batch = await create(oai, [chat_line("a")])
    async with sdk(app, RESTRICTED_KEY) as other:
        with pytest.raises(openai.NotFoundError) as info:
            await other.batches.retrieve(batch.id)
        assert info.value.code == "batch_not_found"
        with pytest.raises(openai.NotFoundError):
            await other.batches.cancel(batch.id)
        for file_id in (batch.output_file_id, batch.error_file_id):
            assert file_id is not None
            with pytest.raises(openai.NotFoundError) as file_info:
                await other.files.content(file_id)
            assert file_info.value.code == "media_not_found"
        assert [b.id async for b in other.batches.list()] == []


async def test_list_pages_newest_first(oai):
    ids = [(await create(oai, [chat_line("a")])).id for _ in range(3)]
    raw = await oai.batches.with_raw_response.list(limit=2)
    check("ListBatchesResponse", without_nulls(raw.http_response.json()))
    first = raw.parse()
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more is True
    body = raw.http_response.json()
    assert (body["first_id"], body["last_id"]) == (ids[2], ids[1])
    rest = await oai.batches.list(limit=2, after=ids[1])
    assert [b.id for b in rest.data] == [ids[0]] and rest.has_more is False
    assert [b.id async for b in oai.batches.list(limit=1)] == ids[::-1]  # the SDK follows the pages
    with pytest.raises(openai.BadRequestError):
        await oai.batches.list(limit=101)


def test_page_after():
    ids = ["c", "b", "a"]
    assert page_after(ids, None, 2) == (0, 2)
    assert page_after(ids, "b", 2) == (2, 3)
    assert page_after(ids, "a", 5) == (3, 3)
    assert page_after(ids, "zz", 5) == (3, 3)


async def test_cancel_rules(oai, pipeline):
    batch = await create(oai, [chat_line("a"), chat_line("b")])
    record = run(pipeline, pipeline.batches.get("demo", batch.id), "in_progress")
    cancelled = await oai.batches.cancel(batch.id)
    assert cancelled.status == "cancelling" and cancelled.cancelling_at is not None
    assert (
        pipeline.published[-1].status == "cancelling"
        and pipeline.published[-1].in_progress_at == record.in_progress_at
    )
    n = len(pipeline.published)
    again = await oai.batches.cancel(batch.id)  # already cancelling: as it is, nothing written
    assert again.status == "cancelling" and len(pipeline.published) == n

    done = await create(oai, [chat_line("a")])
    run(pipeline, pipeline.batches.get("demo", done.id), "in_progress", "finalizing", "completed")
    with pytest.raises(openai.ConflictError) as info:
        await oai.batches.cancel(done.id)
    assert "completed" in info.value.message

    validating = await create(oai, [chat_line("a")])
    assert (await oai.batches.cancel(validating.id)).status == "cancelling"


# --- OpenAI: results --------------------------------------------------------------------------------


async def outcomes_batch(oai, pipeline, storage, n: int = 5) -> tuple[BatchUpdated, list[ChatRequested]]:
    """A running batch of ``n`` chat items: 0 succeeded (its result spilled to FileStorage), 1
    errored (the provider's 400), 2 canceled, 3 expired, 4 succeeded; the rest still running."""
    batch = await create(oai, [chat_line(f"c{i}", f"q{i}") for i in range(n)])
    record = run(pipeline, pipeline.batches.get("demo", batch.id), "in_progress")
    reqs = await item_requests(storage, record)
    jv = pipeline.jobs_view
    spilled = job_state(
        reqs[0], "completed", result=chat_result(reqs[0], "zero", prompt=10, completion=4, cached=1)
    )
    assert spilled.result is not None
    key = result_key("demo", spilled.job_id)
    await storage.put(key, spilled.result.model_dump_json(exclude_none=True).encode(), "application/json")
    jv.apply(
        spilled.model_copy(
            update={
                "result": None,
                "result_ref": MediaRef(media_id="jobres", mime_type="application/json", bytes=1, key=key),
            }
        )
    )
    provider = ErrorInfo(code="provider_error", message="bad request upstream", upstream_status=400)
    jv.apply(job_state(reqs[1], "failed", error=provider))
    jv.apply(job_state(reqs[2], "cancelled", error=ErrorInfo(code="cancelled", message="cancelled")))
    jv.apply(job_state(reqs[3], "failed", error=ErrorInfo(code="batch_expired", message="window passed")))
    jv.apply(job_state(reqs[4], "completed", result=chat_result(reqs[4], "four")))
    for r in reqs[5:]:
        jv.apply(job_state(r, "running"))
    record = counted(pipeline, record, succeeded=2, errored=1, canceled=1, expired=1)
    return record, reqs


async def test_result_files_render_each_outcome_while_the_batch_runs(oai, pipeline, storage):
    record, reqs = await outcomes_batch(oai, pipeline, storage, n=6)
    raw = await oai.batches.with_raw_response.retrieve(record.batch_id)
    check("Batch", without_nulls(raw.http_response.json()))
    batch = raw.parse()
    assert batch.status == "in_progress"
    assert batch.request_counts is not None and batch.request_counts.model_dump() == {
        "total": 6,
        "completed": 2,
        "failed": 3,
    }
    assert batch.usage is not None and batch.usage.model_dump() == {
        "input_tokens": 17,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 24,
    }

    assert batch.output_file_id is not None and batch.error_file_id is not None
    out = (await oai.files.content(batch.output_file_id)).read()
    output = [orjson.loads(line) for line in out.splitlines()]
    assert [(o["custom_id"], o["error"]) for o in output] == [("c0", None), ("c4", None)]
    for o, text, req in zip(output, ["zero", "four"], [reqs[0], reqs[4]], strict=True):
        assert o["id"].startswith("batch_req_") and "." not in o["id"]
        assert (o["response"]["status_code"], o["response"]["request_id"]) == (200, req.request_id)
        check("CreateChatCompletionResponse", o["response"]["body"])
        completion = openai.types.chat.ChatCompletion.model_validate(o["response"]["body"])
        assert completion.choices[0].message.content == text and completion.model == "demo-openai"

    errors = [
        orjson.loads(line) for line in (await oai.files.content(batch.error_file_id)).read().splitlines()
    ]
    assert [e["custom_id"] for e in errors] == ["c1", "c2", "c3"]  # in input order; c5 still runs
    errored, canceled, expired = errors
    assert errored["error"] is None and errored["response"]["status_code"] == 502
    assert errored["response"]["body"]["error"] == {
        "message": "bad request upstream",
        "type": "api_error",
        "param": None,
        "code": "provider_error",
    }
    assert (canceled["response"], canceled["error"]["code"]) == (None, "batch_cancelled")
    assert (expired["response"], expired["error"]["code"]) == (None, "batch_expired")

    again = (await oai.files.content(batch.output_file_id)).read()
    assert again == out  # the same ids on every read

    for file_id, body in ((batch.output_file_id, out), (batch.error_file_id, None)):
        raw_file = await oai.files.with_raw_response.retrieve(file_id)
        check("OpenAIFile", raw_file.http_response.json())
        f = raw_file.parse()
        assert (f.id, f.purpose, f.created_at) == (file_id, "batch_output", batch.created_at)
        if body is not None:
            assert f.bytes == len(body)


async def test_items_that_never_ran_end_as_the_batch_did(oai, pipeline, storage):
    batch = await create(oai, [chat_line(f"k{i}") for i in range(4)])
    record = run(pipeline, pipeline.batches.get("demo", batch.id), "in_progress")
    reqs = await item_requests(storage, record)
    pipeline.jobs_view.apply(job_state(reqs[0], "completed", result=chat_result(reqs[0], "done")))
    pipeline.jobs_view.apply(job_state(reqs[1], "running"))  # still running when the batch ended
    record = run(pipeline, record, "cancelling")
    record = counted(pipeline, record, succeeded=1, canceled=3)  # the batch service's last count...
    run(pipeline, record, "cancelled")  # ... then its end (a terminal batch takes no more records)
    got = await oai.batches.retrieve(batch.id)
    assert got.status == "cancelled" and got.request_counts is not None
    assert got.request_counts.completed + got.request_counts.failed == got.request_counts.total == 4
    assert got.error_file_id is not None
    errors = [orjson.loads(x) for x in (await oai.files.content(got.error_file_id)).read().splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("k1", "batch_cancelled"),
        ("k2", "batch_cancelled"),
        ("k3", "batch_cancelled"),
    ]


async def test_embeddings_output_lines_are_the_embeddings_route_answer(oai, pipeline, storage):
    line = {
        "custom_id": "e",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "demo-embed", "input": "abc"},
    }
    batch = await create(oai, [line], endpoint="/v1/embeddings")
    [req] = await item_requests(storage, pipeline.published[0])
    result = ResultProduced(
        request_id=req.request_id,
        tenant_id="demo",
        status="ok",
        operation="embed",
        alias="demo-embed",
        output=EmbeddingsOutput(data=[Embedding(index=0, embedding=[0.5, 0.25])]),
        usage=Usage(prompt_tokens=3, total_tokens=3),
        latency=Latency(total_ms=1.0),
    )
    pipeline.jobs_view.apply(job_state(req, "completed", result=result))
    assert batch.output_file_id is not None
    [out] = [orjson.loads(x) for x in (await oai.files.content(batch.output_file_id)).read().splitlines()]
    check("CreateEmbeddingResponse", out["response"]["body"])
    emb = openai.types.CreateEmbeddingResponse.model_validate(out["response"]["body"])
    assert emb.data[0].embedding == [0.5, 0.25] and emb.usage.prompt_tokens == 3


def test_batch_objects_match_the_sdks_types():
    from datetime import UTC, datetime

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    base = BatchUpdated(
        request_id="batch_x",
        tenant_id="demo",
        batch_id="batch_x",
        api="openai",
        status="in_progress",
        endpoint="/v1/chat/completions",
        requests_key="k",
        completion_window_s=86400,
        created_at=now,
        expires_at=now + timedelta(days=1),
        in_progress_at=now,
    )
    for status, extra in [
        ("in_progress", {}),
        ("cancelling", {"cancelling_at": now}),
        ("completed", {"finalizing_at": now, "completed_at": now}),
        ("expired", {"expired_at": now}),
    ]:
        b = base.model_copy(update={"status": status, **extra})
        doc = batch_json(b, batch_results.usage([]))
        parsed = openai.types.Batch.model_validate(doc)
        assert set(doc) == set(openai.types.Batch.model_fields)
        assert parsed.status == status and parsed.in_progress_at == int(now.timestamp())
        check("Batch", without_nulls(doc))
        msg = MessageBatch.model_validate(
            message_batch_json(b.model_copy(update={"api": "anthropic"}), "http://e")
        )
        want = {"in_progress": "in_progress", "cancelling": "canceling"}.get(status, "ended")
        assert msg.processing_status == want
        assert (msg.ended_at is not None) == (want == "ended")
        assert msg.results_url == "http://e/v1/messages/batches/batch_x/results"


# --- Anthropic ----------------------------------------------------------------------------------------


def params(text: str = "hi", **kw: Any) -> dict[str, Any]:
    return {
        "model": "demo-anthropic",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **kw,
    }


async def test_anthropic_create_retrieve_and_the_items(ant, pipeline, storage):
    raw = await ant.messages.batches.with_raw_response.create(
        requests=[
            {"custom_id": "first", "params": params("hello", system="be brief", temperature=0.5)},  # type: ignore[typeddict-item]
            {"custom_id": "second-2", "params": params("there")},  # type: ignore[typeddict-item]
        ]
    )
    assert raw.headers["request-id"]
    batch = await raw.parse()
    assert (
        batch.id.startswith("msgbatch_") and len(batch.id) == len("msgbatch_") + 24 and batch.id[9:].isalnum()
    )
    assert (batch.type, batch.processing_status) == ("message_batch", "in_progress")
    assert batch.request_counts.model_dump() == {
        "processing": 2,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert batch.results_url == f"http://edge/v1/messages/batches/{batch.id}/results"
    assert batch.expires_at - batch.created_at == timedelta(days=1)
    record = pipeline.published[0]
    assert (record.api, record.endpoint, record.model, record.max_output_tokens) == (
        "anthropic",
        "/v1/messages",
        "demo-anthropic",
        128,
    )
    first, second = await item_requests(storage, record)
    assert isinstance(first, ChatRequested) and first.request_id == item_id(batch.id, 0)
    assert first.messages[0].role == "system" and first.params.temperature == 0.5
    assert (first.batch.custom_id, second.batch.custom_id, second.batch.index) == ("first", "second-2", 1)
    assert first.job and first.reply_to is None
    got = await ant.messages.batches.retrieve(batch.id)
    assert got.model_dump() == batch.model_dump()


@pytest.mark.parametrize(
    ("requests", "says"),
    [
        ([], "requests"),
        ([{"custom_id": "has space", "params": params()}], "requests.0.custom_id"),
        ([{"custom_id": "x" * 65, "params": params()}], "requests.0.custom_id"),
        (
            [{"custom_id": "a", "params": params()}, {"custom_id": "a", "params": params()}],
            "requests.1.custom_id",
        ),
        ([{"custom_id": "a", "params": params(stream=True)}], "requests.0.params.stream"),
        (
            [
                {
                    "custom_id": "a",
                    "params": {"model": "demo-anthropic", "messages": [{"role": "user", "content": "x"}]},
                }
            ],
            "requests.0.params.max_tokens",
        ),
        (
            [{"custom_id": "a", "params": params()}, {"custom_id": "b", "params": params(temperature=3)}],
            "requests.1.params.temperature",
        ),
    ],
)
async def test_anthropic_create_refuses_any_bad_request_with_a_400(ant, pipeline, requests, says):
    with pytest.raises(anthropic.BadRequestError) as info:
        await ant.messages.batches.create(requests=requests)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"].startswith(says)
    assert pipeline.published == []


async def test_anthropic_results_of_each_outcome_and_counts(ant, pipeline, storage):
    batch = await ant.messages.batches.create(
        requests=[{"custom_id": f"r{i}", "params": params(f"q{i}")} for i in range(5)]  # type: ignore[misc]
    )
    record = run(pipeline, pipeline.batches.get("demo", batch.id), "in_progress")
    reqs = await item_requests(storage, record)
    jv = pipeline.jobs_view
    jv.apply(
        job_state(reqs[0], "completed", result=chat_result(reqs[0], "zero", prompt=9, completion=2, cached=4))
    )
    jv.apply(job_state(reqs[1], "failed", error=ErrorInfo(code="rate_limited", message="slow down")))
    jv.apply(job_state(reqs[2], "cancelled", error=ErrorInfo(code="cancelled", message="c")))
    record = counted(pipeline, record, succeeded=1, errored=1, canceled=1)

    running = [r async for r in await ant.messages.batches.results(batch.id)]  # partial, while it runs
    assert [r.custom_id for r in running] == ["r0", "r1", "r2"]
    assert all(isinstance(r, MessageBatchIndividualResponse) for r in running)
    ok, err, canceled = running
    assert ok.result.type == "succeeded" and ok.result.message.content[0].text == "zero"  # type: ignore[union-attr]
    assert ok.result.message.usage.input_tokens == 5 and ok.result.message.usage.cache_read_input_tokens == 4  # type: ignore[union-attr]
    assert ok.result.message.id == f"msg_{reqs[0].request_id}"  # type: ignore[union-attr]
    assert err.result.type == "errored" and err.result.error.error.type == "rate_limit_error"  # type: ignore[union-attr]
    assert canceled.result.type == "canceled"
    got = await ant.messages.batches.retrieve(batch.id)
    assert got.request_counts.model_dump() == {
        "processing": 2,
        "succeeded": 1,
        "errored": 1,
        "canceled": 1,
        "expired": 0,
    }

    run(pipeline, record, "expired")
    ended = [r async for r in await ant.messages.batches.results(batch.id)]
    assert [(r.custom_id, r.result.type) for r in ended] == [
        ("r0", "succeeded"),
        ("r1", "errored"),
        ("r2", "canceled"),
        ("r3", "expired"),
        ("r4", "expired"),
    ]
    assert (await ant.messages.batches.retrieve(batch.id)).processing_status == "ended"


async def test_anthropic_cancel_list_and_isolation(app, ant, pipeline):
    ids = [
        (await ant.messages.batches.create(requests=[{"custom_id": "a", "params": params()}])).id
        for _ in range(3)
    ]  # type: ignore[misc]
    canceling = await ant.messages.batches.cancel(ids[0])
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    assert (await ant.messages.batches.cancel(ids[0])).processing_status == "canceling"
    run(pipeline, pipeline.batches.get("demo", ids[0]), "cancelled")
    with pytest.raises(anthropic.BadRequestError):
        await ant.messages.batches.cancel(ids[0])

    page1 = await ant.messages.batches.list(limit=2)
    assert [b.id for b in page1.data] == [ids[2], ids[1]] and page1.has_more
    assert (page1.first_id, page1.last_id) == (ids[2], ids[1])
    page2 = await ant.messages.batches.list(limit=2, after_id=ids[1])
    assert [b.id for b in page2.data] == [ids[0]] and not page2.has_more
    back = await ant.messages.batches.list(limit=1, before_id=ids[0])
    assert [b.id for b in back.data] == [ids[1]] and back.has_more

    async with claude(app, RESTRICTED_KEY) as other:
        with pytest.raises(anthropic.NotFoundError) as info:
            await other.messages.batches.retrieve(ids[1])
        assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.NotFoundError):
            await other.messages.batches.cancel(ids[1])
        with pytest.raises(anthropic.NotFoundError):
            await other.get(f"/v1/messages/batches/{ids[1]}/results", cast_to=httpx2.Response)
        assert (await other.messages.batches.list()).data == []


async def test_the_two_apis_do_not_see_each_others_batches(oai, ant):
    openai_batch = await create(oai, [chat_line("a")])
    message_batch = await ant.messages.batches.create(requests=[{"custom_id": "a", "params": params()}])  # type: ignore[misc]
    with pytest.raises(anthropic.NotFoundError):
        await ant.messages.batches.retrieve(openai_batch.id)
    with pytest.raises(openai.NotFoundError):
        await oai.batches.retrieve(message_batch.id)
    assert [b.id async for b in oai.batches.list()] == [openai_batch.id]
    assert [b.id for b in (await ant.messages.batches.list()).data] == [message_batch.id]


async def test_anthropic_delete_of_an_ended_batch_only(ant, pipeline, storage):
    batch = await ant.messages.batches.create(requests=[{"custom_id": "a", "params": params()}])  # type: ignore[misc]
    with pytest.raises(anthropic.BadRequestError) as info:
        await ant.messages.batches.delete(batch.id)
    assert "still processing" in info.value.message
    record = pipeline.batches.get("demo", batch.id)
    assert await storage.keys(f"tenants/demo/batches/{batch.id}/") != []
    run(pipeline, record, "in_progress", "finalizing", "completed")
    deleted = await ant.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    topic, value, key = pipeline._publisher.sent[-1]  # type: ignore[attr-defined]
    assert (topic, value, key) == ("llm.batches", None, f"demo/{batch.id}".encode())  # a tombstone
    assert pipeline.batches.peek("demo", batch.id) is None  # read back: forgotten
    with pytest.raises(anthropic.NotFoundError):
        await ant.messages.batches.retrieve(batch.id)
    assert await storage.keys(f"tenants/demo/batches/{batch.id}/") == []


def test_anthropic_paging():
    ids = ["d", "c", "b", "a"]
    assert page(ids, {}, 2) == (0, 2)
    assert page(ids, {"after_id": "c"}, 2) == (2, 4)
    assert page(ids, {"before_id": "b"}, 1) == (1, 2)
    assert page(ids, {"before_id": "d"}, 3) == (0, 0)
    assert page(ids, {"after_id": "nope"}, 3) == (4, 4)


async def test_batch_routes_need_a_key(http):
    assert (await http.get("/v1/batches")).status_code == 401
    assert (await http.post("/v1/messages/batches", json={"requests": []})).status_code == 401
    assert (await http.get("/v1/messages/batches/msgbatch_x")).status_code == 401


def test_jobs_of_a_batch_render_outcomes_in_input_order():
    """The pure part: outcome per record; no record in a running batch is not yet an outcome."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    b = BatchUpdated(
        request_id="batch_y",
        tenant_id="t",
        batch_id="batch_y",
        api="openai",
        status="in_progress",
        endpoint="/v1/chat/completions",
        requests_key="tenants/t/batches/batch_y/requests.jsonl",
        completion_window_s=10,
        created_at=now,
        expires_at=now,
    )
    jobs: list[JobUpdated | None] = [None, None]
    assert list(batch_results.outcomes(b, jobs)) == []
    assert not batch_results.needs_custom_ids(b, jobs)
    ended = b.model_copy(update={"status": "expired"})
    assert batch_results.needs_custom_ids(ended, jobs)
    got = list(batch_results.outcomes(ended, jobs, ["x", "y"]))
    assert [(o.index, o.custom_id, o.status, o.request_id) for o in got] == [
        (0, "x", "expired", "batch_y.0"),
        (1, "y", "expired", "batch_y.1"),
    ]
    assert (
        batch_results.line_id("batch_y.0")
        == batch_results.line_id("batch_y.0")
        != batch_results.line_id("batch_y.1")
    )
