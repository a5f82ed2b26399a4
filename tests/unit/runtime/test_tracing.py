"""Traces: W3C context through Kafka headers while recording, the exporter's endpoint from the
standard variables, and the GenAI attributes of spans under each semantic-conventions mode (v1.41
names by default, the newest under ``gen_ai_latest_experimental``, content only when opted in)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.contracts.errors import ProviderError
from services.contracts.events import (
    AssistantMessage,
    ChatRequested,
    ChunkEmitted,
    Deployment,
    EmbedRequested,
    ExecutionPlanned,
    Usage,
)
from services.executor import observed
from services.executor.attempts import Until
from services.executor.handlers import Outcome
from services.executor.targets import Target
from services.runtime import genai, otlp, telemetry
from services.runtime.batching import Batcher
from services.runtime.genai import Conventions

V141 = Conventions()
LATEST = Conventions.from_env({"OTEL_SEMCONV_STABILITY_OPT_IN": "http, gen_ai_latest_experimental"})


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Recording into memory for one test; then back to propagation only."""
    exporter = InMemorySpanExporter()
    telemetry.setup("unit", exporter=exporter)
    try:
        yield exporter
    finally:
        telemetry.setup("unit")


def chat_request(**kw: object) -> ChatRequested:
    base: dict[str, object] = dict(
        request_id="req-1",
        tenant_id="acme",
        user_id="u7",
        model="demo-openai",
        messages=[{"role": "user", "content": "hello"}],
        params={"max_tokens": 20, "temperature": 0.3, "stop": ["END"]},
    )
    return ChatRequested.model_validate(base | kw)


def test_the_endpoint_comes_from_the_standard_variables():
    assert telemetry.traces_endpoint({}) is None
    assert (
        telemetry.traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"})
        == "http://c:4318/v1/traces"
    )
    both = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x",
    }
    assert telemetry.traces_endpoint(both) == "http://t/x"


def test_without_an_endpoint_nothing_records():
    assert (
        telemetry.setup("unit", env={"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}) is None
    )
    assert not telemetry.recording() and telemetry.conventions.latest
    telemetry.setup("unit")
    assert not telemetry.conventions.latest


def test_headers_round_trip_producer_to_consumer_span(spans: InMemorySpanExporter):
    with telemetry.producing("llm.requests publish"):
        headers = telemetry.inject()
    assert [k for k, _ in headers] == ["traceparent"]
    with telemetry.consuming("llm.requests", [("other", b"x"), *headers], 3, 42):
        inner = telemetry.inject()  # what the handler's own events carry on
    producer, consumer = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert producer.kind == SpanKind.PRODUCER and consumer.kind == SpanKind.CONSUMER
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.name == "llm.requests process"
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": "llm.requests",
        "messaging.destination.partition.id": "3",
        "messaging.kafka.offset": 42,
    }
    _, trace_id, span_id, _ = inner[0][1].decode().split("-")
    assert (int(trace_id, 16), int(span_id, 16)) == (consumer.context.trace_id, consumer.context.span_id)
    assert (consumer.resource.attributes or {})["service.name"] == "llmgw-unit"


def test_request_attributes_v141():
    a = genai.request_attributes(
        chat_request(), "gpt-x", V141, provider_kind="gemini", base_url="https://h.example/v1"
    )
    assert a == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-x",
        "gen_ai.provider.name": "gcp.gemini",
        "server.address": "h.example",
        "server.port": 443,
        "gen_ai.request.max_tokens": 20,
        "gen_ai.request.temperature": 0.3,
        "gen_ai.request.stop_sequences": ["END"],
        "llmgw.request.id": "req-1",
        "llmgw.tenant.id": "acme",
        "user.id": "u7",
    }
    e = genai.request_attributes(
        EmbedRequested(request_id="e", tenant_id="t", model="m", input=["a"], dimensions=8), "emb", V141
    )
    assert e["gen_ai.operation.name"] == "embeddings" and e["gen_ai.embeddings.dimension.count"] == 8
    assert e["gen_ai.request.encoding_formats"] == ["float"]
    assert genai.span_name("embed", "emb") == "embeddings emb" and genai.span_name("chat", "m") == "chat m"


def test_the_newest_names_add_per_modality_tokens_only_under_the_opt_in():
    u = Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10, cached_tokens=2)
    old = genai.response_attributes(
        V141, model="gpt-x-1", usage=u, finish_reason="stop", ttft_ms=250, text_only=True
    )
    new = genai.response_attributes(
        LATEST, model="gpt-x-1", usage=u, finish_reason="stop", ttft_ms=250, text_only=True
    )
    assert old == {
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.usage.cache_read.input_tokens": 2,
        "gen_ai.response.model": "gpt-x-1",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.response.time_to_first_chunk": 0.25,
    }
    assert new == old | {"gen_ai.usage.text.input_tokens": 7, "gen_ai.usage.text.output_tokens": 3}
    with_media = genai.response_attributes(LATEST, model=None, usage=u, text_only=False)
    assert (
        "gen_ai.usage.text.input_tokens" not in with_media
        and with_media["gen_ai.usage.text.output_tokens"] == 3
    )


def test_message_content_only_when_opted_in_and_media_by_kind_only():
    assert not Conventions.from_env({}).content
    for on in ("true", "SPAN_ONLY", "span_and_event", "1"):
        assert Conventions.from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": on}).content
    assert not Conventions.from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false"}).content
    url = "https://bucket.example/img.png?X-Amz-Signature=secret"
    req = chat_request(
        messages=[
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is it?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            },
        ]
    )
    assert genai.INPUT_MESSAGES not in genai.request_attributes(req, "m", V141)
    shown = genai.request_attributes(req, "m", Conventions(content=True))[genai.INPUT_MESSAGES]
    assert json.loads(shown) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "what is it?"}, {"type": "image_url"}]},
    ]
    assert "Signature" not in shown
    assert not genai.text_only(req) and genai.text_only(chat_request())
    out = json.loads(genai.output_messages(AssistantMessage(content="a cat"), "stop"))
    assert out == [
        {"role": "assistant", "parts": [{"type": "text", "content": "a cat"}], "finish_reason": "stop"}
    ]


TARGET = Target(
    alias="demo-openai",
    provider="emu",
    kind="openai",
    base_url="http://127.0.0.1:8100/v1",
    upstream_model="gpt-x",
)


def plan(**kw: object) -> ExecutionPlanned:
    return ExecutionPlanned(
        request_id="req-1",
        tenant_id="acme",
        request=chat_request(**kw),
        deployments=[Deployment(alias="demo-openai", provider="emu", upstream_model="gpt-x")],
    )


async def test_each_provider_call_is_a_client_span_with_the_genai_attributes(spans: InMemorySpanExporter):
    calls = 0

    async def call(target: Target, fallback_from: Target | None, until: Until) -> Outcome:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ProviderError("upstream 503")
        return Outcome(
            usage=Usage(prompt_tokens=9, completion_tokens=4, total_tokens=13),
            deployment=target,
            model="gpt-x-2026",
            provider_ms=5.0,
            message=AssistantMessage(content="hi"),
            finish_reason="stop",
        )

    traced = observed.traced(plan(), call)
    with pytest.raises(ProviderError):
        await traced(TARGET, None, Until(None, True))
    outcome = await traced(TARGET, None, Until(None, True))
    assert outcome.model == "gpt-x-2026"
    failed, ok = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    for s in (failed, ok):
        assert s.name == "chat gpt-x" and s.kind == SpanKind.CLIENT
    assert failed.status.status_code == StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "provider_error"
    a = dict(ok.attributes or {})
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.request.model"] == "gpt-x"
    assert a["gen_ai.response.model"] == "gpt-x-2026" and a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == 9 and a["gen_ai.usage.output_tokens"] == 4
    assert a["llmgw.attempt"] == 2 and a["llmgw.deployment"] == "demo-openai/emu"
    assert "gen_ai.input.messages" not in a and "gen_ai.usage.text.output_tokens" not in a
    assert ok.status.status_code != StatusCode.ERROR


def test_not_recording_the_provider_call_is_not_wrapped():
    async def call(target: Target, fallback_from: Target | None, until: Until) -> Outcome:
        raise AssertionError("not called")

    assert not telemetry.recording()
    assert observed.traced(plan(), call) is call


async def test_a_traced_stream_ends_its_span_with_the_stream(spans: InMemorySpanExporter):
    async def chunks() -> AsyncIterator[ChunkEmitted]:
        for i in range(3):
            yield ChunkEmitted(
                request_id="r", tenant_id="t", seq=i, final=i == 2, finish_reason="stop" if i == 2 else None
            )

    seen: list[int] = []
    span = telemetry.start("chat m", SpanKind.SERVER, {})
    out = [c.seq async for c in telemetry.traced_stream(span, chunks(), lambda s, c: seen.append(c.seq))]
    assert out == seen == [0, 1, 2]
    (ended,) = spans.get_finished_spans()
    assert ended.name == "chat m" and ended.status.status_code != StatusCode.ERROR

    # closed early by its reader: ended, and not a failure
    early = telemetry.start("chat early", SpanKind.SERVER, {})
    stream = telemetry.traced_stream(early, chunks())
    assert (await anext(stream)).seq == 0
    await stream.aclose()
    closed = [s for s in spans.get_finished_spans() if s.name == "chat early"]
    assert len(closed) == 1 and closed[0].status.status_code != StatusCode.ERROR


async def test_a_failing_stream_marks_its_span_with_the_error_code(spans: InMemorySpanExporter):
    async def failing() -> AsyncIterator[ChunkEmitted]:
        raise ProviderError("no")
        yield  # pragma: no cover

    span = telemetry.start("chat f", SpanKind.SERVER, {})
    with pytest.raises(ProviderError):
        async for _ in telemetry.traced_stream(span, failing()):
            pass
    (ended,) = spans.get_finished_spans()
    assert (
        ended.status.status_code == StatusCode.ERROR
        and (ended.attributes or {})["error.type"] == "provider_error"
    )


def test_a_lone_traceparent_is_read_directly_and_a_tracestate_through_the_propagator():
    tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ctx = trace.get_current_span(telemetry.extract([("x", b"y"), ("traceparent", tp)])).get_span_context()
    assert (ctx.trace_id, ctx.span_id, ctx.is_remote, int(ctx.trace_flags)) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        True,
        1,
    )
    with_state = telemetry.extract([("traceparent", tp), ("tracestate", b"vendor=v1")])
    assert trace.get_current_span(with_state).get_span_context().trace_state.get("vendor") == "v1"
    for bad in (b"junk", b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01", b"00-0af7-b7ad-01", b"ff-" + tp[3:]):
        assert (
            not trace.get_current_span(telemetry.extract([("traceparent", bad)])).get_span_context().is_valid
        )
    assert not trace.get_current_span(telemetry.extract(None)).get_span_context().is_valid


def test_a_consumer_span_of_a_failed_handler_carries_the_error(spans: InMemorySpanExporter):
    with pytest.raises(ProviderError), telemetry.consuming("t", None):
        raise ProviderError("x")
    (s,) = spans.get_finished_spans()
    assert s.status.status_code == StatusCode.ERROR and (s.attributes or {})["error.type"] == "provider_error"
    assert s.parent is None  # no traceparent: a trace of its own


def test_state_records_keep_the_context_and_make_no_span(spans: InMemorySpanExporter):
    tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with telemetry.consuming("usage", [("traceparent", tp)], span=False):
        assert telemetry.inject() == [("traceparent", tp)]
    assert spans.get_finished_spans() == ()


def test_publishing_inside_a_span_makes_no_producer_span(spans: InMemorySpanExporter):
    span = telemetry.start("chat m", SpanKind.SERVER, {})
    with telemetry.active(span, end=True), telemetry.producing("llm.requests publish"):
        [(_, tp)] = telemetry.inject()
    (only,) = spans.get_finished_spans()
    assert only.name == "chat m" and f"{only.context.span_id:016x}" in tp.decode()


def test_the_otlp_encoding_is_what_the_sdks_encoder_builds(spans: InMemorySpanExporter):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.trace import SpanContext

    from services.runtime import otlp

    remote = telemetry.extract([("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])
    attrs = {
        "s": "text",
        "long": "x" * 300,
        "mid": "m" * 150,
        "b": True,
        "i": -5,
        "big": 2**62,
        "small": 127,
        "over": 128,
        "zero": 0,
        "f": 1.5,
        "ss": ["a", "b"],
        "ii": [1, 2],
    }
    root = telemetry.start("root", SpanKind.SERVER, attrs, remote)
    with telemetry.active(root, end=True):
        child = telemetry.start("child", SpanKind.CLIENT, {"k": "v"})
        child.add_event("retry", {"n": 1})
        child.add_link(SpanContext(9, 10, False), {"why": "batch"})
        telemetry.failed(child, ProviderError("boom"))
        child.end()
    with telemetry.consuming("llm.exec", None, 0, 7):
        pass
    finished = spans.get_finished_spans()
    ours = ExportTraceServiceRequest()
    ours.ParseFromString(otlp.encode(finished))
    assert ours == encode_spans(finished)
    assert len(ours.resource_spans[0].scope_spans[0].spans) == 3


def test_the_exporter_posts_batches_and_drops_what_it_cannot_send():
    from opentelemetry.sdk.trace.export import SpanExportResult

    from services.cli import infra
    from services.runtime.otlp import OtlpExporter, parse_headers
    from tests.e2e.otlp_receiver import OtlpReceiver

    exporter_spans = InMemorySpanExporter()
    telemetry.setup("unit", exporter=exporter_spans)
    try:
        with telemetry.consuming("llm.exec", None, 1, 2):
            pass
    finally:
        telemetry.setup("unit")
    batch = exporter_spans.get_finished_spans()
    receiver = OtlpReceiver().start()
    try:
        env = {
            "OTEL_EXPORTER_OTLP_HEADERS": "x-team=gw,Authorization=Bearer%20t",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        }
        exporter = OtlpExporter(receiver.url + "/v1/traces", env)
        assert exporter.export(batch) == SpanExportResult.SUCCESS
        assert exporter.export(batch) == SpanExportResult.SUCCESS  # the same connection, kept alive
        got = receiver.wait_for(lambda s: len(s) == 2, 10)
        assert {s.name for s in got} == {"llm.exec process"} and got[0].service == "llmgw-unit"
        assert got[0].attributes["messaging.kafka.offset"] == 2
        assert [h["content-encoding"] for h in receiver.headers] == ["gzip", "gzip"]
        assert receiver.headers[0]["x-team"] == "gw" and receiver.headers[0]["authorization"] == "Bearer t"
        assert receiver.headers[0]["content-type"] == "application/x-protobuf"
        exporter.shutdown()
    finally:
        receiver.stop()
    assert parse_headers("a=1, B=x%3Dy ,junk") == {"a": "1", "b": "x=y"}
    down = OtlpExporter(
        f"http://127.0.0.1:{infra.free_port()}/v1/traces", {"OTEL_EXPORTER_OTLP_TIMEOUT": "500"}
    )
    assert down.export(batch) == SpanExportResult.FAILURE
    with pytest.raises(ValueError):
        OtlpExporter("grpc://c:4317")


class Collected:
    """An exporter keeping the batches it is given."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.batches.append(list(spans))

    def shutdown(self) -> None:
        pass


def test_the_sampler_follows_the_parent_and_the_standard_variables():
    from opentelemetry.trace import SpanContext, TraceFlags

    from services.runtime.recorder import sampler_from_env

    sampled, unsampled = SpanContext(1, 2, True, TraceFlags(1)), SpanContext(1, 2, True, TraceFlags(0))
    default = sampler_from_env({})
    assert default(None, 5) and default(sampled, 5) and not default(unsampled, 5)
    never = sampler_from_env({"OTEL_TRACES_SAMPLER": "always_off"})
    assert not never(None, 5) and not never(sampled, 5)
    half = sampler_from_env(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    )
    assert half(None, 1) and not half(None, (1 << 64) - 1) and half(sampled, (1 << 64) - 1)
    assert sampler_from_env({"OTEL_TRACES_SAMPLER": "jaeger_remote"})(None, 5)  # unknown: the default


def test_an_unsampled_trace_records_nothing_and_carries_its_flag_on():
    out = Collected()
    telemetry.setup("unit", exporter=out, env={"OTEL_TRACES_SAMPLER": "always_off"})
    try:
        with telemetry.consuming("t", None):
            [(_, tp)] = telemetry.inject()
        assert out.batches == [] and tp.endswith(b"-00")
    finally:
        telemetry.setup("unit")


def test_batches_go_out_from_the_thread_and_the_oldest_are_dropped_past_the_queue():
    from opentelemetry.sdk.resources import Resource

    from services.runtime.recorder import Recorder

    out = Collected()
    env = {
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
        "OTEL_BSP_MAX_QUEUE_SIZE": "3",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
    }
    rec = Recorder(Resource.create({"service.name": "q"}), batched=out, env=env)
    rec._wake.set = lambda: None  # type: ignore[method-assign]  # (the thread waits: the test drains)
    for i in range(5):
        rec.start_span(f"s{i}").end()
    rec.flush()
    assert [[s.name for s in b] for b in out.batches] == [["s2", "s3"], ["s4"]]  # type: ignore[attr-defined]
    del rec._wake.set  # the thread's wake-up again, for shutdown
    rec.shutdown()


def test_the_console_prints_a_json_line_per_span(capsys: pytest.CaptureFixture[str]):
    telemetry.setup("unit", console=True)
    try:
        span = telemetry.start("chat m", SpanKind.SERVER, {"gen_ai.request.model": "m"})
        span.end()
    finally:
        telemetry.setup("unit")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["name"] == "chat m" and line["kind"] == "SERVER" and line["service"] == "llmgw-unit"
    assert line["attributes"] == {"gen_ai.request.model": "m"} and line["parent_id"] is None


def test_a_record_without_a_span_of_its_own_still_names_its_producer(spans: InMemorySpanExporter):
    tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert telemetry.current_context() is None
    with telemetry.consuming("usage", [("traceparent", tp)], span=False):
        ctx = telemetry.current_context()
        assert ctx is not None and (ctx.trace_id, ctx.span_id, ctx.is_remote) == (
            0x0AF7651916CD43DD8448EB211C80319C,
            0xB7AD6B7169203331,
            True,
        )
    with telemetry.consuming("usage", [("traceparent", tp[:-1])], span=False):
        assert telemetry.current_context() is None  # a cut-off header: no context, no error


async def test_a_sinks_batch_is_one_span_child_of_its_first_record_and_linked_to_the_rest(
    spans: InMemorySpanExporter,
):
    written: list[list[int]] = []

    async def write(lane: tuple[str, int], items: list[int]) -> None:
        written.append(items)

    batcher: Batcher[tuple[str, int], int] = Batcher(
        write, max_items=3, max_wait_s=60, traced=telemetry.kafka_batch
    )
    producers = [(0x1000 + i, 0x2000 + i) for i in range(3)]

    async def add(i: int) -> None:
        tp = b"00-%032x-%016x-01" % producers[i]
        with telemetry.consuming("llm.usage", [("traceparent", tp)], span=False):
            await batcher.add(("llm.usage", 4), i)

    await asyncio.gather(*(add(i) for i in range(3)))  # the third closes the batch
    assert written == [[0, 1, 2]]
    (s,) = spans.get_finished_spans()  # one span for the write, none per record
    assert s.name == "llm.usage process" and s.kind == SpanKind.CONSUMER
    assert s.parent is not None and (s.parent.trace_id, s.parent.span_id) == producers[0]
    assert [(link.context.trace_id, link.context.span_id) for link in s.links] == producers[1:]
    assert (s.attributes or {})["messaging.batch.message_count"] == 3
    assert (s.attributes or {})["messaging.destination.partition.id"] == "4"


async def test_a_batch_of_untraced_records_makes_no_span(spans: InMemorySpanExporter):
    async def write(lane: str, items: list[int]) -> None:
        pass

    batcher: Batcher[str, int] = Batcher(write, max_items=1, max_wait_s=60, traced=lambda lane, n: ("x", {}))
    await batcher.add("lane", 1)  # no trace context where it was added
    assert spans.get_finished_spans() == ()


def test_an_otlp_recorder_queues_each_span_encoded_and_sends_the_bytes_encode_would():
    from opentelemetry.sdk.resources import Resource

    from services.runtime.recorder import SCOPE, Recorder

    class Encoding:
        encode_span = staticmethod(otlp.encode_span)

        def __init__(self) -> None:
            self.bodies: list[bytes] = []

        def export(self, spans):  # type: ignore[no-untyped-def]
            raise AssertionError("an encoding exporter is given bytes")

        def export_encoded(self, resource, scope, encoded):  # type: ignore[no-untyped-def]
            assert scope is SCOPE
            self.bodies.append(otlp.encode_batch(resource, scope, encoded))

        def shutdown(self) -> None:
            pass

    out, kept = Encoding(), InMemorySpanExporter()
    env = {"OTEL_BSP_SCHEDULE_DELAY": "60000"}
    rec = Recorder(Resource.create({"service.name": "q"}), batched=out, immediate=[kept], env=env)
    for i in range(3):
        s = rec.start_span(f"s{i}", attributes={"n": i})
        s.end()
        s.set_attribute("late", 1)  # after the end: not recorded (and it was encoded already)
    assert all(isinstance(item, bytes) for item in rec._queue)  # no span object waits in the queue
    rec.flush()
    spans = kept.get_finished_spans()
    assert out.bodies == [otlp.encode(spans)]
    rec.shutdown()


def test_ids_past_the_cache_limit_encode_as_the_sdk_does(spans: InMemorySpanExporter):
    """A key whose values are ids (each seen once) stops being cached after ``_DISTINCT_MAX``
    values; the bytes stay those of the SDK's encoder, and repeated values of other keys stay cached."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from services.runtime import otlp

    for i in range(otlp._DISTINCT_MAX + 10):
        s = telemetry.start(
            "chat m", SpanKind.SERVER, {"llmgw.request.id": f"req-{i:04d}", "gen_ai.operation.name": "chat"}
        )
        s.end()
    finished = spans.get_finished_spans()
    otlp._pairs.clear()
    otlp._distinct.clear()
    ours = ExportTraceServiceRequest()
    ours.ParseFromString(otlp.encode(finished))
    assert ours == encode_spans(finished)
    assert otlp._distinct["llmgw.request.id"] == otlp._DISTINCT_MAX
    assert sum(1 for (_, k, _v) in otlp._pairs if k == "llmgw.request.id") == otlp._DISTINCT_MAX
    assert otlp._distinct["gen_ai.operation.name"] == 1
    ids = [
        a.value.string_value
        for sp in ours.resource_spans[0].scope_spans[0].spans
        for a in sp.attributes
        if a.key == "llmgw.request.id"
    ]
    assert ids == [f"req-{i:04d}" for i in range(otlp._DISTINCT_MAX + 10)]
